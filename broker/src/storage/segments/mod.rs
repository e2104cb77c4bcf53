//! The default durable [`Store`]: partition logs in append-only segment files, metadata in
//! sled ([`SledMeta`]).
//!
//! Layout of a data directory: sled's files (the `meta` tree: cluster id, topics, committed
//! offsets, producer ids) and `logs/<topic>-<partition>/<base offset, 20 digits>.log`.
//! A segment file is the partition's record batches back to back, exactly as they are
//! served (RecordBatch v2, `baseOffset` set), so each byte is written once and read back
//! with one `pread` per fetch. The batch headers carry everything the broker needs: at open
//! the log rebuilds from them a sparse in-memory index (one entry per ~4 KiB: first offset,
//! file position, max timestamp of the entries' batches), the idempotent producers'
//! sequence state and the transaction index. A closed segment's headers are also kept in
//! its summary, `<base>.headers` ([`summary`]), read sequentially at open instead.
//!
//! Durability, meeting the contract of [`super`]:
//! * [`Log::append`] writes the batch into the page cache (`pwrite`) at the log end.
//! * [`Store::sync`] `fdatasync`s the active segment of every log written since the last
//!   sync, then flushes sled.
//! * A segment is `fdatasync`ed when it fills and the next one is created (and the
//!   directory is fsynced so the new file's name is durable), so every segment but the
//!   last is complete on disk.
//! * At open, the last segment of each log is checked batch by batch (length, magic,
//!   offsets, CRC32C) and cut at the first batch that fails: what a crash tore off was never
//!   acknowledged. An earlier segment is recovered from its summary when that checks out
//!   against it; otherwise its headers are walked, and a bad one is corruption of synced
//!   data: the store refuses to open and names the file and position. (A read that meets a
//!   bad header names them too.)
//! * After an fsync error the log refuses writes until the broker restarts: Linux may have
//!   dropped the pages that failed, so a later fsync could succeed without them.
//!
//! Files: [`file`] reads a segment (the `pread` cursor, batch headers), [`scan`] recovers a
//! segment at open, [`summary`] keeps segment summaries, [`log`] is one partition's log,
//! and this module the set of logs of a data directory.

mod compact;
mod file;
mod log;
mod scan;
mod summary;
mod trim;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::meta::{Durable, LogSet, SledMeta};
use super::{sync_dir, Log};
use crate::batch::HEADER_LEN;
use crate::error::StorageError;

pub use log::SegmentLog;

/// Bytes of log between two entries of the sparse index (Kafka's `index.interval.bytes`).
pub(super) const INDEX_INTERVAL: u64 = 4096;
/// Most bytes read ahead in one `pread`.
pub(super) const MAX_READ_AHEAD: usize = 8 * 1024 * 1024;
/// Read-ahead when walking batch headers at open.
pub(super) const SCAN_READ_AHEAD: usize = 256 * 1024;
pub(super) const LOGS_DIR: &str = "logs";
pub(super) const SUFFIX: &str = ".log";

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn segment_name(base: i64) -> String {
    format!("{base:020}{SUFFIX}")
}

/// Segment-file logs plus sled metadata: the broker's default store.
pub type SegmentStore = Durable<SegmentLogs>;

impl SegmentStore {
    /// Opens the store of data directory `dir` whose sled database is `meta`, dropping the
    /// logs of topics whose deletion was interrupted. Logs are opened (and recovered) by
    /// [`Store::open_log`].
    pub fn open(meta: SledMeta, dir: &Path, segment_bytes: u64) -> Result<Self, StorageError> {
        let logs_dir = dir.join(LOGS_DIR);
        if !logs_dir.is_dir() {
            fs::create_dir_all(&logs_dir).map_err(io_err(&logs_dir))?;
            sync_dir(dir)?;
        }
        Durable::new(
            meta,
            SegmentLogs {
                dir: logs_dir,
                segment_bytes: segment_bytes.max(HEADER_LEN as u64),
                open: Mutex::default(),
            },
        )
    }
}

/// The logs of a [`SegmentStore`]: `logs/<topic>-<partition>/` directories.
pub struct SegmentLogs {
    dir: PathBuf,
    segment_bytes: u64,
    open: Mutex<HashMap<(String, i32), Arc<SegmentLog>>>,
}

impl SegmentLogs {
    fn log_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}"))
    }
}

impl LogSet for SegmentLogs {
    fn open_log(
        &self,
        _meta: &SledMeta,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<dyn Log>, StorageError> {
        // Names become directory names: only Kafka's legal ones ever get here, but check.
        if crate::topic_name::validate_topic_name(topic).is_err() || partition < 0 {
            return Err(StorageError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        let mut logs = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(&(topic.to_string(), partition)) {
            return Ok(log.clone());
        }
        let log = Arc::new(SegmentLog::open(
            self.log_dir(topic, partition),
            format!("{topic}/{partition}"),
            self.segment_bytes,
        )?);
        logs.insert((topic.to_string(), partition), log.clone());
        Ok(log)
    }

    fn remove_log(
        &self,
        _meta: &SledMeta,
        topic: &str,
        partition: i32,
    ) -> Result<(), StorageError> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(topic.to_string(), partition));
        let dir = self.log_dir(topic, partition);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    fn drop_orphans(
        &self,
        _meta: &SledMeta,
        live: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), StorageError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.rsplit_once('-').is_some_and(|(t, p)| live(t, p)) {
                tracing::warn!(dir = %entry.path().display(), "dropping log of a deleted topic");
                fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let logs: Vec<Arc<SegmentLog>> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for log in logs {
            log.sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compact_tests.rs"]
mod compact_tests;

#[cfg(test)]
#[path = "summary_tests.rs"]
mod summary_tests;
