//! The sled-only durable [`Store`] (`--storage-format sled`): batches in sled too.
//!
//! The default store is [`super::segments::SegmentStore`]; this one serves data
//! directories created with `--storage-format sled` (and those from before segment files).
//!
//! Layout: tree `meta` ([`SledMeta`]); each partition has a tree `log/<topic>/<partition>` with
//! `b<base offset BE><chunk BE u16>` -> up to [`CHUNK`] bytes of the batch,
//! `t<base offset BE>` -> the batch's max timestamp (a time index), for idempotent
//! producers `p<producer id BE>` -> their sequence state, and the transaction index:
//! `o<producer id BE>` -> the first offset of its open transaction, `a<marker offset BE>
//! <producer id BE>` -> the first offset of an aborted one; all written together by one
//! atomic `apply_batch`.
//!
//! Why chunks: sled writes any log item larger than a quarter of its segment into a separate
//! "blob" file. Batches are stored in 64 KiB chunks with 8 MiB segments: a leaf holds at
//! most 16 x 64 KiB = 1 MiB, below the 2 MiB blob threshold, so every byte goes through
//! sled's log (`tests::large_batches_never_become_unsynced_blob_files` checks it; the
//! vendored sled fsyncs blob files too). sled only touches the disk durably in
//! [`Store::sync`].

use std::collections::HashMap;

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::meta::{Durable, LogSet, SledMeta};
use super::txn_index::{AbortedTxn, SharedTxnIndex, TxnChange, TxnIndex};
use super::{admit, collect_batches, Appended, Log};
use crate::batch::{self, BatchInfo};
use crate::error::StorageError;
use crate::producer_state::ProducerEntry;

const LOG_PREFIX: &str = "log/";
/// Largest piece of a batch stored under one key.
pub const CHUNK: usize = 64 * 1024;

fn log_tree_name(topic: &str, partition: i32) -> String {
    format!("{LOG_PREFIX}{topic}/{partition}")
}

fn key(kind: u8, offset: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&(offset as u64).to_be_bytes());
    k
}

fn chunk_key(base: i64, chunk: u16) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[0] = b'b';
    k[1..9].copy_from_slice(&(base as u64).to_be_bytes());
    k[9..].copy_from_slice(&chunk.to_be_bytes());
    k
}

fn key_offset(k: &[u8], what: &str) -> Result<i64, StorageError> {
    let raw: [u8; 8] =
        k.get(1..9)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| StorageError::Corrupt {
                what: what.to_string(),
                detail: format!("key of {} bytes", k.len()),
            })?;
    Ok(u64::from_be_bytes(raw) as i64)
}

/// A partition log in its own sled tree.
pub struct SledLog {
    name: String,
    tree: sled::Tree,
    /// Log end offset and idempotent-producer states; the mutex also serialises appends so
    /// offsets are dense.
    next: Mutex<(i64, HashMap<i64, ProducerEntry>)>,
    /// First readable offset: the first stored batch's base, or where `delete_records`
    /// moved it (key `s`).
    start: std::sync::atomic::AtomicI64,
    txns: SharedTxnIndex,
}

impl SledLog {
    fn open(tree: sled::Tree, name: String) -> Result<Self, StorageError> {
        let next = match tree.scan_prefix(b"b").next_back() {
            None => 0,
            Some(item) => {
                let base = key_offset(&item?.0, &name)?;
                // The header is in chunk 0.
                let first = tree
                    .get(chunk_key(base, 0))?
                    .ok_or_else(|| StorageError::Corrupt {
                        what: name.clone(),
                        detail: format!("batch at offset {base} has no first chunk"),
                    })?;
                let info = batch::info(&first).ok_or_else(|| StorageError::Corrupt {
                    what: name.clone(),
                    detail: format!("batch at offset {base} starts with {} bytes", first.len()),
                })?;
                base + i64::from(info.last_offset_delta) + 1
            }
        };
        let first = match tree.scan_prefix(b"b").next() {
            None => next,
            Some(item) => key_offset(&item?.0, &name)?,
        };
        let trimmed = match tree.get(b"s")? {
            Some(v) => offset_value(&v, &name)?,
            None => first,
        };
        let start = std::sync::atomic::AtomicI64::new(trimmed.clamp(first.min(next), next));
        let mut producers = HashMap::new();
        for item in tree.scan_prefix(b"p") {
            let (k, v) = item?;
            let pid = key_offset(&k, &name)?;
            let entry = ProducerEntry::decode(&v).ok_or_else(|| StorageError::Corrupt {
                what: name.clone(),
                detail: format!("producer state of producer id {pid}"),
            })?;
            producers.insert(pid, entry);
        }
        let txns = SharedTxnIndex::new(recover_txn_index(&tree, &name)?);
        Ok(SledLog {
            name,
            tree,
            next: Mutex::new((next, producers)),
            start,
            txns,
        })
    }

    fn batch_at(&self, base: i64) -> Result<Option<Bytes>, StorageError> {
        Ok(self
            .batches_from(base)
            .next()
            .transpose()?
            .and_then(|(b, bytes)| (b == base).then_some(bytes)))
    }

    /// Whole batches from the one stored at `base` on, reassembled from their chunks.
    fn batches_from(
        &self,
        base: i64,
    ) -> impl Iterator<Item = Result<(i64, Bytes), StorageError>> + '_ {
        let mut chunks = self
            .tree
            .range(chunk_key(base, 0)..chunk_key(i64::MAX, 0))
            .peekable();
        std::iter::from_fn(move || {
            let (k, first) = match chunks.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let base = match key_offset(&k, &self.name) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let mut parts = vec![first];
            while let Some(Ok((k, _))) = chunks.peek() {
                if k.get(1..9) != Some(&(base as u64).to_be_bytes()[..]) {
                    break;
                }
                if let Some(Ok((_, v))) = chunks.next() {
                    parts.push(v);
                }
            }
            let bytes = if parts.len() == 1 {
                Bytes::from_owner(parts.pop().unwrap_or_default())
            } else {
                let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
                for p in &parts {
                    out.extend_from_slice(p);
                }
                Bytes::from(out)
            };
            Some(Ok((base, bytes)))
        })
    }
}

impl Log for SledLog {
    fn append(&self, b: &[u8], info: &BatchInfo) -> Result<Appended, StorageError> {
        let mut guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let (next, producers) = &mut *guard;
        let base = *next;
        let mut ops = sled::Batch::default();
        let (producer, change) =
            match admit(producers.get(&info.producer_id), &self.txns, b, info, base) {
                Ok(admitted) => admitted,
                Err(answer) => return Ok(answer),
            };
        if let Some(entry) = &producer {
            ops.insert(&key(b'p', info.producer_id), entry.encode());
        }
        store_txn_change(&mut ops, change);
        let stored = batch::with_base_offset(b, base);
        for (i, chunk) in stored.chunks(CHUNK).enumerate() {
            ops.insert(&chunk_key(base, i as u16), chunk);
        }
        ops.insert(&key(b't', base), &info.max_timestamp.to_be_bytes());
        self.tree.apply_batch(ops)?;
        if let Some(entry) = producer {
            producers.insert(info.producer_id, entry);
        }
        self.txns.apply(change);
        *next = base + i64::from(info.last_offset_delta) + 1;
        Ok(Appended::At(base))
    }

    fn read(&self, offset: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        // The batch containing `offset` is the last one whose base is <= offset (its time
        // index entry says so without touching the data).
        let start = match self
            .tree
            .range(key(b't', 0)..=key(b't', offset.max(0)))
            .next_back()
        {
            Some(item) => key_offset(&item?.0, &self.name)?,
            None => 0,
        };
        collect_batches(self.batches_from(start), offset, end, max_bytes)
    }

    fn log_end_offset(&self) -> i64 {
        self.next.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn log_start_offset(&self) -> i64 {
        self.start.load(std::sync::atomic::Ordering::Acquire)
    }

    fn largest_timestamp(&self) -> Option<i64> {
        self.tree
            .scan_prefix(b"t")
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| v.as_ref().try_into().ok().map(i64::from_be_bytes))
            .max()
    }

    fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.log_start_offset();
        let start = super::trim_target(current, offset, guard.0, self.txns.first_unstable());
        if start == current {
            return Ok(current);
        }
        let mut ops = sled::Batch::default();
        for item in self.batches_from(0) {
            let (base, b) = item?;
            let last = batch::info(&b).map_or(base, |i| base + i64::from(i.last_offset_delta));
            if last >= start {
                break;
            }
            for chunk in 0..b.len().div_ceil(CHUNK) {
                ops.remove(&chunk_key(base, chunk as u16));
            }
            ops.remove(&key(b't', base));
        }
        ops.insert(b"s", &start.to_be_bytes());
        self.tree.apply_batch(ops)?;
        self.start
            .store(start, std::sync::atomic::Ordering::Release);
        Ok(start)
    }

    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for item in self.tree.scan_prefix(b"t") {
            let (k, v) = item?;
            let raw: [u8; 8] = v.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                what: self.name.clone(),
                detail: "time index entry is not 8 bytes".into(),
            })?;
            let max_ts = i64::from_be_bytes(raw);
            if max_ts >= ts {
                let base = key_offset(&k, &self.name)?;
                let exact = self
                    .batch_at(base)?
                    .and_then(|b| batch::first_record_at_or_after(&b, ts));
                return Ok(exact.or(Some((base, max_ts))));
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

fn aborted_key(a: &AbortedTxn) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&key(b'a', a.last_offset));
    k[9..].copy_from_slice(&(a.producer_id as u64).to_be_bytes());
    k
}

/// Adds a transaction index change to the batch's atomic write.
fn store_txn_change(ops: &mut sled::Batch, change: TxnChange) {
    match change {
        TxnChange::None => {}
        TxnChange::Begin {
            producer_id,
            first_offset,
        } => ops.insert(&key(b'o', producer_id), &first_offset.to_be_bytes()),
        TxnChange::End {
            producer_id,
            aborted,
        } => {
            ops.remove(&key(b'o', producer_id));
            if let Some(a) = aborted {
                ops.insert(&aborted_key(&a), &a.first_offset.to_be_bytes());
            }
        }
    }
}

fn offset_value(v: &[u8], name: &str) -> Result<i64, StorageError> {
    let raw: [u8; 8] = v.try_into().map_err(|_| StorageError::Corrupt {
        what: name.to_string(),
        detail: "transaction index entry is not 8 bytes".into(),
    })?;
    Ok(i64::from_be_bytes(raw))
}

/// Reads a log tree's transaction index.
fn recover_txn_index(tree: &sled::Tree, name: &str) -> Result<TxnIndex, StorageError> {
    let mut open = std::collections::BTreeMap::new();
    for item in tree.scan_prefix(b"o") {
        let (k, v) = item?;
        open.insert(key_offset(&k, name)?, offset_value(&v, name)?);
    }
    let mut aborted = Vec::new();
    for item in tree.scan_prefix(b"a") {
        let (k, v) = item?;
        let pid = k.get(9..17).ok_or_else(|| StorageError::Corrupt {
            what: name.to_string(),
            detail: format!("aborted transaction key of {} bytes", k.len()),
        })?;
        aborted.push(AbortedTxn {
            producer_id: offset_value(pid, name)?,
            first_offset: offset_value(&v, name)?,
            last_offset: key_offset(&k, name)?,
        });
    }
    Ok(TxnIndex::from_parts(open, aborted))
}

/// sled-backed store of a data directory: metadata and batches all in one sled database
/// (`--storage-format sled`, and data directories created before segment files existed).
pub type SledStore = Durable<SledLogs>;

/// The logs of a [`SledStore`]: one sled tree per partition.
#[derive(Default)]
pub struct SledLogs {
    open: Mutex<HashMap<(String, i32), Arc<SledLog>>>,
}

#[cfg(test)]
impl SledStore {
    /// Opens (or creates) the store in `dir`, recovering topics and the cluster id and
    /// dropping logs of topics whose deletion was interrupted.
    pub fn open(dir: &std::path::Path, cache_bytes: u64) -> Result<Self, StorageError> {
        Durable::new(SledMeta::open(dir, cache_bytes)?, SledLogs::default())
    }
}

/// Whether a sled database holds batches (a data directory of the sled storage format).
pub fn holds_logs(meta: &SledMeta) -> bool {
    meta.db
        .tree_names()
        .iter()
        .any(|n| n.starts_with(LOG_PREFIX.as_bytes()))
}

impl LogSet for SledLogs {
    fn open_log(
        &self,
        meta: &SledMeta,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<dyn Log>, StorageError> {
        let mut logs = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(&(topic.to_string(), partition)) {
            return Ok(log.clone());
        }
        let name = log_tree_name(topic, partition);
        let log = Arc::new(SledLog::open(meta.db.open_tree(&name)?, name)?);
        logs.insert((topic.to_string(), partition), log.clone());
        Ok(log)
    }

    fn remove_log(&self, meta: &SledMeta, topic: &str, partition: i32) -> Result<(), StorageError> {
        let mut logs = self.open.lock().unwrap_or_else(|e| e.into_inner());
        logs.remove(&(topic.to_string(), partition));
        meta.db.drop_tree(log_tree_name(topic, partition))?;
        Ok(())
    }

    fn drop_orphans(
        &self,
        meta: &SledMeta,
        live: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), StorageError> {
        for name in meta.db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(LOG_PREFIX) else {
                continue;
            };
            if !rest.rsplit_once('/').is_some_and(|(t, p)| live(t, p)) {
                tracing::warn!(tree = name, "dropping log of a deleted topic");
                meta.db.drop_tree(name)?;
            }
        }
        Ok(())
    }

    /// Batches are sled writes: the metadata flush that follows covers them.
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::storage::contract::{self, append};
    use crate::storage::{Store, TopicMeta};

    #[test]
    fn sled_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        super::super::contract::append_read_and_offsets(&store);
    }

    #[test]
    fn keeps_the_transaction_index_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        contract::transactions_survive_reopen(&|| {
            Box::new(SledStore::open(dir.path(), 8 << 20).unwrap())
        });
    }

    #[test]
    fn deleted_records_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        contract::records_deleted_survive_reopen(&|| {
            Box::new(SledStore::open(dir.path(), 8 << 20).unwrap())
        });
    }

    #[test]
    fn large_batches_never_become_unsynced_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        store
            .create_topic(&TopicMeta {
                name: "big".into(),
                id: [3; 16],
                partitions: 1,
            })
            .unwrap();
        let log = store.open_log("big", 0).unwrap();
        let value = vec![7u8; 900 * 1024];
        let values: Vec<&[u8]> = vec![&value];
        for _ in 0..40 {
            append(&*log, &make_batch(&values, 0, 0));
        }
        store.sync().unwrap();
        let blobs = dir.path().join("blobs");
        let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            n, 0,
            "sled wrote {n} blob files, which flush does not fsync"
        );
        // and the batches read back whole
        let got = contract::split(log.read(0, 40, usize::MAX).unwrap());
        assert_eq!(got.len(), 40);
        assert!(got
            .iter()
            .all(|b| crate::batch::validate(b, 1 << 20).is_ok()));
    }

    #[test]
    fn recovers_topics_offsets_and_cluster_id_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::survives_reopen(&|| {
            Box::new(SledStore::open(dir.path(), 8 << 20).unwrap())
        });
    }
}
