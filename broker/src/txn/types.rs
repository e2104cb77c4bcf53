//! The transaction coordinator's data: one [`TxnMeta`] per `transactional.id`, and its
//! stored form (a metadata record per id, written at every state change).

use std::collections::{BTreeMap, BTreeSet};

use crate::control::Marker;
use crate::group::service::Committed;

/// Milliseconds on the caller's clock.
pub type Millis = u64;

/// A topic partition.
pub type TopicPartition = (String, i32);

/// Offsets a transaction commits for a group: (group, topic, partition) -> offset.
pub type PendingOffsets = BTreeMap<(String, String, i32), Committed>;

/// A transaction's state, as in Kafka's `TransactionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// A producer id and epoch, no transaction.
    Empty,
    /// Partitions or groups were added: a transaction is open.
    Ongoing,
    /// EndTxn(commit) was accepted; the markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fencing producer; the markers are being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name, as DescribeTransactions and ListTransactions report it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> Option<Self> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ]
        .get(usize::from(c))
        .copied()
    }

    /// The marker a prepared transaction writes.
    pub fn preparing(self) -> Option<Marker> {
        match self {
            TxnState::PrepareCommit => Some(Marker::Commit),
            TxnState::PrepareAbort => Some(Marker::Abort),
            _ => None,
        }
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch; older epochs are fenced.
    pub epoch: i16,
    /// `transaction.timeout.ms` the producer asked for.
    pub timeout_ms: u32,
    /// State.
    pub state: TxnState,
    /// Partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<TopicPartition>,
    /// Groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// Offsets sent with TxnOffsetCommit, applied to the groups on commit.
    pub offsets: PendingOffsets,
    /// When the open transaction started.
    pub started: Millis,
}

/// What ending a transaction takes: a marker into each partition and, on commit, the
/// pending offsets into their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The transactional id.
    pub transactional_id: String,
    /// Producer id and the epoch the markers carry.
    pub producer_id: i64,
    /// Epoch.
    pub epoch: i16,
    /// Commit or abort.
    pub marker: Marker,
    /// Partitions to mark.
    pub partitions: Vec<TopicPartition>,
    /// Offsets to apply (empty on abort).
    pub offsets: PendingOffsets,
}

struct Writer(Vec<u8>);

impl Writer {
    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn n(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn n(&mut self) -> Option<usize> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        // every element takes at least one byte: a count beyond the bytes left is corrupt
        (n <= self.0.len()).then_some(n)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.n()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.array()?))
    }
}

const FORMAT: u8 = 1;

impl TxnMeta {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.0.push(FORMAT);
        w.0.extend_from_slice(&self.producer_id.to_be_bytes());
        w.0.extend_from_slice(&self.epoch.to_be_bytes());
        w.0.extend_from_slice(&self.timeout_ms.to_be_bytes());
        w.0.push(self.state.code());
        w.0.extend_from_slice(&self.started.to_be_bytes());
        w.n(self.partitions.len());
        for (t, p) in &self.partitions {
            w.str(t);
            w.0.extend_from_slice(&p.to_be_bytes());
        }
        w.n(self.groups.len());
        for g in &self.groups {
            w.str(g);
        }
        w.n(self.offsets.len());
        for ((g, t, p), c) in &self.offsets {
            w.str(g);
            w.str(t);
            w.0.extend_from_slice(&p.to_be_bytes());
            w.0.extend_from_slice(&c.offset.to_be_bytes());
            w.0.extend_from_slice(&c.leader_epoch.to_be_bytes());
            match &c.metadata {
                None => w.0.push(0),
                Some(m) => {
                    w.0.push(1);
                    w.str(m);
                }
            }
        }
        w.0
    }

    /// Parses [`TxnMeta::encode`]'s output; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<TxnMeta> {
        let mut r = Reader(b);
        if r.take(1)? != [FORMAT] {
            return None;
        }
        let producer_id = r.i64()?;
        let epoch = i16::from_be_bytes(r.array()?);
        let timeout_ms = u32::from_be_bytes(r.array()?);
        let state = TxnState::from_code(r.take(1)?[0])?;
        let started = u64::from_be_bytes(r.array()?);
        let mut partitions = BTreeSet::new();
        for _ in 0..r.n()? {
            partitions.insert((r.str()?, r.i32()?));
        }
        let mut groups = BTreeSet::new();
        for _ in 0..r.n()? {
            groups.insert(r.str()?);
        }
        let mut offsets = BTreeMap::new();
        for _ in 0..r.n()? {
            let key = (r.str()?, r.str()?, r.i32()?);
            let offset = r.i64()?;
            let leader_epoch = r.i32()?;
            let metadata = match r.take(1)?[0] {
                0 => None,
                _ => Some(r.str()?),
            };
            offsets.insert(
                key,
                Committed {
                    offset,
                    leader_epoch,
                    metadata,
                },
            );
        }
        r.0.is_empty().then_some(TxnMeta {
            producer_id,
            epoch,
            timeout_ms,
            state,
            partitions,
            groups,
            offsets,
            started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_refuses_garbage() {
        let mut meta = TxnMeta {
            producer_id: 17,
            epoch: 4,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("a".to_string(), 0), ("b".to_string(), 3)].into(),
            groups: ["g".to_string()].into(),
            offsets: BTreeMap::new(),
            started: 123,
        };
        meta.offsets.insert(
            ("g".into(), "in".into(), 1),
            Committed {
                offset: 42,
                leader_epoch: -1,
                metadata: Some("m".into()),
            },
        );
        let bytes = meta.encode();
        assert_eq!(TxnMeta::decode(&bytes), Some(meta));
        for cut in 0..bytes.len() {
            assert_eq!(TxnMeta::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(TxnMeta::decode(&huge), None);
    }
}
