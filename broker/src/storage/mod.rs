//! Storage: a tiny [`Store`] of topic metadata plus one append-only [`Log`] per partition.
//!
//! # Durability contract
//!
//! * [`Log::append`] assigns offsets and makes the batch readable through [`Log::read`]
//!   at once, but it is **not durable** until a later [`Store::sync`] returns `Ok`.
//! * [`Store::sync`] makes everything appended (by any thread, to any log) before the
//!   call started durable on disk. It is the only call that fsyncs, and it is blocking.
//! * The broker calls `sync` from a single flusher task that gathers all pending
//!   produce requests first (group commit): N concurrent producers share one fsync.
//!   Produce requests with `acks` 1 or -1 are answered only after the `sync` that
//!   covers their batch, and the high watermark consumers see only moves to offsets
//!   that a `sync` covered. So a consumer never reads data that a crash could take back.
//! * After a crash, a log holds a prefix of what was appended: at least everything a
//!   completed `sync` covered.
//!
//! Three implementations: [`segments::SegmentStore`] (the default: segment files for the
//! logs, sled for metadata), [`sled::SledStore`] (everything in sled, `--storage-format sled`)
//! and [`memory::MemoryStore`] (tests). [`open`] picks the durable one a data directory uses.

pub mod memory;
pub mod meta;
pub mod segments;
pub mod sled;
pub mod txn_index;

use std::sync::Arc;

use bytes::Bytes;

use crate::batch::BatchInfo;
use crate::error::StorageError;
use crate::producer_state::{self, Check, ProducerEntry};
use txn_index::{SharedTxnIndex, TxnChange};

/// A metadata record: key and value.
pub type MetaRecord = (Vec<u8>, Vec<u8>);

/// Persistent description of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516), random at creation.
    pub id: [u8; 16],
    /// Number of partitions.
    pub partitions: i32,
}

/// Result of [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this base offset.
    At(i64),
    /// An idempotent producer's retry of a batch already stored at this base offset.
    Duplicate(i64),
    /// Refused by the idempotent-producer checks.
    Rejected(kafka_protocol::ResponseError),
}

/// One partition's log of RecordBatch v2 batches.
pub trait Log: Send + Sync {
    /// Appends one validated batch: rewrites its `baseOffset` to the log end offset.
    /// Readable at once, durable after the next [`Store::sync`]. Batches of idempotent
    /// producers (`producer_id >= 0`) are checked against the producer's sequence state
    /// first ([`crate::producer_state`]); that state is stored atomically with the batch.
    fn append(&self, batch: &[u8], info: &BatchInfo) -> Result<Appended, StorageError>;

    /// Batches covering offsets from `offset` (the first may start before it) up to but not
    /// including `end`, at most `max_bytes` in total, except that the first batch is always
    /// returned whole so that a consumer can make progress (KIP-74). Each item holds one or
    /// more whole batches back to back, in offset order.
    fn read(&self, offset: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError>;

    /// Offset the next appended record will get.
    fn log_end_offset(&self) -> i64;

    /// First offset still stored.
    fn log_start_offset(&self) -> i64;

    /// `(offset, timestamp)` of the first record with a timestamp `>= ts`, or `None` if
    /// every record is older.
    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError>;

    /// `(offset, timestamp)` of the record with the largest timestamp (the first such), or
    /// `None` for an empty log (ListOffsets MAX_TIMESTAMP).
    fn max_timestamp(&self) -> Result<Option<(i64, i64)>, StorageError> {
        match self.largest_timestamp() {
            Some(ts) => self.offset_for_timestamp(ts),
            None => Ok(None),
        }
    }

    /// The largest record timestamp stored, from the log's time index.
    fn largest_timestamp(&self) -> Option<i64>;

    /// The log's transaction index: open transactions and aborted ranges, kept with every
    /// append and recovered with the log.
    fn txn_index(&self) -> &SharedTxnIndex;

    /// The producers with state in this log (DescribeProducers).
    fn producers(&self) -> Vec<(i64, ProducerEntry)>;

    /// Moves the log start to `offset` (clamped to the log end, never backwards, never past
    /// the first offset of an open transaction) and drops what lies wholly below it; reads
    /// below the start are then out of range. Returns the new log start. Durable after the
    /// next [`Store::sync`] (the segment format makes it durable before returning).
    fn delete_records(&self, offset: i64) -> Result<i64, StorageError>;

    /// The segments, oldest first, the last being the active one (appended to), for
    /// retention; empty for formats without segments (sled, memory: no retention).
    fn segments(&self) -> Vec<SegmentInfo> {
        Vec::new()
    }

    /// Sets when the active segment closes: past `bytes` (`segment.bytes`) or `ms` old
    /// (`segment.ms`). Formats without segments ignore it.
    fn set_roll_limits(&self, _bytes: u64, _ms: Option<i64>) {}

    /// One compaction pass ([`crate::cleaner`]) if the log is dirty enough; `None` when
    /// there was nothing to do, or for formats that do not compact (sled, memory).
    /// Offsets, the log start and the end stay; what a reader of the whole log ends up
    /// with for each key stays. Crash-safe: after a crash the log holds either every
    /// segment as it was or as it became.
    fn compact(&self, _job: &CompactJob) -> Result<Option<CompactReport>, StorageError> {
        Ok(None)
    }
}

/// What a compaction pass is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct CompactJob {
    /// The topic's compaction settings.
    pub policy: crate::cleaner::Policy,
    /// Wall-clock time of the pass.
    pub now_ms: i64,
    /// The partition's high watermark: nothing at or above it is cleaned.
    pub high_watermark: i64,
    /// Memory for the key map.
    pub map_budget: usize,
    /// Largest inflated records section read; a batch past it is kept whole.
    pub decode_limit: usize,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompactReport {
    /// Bytes of the segments read.
    pub bytes_read: u64,
    /// Bytes of the segments written (or kept as they were).
    pub bytes_written: u64,
    /// Segments replaced.
    pub segments: usize,
    /// The first offset whose key is not in the map: the next pass's dirty start.
    pub mapped_to: i64,
    /// Keys in the map.
    pub map_keys: usize,
    /// Bytes the map took.
    pub map_bytes: usize,
    /// Records read and removed.
    pub stats: crate::cleaner::Stats,
}

/// A segment, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset.
    pub base: i64,
    /// First offset of the next segment (the log end for the active one).
    pub next: i64,
    /// Size in bytes.
    pub bytes: u64,
    /// Largest record timestamp (-1 when unknown).
    pub max_timestamp: i64,
}

#[cfg(test)]
impl SegmentInfo {
    /// A segment for planner tests.
    pub(crate) fn of(base: i64, next: i64, bytes: u64, max_timestamp: i64) -> Self {
        SegmentInfo {
            base,
            next,
            bytes,
            max_timestamp,
        }
    }
}

/// The set of logs plus broker metadata, persisted together.
pub trait Store: Send + Sync {
    /// The cluster id, generated once and kept for the life of the data directory.
    fn cluster_id(&self) -> String;
    /// Every topic that exists (recovered after a restart).
    fn topics(&self) -> Result<Vec<TopicMeta>, StorageError>;
    /// Records a new topic. Its logs are opened with [`Store::open_log`].
    fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError>;
    /// Opens (creating if needed) the log of one partition.
    fn open_log(&self, topic: &str, partition: i32) -> Result<Arc<dyn Log>, StorageError>;
    /// Removes a topic and all its data.
    fn delete_topic(&self, meta: &TopicMeta) -> Result<(), StorageError>;
    /// Makes every earlier append and metadata write durable (fsync). Blocking.
    fn sync(&self) -> Result<(), StorageError>;
    /// Writes a metadata record (committed offsets, producer ids...). Durable after `sync`.
    fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Removes a metadata record.
    fn meta_remove(&self, key: &[u8]) -> Result<(), StorageError>;
    /// All metadata records whose key starts with `prefix`, in key order.
    fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<MetaRecord>, StorageError>;
}

pub use crate::config::StorageFormat;

/// Opens the durable store of data directory `dir`. A new directory gets `format`; an
/// existing one keeps the format it was created with (one from before formats were
/// recorded, which has topics, is `sled`).
pub fn open(
    dir: &std::path::Path,
    cache_bytes: u64,
    format: StorageFormat,
    segment_bytes: u64,
) -> Result<Arc<dyn Store>, StorageError> {
    let meta = meta::SledMeta::open(dir, cache_bytes)?;
    let used = match meta.format()? {
        Some(name) => StorageFormat::from_name(&name).ok_or_else(|| StorageError::Corrupt {
            what: "meta/storage_format".into(),
            detail: format!("unknown storage format {name:?}"),
        })?,
        None => {
            let legacy = sled::holds_logs(&meta) || !meta.topics()?.is_empty();
            let used = if legacy { StorageFormat::Sled } else { format };
            meta.set_format(used.name())?;
            used
        }
    };
    if used != format {
        tracing::warn!(
            data_dir = %dir.display(),
            "this data directory keeps its {} storage format; --storage-format {} applies to new data directories",
            used.name(),
            format.name()
        );
    }
    Ok(match used {
        StorageFormat::Sled => {
            let store: sled::SledStore = meta::Durable::new(meta, sled::SledLogs::default())?;
            Arc::new(store)
        }
        StorageFormat::Segments => {
            Arc::new(segments::SegmentStore::open(meta, dir, segment_bytes)?)
        }
    })
}

/// What appending batch `b` at `base` changes, decided under a log's append lock: the
/// producer's new state (for batches with a producer id) and the transaction index's
/// change. `Err(answer)` means answer without appending (duplicate or rejection).
pub(crate) fn admit(
    entry: Option<&ProducerEntry>,
    txns: &SharedTxnIndex,
    b: &[u8],
    info: &BatchInfo,
    base: i64,
) -> Result<(Option<ProducerEntry>, TxnChange), Appended> {
    if info.producer_id < 0 {
        return Ok((None, TxnChange::None));
    }
    let producer = idempotence(entry, info, base)?;
    Ok((Some(producer), txns.change(base, info, marker(b, info))))
}

/// The transaction marker batch `b` is, if it is a producer's control batch (the only
/// markers the transaction index and the producers' state look at).
pub(crate) fn marker(b: &[u8], info: &BatchInfo) -> Option<crate::control::Marker> {
    if info.control && info.producer_id >= 0 {
        crate::control::marker_of(b)
    } else {
        None
    }
}

/// Idempotence decision for a batch that would be stored at `base`: `Ok(entry)` means
/// append it and keep `entry` as the producer's new state; `Err(answer)` means answer
/// without appending (duplicate or rejection). A transaction marker carries no sequence
/// numbers: it only moves the producer to its epoch.
pub(crate) fn idempotence(
    entry: Option<&ProducerEntry>,
    info: &BatchInfo,
    base: i64,
) -> Result<ProducerEntry, Appended> {
    if info.control {
        let mut updated = entry.cloned().unwrap_or_default();
        updated.mark(info.producer_epoch);
        return Ok(updated);
    }
    let last = producer_state::last_seq(info.base_sequence, info.record_count);
    match producer_state::check(entry, info.producer_epoch, info.base_sequence, last) {
        Check::Append => {
            let mut updated = entry.cloned().unwrap_or_default();
            updated.record(info.producer_epoch, info.base_sequence, last, base);
            Ok(updated)
        }
        Check::Duplicate(at) => Err(Appended::Duplicate(at)),
        Check::Reject(code) => Err(Appended::Rejected(code)),
    }
}

/// Where a log start moved to `offset` lands: not below `current`, not past `end`, not past
/// the first offset of an open transaction (its records must stay for its markers).
pub(crate) fn trim_target(current: i64, offset: i64, end: i64, first_unstable: Option<i64>) -> i64 {
    let limit = first_unstable.map_or(end, |u| u.min(end));
    offset.min(limit).max(current)
}

/// Shared read logic over an ordered map of `base offset -> batch`, used by both stores.
/// `batches` yields `(base_offset, batch)` from the batch that contains `offset` onward.
pub(crate) fn collect_batches(
    batches: impl Iterator<Item = Result<(i64, Bytes), StorageError>>,
    offset: i64,
    end: i64,
    max_bytes: usize,
) -> Result<Vec<Bytes>, StorageError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for item in batches {
        let (base, batch) = item?;
        if base >= end {
            break;
        }
        let last = crate::batch::info(&batch)
            .map(|i| base + i64::from(i.last_offset_delta))
            .unwrap_or(base);
        if last < offset {
            continue;
        }
        if !out.is_empty() && total + batch.len() > max_bytes {
            break;
        }
        total += batch.len();
        out.push(batch);
        if total >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// fsync of a directory, so that the files created in it, and renames and removals in it,
/// survive a power cut.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StorageError::Io {
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
pub(crate) mod contract {
    //! The same behavioural tests run against every [`Store`] implementation.
    use super::*;
    use crate::batch::tests::make_batch;

    /// The batches of a [`Log::read`], one per item.
    pub(crate) fn split(chunks: Vec<Bytes>) -> Vec<Bytes> {
        let mut out = Vec::new();
        for mut chunk in chunks {
            while !chunk.is_empty() {
                let len = 12 + i32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
                out.push(chunk.split_to(len as usize));
            }
        }
        out
    }

    pub(crate) fn append(log: &dyn Log, b: &[u8]) -> Appended {
        let info = crate::batch::validate(b, 1 << 20).unwrap();
        log.append(b, &info).unwrap()
    }

    /// A batch from idempotent producer `pid` with sequence numbers from `seq`.
    pub(crate) fn idempotent_batch(values: &[&[u8]], pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
        crate::batch::uncompressed_batch(values, 0, 0, (pid, epoch, seq))
    }

    pub(crate) fn idempotent_appends(store: &dyn Store) -> std::sync::Arc<dyn Log> {
        let meta = TopicMeta {
            name: "idem".into(),
            id: [9; 16],
            partitions: 1,
        };
        store.create_topic(&meta).unwrap();
        let log = store.open_log("idem", 0).unwrap();
        assert_eq!(
            append(&*log, &idempotent_batch(&[b"a", b"b"], 7, 0, 0)),
            Appended::At(0)
        );
        assert_eq!(
            append(&*log, &idempotent_batch(&[b"c"], 7, 0, 2)),
            Appended::At(2)
        );
        // a retry of the first batch is not stored again
        assert_eq!(
            append(&*log, &idempotent_batch(&[b"a", b"b"], 7, 0, 0)),
            Appended::Duplicate(0)
        );
        // a gap is refused
        assert_eq!(
            append(&*log, &idempotent_batch(&[b"x"], 7, 0, 9)),
            Appended::Rejected(kafka_protocol::ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(log.log_end_offset(), 3);
        log
    }

    /// Topics, batches, metadata, the cluster id and producer state survive closing and
    /// reopening the store (`open` opens the same directory each time).
    pub(crate) fn survives_reopen(open: &dyn Fn() -> Box<dyn Store>) {
        let meta = TopicMeta {
            name: "orders".into(),
            id: [1; 16],
            partitions: 3,
        };
        let cluster_id = {
            let store = open();
            store.create_topic(&meta).unwrap();
            let log = store.open_log("orders", 2).unwrap();
            append(&*log, &make_batch(&[b"a", b"b"], 1, 1));
            append(&*log, &make_batch(&[b"c"], 3, 0));
            idempotent_appends(&*store);
            store.meta_put(b"offsets/g", b"42").unwrap();
            store.sync().unwrap();
            store.cluster_id()
        };
        let store = open();
        assert_eq!(store.cluster_id(), cluster_id);
        assert_eq!(store.topics().unwrap()[1], meta);
        let log = store.open_log("orders", 2).unwrap();
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(append(&*log, &make_batch(&[b"d"], 4, 0)), Appended::At(3));
        let all = split(log.read(0, 4, 1 << 20).unwrap());
        assert_eq!(all.len(), 3);
        assert!(all
            .iter()
            .all(|b| crate::batch::validate(b, 1 << 20).is_ok()));
        assert_eq!(log.offset_for_timestamp(2).unwrap(), Some((1, 2)));
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

    /// A transactional batch of producer `pid` at `epoch` with sequence `seq`.
    pub(crate) fn txn_batch(value: &[u8], pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
        let mut b = idempotent_batch(&[value], pid, epoch, seq);
        crate::batch::set_transactional(&mut b);
        b
    }

    /// Markers and the transaction index survive closing and reopening the store: an
    /// aborted range stays listed, an open transaction still holds the stable offset, the
    /// marker's epoch still fences the producer's older epoch.
    pub(crate) fn transactions_survive_reopen(open: &dyn Fn() -> Box<dyn Store>) {
        use crate::control::{marker_batch, Marker};
        use txn_index::AbortedTxn;
        let meta = TopicMeta {
            name: "tx".into(),
            id: [4; 16],
            partitions: 1,
        };
        {
            let store = open();
            store.create_topic(&meta).unwrap();
            let log = store.open_log("tx", 0).unwrap();
            assert_eq!(append(&*log, &txn_batch(b"a", 5, 0, 0)), Appended::At(0));
            assert_eq!(append(&*log, &txn_batch(b"b", 6, 0, 0)), Appended::At(1));
            assert_eq!(append(&*log, &txn_batch(b"c", 5, 0, 1)), Appended::At(2));
            let abort = marker_batch(5, 1, Marker::Abort, 0);
            let info = crate::batch::info(&abort).unwrap();
            assert_eq!(log.append(&abort, &info).unwrap(), Appended::At(3));
            assert_eq!(log.txn_index().first_unstable(), Some(1));
            store.sync().unwrap();
        }
        let store = open();
        let log = store.open_log("tx", 0).unwrap();
        assert_eq!(log.log_end_offset(), 4);
        let index = log.txn_index();
        assert_eq!(index.first_unstable(), Some(1));
        let aborted = AbortedTxn {
            producer_id: 5,
            first_offset: 0,
            last_offset: 3,
        };
        assert_eq!(index.aborted(0, 4), vec![aborted]);
        // the abort marker moved producer 5 to epoch 1: epoch 0 is fenced
        assert_eq!(
            append(&*log, &txn_batch(b"d", 5, 0, 2)),
            Appended::Rejected(kafka_protocol::ResponseError::InvalidProducerEpoch)
        );
        let commit = marker_batch(6, 0, Marker::Commit, 0);
        let info = crate::batch::info(&commit).unwrap();
        assert_eq!(log.append(&commit, &info).unwrap(), Appended::At(4));
        assert_eq!(log.txn_index().first_unstable(), None);
        assert_eq!(log.txn_index().aborted(0, 5), vec![aborted]);
    }

    /// `delete_records` moves the log start durably (through reopening), never backwards,
    /// never past the end or an open transaction; reads from the start still work.
    pub(crate) fn records_deleted_survive_reopen(open: &dyn Fn() -> Box<dyn Store>) {
        let meta = TopicMeta {
            name: "trim".into(),
            id: [5; 16],
            partitions: 1,
        };
        {
            let store = open();
            store.create_topic(&meta).unwrap();
            let log = store.open_log("trim", 0).unwrap();
            for i in 0..50u8 {
                let value = vec![b'a' + i % 26; 40];
                append(&*log, &make_batch(&[&value, &value], 1000, 1));
            }
            assert_eq!(log.log_end_offset(), 100);
            assert_eq!(log.delete_records(31).unwrap(), 31);
            assert_eq!(log.delete_records(10).unwrap(), 31, "never backwards");
            assert_eq!(log.log_start_offset(), 31);
            let first = split(log.read(31, 100, 1 << 20).unwrap());
            assert_eq!(crate::batch::base_offset(&first[0]), Some(30));
            store.sync().unwrap();
        }
        let store = open();
        let log = store.open_log("trim", 0).unwrap();
        assert_eq!(log.log_start_offset(), 31);
        assert_eq!(log.log_end_offset(), 100);
        assert_eq!(split(log.read(31, 100, 1 << 20).unwrap()).len(), 35);
        // an open transaction holds the start at its first offset
        assert_eq!(append(&*log, &txn_batch(b"t", 9, 0, 0)), Appended::At(100));
        append(&*log, &make_batch(&[b"x"], 1000, 1));
        assert_eq!(log.delete_records(500).unwrap(), 100);
        let commit = crate::control::marker_batch(9, 0, crate::control::Marker::Commit, 0);
        let info = crate::batch::info(&commit).unwrap();
        log.append(&commit, &info).unwrap();
        assert_eq!(log.delete_records(500).unwrap(), 103, "clamped to the end");
    }

    /// `log` answers every read and time lookup exactly as an in-memory log holding the
    /// same batches: many batches of varied sizes and non-monotonic timestamps.
    pub(crate) fn reads_like_memory(log: &dyn Log) {
        let mem = super::memory::MemoryLog::default();
        let mut end = 0i64;
        for i in 0..300u32 {
            let n = 1 + (i * 7 % 5) as usize;
            let value = vec![b'a' + (i % 26) as u8; (i as usize * 37) % 700];
            let values: Vec<&[u8]> = vec![&value; n];
            let ts = 1000 + i64::from(i) * 10 - if i % 4 == 0 { 25 } else { 0 };
            let b = make_batch(&values, ts, 3);
            assert_eq!(append(log, &b), append(&mem, &b));
            end += n as i64;
        }
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.log_end_offset(), mem.log_end_offset());
        for offset in (0..=end).step_by(7) {
            for max_bytes in [1, 500, 5000, 70_000, usize::MAX] {
                for stop in [end, offset + 3] {
                    let got = split(log.read(offset, stop, max_bytes).unwrap());
                    let want = split(mem.read(offset, stop, max_bytes).unwrap());
                    assert_eq!(got, want, "read({offset}, {stop}, {max_bytes})");
                }
            }
        }
        let max = log.max_timestamp().unwrap();
        assert!(max.is_some());
        assert_eq!(max, mem.max_timestamp().unwrap(), "max_timestamp");
        for ts in (900..4100).step_by(13) {
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                mem.offset_for_timestamp(ts).unwrap(),
                "offset_for_timestamp({ts})"
            );
        }
    }

    pub(crate) fn append_read_and_offsets(store: &dyn Store) {
        let meta = TopicMeta {
            name: "t".into(),
            id: [7; 16],
            partitions: 2,
        };
        store.create_topic(&meta).unwrap();
        let log = store.open_log("t", 1).unwrap();
        assert_eq!(log.log_end_offset(), 0);
        let b1 = make_batch(&[b"a", b"b", b"c"], 1000, 10);
        let b2 = make_batch(&[b"d"], 2000, 0);
        assert_eq!(append(&*log, &b1), Appended::At(0));
        assert_eq!(append(&*log, &b2), Appended::At(3));
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.log_start_offset(), 0);

        let all = split(log.read(0, 4, 1 << 20).unwrap());
        assert_eq!(all.len(), 2);
        assert_eq!(crate::batch::base_offset(&all[1]), Some(3));
        // offset inside the first batch returns that batch
        let mid = split(log.read(2, 4, 1 << 20).unwrap());
        assert_eq!(crate::batch::base_offset(&mid[0]), Some(0));
        // max_bytes smaller than one batch still returns one batch
        assert_eq!(split(log.read(0, 4, 1).unwrap()).len(), 1);
        // end bounds what is visible
        assert_eq!(split(log.read(0, 3, 1 << 20).unwrap()).len(), 1);
        assert!(split(log.read(4, 4, 1 << 20).unwrap()).is_empty());

        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
        assert_eq!(log.offset_for_timestamp(1015).unwrap(), Some((2, 1020)));
        assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((3, 2000)));
        assert_eq!(log.offset_for_timestamp(2001).unwrap(), None);

        assert_eq!(store.topics().unwrap(), vec![meta.clone()]);
        store.meta_put(b"k/2", b"two").unwrap();
        store.meta_put(b"k/1", b"one").unwrap();
        store.meta_put(b"other", b"x").unwrap();
        store.meta_remove(b"other").unwrap();
        assert_eq!(
            store.meta_scan(b"k/").unwrap(),
            vec![
                (b"k/1".to_vec(), b"one".to_vec()),
                (b"k/2".to_vec(), b"two".to_vec())
            ]
        );
        store.sync().unwrap();
        store.delete_topic(&meta).unwrap();
        assert!(store.topics().unwrap().is_empty());
        let fresh = store.open_log("t", 1).unwrap();
        assert_eq!(fresh.log_end_offset(), 0);
    }
}
