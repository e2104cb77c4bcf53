//! The default durable [`Store`]: partition logs in append-only segment files, metadata in
//! sled ([`SledMeta`]).
//!
//! Layout of a data directory: sled's files (the `meta` tree: cluster id, topics, committed
//! offsets, producer ids) and `logs/<topic>-<partition>/<base offset, 20 digits>.log`.
//! A segment file is the partition's record batches back to back, exactly as they are
//! served (RecordBatch v2, `baseOffset` set), so each byte is written once and read back
//! with one `pread` per fetch. Nothing else is stored per batch: the batch headers carry
//! everything the broker needs, so at open the log rebuilds from them a sparse in-memory
//! index (one entry per ~4 KiB: first offset, file position, max timestamp of the entries'
//! batches) and the idempotent producers' sequence state.
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
//!   acknowledged. A bad batch in an earlier segment is corruption of synced data: the
//!   store refuses to open and names the file and position.
//! * After an fsync error the log refuses writes until the broker restarts: Linux may have
//!   dropped the pages that failed, so a later fsync could succeed without them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::meta::{Durable, LogSet, SledMeta};
use super::sync_dir;
use super::{idempotence, Appended, Log};
use crate::batch::{self, be_i32, be_i64, BatchInfo, HEADER_LEN};
use crate::error::StorageError;
use crate::producer_state::{self, ProducerEntry};

/// Bytes of log between two entries of the sparse index (Kafka's `index.interval.bytes`).
const INDEX_INTERVAL: u64 = 4096;
/// Most bytes read ahead in one `pread`.
const MAX_READ_AHEAD: usize = 8 * 1024 * 1024;
/// Read-ahead when walking batch headers at open.
const SCAN_READ_AHEAD: usize = 256 * 1024;
const LOGS_DIR: &str = "logs";
const SUFFIX: &str = ".log";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_name(base: i64) -> String {
    format!("{base:020}{SUFFIX}")
}

/// One entry of the sparse index: the batches from `pos` up to the next entry's.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    /// Base offset of the first batch.
    offset: i64,
    /// Its position in the segment file.
    pos: u64,
    /// Largest max timestamp of the entry's batches.
    max_ts: i64,
}

struct Segment {
    base: i64,
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of whole batches in the file (the log end within this segment).
    end: u64,
    index: Vec<IndexEntry>,
    /// Bytes since the last index entry started.
    since_index: u64,
}

impl Segment {
    fn index_batch(&mut self, base: i64, pos: u64, len: u64, max_ts: i64) {
        match self.index.last_mut() {
            Some(last) if self.since_index < INDEX_INTERVAL => {
                last.max_ts = last.max_ts.max(max_ts);
            }
            _ => {
                self.index.push(IndexEntry {
                    offset: base,
                    pos,
                    max_ts,
                });
                self.since_index = 0;
            }
        }
        self.since_index += len;
        self.end = pos + len;
    }
}

/// Reads byte ranges of one segment file, a large `pread` at a time.
struct Cursor<'a> {
    file: &'a File,
    path: &'a Path,
    /// End of the readable bytes.
    end: u64,
    buf: Bytes,
    at: u64,
    /// How many times `buf` was filled: tells whether two slices share one buffer.
    fills: u64,
}

impl<'a> Cursor<'a> {
    fn new(file: &'a File, path: &'a Path, end: u64) -> Self {
        Cursor {
            file,
            path,
            end,
            buf: Bytes::new(),
            at: 0,
            fills: 0,
        }
    }

    /// Bytes `[pos, pos + n)`, or `None` past the end; reads `read_ahead` bytes at once
    /// (capped at the end) when they are not buffered.
    fn get(&mut self, pos: u64, n: u64, read_ahead: usize) -> Result<Option<Bytes>, StorageError> {
        if pos.checked_add(n).is_none_or(|e| e > self.end) {
            return Ok(None);
        }
        let buffered = self.at + self.buf.len() as u64;
        if pos < self.at || pos + n > buffered {
            let len = (n.max(read_ahead as u64)).min(self.end - pos) as usize;
            self.buf = Bytes::from(read_exact_at(self.file, pos, len).map_err(io_err(self.path))?);
            self.at = pos;
            self.fills += 1;
        }
        let s = (pos - self.at) as usize;
        Ok(Some(self.buf.slice(s..s + n as usize)))
    }
}

/// `len` bytes of `file` from `pos`, read into a fresh buffer without zeroing it first
/// (a fetch reads up to 8 MiB; zeroing it cost as much as the read).
fn read_exact_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut v: Vec<u8> = Vec::with_capacity(len);
    while v.len() < len {
        let filled = v.len();
        let offset = libc::off_t::try_from(pos + filled as u64)
            .map_err(|_| std::io::Error::other("file position beyond off_t"))?;
        // SAFETY: the destination is the vector's spare capacity, `len - filled` bytes
        // starting right after its `filled` initialised bytes; pread writes at most that.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                v.as_mut_ptr().add(filled).cast(),
                len - filled,
                offset,
            )
        };
        match n {
            n if n > 0 => {
                // SAFETY: pread initialised the next `n` bytes (n <= len - filled).
                unsafe { v.set_len(filled + n as usize) };
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(v)
}

/// A batch header as found at a position of a segment.
struct Header {
    base: i64,
    /// Whole batch length, header included.
    len: u64,
    info: BatchInfo,
}

/// Reads and sanity-checks the header at `pos`: `None` if it is cut off or not a batch.
fn header(cur: &mut Cursor, pos: u64, read_ahead: usize) -> Result<Option<Header>, StorageError> {
    let Some(h) = cur.get(pos, HEADER_LEN as u64, read_ahead)? else {
        return Ok(None);
    };
    let batch_length = be_i32(&h, 8);
    if batch_length < (HEADER_LEN - 12) as i32 || !batch::is_v2(&h) {
        return Ok(None);
    }
    let Some(info) = batch::info(&h) else {
        return Ok(None);
    };
    Ok(Some(Header {
        base: be_i64(&h, 0),
        len: 12 + batch_length as u64,
        info,
    }))
}

struct Writer {
    next: i64,
    producers: HashMap<i64, ProducerEntry>,
    active: Arc<File>,
    active_path: PathBuf,
    /// Set when an fsync failed: no more writes until restart.
    failed: Option<String>,
}

/// One partition's log: a directory of segment files.
pub struct SegmentLog {
    name: String,
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Segment>>,
    end_offset: AtomicI64,
    start_offset: i64,
    /// Written since the last sync.
    dirty: AtomicBool,
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), recovering it as the module docs say.
    pub fn open(dir: PathBuf, name: String, segment_bytes: u64) -> Result<Self, StorageError> {
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let file_name = entry.file_name();
            let Some(base) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            found.push((base, entry.path()));
        }
        found.sort();
        if found.is_empty() {
            let path = dir.join(segment_name(0));
            File::create(&path).map_err(io_err(&path))?;
            sync_dir(&dir)?;
            found.push((0, path));
        }
        let count = found.len();
        let mut segments = Vec::with_capacity(count);
        let mut producers: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut next = found[0].0;
        for (i, (base, path)) in found.into_iter().enumerate() {
            let last = i + 1 == count;
            if base != next {
                return Err(StorageError::Corrupt {
                    what: path.display().to_string(),
                    detail: format!(
                        "segment starts at offset {base}, the log before it ends at {next}"
                    ),
                });
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let len = file.metadata().map_err(io_err(&path))?.len();
            let mut segment = Segment {
                base,
                file: Arc::new(file),
                path,
                end: 0,
                index: Vec::new(),
                since_index: 0,
            };
            let problem = scan(&mut segment, len, last, &mut next, &mut producers)?;
            if let Some(problem) = problem {
                if !last {
                    return Err(StorageError::Corrupt {
                        what: segment.path.display().to_string(),
                        detail: format!("at byte {}: {problem}", segment.end),
                    });
                }
                tracing::warn!(
                    segment = %segment.path.display(),
                    at = segment.end,
                    dropped_bytes = len - segment.end,
                    "cutting the unacknowledged tail of a log after a crash: {problem}"
                );
                segment
                    .file
                    .set_len(segment.end)
                    .and_then(|()| segment.file.sync_all())
                    .map_err(io_err(&segment.path))?;
            }
            segments.push(segment);
        }
        let start_offset = segments[0].base;
        let active = segments[count - 1].file.clone();
        let active_path = segments[count - 1].path.clone();
        Ok(SegmentLog {
            name,
            dir,
            segment_bytes,
            writer: Mutex::new(Writer {
                next,
                producers,
                active,
                active_path,
                failed: None,
            }),
            segments: RwLock::new(segments),
            end_offset: AtomicI64::new(next),
            start_offset,
            dirty: AtomicBool::new(false),
        })
    }

    /// Closes the full active segment and starts one at `base`. The finished segment is
    /// made durable first, so only the last segment can ever hold a torn write.
    fn roll(&self, w: &mut Writer, base: i64) -> Result<(), StorageError> {
        if let Err(e) = w.active.sync_data() {
            w.failed = Some(e.to_string());
            return Err(StorageError::Failed {
                what: self.name.clone(),
                detail: e.to_string(),
            });
        }
        let path = self.dir.join(segment_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        let file = Arc::new(file);
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Segment {
                base,
                file: file.clone(),
                path: path.clone(),
                end: 0,
                index: Vec::new(),
                since_index: 0,
            });
        w.active = file;
        w.active_path = path;
        Ok(())
    }

    /// `fdatasync`s the active segment if anything was written since the last sync.
    fn sync(&self) -> Result<(), StorageError> {
        let active = {
            let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(detail) = &w.failed {
                return Err(StorageError::Failed {
                    what: self.name.clone(),
                    detail: detail.clone(),
                });
            }
            if !self.dirty.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            w.active.clone()
        };
        if let Err(e) = active.sync_data() {
            self.dirty.store(true, Ordering::Release);
            self.writer.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(e.to_string());
            return Err(StorageError::Failed {
                what: self.name.clone(),
                detail: e.to_string(),
            });
        }
        Ok(())
    }

    /// Index of the segment holding `offset` (segments are only ever added at the end, so
    /// indexes stay valid).
    fn segment_holding(&self, offset: i64) -> usize {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1)
    }

    /// Segment `i` as `(file, path, position, end)`: where a read of `offset` starts in it
    /// (by the index if the offset is in it, else 0) and where its batches end. `None` past
    /// the last segment. One lookup per segment a read touches.
    fn segment_for_read(&self, i: usize, offset: i64) -> Option<(Arc<File>, PathBuf, u64, u64)> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let s = segments.get(i)?;
        let e = s.index.partition_point(|e| e.offset <= offset);
        let pos = s.index.get(e.wrapping_sub(1)).map_or(0, |e| e.pos);
        Some((s.file.clone(), s.path.clone(), pos, s.end))
    }
}

/// Walks the batches of `segment` (file length `len`) from its start, filling its index and
/// the producers' state, advancing `next`. With `verify`, each batch's CRC is checked too.
/// Stops at the first bad or cut-off batch and says what was wrong with it;
/// `segment.end` is then where the good batches end.
fn scan(
    segment: &mut Segment,
    len: u64,
    verify: bool,
    next: &mut i64,
    producers: &mut HashMap<i64, ProducerEntry>,
) -> Result<Option<String>, StorageError> {
    let file = segment.file.clone();
    let path = segment.path.clone();
    let mut cur = Cursor::new(&file, &path, len);
    let mut pos = 0u64;
    while pos < len {
        let Some(h) = header(&mut cur, pos, SCAN_READ_AHEAD)? else {
            return Ok(Some("no valid batch header".into()));
        };
        if h.base != *next {
            return Ok(Some(format!(
                "batch has offset {}, expected {}",
                h.base, *next
            )));
        }
        if h.info.last_offset_delta < 0 {
            return Ok(Some("negative last offset delta".into()));
        }
        if verify {
            let read_ahead = SCAN_READ_AHEAD.max(h.len as usize);
            let Some(whole) = cur.get(pos, h.len, read_ahead)? else {
                return Ok(Some(format!("batch of {} bytes is cut off", h.len)));
            };
            let (stored, actual) = batch::crcs(&whole);
            if stored != actual {
                return Ok(Some("CRC mismatch".into()));
            }
        } else if pos + h.len > len {
            return Ok(Some(format!("batch of {} bytes is cut off", h.len)));
        }
        let info = h.info;
        if info.producer_id >= 0 {
            let last = producer_state::last_seq(info.base_sequence, info.record_count);
            producers.entry(info.producer_id).or_default().record(
                info.producer_epoch,
                info.base_sequence,
                last,
                h.base,
            );
        }
        segment.index_batch(h.base, pos, h.len, info.max_timestamp);
        *next = h.base + i64::from(info.last_offset_delta) + 1;
        pos += h.len;
    }
    Ok(None)
}

impl Log for SegmentLog {
    fn append(&self, b: &[u8], info: &BatchInfo) -> Result<Appended, StorageError> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *guard;
        if let Some(detail) = &w.failed {
            return Err(StorageError::Failed {
                what: self.name.clone(),
                detail: detail.clone(),
            });
        }
        let base = w.next;
        let mut producer = None;
        if info.producer_id >= 0 {
            match idempotence(w.producers.get(&info.producer_id), info, base) {
                Ok(entry) => producer = Some(entry),
                Err(answer) => return Ok(answer),
            }
        }
        let len = b.len() as u64;
        let pos = {
            let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
            segments.last().map_or(0, |s| s.end)
        };
        let pos = if pos > 0 && pos + len > self.segment_bytes {
            self.roll(w, base)?;
            0
        } else {
            pos
        };
        // The stored batch differs from the received one only in its first 16 bytes (as
        // in [`batch::with_base_offset`]: base offset, and partition leader epoch 0). A
        // failed write leaves the log end where it was: the next batch overwrites the rest.
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&base.to_be_bytes());
        head[8..12].copy_from_slice(&b[8..12]);
        w.active
            .write_all_at(&head, pos)
            .and_then(|()| w.active.write_all_at(&b[16..], pos + 16))
            .map_err(io_err(&w.active_path))?;
        {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = segments.last_mut() {
                s.index_batch(base, pos, len, info.max_timestamp);
            }
        }
        if let Some(entry) = producer {
            w.producers.insert(info.producer_id, entry);
        }
        w.next = base + i64::from(info.last_offset_delta) + 1;
        self.end_offset.store(w.next, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(Appended::At(base))
    }

    fn read(&self, offset: i64, end: i64, max_bytes: usize) -> Result<Vec<Bytes>, StorageError> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        // Batches read back to back from one buffer go out as one slice, so the fetch
        // response needs no copy to join them: (segment, buffer fill, first byte).
        let mut run: Option<(usize, u64, u64)> = None;
        let mut seg = self.segment_holding(offset);
        while let Some((file, path, mut pos, seg_end)) = self.segment_for_read(seg, offset) {
            let mut cur = Cursor::new(&file, &path, seg_end);
            while pos < seg_end {
                let read_ahead = (max_bytes.saturating_sub(total))
                    .saturating_add(INDEX_INTERVAL as usize)
                    .min(MAX_READ_AHEAD);
                let h =
                    header(&mut cur, pos, read_ahead)?.ok_or_else(|| StorageError::Corrupt {
                        what: path.display().to_string(),
                        detail: format!("no valid batch header at byte {pos}"),
                    })?;
                if h.base >= end {
                    return Ok(out);
                }
                let last = h.base + i64::from(h.info.last_offset_delta);
                if last < offset {
                    pos += h.len;
                    continue;
                }
                if !out.is_empty() && total.saturating_add(h.len as usize) > max_bytes {
                    return Ok(out);
                }
                let whole =
                    cur.get(pos, h.len, read_ahead)?
                        .ok_or_else(|| StorageError::Corrupt {
                            what: path.display().to_string(),
                            detail: format!("batch at byte {pos} runs past the segment end"),
                        })?;
                total += whole.len();
                match run {
                    Some((s, fills, start)) if s == seg && fills == cur.fills => {
                        out.pop();
                        let from = (start - cur.at) as usize;
                        out.push(cur.buf.slice(from..(pos + h.len - cur.at) as usize));
                    }
                    _ => {
                        run = Some((seg, cur.fills, pos));
                        out.push(whole);
                    }
                }
                pos += h.len;
                if total >= max_bytes {
                    return Ok(out);
                }
            }
            seg += 1;
        }
        Ok(out)
    }

    fn log_end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    fn log_start_offset(&self) -> i64 {
        self.start_offset
    }

    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        // The first index entry whose batches reach `ts`, and where its batches end.
        let found = {
            let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
            segments.iter().find_map(|s| {
                let i = s.index.iter().position(|e| e.max_ts >= ts)?;
                let until = s.index.get(i + 1).map_or(s.end, |e| e.pos);
                Some((s.file.clone(), s.path.clone(), s.index[i].pos, until))
            })
        };
        let Some((file, path, mut pos, until)) = found else {
            return Ok(None);
        };
        let mut cur = Cursor::new(&file, &path, until);
        while pos < until {
            let Some(h) = header(&mut cur, pos, INDEX_INTERVAL as usize * 2)? else {
                break;
            };
            if h.info.max_timestamp >= ts {
                let whole = cur.get(pos, h.len, h.len as usize)?;
                let exact = whole.and_then(|b| batch::first_record_at_or_after(&b, ts));
                return Ok(exact.or(Some((h.base, h.info.max_timestamp))));
            }
            pos += h.len;
        }
        Err(StorageError::Corrupt {
            what: path.display().to_string(),
            detail: format!(
                "index says a batch reaches timestamp {ts} but none at bytes {pos}..{until}"
            ),
        })
    }
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
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::config::DEFAULT_SEGMENT_BYTES;
    use crate::storage::contract::{self, append};
    use crate::storage::{Store, TopicMeta};

    fn open_store(dir: &Path, segment_bytes: u64) -> SegmentStore {
        SegmentStore::open(SledMeta::open(dir, 8 << 20).unwrap(), dir, segment_bytes).unwrap()
    }

    fn topic(store: &dyn Store, name: &str, partitions: i32) {
        store
            .create_topic(&TopicMeta {
                name: name.into(),
                id: [5; 16],
                partitions,
            })
            .unwrap();
    }

    fn segment_files(dir: &Path, log: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir.join(LOGS_DIR).join(log))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn segment_store_meets_the_contract() {
        for segment_bytes in [DEFAULT_SEGMENT_BYTES, 100] {
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(dir.path(), segment_bytes);
            contract::append_read_and_offsets(&store);
            contract::idempotent_appends(&store);
        }
    }

    #[test]
    fn recovers_topics_offsets_and_cluster_id_after_reopen() {
        for segment_bytes in [DEFAULT_SEGMENT_BYTES, 100] {
            let dir = tempfile::tempdir().unwrap();
            contract::survives_reopen(&|| Box::new(open_store(dir.path(), segment_bytes)));
        }
    }

    #[test]
    fn reads_match_an_in_memory_log_across_segments_before_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let store = open_store(dir.path(), 16 * 1024);
            topic(&store, "t", 1);
            let log = store.open_log("t", 0).unwrap();
            contract::reads_like_memory(&*log);
            store.sync().unwrap();
            contract::split(log.read(0, i64::MAX, usize::MAX).unwrap())
        };
        assert!(segment_files(dir.path(), "t-0").len() > 5);
        let store = open_store(dir.path(), 16 * 1024);
        let log = store.open_log("t", 0).unwrap();
        assert_eq!(
            contract::split(log.read(0, i64::MAX, usize::MAX).unwrap()),
            before
        );
        let mem = crate::storage::memory::MemoryLog::default();
        for b in &before {
            append(&mem, b);
        }
        for offset in (0..log.log_end_offset()).step_by(11) {
            assert_eq!(
                contract::split(log.read(offset, i64::MAX, 3000).unwrap()),
                contract::split(mem.read(offset, i64::MAX, 3000).unwrap())
            );
        }
        for ts in (900..4100).step_by(17) {
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                mem.offset_for_timestamp(ts).unwrap()
            );
        }
    }

    #[test]
    fn batches_back_to_back_are_read_as_one_slice() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
        topic(&store, "t", 1);
        let log = store.open_log("t", 0).unwrap();
        for i in 0..10 {
            append(&*log, &make_batch(&[b"abc", b"def"], i, 1));
        }
        let chunks = log.read(4, 20, usize::MAX).unwrap();
        assert_eq!(chunks.len(), 1, "one slice, no copy to join them");
        let batches = contract::split(chunks);
        assert_eq!(batches.len(), 8);
        assert_eq!(batch::base_offset(&batches[0]), Some(4));
    }

    /// Appends 2 + 1 records, syncs, appends 3 more, lets `damage` edit the segment file,
    /// reopens and returns the log end and the file's length after recovery.
    fn recover_after(damage: impl Fn(&Path, &[Bytes])) -> (i64, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let batches = {
            let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
            topic(&store, "t", 1);
            let log = store.open_log("t", 0).unwrap();
            append(&*log, &make_batch(&[b"a", b"b"], 10, 1));
            append(&*log, &make_batch(&[b"c"], 20, 0));
            store.sync().unwrap();
            append(&*log, &make_batch(&[b"d", b"e", b"f"], 30, 1));
            store.sync().unwrap();
            contract::split(log.read(0, i64::MAX, usize::MAX).unwrap())
        };
        let file = segment_files(dir.path(), "t-0").remove(0);
        damage(&file, &batches);
        let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
        let log = store.open_log("t", 0).unwrap();
        let end = log.log_end_offset();
        let len = fs::metadata(&file).unwrap().len();
        // the log goes on from where it was cut
        assert_eq!(
            append(&*log, &make_batch(&[b"z"], 40, 0)),
            Appended::At(end)
        );
        let all = contract::split(log.read(0, i64::MAX, usize::MAX).unwrap());
        assert!(all.iter().all(|b| batch::validate(b, 1 << 20).is_ok()));
        let good: u64 = batches[..2].iter().map(|b| b.len() as u64).sum();
        (end, len, good)
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_batch() {
        // the last batch cut short
        let (end, len, good) = recover_after(|f, _| {
            let file = OpenOptions::new().write(true).open(f).unwrap();
            let n = file.metadata().unwrap().len();
            file.set_len(n - 5).unwrap();
        });
        assert_eq!((end, len), (3, good));
        // a flipped bit inside the last batch's records
        let (end, len, good) = recover_after(|f, _| {
            let mut bytes = fs::read(f).unwrap();
            let n = bytes.len();
            bytes[n - 2] ^= 0x10;
            fs::write(f, bytes).unwrap();
        });
        assert_eq!((end, len), (3, good));
        // zeros after the last batch (a file extended but never written)
        let (end, len, good) = recover_after(|f, batches| {
            let mut bytes = fs::read(f).unwrap();
            bytes.extend_from_slice(&[0u8; 100]);
            fs::write(f, bytes).unwrap();
            assert_eq!(
                fs::metadata(f).unwrap().len(),
                batches.iter().map(|b| b.len() as u64).sum::<u64>() + 100
            );
        });
        assert_eq!(end, 6);
        let third = len - good; // the file holds exactly the three batches again
        assert_eq!(third, make_batch(&[b"d", b"e", b"f"], 30, 1).len() as u64);
        // nothing damaged: nothing cut
        let (end, _, _) = recover_after(|_, _| {});
        assert_eq!(end, 6);
    }

    #[test]
    fn damage_in_an_earlier_segment_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), 100);
            topic(&store, "t", 1);
            let log = store.open_log("t", 0).unwrap();
            for i in 0..3 {
                append(&*log, &make_batch(&[b"0123456789"], i, 0));
            }
            store.sync().unwrap();
        }
        let files = segment_files(dir.path(), "t-0");
        assert_eq!(files.len(), 3);
        let mut bytes = fs::read(&files[0]).unwrap();
        bytes[16] = 9; // magic
        fs::write(&files[0], bytes).unwrap();
        let store = open_store(dir.path(), 100);
        let err = store.open_log("t", 0).err().unwrap().to_string();
        assert!(
            err.contains("00000000000000000000.log") && err.contains("at byte 0"),
            "{err}"
        );
    }

    #[test]
    fn deleted_topics_and_orphan_logs_leave_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join(LOGS_DIR);
        {
            let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
            topic(&store, "gone", 2);
            topic(&store, "kept", 1);
            for (t, p) in [("gone", 0), ("gone", 1), ("kept", 0)] {
                append(&*store.open_log(t, p).unwrap(), &make_batch(&[b"x"], 1, 0));
            }
            store.sync().unwrap();
            store
                .delete_topic(&TopicMeta {
                    name: "gone".into(),
                    id: [5; 16],
                    partitions: 2,
                })
                .unwrap();
            assert!(!logs.join("gone-0").exists() && !logs.join("gone-1").exists());
            // as if a crash had come between forgetting a topic and removing its files
            fs::create_dir(logs.join("ghost-0")).unwrap();
            fs::write(logs.join("ghost-0").join(segment_name(0)), b"junk").unwrap();
        }
        let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
        assert!(!logs.join("ghost-0").exists());
        assert_eq!(store.open_log("kept", 0).unwrap().log_end_offset(), 1);
    }

    #[test]
    fn data_directories_keep_the_storage_format_they_were_created_with() {
        use crate::storage::{open, StorageFormat};
        // a directory written by the sled store before formats were recorded
        let old = tempfile::tempdir().unwrap();
        {
            let store = crate::storage::sled::SledStore::open(old.path(), 8 << 20).unwrap();
            topic(&store, "t", 1);
            append(
                &*store.open_log("t", 0).unwrap(),
                &make_batch(&[b"x"], 1, 0),
            );
            store.sync().unwrap();
        }
        {
            let store = open(old.path(), 8 << 20, StorageFormat::Segments, 1 << 20).unwrap();
            assert_eq!(store.open_log("t", 0).unwrap().log_end_offset(), 1);
            assert!(!old.path().join(LOGS_DIR).exists());
        }
        // a new directory gets the requested format and keeps it
        let new = tempfile::tempdir().unwrap();
        {
            let store = open(new.path(), 8 << 20, StorageFormat::Segments, 1 << 20).unwrap();
            topic(&*store, "t", 1);
            append(
                &*store.open_log("t", 0).unwrap(),
                &make_batch(&[b"x", b"y"], 1, 0),
            );
            store.sync().unwrap();
        }
        let store = open(new.path(), 8 << 20, StorageFormat::Sled, 1 << 20).unwrap();
        assert_eq!(store.open_log("t", 0).unwrap().log_end_offset(), 2);
        assert_eq!(segment_files(new.path(), "t-0").len(), 1);
    }
}
