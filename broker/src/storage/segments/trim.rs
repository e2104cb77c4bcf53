//! Moving a log's start (DeleteRecords, retention): the start offset is checkpointed in
//! `log-start-offset` in the partition's directory (written to a temporary file, fsynced,
//! renamed over the old one, directory fsynced), then the segments wholly below it are
//! unlinked. A crash between the two leaves segments the next open drops; a crash before
//! the rename leaves the previous start. The active segment is never removed, even when
//! every record in it is below the start.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::io_err;
use super::log::{Segment, SegmentLog};
use crate::error::StorageError;
use crate::storage::sync_dir;

const CHECKPOINT: &str = "log-start-offset";

/// The checkpointed log start of the log in `dir`, if any.
pub(super) fn read_checkpoint(dir: &Path) -> Result<Option<i64>, StorageError> {
    let path = dir.join(CHECKPOINT);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                what: path.display().to_string(),
                detail: format!("{text:?}: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Replaces `dir/name` with `text` atomically and durably: a temporary file, fsynced,
/// renamed over the old one, the directory fsynced.
pub(super) fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<(), StorageError> {
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Removes a segment file and, first, its summary.
pub(super) fn remove_segment(dir: &Path, base: i64, path: &Path) -> Result<(), StorageError> {
    super::summary::remove(dir, base)?;
    fs::remove_file(path).map_err(io_err(path))
}

/// How many of `segments` (oldest first) lie wholly below `start`: every one whose
/// successor begins at or below it, never the last.
pub(super) fn wholly_below(segments: &[Segment], start: i64) -> usize {
    segments
        .windows(2)
        .take_while(|pair| pair[1].base <= start)
        .count()
}

impl SegmentLog {
    /// Moves the log start to `offset` (clamped to the log end; never backwards), durably,
    /// and removes the segments wholly below it. Returns the new log start.
    pub(super) fn trim(&self, offset: i64) -> Result<i64, StorageError> {
        // The writer lock keeps appends (and rolls) out while segments go.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.start_offset.load(Ordering::Acquire);
        let start = super::super::trim_target(
            current,
            offset,
            self.end_offset.load(Ordering::Acquire),
            self.txns.first_unstable(),
        );
        if start == current {
            return Ok(current);
        }
        write_atomically(&self.dir, CHECKPOINT, &format!("{start}\n"))?;
        self.start_offset.store(start, Ordering::Release);
        // Compaction swaps files too: one at a time.
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(i64, PathBuf)> = {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let n = wholly_below(&segments, start);
            segments.drain(..n).map(|s| (s.base, s.path)).collect()
        };
        for (base, path) in &gone {
            remove_segment(&self.dir, *base, path)?;
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
            tracing::info!(log = %self.name, segments = gone.len(), start, "removed segments below the log start");
        }
        Ok(start)
    }
}
