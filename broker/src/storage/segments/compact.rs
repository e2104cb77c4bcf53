//! Compaction of a segment log: the I/O around the sans-io [`crate::cleaner`].
//!
//! A pass maps the keys of the dirty batches, then rewrites the closed segments below the
//! planned end, in groups of consecutive segments that fit in one (`segment.bytes`). A
//! group is swapped in so that a crash leaves either the old segments or the new one:
//!
//! 1. the kept batches go to `<base>.cleaned`, which is fsynced;
//! 2. it is renamed `<base>.<end>.swap` (`end`: the base of the segment after the group)
//!    and the directory fsynced: from here on the new segment is the truth;
//! 3. the group's other segments are unlinked and the swap file renamed `<base>.log` over
//!    the first, and the directory fsynced.
//!
//! At open ([`recover`]), a `.cleaned` file is an unfinished step 1 and is deleted; a
//! `.swap` file is a finished step 2: step 3 is done again. The pass ends with the
//! `cleaner-offset-checkpoint` file (where the map ended, the earliest delete horizon),
//! written like the log start's checkpoint; losing it only means cleaning again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::file::{header, Cursor};
use super::log::{Segment, SegmentLog};
use super::{io_err, segment_name, SCAN_READ_AHEAD, SUFFIX};
use crate::batch;
use crate::cleaner::{self, Filter, MapBuilder, OffsetMap, Settings, Verdict, View};
use crate::error::StorageError;
use crate::storage::{sync_dir, CompactJob, CompactReport};

const CHECKPOINT: &str = "cleaner-offset-checkpoint";
const CLEANED: &str = ".cleaned";
const SWAP: &str = ".swap";

/// Where compaction of a log stands.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpoint {
    /// The first offset the last pass did not map: the dirty part starts here.
    pub(super) first_dirty: i64,
    /// The earliest delete horizon of the tombstones and markers left.
    pub(super) horizon: Option<i64>,
}

impl Checkpoint {
    /// The checkpoint of the log in `dir`; a log never cleaned is dirty from `start`.
    pub(super) fn read(dir: &Path, start: i64) -> Result<Self, StorageError> {
        let path = dir.join(CHECKPOINT);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint {
                    first_dirty: start,
                    horizon: None,
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut nums = text.split_whitespace().map(str::parse::<i64>);
        match (nums.next(), nums.next()) {
            (Some(Ok(first_dirty)), Some(Ok(h))) => Ok(Checkpoint {
                first_dirty,
                horizon: (h >= 0).then_some(h),
            }),
            _ => Err(StorageError::Corrupt {
                what: path.display().to_string(),
                detail: format!("{text:?} is not two numbers"),
            }),
        }
    }

    fn write(&self, dir: &Path) -> Result<(), StorageError> {
        let text = format!("{} {}\n", self.first_dirty, self.horizon.unwrap_or(-1));
        super::trim::write_atomically(dir, CHECKPOINT, &text)
    }
}

/// Finishes or undoes a swap a crash interrupted (see the module docs), before the
/// segments of `dir` are listed.
pub(super) fn recover(dir: &Path) -> Result<(), StorageError> {
    let mut changed = false;
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(CLEANED) {
            tracing::warn!(file = %path.display(), "removing an unfinished compaction output");
            fs::remove_file(&path).map_err(io_err(&path))?;
            changed = true;
        } else if let Some((base, end)) = name
            .strip_suffix(SWAP)
            .and_then(|n| n.split_once('.'))
            .and_then(|(b, e)| Some((b.parse::<i64>().ok()?, e.parse::<i64>().ok()?)))
        {
            swaps.push((base, end, path));
        }
    }
    for (base, end, swap) in swaps {
        tracing::warn!(file = %swap.display(), "finishing a compaction swap a crash interrupted");
        finish_swap(dir, base, end, &swap)?;
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Step 3: the old segments with bases in `(base, end)` go, with their summaries and the
/// summary of `<base>.log`, and the swap file becomes `<base>.log`. The caller fsyncs the
/// directory.
fn finish_swap(dir: &Path, base: i64, end: i64, swap: &Path) -> Result<(), StorageError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let old = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<i64>().ok());
        if let Some(old) = old.filter(|&o| o > base && o < end) {
            super::trim::remove_segment(dir, old, &path)?;
        }
    }
    super::summary::remove(dir, base)?;
    let target = dir.join(segment_name(base));
    fs::rename(swap, &target).map_err(io_err(&target))
}

/// A closed segment as a pass sees it.
struct Snap {
    base: i64,
    next: i64,
    bytes: u64,
    file: Arc<File>,
    path: PathBuf,
}

/// Calls `f(base, batch)` for each batch of `s` in order until it returns `false`.
fn each_batch(
    s: &Snap,
    mut f: impl FnMut(i64, &[u8]) -> Result<bool, StorageError>,
) -> Result<(), StorageError> {
    let mut cur = Cursor::new(&s.file, &s.path, s.bytes);
    let mut pos = 0;
    while pos < s.bytes {
        let corrupt = |detail: String| StorageError::Corrupt {
            what: s.path.display().to_string(),
            detail,
        };
        let h = header(&mut cur, pos, SCAN_READ_AHEAD)?
            .ok_or_else(|| corrupt(format!("no valid batch header at byte {pos}")))?;
        let b = cur
            .get(pos, h.len, SCAN_READ_AHEAD.max(h.len as usize))?
            .ok_or_else(|| corrupt(format!("batch at byte {pos} runs past the segment end")))?;
        if !f(h.base, &b)? {
            return Ok(());
        }
        pos += h.len;
    }
    Ok(())
}

/// Groups of consecutive segments whose sizes add up to at most `limit` (at least one).
fn groups(snaps: Vec<Snap>, limit: u64) -> Vec<Vec<Snap>> {
    let mut out: Vec<Vec<Snap>> = Vec::new();
    let mut size = 0;
    for s in snaps {
        match out.last_mut() {
            Some(g) if size + s.bytes <= limit => {
                size += s.bytes;
                g.push(s);
            }
            _ => {
                size = s.bytes;
                out.push(vec![s]);
            }
        }
    }
    out
}

#[path = "compact_pass.rs"]
mod pass;
