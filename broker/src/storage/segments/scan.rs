//! Recovery at open: each segment's batches rebuild the sparse index, the idempotent
//! producers' state and the transaction index. They come from the segment's summary
//! ([`super::summary`]) when it checks out, else from walking the segment's batch headers
//! (reading the few bytes of each marker), which also says where a torn tail starts and
//! writes a new summary.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{header, Cursor, Header};
use super::log::Segment;
use super::summary::{self, Summary, SummaryWriter};
use super::{io_err, SCAN_READ_AHEAD};
use crate::batch;
use crate::control::Marker;
use crate::error::StorageError;
use crate::producer_state::{self, ProducerEntry};
use crate::storage::txn_index::TxnIndex;

/// What recovery rebuilds across the segments of a log.
pub(super) struct Rebuilt<'a> {
    /// The offset the next batch may start at, at the earliest.
    pub(super) next: &'a mut i64,
    pub(super) producers: &'a mut HashMap<i64, ProducerEntry>,
    pub(super) txns: &'a mut TxnIndex,
}

/// What is wrong with batch `h` at `pos` of a segment of `len` bytes when the log before it
/// ends at `next`, if anything.
pub(super) fn check(h: &Header, pos: u64, len: u64, next: i64) -> Option<String> {
    // Compaction leaves gaps between batches, never overlaps.
    if h.base < next {
        return Some(format!(
            "batch has offset {}, the one before ends at {next}",
            h.base
        ));
    }
    if h.info.last_offset_delta < 0 {
        return Some("negative last offset delta".into());
    }
    if pos + h.len > len {
        return Some(format!("batch of {} bytes is cut off", h.len));
    }
    None
}

/// Adds batch `h` at `pos` (with its marker, if a control batch) to `segment` and `state`.
pub(super) fn apply(
    segment: &mut Segment,
    pos: u64,
    h: &Header,
    marker: Option<Marker>,
    state: &mut Rebuilt,
) {
    let info = &h.info;
    if info.producer_id >= 0 {
        let entry = state.producers.entry(info.producer_id).or_default();
        if info.control {
            entry.mark(info.producer_epoch);
        } else {
            // By the offsets it spans: compaction keeps those, not the record count.
            let span = info.last_offset_delta.saturating_add(1);
            let last = producer_state::last_seq(info.base_sequence, span);
            entry.record(info.producer_epoch, info.base_sequence, last, h.base);
        }
        let change = state.txns.change(h.base, info, marker);
        state.txns.apply(change);
    }
    segment.index_batch(h.base, pos, h.len, info.max_timestamp);
    // Saturating: the offsets come from a file (a damaged one must not overflow).
    *state.next = h.base.saturating_add(i64::from(info.last_offset_delta) + 1);
}

/// Walks the batches of `segment` (file length `len`) from its start into `state`, and into
/// `summary` when given. With `verify`, each batch's CRC is checked too. Stops at the first
/// bad or cut-off batch and says what was wrong with it; `segment.end` is then where the
/// good batches end.
pub(super) fn scan(
    segment: &mut Segment,
    len: u64,
    verify: bool,
    state: &mut Rebuilt,
    mut summary: Option<&mut SummaryWriter>,
) -> Result<Option<String>, StorageError> {
    let file = segment.file.clone();
    let path = segment.path.clone();
    let mut cur = Cursor::new(&file, &path, len);
    let mut pos = 0u64;
    while pos < len {
        let Some(h) = header(&mut cur, pos, SCAN_READ_AHEAD)? else {
            return Ok(Some("no valid batch header".into()));
        };
        if let Some(problem) = check(&h, pos, len, *state.next) {
            return Ok(Some(problem));
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
        }
        // Only a control batch is read whole here.
        let marker = if h.info.control {
            cur.get(pos, h.len, SCAN_READ_AHEAD)?
                .and_then(|b| crate::storage::marker(&b, &h.info))
        } else {
            None
        };
        if let Some(w) = summary.as_deref_mut() {
            if let Some(head) = cur.get(pos, batch::HEADER_LEN as u64, SCAN_READ_AHEAD)? {
                w.push(&head, marker);
            }
        }
        apply(segment, pos, &h, marker, state);
        pos += h.len;
    }
    Ok(None)
}

/// Opens one segment and recovers it into `state`: from its summary when it is closed and
/// the summary checks out, else by walking it (see [`scan`]), writing a new summary. A torn
/// tail of the last segment (a crash after its batches were written, before they were
/// acknowledged) is cut off; damage in an earlier segment, which was synced, is refused.
/// Returns the last segment's summary writer, to go on with.
pub(super) fn recover_segment(
    dir: &Path,
    base: i64,
    path: PathBuf,
    last: bool,
    state: &mut Rebuilt,
) -> Result<(Segment, Option<SummaryWriter>), StorageError> {
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
    if !last {
        match Summary::open(dir, base, &segment.file, (len, *state.next)) {
            Ok(Some(found)) => {
                let mut pos = 0;
                found
                    .replay(|h, marker| {
                        apply(&mut segment, pos, &h, marker, state);
                        pos += h.len;
                    })
                    .map_err(io_err(&summary::path(dir, base)))?;
                return Ok((segment, None));
            }
            Ok(None) => {}
            Err(why) => tracing::warn!(
                segment = %segment.path.display(),
                "scanning the segment: its summary does not match it ({why})"
            ),
        }
    }
    let mut writer = SummaryWriter::create(dir, base);
    let problem = scan(&mut segment, len, last, state, Some(&mut writer))?;
    if !last {
        if let Some(problem) = problem {
            writer.discard();
            return Err(StorageError::Corrupt {
                what: segment.path.display().to_string(),
                detail: format!("at byte {}: {problem}", segment.end),
            });
        }
        writer.finish(len);
        return Ok((segment, None));
    }
    if let Some(problem) = problem {
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
    Ok((segment, Some(writer)))
}
