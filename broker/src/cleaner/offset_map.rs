//! The cleaner's key map: a 128-bit hash of each key -> the offset of its latest record,
//! in memory fixed when the map is made (Kafka's `SkimpyOffsetMap`, with a wider hash
//! than MD5's 128 bits never needs). A full map refuses new keys; the cleaner then cleans
//! up to the last offset it could map and leaves the rest for the next pass.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// The hash of a key: two independent SipHash-1-3 values (a collision, which would drop a
/// record, is about as likely as one of MD5's, Kafka's choice).
pub fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    key.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15_u64.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The map's own keys are already hashes: it uses their low bits as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Bytes one slot takes: the hash, the offset and hashbrown's control byte.
const SLOT_BYTES: usize = 16 + 8 + 1;

/// Key hash -> latest offset, holding at most [`OffsetMap::capacity`] keys.
pub struct OffsetMap {
    map: HashMap<u128, i64, BuildHasherDefault<Identity>>,
    capacity: usize,
}

impl OffsetMap {
    /// A map that fits in `budget` bytes (at least 8 keys): hashbrown allocates a
    /// power-of-two number of slots and fills 7/8 of them, so that is the capacity.
    pub fn with_budget(budget: usize) -> Self {
        let slots = (budget / SLOT_BYTES).max(8);
        let slots = if slots.is_power_of_two() {
            slots
        } else {
            slots.next_power_of_two() / 2
        };
        let capacity = slots / 8 * 7;
        OffsetMap {
            map: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            capacity,
        }
    }

    /// Records `offset` as the latest of key `hash`; `false` (and nothing changes) when
    /// the key is new and the map is full.
    pub fn put(&mut self, hash: u128, offset: i64) -> bool {
        if let Some(o) = self.map.get_mut(&hash) {
            *o = (*o).max(offset);
            return true;
        }
        if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(hash, offset);
        true
    }

    /// The latest offset of key `hash`, if mapped.
    pub fn get(&self, hash: u128) -> Option<i64> {
        self.map.get(&hash).copied()
    }

    /// How many keys it can hold.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes allocated for it.
    pub fn allocated_bytes(&self) -> usize {
        self.map.capacity().div_ceil(7).saturating_mul(8) * SLOT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_stays_in_its_budget_and_refuses_new_keys_when_full() {
        let mut m = OffsetMap::with_budget(1 << 20);
        assert!(m.allocated_bytes() <= 1 << 20, "{}", m.allocated_bytes());
        let cap = m.capacity();
        assert!(cap > 25_000, "{cap}");
        let allocated = m.map.capacity();
        for i in 0..cap {
            assert!(m.put(key_hash(&i.to_be_bytes()), i as i64));
        }
        assert!(!m.put(key_hash(b"one more"), 1));
        assert!(
            m.put(key_hash(&0usize.to_be_bytes()), 99),
            "a known key still updates"
        );
        assert_eq!(m.get(key_hash(&0usize.to_be_bytes())), Some(99));
        assert_eq!(m.get(key_hash(b"one more")), None);
        assert_eq!(m.map.capacity(), allocated, "never grew");
        assert_eq!(m.len(), cap);
    }

    #[test]
    fn hashes_differ_in_both_halves() {
        let (a, b) = (key_hash(b"k1"), key_hash(b"k2"));
        assert_ne!(a >> 64, b >> 64);
        assert_ne!(a as u64, b as u64);
        assert_eq!(key_hash(b"k1"), a);
    }
}
