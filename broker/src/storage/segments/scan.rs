//! The recovery scan: walks a segment's batch headers at open, rebuilding the sparse index,
//! the idempotent producers' state and the transaction index (reading the few bytes of each
//! marker), and says where a torn tail starts.

use std::collections::HashMap;

use super::file::{header, Cursor};
use super::log::Segment;
use super::SCAN_READ_AHEAD;
use crate::batch;
use crate::control;
use crate::error::StorageError;
use crate::producer_state::{self, ProducerEntry};
use crate::storage::txn_index::TxnIndex;

/// Walks the batches of `segment` (file length `len`) from its start, filling its index,
/// the producers' state and the transaction index, advancing `next`. With `verify`, each batch's CRC is checked too.
/// Stops at the first bad or cut-off batch and says what was wrong with it;
/// `segment.end` is then where the good batches end.
pub(super) fn scan(
    segment: &mut Segment,
    len: u64,
    verify: bool,
    next: &mut i64,
    (producers, txns): (&mut HashMap<i64, ProducerEntry>, &mut TxnIndex),
) -> Result<Option<String>, StorageError> {
    let file = segment.file.clone();
    let path = segment.path.clone();
    let mut cur = Cursor::new(&file, &path, len);
    let mut pos = 0u64;
    while pos < len {
        let Some(h) = header(&mut cur, pos, SCAN_READ_AHEAD)? else {
            return Ok(Some("no valid batch header".into()));
        };
        // Compaction leaves gaps between batches, never overlaps.
        if h.base < *next {
            return Ok(Some(format!(
                "batch has offset {}, the one before ends at {}",
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
            let marker = if info.control {
                cur.get(pos, h.len, SCAN_READ_AHEAD)?
                    .and_then(|b| control::marker_of(&b))
            } else {
                None
            };
            let entry = producers.entry(info.producer_id).or_default();
            if info.control {
                entry.mark(info.producer_epoch);
            } else {
                // By the offsets it spans: compaction keeps those, not the record count.
                let span = info.last_offset_delta.saturating_add(1);
                let last = producer_state::last_seq(info.base_sequence, span);
                entry.record(info.producer_epoch, info.base_sequence, last, h.base);
            }
            let change = txns.change(h.base, &info, marker);
            txns.apply(change);
        }
        segment.index_batch(h.base, pos, h.len, info.max_timestamp);
        *next = h.base + i64::from(info.last_offset_delta) + 1;
        pos += h.len;
    }
    Ok(None)
}
