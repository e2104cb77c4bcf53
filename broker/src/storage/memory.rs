//! In-memory [`Store`] for unit tests: same semantics, nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::txn_index::SharedTxnIndex;
use super::{admit, collect_batches, Appended, Log, MetaRecord, Store, TopicMeta};
use crate::batch::{self, BatchInfo};
use crate::error::StorageError;
use crate::producer_state::ProducerEntry;

/// A log kept in a `BTreeMap` of base offset to batch.
#[derive(Default)]
pub struct MemoryLog {
    batches: RwLock<BTreeMap<i64, Bytes>>,
    next: Mutex<(i64, HashMap<i64, ProducerEntry>)>,
    txns: SharedTxnIndex,
    /// Log start set by `delete_records` (0: none).
    start: std::sync::atomic::AtomicI64,
}

impl Log for MemoryLog {
    fn append(&self, b: &[u8], info: &BatchInfo) -> Result<Appended, StorageError> {
        let mut guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (next, producers) = &mut *guard;
        let base = *next;
        let (producer, change) =
            match admit(producers.get(&info.producer_id), &self.txns, b, info, base) {
                Ok(admitted) => admitted,
                Err(answer) => return Ok(answer),
            };
        if let Some(entry) = producer {
            producers.insert(info.producer_id, entry);
        }
        self.txns.apply(change);
        let stored = batch::with_base_offset(b, base);
        self.batches
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base, stored);
        *next = base + i64::from(info.last_offset_delta) + 1;
        Ok(Appended::At(base))
    }

    fn read(&self, offset: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        let map = self.batches.read().unwrap_or_else(|e| e.into_inner());
        let start = map
            .range(..=offset)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(0);
        collect_batches(
            map.range(start..).map(|(k, v)| Ok((*k, v.clone()))),
            offset,
            end,
            max_bytes,
        )
    }

    fn log_end_offset(&self) -> i64 {
        self.next.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn log_start_offset(&self) -> i64 {
        let first = {
            let map = self.batches.read().unwrap_or_else(|e| e.into_inner());
            map.keys().next().copied()
        };
        let first = first.unwrap_or_else(|| self.log_end_offset());
        first.max(self.start.load(std::sync::atomic::Ordering::Acquire))
    }

    fn largest_timestamp(&self) -> Option<i64> {
        let map = self.batches.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter_map(|b| batch::info(b).map(|i| i.max_timestamp))
            .max()
    }

    fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.log_start_offset();
        let start = super::trim_target(current, offset, guard.0, self.txns.first_unstable());
        let mut map = self.batches.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|&base, b| {
            let last = batch::info(b).map_or(base, |i| base + i64::from(i.last_offset_delta));
            last >= start
        });
        self.start
            .store(start, std::sync::atomic::Ordering::Release);
        Ok(start)
    }

    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let map = self.batches.read().unwrap_or_else(|e| e.into_inner());
        for (base, b) in map.iter() {
            let Some(info) = batch::info(b) else { continue };
            if info.max_timestamp >= ts {
                return Ok(
                    batch::first_record_at_or_after(b, ts).or(Some((*base, info.max_timestamp)))
                );
            }
        }
        Ok(None)
    }

    fn txn_index(&self) -> &SharedTxnIndex {
        &self.txns
    }

    fn producers(&self) -> Vec<(i64, ProducerEntry)> {
        let guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.iter().map(|(&p, e)| (p, e.clone())).collect()
    }
}

/// Topics and logs in memory.
pub struct MemoryStore {
    cluster_id: String,
    topics: Mutex<BTreeMap<String, TopicMeta>>,
    logs: Mutex<HashMap<(String, i32), Arc<MemoryLog>>>,
    meta: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store with the given cluster id.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        MemoryStore {
            cluster_id: cluster_id.into(),
            topics: Mutex::default(),
            logs: Mutex::default(),
            meta: Mutex::default(),
        }
    }
}

impl Store for MemoryStore {
    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }
    fn topics(&self) -> Result<Vec<TopicMeta>, StorageError> {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        Ok(t.values().cloned().collect())
    }
    fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.insert(meta.name.clone(), meta.clone());
        Ok(())
    }
    fn open_log(&self, topic: &str, partition: i32) -> Result<Arc<dyn Log>, StorageError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let log = logs.entry((topic.to_string(), partition)).or_default();
        Ok(log.clone())
    }
    fn delete_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&meta.name);
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| t != &meta.name);
        Ok(())
    }
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn meta_remove(&self, key: &[u8]) -> Result<(), StorageError> {
        let mut m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(key);
        Ok(())
    }
    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<MetaRecord>, StorageError> {
        let m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_meets_the_contract() {
        super::super::contract::append_read_and_offsets(&super::MemoryStore::new("c"));
    }

    #[test]
    fn memory_store_checks_idempotent_producers() {
        super::super::contract::idempotent_appends(&super::MemoryStore::new("c"));
    }
}
