//! One partition's log: its segments, the sparse index, appends and reads.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::file::{header, Cursor};
use super::scan::{recover_segment, Rebuilt};
use super::summary::SummaryWriter;
use super::{io_err, segment_name, INDEX_INTERVAL, MAX_READ_AHEAD, SUFFIX};
use crate::batch::{self, BatchInfo};
use crate::error::StorageError;
use crate::producer_state::ProducerEntry;
use crate::storage::sync_dir;
use crate::storage::txn_index::{SharedTxnIndex, TxnIndex};
use crate::storage::{admit, Appended, Log};

/// One entry of the sparse index: the batches from `pos` up to the next entry's.
#[derive(Debug, Clone, Copy)]
pub(super) struct IndexEntry {
    /// Base offset of the first batch.
    pub(super) offset: i64,
    /// Its position in the segment file.
    pub(super) pos: u64,
    /// Largest max timestamp of the entry's batches.
    pub(super) max_ts: i64,
}

pub(super) struct Segment {
    pub(super) base: i64,
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    /// Bytes of whole batches in the file (the log end within this segment).
    pub(super) end: u64,
    pub(super) index: Vec<IndexEntry>,
    /// Bytes since the last index entry started.
    pub(super) since_index: u64,
}

impl Segment {
    pub(super) fn index_batch(&mut self, base: i64, pos: u64, len: u64, max_ts: i64) {
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

pub(super) struct Writer {
    pub(super) next: i64,
    pub(super) producers: HashMap<i64, ProducerEntry>,
    pub(super) active: Arc<File>,
    pub(super) active_path: PathBuf,
    /// The active segment's summary, completed when the segment closes.
    pub(super) summary: SummaryWriter,
    /// Set when an fsync failed: no more writes until restart.
    pub(super) failed: Option<String>,
}

/// One partition's log: a directory of segment files.
pub struct SegmentLog {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    /// The active segment is closed when a batch would take it past this size
    /// (`segment.bytes`)...
    pub(super) segment_bytes: AtomicU64,
    /// ... or when it is this old (`segment.ms`; `i64::MAX`: never).
    pub(super) segment_ms: AtomicI64,
    /// Wall-clock time of the active segment's first batch.
    pub(super) active_since: AtomicI64,
    pub(super) writer: Mutex<Writer>,
    /// The live segments, oldest first. A read finds its next segment by offset, so
    /// segments may go from the front (trim) or be replaced (compaction) under it.
    pub(super) segments: RwLock<Vec<Segment>>,
    /// Held while segment files are removed or swapped: trim and compaction take turns.
    pub(super) files: Mutex<()>,
    /// Where compaction stands; held for a whole pass.
    pub(super) cleaning: Mutex<super::compact::Checkpoint>,
    pub(super) end_offset: AtomicI64,
    /// First offset still readable (moved by [`SegmentLog::trim`]).
    pub(super) start_offset: AtomicI64,
    /// Written since the last sync.
    pub(super) dirty: AtomicBool,
    /// Open and aborted transactions, rebuilt by the recovery scan.
    pub(super) txns: SharedTxnIndex,
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), recovering it as the module docs say.
    pub fn open(dir: PathBuf, name: String, segment_bytes: u64) -> Result<Self, StorageError> {
        let found = segment_files(&dir)?;
        let count = found.len();
        let mut segments = Vec::with_capacity(count);
        let mut producers: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut txns = TxnIndex::default();
        let mut next = found.first().map_or(0, |f| f.0);
        let mut active_summary = None;
        for (i, (base, path)) in found.into_iter().enumerate() {
            // Compaction may leave gaps between segments, never overlaps.
            if base < next {
                return Err(StorageError::Corrupt {
                    what: path.display().to_string(),
                    detail: format!(
                        "segment starts at offset {base}, the log before it ends at {next}"
                    ),
                });
            }
            next = base;
            let mut state = Rebuilt {
                next: &mut next,
                producers: &mut producers,
                txns: &mut txns,
            };
            let (segment, summary) = recover_segment(&dir, base, path, i + 1 == count, &mut state)?;
            segments.push(segment);
            active_summary = summary;
        }
        let (Some(first), Some(active)) = (segments.first(), segments.last()) else {
            return Err(StorageError::Corrupt {
                what: dir.display().to_string(),
                detail: "no segment".into(),
            });
        };
        let start_offset = super::trim::read_checkpoint(&dir)?
            .unwrap_or(first.base)
            .clamp(first.base, next);
        let summary = active_summary.unwrap_or_else(|| SummaryWriter::create(&dir, active.base));
        let (active, active_path) = (active.file.clone(), active.path.clone());
        let active_since = segments
            .last()
            .and_then(|s| s.index.first())
            .map_or_else(crate::clock::now_ms, |e| e.max_ts);
        drop_below(&dir, &mut segments, start_offset)?;
        let cleaning = super::compact::Checkpoint::read(&dir, start_offset)?;
        Ok(SegmentLog {
            name,
            dir,
            segment_bytes: AtomicU64::new(segment_bytes),
            segment_ms: AtomicI64::new(i64::MAX),
            active_since: AtomicI64::new(active_since),
            files: Mutex::new(()),
            cleaning: Mutex::new(cleaning),
            writer: Mutex::new(Writer {
                next,
                producers,
                active,
                active_path,
                summary,
                failed: None,
            }),
            segments: RwLock::new(segments),
            end_offset: AtomicI64::new(next),
            start_offset: AtomicI64::new(start_offset),
            dirty: AtomicBool::new(false),
            txns: SharedTxnIndex::new(txns),
        })
    }

    /// Closes the full active segment and starts one at `base`. The finished segment is
    /// made durable first, so only the last segment can ever hold a torn write.
    /// The closed segment's summary is completed (`old_end`: its length).
    fn roll(&self, w: &mut Writer, base: i64, old_end: u64) -> Result<(), StorageError> {
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
        std::mem::replace(&mut w.summary, SummaryWriter::create(&self.dir, base)).finish(old_end);
        Ok(())
    }

    /// Whether the active segment must close before a batch takes it to `size` bytes.
    fn full(&self, size: u64) -> bool {
        size > self.segment_bytes.load(Ordering::Acquire)
            || crate::clock::now_ms().saturating_sub(self.active_since.load(Ordering::Acquire))
                >= self.segment_ms.load(Ordering::Acquire)
    }

    /// `fdatasync`s the active segment if anything was written since the last sync.
    pub(super) fn sync(&self) -> Result<(), StorageError> {
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

    /// The segment holding `offset` (the first one if `offset` is below it), for a read:
    /// where the read starts in it (by the index), where its batches end, and the base of
    /// the segment after it. One lookup per segment a read touches.
    fn segment_for_read(&self, offset: i64) -> Option<ReadPlace> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let i = segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        let s = segments.get(i)?;
        let e = s.index.partition_point(|e| e.offset <= offset);
        let pos = s.index.get(e.wrapping_sub(1)).map_or(0, |e| e.pos);
        Some(ReadPlace {
            file: s.file.clone(),
            path: s.path.clone(),
            pos,
            end: s.end,
            base: s.base,
            successor: segments.get(i + 1).map(|n| n.base),
        })
    }
}

/// Where a read continues: see [`SegmentLog::segment_for_read`].
struct ReadPlace {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    end: u64,
    base: i64,
    successor: Option<i64>,
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
        let (producer, change) = match admit(
            w.producers.get(&info.producer_id),
            &self.txns,
            b,
            info,
            base,
        ) {
            Ok(admitted) => admitted,
            Err(answer) => return Ok(answer),
        };
        let len = b.len() as u64;
        let pos = {
            let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
            segments.last().map_or(0, |s| s.end)
        };
        let pos = if pos > 0 && self.full(pos + len) {
            self.roll(w, base, pos)?;
            0
        } else {
            pos
        };
        if pos == 0 {
            self.active_since
                .store(crate::clock::now_ms(), Ordering::Release);
        }
        // The stored batch differs from the received one only in its first 16 bytes (as
        // in [`batch::with_base_offset`]: base offset, and partition leader epoch 0). A
        // failed write leaves the log end where it was: the next batch overwrites the rest.
        let mut head = [0u8; batch::HEADER_LEN];
        head[..8].copy_from_slice(&base.to_be_bytes());
        head[8..12].copy_from_slice(&b[8..12]);
        head[16..].copy_from_slice(&b[16..batch::HEADER_LEN]);
        w.active
            .write_all_at(&head[..16], pos)
            .and_then(|()| w.active.write_all_at(&b[16..], pos + 16))
            .map_err(io_err(&w.active_path))?;
        w.summary.push(&head, crate::storage::marker(b, info));
        {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = segments.last_mut() {
                s.index_batch(base, pos, len, info.max_timestamp);
            }
        }
        if let Some(entry) = producer {
            w.producers.insert(info.producer_id, entry);
        }
        self.txns.apply(change);
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
        let mut run: Option<(i64, u64, u64)> = None;
        let mut at = offset;
        while let Some(place) = self.segment_for_read(at) {
            let ReadPlace {
                file,
                path,
                mut pos,
                end: seg_end,
                base: seg,
                successor,
            } = place;
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
                if last < at {
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
                at = last + 1;
                pos += h.len;
                if total >= max_bytes {
                    return Ok(out);
                }
            }
            // The next segment holding what is still wanted: a compacted segment may now
            // hold offsets this one held when the read started.
            match successor {
                Some(next) => at = at.max(next),
                None => break,
            }
            run = None;
        }
        Ok(out)
    }

    fn log_end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    fn log_start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        self.trim(offset)
    }

    fn largest_timestamp(&self) -> Option<i64> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments
            .iter()
            .flat_map(|s| &s.index)
            .map(|e| e.max_ts)
            .max()
    }

    fn segments(&self) -> Vec<crate::storage::SegmentInfo> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let end = self.end_offset.load(Ordering::Acquire);
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| crate::storage::SegmentInfo {
                base: s.base,
                next: segments.get(i + 1).map_or(end, |n| n.base),
                bytes: s.end,
                max_timestamp: s.index.iter().map(|e| e.max_ts).max().unwrap_or(-1),
            })
            .collect()
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

    fn set_roll_limits(&self, bytes: u64, ms: Option<i64>) {
        let bytes = bytes.max(crate::batch::HEADER_LEN as u64);
        self.segment_bytes.store(bytes, Ordering::Release);
        self.segment_ms
            .store(ms.unwrap_or(i64::MAX).max(1), Ordering::Release);
    }

    fn compact(
        &self,
        job: &crate::storage::CompactJob,
    ) -> Result<Option<crate::storage::CompactReport>, StorageError> {
        self.compact_pass(job)
    }

    fn txn_index(&self) -> &SharedTxnIndex {
        &self.txns
    }

    fn producers(&self) -> Vec<(i64, ProducerEntry)> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.producers.iter().map(|(&p, e)| (p, e.clone())).collect()
    }
}

/// Removes (from disk and from `segments`) the segments wholly below `start`, which a
/// crash after a checkpoint may have left.
fn drop_below(dir: &Path, segments: &mut Vec<Segment>, start: i64) -> Result<(), StorageError> {
    let n = super::trim::wholly_below(segments, start);
    for s in segments.drain(..n) {
        super::trim::remove_segment(dir, s.base, &s.path)?;
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The segment files of a log directory by base offset, creating the directory and a first
/// empty segment when there are none (both made durable).
fn segment_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>, StorageError> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    super::compact::recover(dir)?;
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
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
        sync_dir(dir)?;
        found.push((0, path));
    }
    Ok(found)
}
