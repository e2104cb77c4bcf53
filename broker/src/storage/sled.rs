//! The durable [`Store`]: one sled database per data directory.
//!
//! Layout: tree `meta` holds `cluster_id` and `topic/<name>` (partition count and topic id);
//! each partition has a tree `log/<topic>/<partition>` with
//! `b<base offset BE><chunk BE u16>` -> up to [`CHUNK`] bytes of the batch,
//! `t<base offset BE>` -> the batch's max timestamp (a time index), and for idempotent
//! producers `p<producer id BE>` -> their sequence state, all written together by one
//! atomic `apply_batch`. The `meta` tree also holds the generic metadata records
//! ([`Store::meta_put`]) under `m`.
//!
//! Why chunks: sled writes any log item larger than a quarter of its segment into a separate
//! "blob" file that `flush` does not fsync. With whole batches (up to 1 MiB) as values, both
//! the inserted fragments and the consolidated leaf pages (up to 16 entries) crossed that
//! threshold, so acknowledged data could be lost on power failure. Batches are therefore
//! stored in 64 KiB chunks and the segment size raised to 8 MiB: a leaf holds at most
//! 16 x 64 KiB = 1 MiB, below the 2 MiB blob threshold, so every byte goes through the
//! fsynced log. `tests::large_batches_never_become_unsynced_blob_files` checks it. sled only touches the disk durably in [`Store::sync`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{collect_batches, idempotence, Appended, Log, MetaRecord, Store, TopicMeta};
use crate::batch::{self, BatchInfo};
use crate::error::StorageError;
use crate::producer_state::ProducerEntry;

const META_TREE: &str = "meta";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
const TOPIC_PREFIX: &str = "topic/";
const LOG_PREFIX: &str = "log/";
/// Largest piece of a batch stored under one key.
pub const CHUNK: usize = 64 * 1024;
/// sled segment size: its blob threshold (a quarter of it) stays above any leaf page.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

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
    start: i64,
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
        let start = match tree.scan_prefix(b"b").next() {
            None => next,
            Some(item) => key_offset(&item?.0, &name)?,
        };
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
        Ok(SledLog {
            name,
            tree,
            next: Mutex::new((next, producers)),
            start,
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
        let mut producer = None;
        if info.producer_id >= 0 {
            match idempotence(producers.get(&info.producer_id), info, base) {
                Ok(entry) => {
                    ops.insert(&key(b'p', info.producer_id), entry.encode());
                    producer = Some(entry);
                }
                Err(answer) => return Ok(answer),
            }
        }
        let stored = batch::with_base_offset(b, base);
        for (i, chunk) in stored.chunks(CHUNK).enumerate() {
            ops.insert(&chunk_key(base, i as u16), chunk);
        }
        ops.insert(&key(b't', base), &info.max_timestamp.to_be_bytes());
        self.tree.apply_batch(ops)?;
        if let Some(entry) = producer {
            producers.insert(info.producer_id, entry);
        }
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
        self.start
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
}

/// sled-backed store of a data directory.
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    cluster_id: String,
    logs: Mutex<HashMap<(String, i32), Arc<SledLog>>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, recovering topics and the cluster id and
    /// dropping logs of topics whose deletion was interrupted.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let config = sled::Config::new()
            .path(dir)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None);
        // sled's file lock outlives a dropped Db for a moment (its I/O threads finish
        // first), so a store reopened in the same process may find it still held: wait a
        // little, then say plainly that another broker has the directory.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StorageError::Locked {
                            dir: dir.display().to_string(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let meta = db.open_tree(META_TREE)?;
        let cluster_id = match meta.get(CLUSTER_ID_KEY)? {
            Some(v) => String::from_utf8(v.to_vec()).map_err(|_| StorageError::Corrupt {
                what: "meta/cluster_id".into(),
                detail: "not UTF-8".into(),
            })?,
            None => {
                let id = crate::ids::new_cluster_id();
                meta.insert(CLUSTER_ID_KEY, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        let store = SledStore {
            db,
            meta,
            cluster_id,
            logs: Mutex::default(),
        };
        store.drop_orphan_logs()?;
        Ok(store)
    }

    fn drop_orphan_logs(&self) -> Result<(), StorageError> {
        let topics: HashMap<String, i32> = self
            .topics()?
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        for name in self.db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(LOG_PREFIX) else {
                continue;
            };
            let keep = rest.rsplit_once('/').is_some_and(|(topic, p)| {
                let p: i32 = p.parse().unwrap_or(-1);
                topics.get(topic).is_some_and(|&n| p >= 0 && p < n)
            });
            if !keep {
                tracing::warn!(tree = name, "dropping log of a deleted topic");
                self.db.drop_tree(name)?;
            }
        }
        Ok(())
    }
}

fn decode_topic(name: &str, v: &[u8]) -> Result<TopicMeta, StorageError> {
    if v.len() != 20 {
        return Err(StorageError::Corrupt {
            what: format!("meta/{TOPIC_PREFIX}{name}"),
            detail: format!("{} bytes, expected 20", v.len()),
        });
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&v[4..20]);
    Ok(TopicMeta {
        name: name.to_string(),
        id,
        partitions: i32::from_be_bytes([v[0], v[1], v[2], v[3]]),
    })
}

impl Store for SledStore {
    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    fn topics(&self) -> Result<Vec<TopicMeta>, StorageError> {
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(TOPIC_PREFIX.as_bytes()) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[TOPIC_PREFIX.len()..]).into_owned();
            out.push(decode_topic(&name, &v)?);
        }
        Ok(out)
    }

    fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&meta.partitions.to_be_bytes());
        v.extend_from_slice(&meta.id);
        self.meta
            .insert(format!("{TOPIC_PREFIX}{}", meta.name).as_bytes(), v)?;
        Ok(())
    }

    fn open_log(&self, topic: &str, partition: i32) -> Result<Arc<dyn Log>, StorageError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(&(topic.to_string(), partition)) {
            return Ok(log.clone());
        }
        let name = log_tree_name(topic, partition);
        let log = Arc::new(SledLog::open(self.db.open_tree(&name)?, name)?);
        logs.insert((topic.to_string(), partition), log.clone());
        Ok(log)
    }

    fn delete_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        // Metadata first: a crash in between leaves orphan trees, dropped at next open.
        self.meta
            .remove(format!("{TOPIC_PREFIX}{}", meta.name).as_bytes())?;
        self.db.flush()?;
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for p in 0..meta.partitions {
            logs.remove(&(meta.name.clone(), p));
            self.db.drop_tree(log_tree_name(&meta.name, p))?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(meta_key(key), value)?;
        Ok(())
    }

    fn meta_remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.meta.remove(meta_key(key))?;
        Ok(())
    }

    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<MetaRecord>, StorageError> {
        self.meta
            .scan_prefix(meta_key(prefix))
            .map(|item| {
                let (k, v) = item?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
            .collect()
    }
}

/// Generic metadata lives under `m` in the meta tree, apart from topics and the cluster id.
fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'm');
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::storage::contract::{append, idempotent_appends, idempotent_batch};

    #[test]
    fn sled_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        super::super::contract::append_read_and_offsets(&store);
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
        let got = log.read(0, 40, usize::MAX).unwrap();
        assert_eq!(got.len(), 40);
        assert!(got
            .iter()
            .all(|b| crate::batch::validate(b, 1 << 20).is_ok()));
    }

    #[test]
    fn recovers_topics_offsets_and_cluster_id_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = TopicMeta {
            name: "orders".into(),
            id: [1; 16],
            partitions: 3,
        };
        let cluster_id = {
            let store = SledStore::open(dir.path(), 8 << 20).unwrap();
            store.create_topic(&meta).unwrap();
            let log = store.open_log("orders", 2).unwrap();
            append(&*log, &make_batch(&[b"a", b"b"], 1, 1));
            append(&*log, &make_batch(&[b"c"], 3, 0));
            idempotent_appends(&store);
            store.meta_put(b"offsets/g", b"42").unwrap();
            store.sync().unwrap();
            store.cluster_id()
        };
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(store.cluster_id(), cluster_id);
        assert_eq!(store.topics().unwrap()[1], meta);
        let log = store.open_log("orders", 2).unwrap();
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(append(&*log, &make_batch(&[b"d"], 4, 0)), Appended::At(3));
        assert_eq!(log.read(0, 4, 1 << 20).unwrap().len(), 3);
        assert_eq!(store.meta_scan(b"offsets/").unwrap().len(), 1);
        // producer state survived: a retry is still recognised, the next batch still fits
        let idem = store.open_log("idem", 0).unwrap();
        assert_eq!(
            append(&*idem, &idempotent_batch(&[b"c"], 7, 0, 2)),
            Appended::Duplicate(2)
        );
        assert_eq!(
            append(&*idem, &idempotent_batch(&[b"d"], 7, 0, 3)),
            Appended::At(3)
        );
    }
}
