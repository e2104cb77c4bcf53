//! What a cleaning pass keeps, sans-io: first the key map is built from the dirty part of
//! the log ([`MapBuilder`]), then every batch from the log start is judged ([`Filter`]),
//! with Kafka's rules:
//!
//! * a record stays unless the map holds a later offset for its key; keyless records go
//!   (a compacted topic needs keys);
//! * a tombstone (null value) below the end of the map, where every older record of its
//!   key is gone, gives its batch a delete horizon (now + `delete.retention.ms`, KIP-534)
//!   if it has none; once a later pass runs past the horizon, the tombstone goes;
//! * the records of aborted transactions go; a transaction marker goes, once its horizon
//!   has passed, when none of its transaction's records are left;
//! * a batch left without records goes, but the last data batch of an idempotent producer
//!   stays as an empty batch, so its sequence numbers survive a restart.

use std::collections::HashMap;

use super::offset_map::{key_hash, OffsetMap};
use super::records::{self, Records, RecordsError};
use crate::batch::{self, BatchInfo};

/// How a pass judges tombstones and bounds its work.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Wall-clock time of the pass.
    pub now_ms: i64,
    /// `delete.retention.ms`: how long a tombstone (or a marker) stays once cleaned.
    pub delete_retention_ms: i64,
    /// Largest inflated records section the cleaner reads; a batch past it is kept whole.
    pub decode_limit: usize,
}

/// Fills the key map from the dirty batches, in offset order.
pub struct MapBuilder {
    /// The map.
    pub map: OffsetMap,
    /// The first offset not mapped, once the map is full.
    pub full_at: Option<i64>,
}

impl MapBuilder {
    /// A builder over `map`.
    pub fn new(map: OffsetMap) -> Self {
        MapBuilder { map, full_at: None }
    }

    /// Maps the keys of the records at or above `from` of the data batch `b` at `base`,
    /// unless it belongs to an aborted transaction. Returns `false` once the map is full ([`MapBuilder::full_at`] then says
    /// where). A batch that cannot be read is skipped (its records are all kept, so the
    /// latest value of every key stays the latest) and the error returned.
    pub fn add(
        &mut self,
        b: &[u8],
        base: i64,
        from: i64,
        (aborted, limit): (bool, usize),
    ) -> Result<bool, RecordsError> {
        let Some(info) = batch::info(b) else {
            return Ok(true);
        };
        if info.control || aborted || self.full_at.is_some() {
            return Ok(self.full_at.is_none());
        }
        let recs = records::decode(b, limit)?;
        for r in &recs.recs {
            let offset = base + r.offset_delta;
            if offset < from {
                continue;
            }
            if let Some(k) = recs.key(r) {
                if !self.map.put(key_hash(k), offset) {
                    self.full_at = Some(offset);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// What becomes of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stays as it is.
    Keep,
    /// Goes.
    Drop,
    /// Replaced by these bytes (fewer records, or a delete horizon set).
    Rewrite(Vec<u8>),
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records read.
    pub records_read: u64,
    /// Records removed (superseded, keyless, aborted, expired tombstones and markers).
    pub records_removed: u64,
    /// Of those, tombstones and markers whose horizon had passed.
    pub tombstones_removed: u64,
    /// Batches kept whole because their records could not be read.
    pub unreadable: u64,
}

/// The facts a verdict rests on.
struct Facts<'a> {
    info: &'a BatchInfo,
    base: i64,
    aborted: bool,
    horizon: Option<i64>,
}

/// Judges batches from the log start on, with the map a [`MapBuilder`] filled.
pub struct Filter<'a> {
    map: &'a OffsetMap,
    /// The first offset the map does not cover.
    mapped_to: i64,
    settings: Settings,
    /// Per producer: whether its current transaction has a record left.
    txn_kept: HashMap<i64, bool>,
    /// What the pass did so far.
    pub stats: Stats,
    /// The earliest delete horizon of what stays: the next pass due for tombstones.
    pub earliest_horizon: Option<i64>,
}

impl<'a> Filter<'a> {
    /// A filter over `map`, which covers the offsets below `mapped_to`.
    pub fn new(map: &'a OffsetMap, mapped_to: i64, settings: Settings) -> Self {
        Filter {
            map,
            mapped_to,
            settings,
            txn_kept: HashMap::new(),
            stats: Stats::default(),
            earliest_horizon: None,
        }
    }

    fn note_horizon(&mut self, h: i64) {
        self.earliest_horizon = Some(self.earliest_horizon.map_or(h, |e| e.min(h)));
    }

    /// The verdict on stored batch `b` at `base`: `aborted` if it holds an aborted
    /// transaction's records, `last_of_producer` if it is its producer's last data batch.
    pub fn batch(&mut self, b: &[u8], base: i64, aborted: bool, last_of_producer: bool) -> Verdict {
        let Some(info) = batch::info(b) else {
            return Verdict::Keep;
        };
        let facts = Facts {
            info: &info,
            base,
            aborted,
            horizon: records::delete_horizon(b),
        };
        let Ok(recs) = records::decode(b, self.settings.decode_limit) else {
            self.stats.unreadable += 1;
            return Verdict::Keep;
        };
        self.stats.records_read += recs.recs.len() as u64;
        if info.control {
            return self.marker(b, &facts, &recs);
        }
        let (keep, needs_horizon, expired) = self.judge(&facts, &recs);
        let kept = keep.iter().filter(|k| **k).count();
        self.stats.records_removed += (recs.recs.len() - kept) as u64;
        self.stats.tombstones_removed += expired;
        if info.transactional {
            *self.txn_kept.entry(info.producer_id).or_insert(false) |= kept > 0;
        }
        let horizon = needs_horizon.then(|| {
            let h = self
                .settings
                .now_ms
                .saturating_add(self.settings.delete_retention_ms);
            self.note_horizon(h);
            h
        });
        if let (Some(h), false) = (facts.horizon, needs_horizon) {
            if recs.recs.iter().zip(&keep).any(|(r, k)| *k && r.tombstone) {
                self.note_horizon(h);
            }
        }
        if kept == recs.recs.len() && horizon.is_none() {
            return Verdict::Keep;
        }
        if kept == 0 && !(last_of_producer && info.producer_id >= 0) {
            return Verdict::Drop;
        }
        rewrite_or_keep(b, &recs, &keep, horizon, &mut self.stats)
    }

    /// Which records of a data batch stay, whether a kept tombstone needs a horizon, and
    /// how many tombstones went because theirs had passed.
    fn judge(&self, facts: &Facts, recs: &Records) -> (Vec<bool>, bool, u64) {
        let mut needs_horizon = false;
        let mut expired_tombstones = 0;
        let expired = facts.horizon.is_some_and(|h| self.settings.now_ms >= h);
        let keep = recs
            .recs
            .iter()
            .map(|r| {
                if facts.aborted {
                    return false;
                }
                let Some(k) = recs.key(r) else {
                    return false;
                };
                let offset = facts.base + r.offset_delta;
                if self
                    .map
                    .get(key_hash(k))
                    .is_some_and(|latest| latest > offset)
                {
                    return false;
                }
                if r.tombstone {
                    if expired {
                        expired_tombstones += 1;
                        return false;
                    }
                    needs_horizon |= facts.horizon.is_none() && offset < self.mapped_to;
                }
                true
            })
            .collect();
        (keep, needs_horizon, expired_tombstones)
    }

    /// The verdict on a transaction marker: it ends its producer's transaction.
    fn marker(&mut self, b: &[u8], facts: &Facts, recs: &Records) -> Verdict {
        let txn_has_records = self
            .txn_kept
            .remove(&facts.info.producer_id)
            .unwrap_or(false);
        if txn_has_records {
            return Verdict::Keep;
        }
        match facts.horizon {
            Some(h) if self.settings.now_ms >= h => {
                self.stats.records_removed += recs.recs.len() as u64;
                self.stats.tombstones_removed += recs.recs.len() as u64;
                Verdict::Drop
            }
            Some(h) => {
                self.note_horizon(h);
                Verdict::Keep
            }
            None if facts.base >= self.mapped_to => Verdict::Keep,
            None => {
                let h = self
                    .settings
                    .now_ms
                    .saturating_add(self.settings.delete_retention_ms);
                self.note_horizon(h);
                let keep = vec![true; recs.recs.len()];
                rewrite_or_keep(b, recs, &keep, Some(h), &mut self.stats)
            }
        }
    }
}

/// `b` rewritten with the records `keep` selects, or kept whole when the rewrite fails
/// (nothing is lost).
fn rewrite_or_keep(
    b: &[u8],
    recs: &Records,
    keep: &[bool],
    horizon: Option<i64>,
    stats: &mut Stats,
) -> Verdict {
    match records::rewrite(b, recs, keep, horizon) {
        Ok(out) => Verdict::Rewrite(out),
        Err(_) => {
            stats.unreadable += 1;
            Verdict::Keep
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
