//! Broker metadata in sled, shared by both durable stores: the cluster id, topics
//! (`topic/<name>` -> partition count and topic id), the data directory's storage format, and
//! the generic records of [`Store::meta_put`](super::Store::meta_put) (committed offsets,
//! producer ids) under `m`. All in sled's `meta` tree; durable after [`SledMeta::flush`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{Log, MetaRecord, Store, TopicMeta};
use crate::error::StorageError;

const META_TREE: &str = "meta";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
const FORMAT_KEY: &[u8] = b"storage_format";
const TOPIC_PREFIX: &str = "topic/";
/// sled segment size. Only [`super::sled::SledStore`] puts batches in sled; its 64 KiB
/// chunks rely on the blob threshold (a quarter of this) staying above any leaf page.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// The sled database of a data directory and its `meta` tree.
pub struct SledMeta {
    pub(crate) db: sled::Db,
    tree: sled::Tree,
    cluster_id: String,
}

impl SledMeta {
    /// Opens (or creates) the sled database in `dir`, creating the cluster id once.
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
        // sled's files (db, conf) must still exist after a power cut: their directory
        // entries are made durable once, here.
        super::sync_dir(dir)?;
        let tree = db.open_tree(META_TREE)?;
        let cluster_id = match tree.get(CLUSTER_ID_KEY)? {
            Some(v) => String::from_utf8(v.to_vec()).map_err(|_| StorageError::Corrupt {
                what: "meta/cluster_id".into(),
                detail: "not UTF-8".into(),
            })?,
            None => {
                let id = crate::ids::new_cluster_id();
                tree.insert(CLUSTER_ID_KEY, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        Ok(SledMeta {
            db,
            tree,
            cluster_id,
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    /// The storage format recorded for this data directory, if any.
    pub fn format(&self) -> Result<Option<String>, StorageError> {
        Ok(self
            .tree
            .get(FORMAT_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records the data directory's storage format, durably.
    pub fn set_format(&self, format: &str) -> Result<(), StorageError> {
        self.tree.insert(FORMAT_KEY, format.as_bytes())?;
        self.flush()
    }

    /// Every topic recorded.
    pub fn topics(&self) -> Result<Vec<TopicMeta>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(TOPIC_PREFIX.as_bytes()) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[TOPIC_PREFIX.len()..]).into_owned();
            out.push(decode_topic(&name, &v)?);
        }
        Ok(out)
    }

    /// Records a topic (durable after the next flush).
    pub fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&meta.partitions.to_be_bytes());
        v.extend_from_slice(&meta.id);
        self.tree
            .insert(format!("{TOPIC_PREFIX}{}", meta.name).as_bytes(), v)?;
        Ok(())
    }

    /// Forgets a topic, durably: its logs may then be removed (a crash in between leaves
    /// orphan logs, which the stores drop when they open).
    pub fn remove_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        self.tree
            .remove(format!("{TOPIC_PREFIX}{}", meta.name).as_bytes())?;
        self.flush()
    }

    /// [`Store::meta_put`](super::Store::meta_put).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.tree.insert(meta_key(key), value)?;
        Ok(())
    }

    /// [`Store::meta_remove`](super::Store::meta_remove).
    pub fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.tree.remove(meta_key(key))?;
        Ok(())
    }

    /// [`Store::meta_scan`](super::Store::meta_scan).
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<MetaRecord>, StorageError> {
        self.tree
            .scan_prefix(meta_key(prefix))
            .map(|item| {
                let (k, v) = item?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Makes every sled write so far durable: sled writes its log and fdatasyncs it (the
    /// vendored sled; 0.34 used `sync_file_range`, which a power cut defeats). No I/O when
    /// nothing changed.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

/// The partition logs of a durable store; [`Durable`] pairs them with the sled metadata.
pub trait LogSet: Send + Sync {
    /// Opens (creating if needed) the log of one partition; the same log on later calls.
    fn open_log(
        &self,
        meta: &SledMeta,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<dyn Log>, StorageError>;
    /// Removes one partition's log and its data.
    fn remove_log(&self, meta: &SledMeta, topic: &str, partition: i32) -> Result<(), StorageError>;
    /// Removes every stored log for which `live(topic, partition)` is false: the logs of
    /// topics whose deletion a crash interrupted (the metadata goes first).
    fn drop_orphans(
        &self,
        meta: &SledMeta,
        live: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), StorageError>;
    /// Makes every earlier append durable; the metadata is flushed right after.
    fn sync(&self) -> Result<(), StorageError>;
}

/// A durable [`Store`]: sled metadata plus a [`LogSet`].
pub struct Durable<L> {
    pub(crate) meta: SledMeta,
    pub(crate) logs: L,
}

impl<L: LogSet> Durable<L> {
    /// Pairs `meta` with `logs`, dropping the logs of topics that no longer exist.
    pub fn new(meta: SledMeta, logs: L) -> Result<Self, StorageError> {
        let topics: HashMap<String, i32> = meta
            .topics()?
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        logs.drop_orphans(&meta, &|topic, p| {
            let p: i32 = p.parse().unwrap_or(-1);
            topics.get(topic).is_some_and(|&n| p >= 0 && p < n)
        })?;
        Ok(Durable { meta, logs })
    }
}

impl<L: LogSet> Store for Durable<L> {
    fn cluster_id(&self) -> String {
        self.meta.cluster_id()
    }

    fn topics(&self) -> Result<Vec<TopicMeta>, StorageError> {
        self.meta.topics()
    }

    fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        self.meta.create_topic(meta)
    }

    fn open_log(&self, topic: &str, partition: i32) -> Result<Arc<dyn Log>, StorageError> {
        self.logs.open_log(&self.meta, topic, partition)
    }

    fn delete_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
        // Metadata first: a crash in between leaves orphan logs, dropped at the next open.
        self.meta.remove_topic(meta)?;
        for p in 0..meta.partitions {
            self.logs.remove_log(&self.meta, &meta.name, p)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.logs.sync()?;
        self.meta.flush()
    }

    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.meta.put(key, value)
    }

    fn meta_remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.meta.remove(key)
    }

    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<MetaRecord>, StorageError> {
        self.meta.scan(prefix)
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

/// Generic metadata lives under `m` in the meta tree, apart from topics and the cluster id.
fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'm');
    k.extend_from_slice(key);
    k
}
