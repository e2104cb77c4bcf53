//! One partition's transaction index, sans-io: the producers with a transaction open in the
//! partition (from the offset of their first batch in it) and the aborted transactions'
//! offset ranges, the way Kafka keeps its producer state and `.txnindex` files.
//!
//! Logs compute a [`TxnChange`] for each batch under their append lock, store it with the
//! batch (the sled format persists it, the segment format rebuilds it in its recovery
//! scan) and [`SharedTxnIndex::apply`] it once the batch is written. The index answers the
//! two questions read_committed fetches ask, without touching the log: where the last
//! stable offset is held ([`SharedTxnIndex::first_unstable`]) and which aborted transactions
//! a fetched range overlaps ([`SharedTxnIndex::aborted`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use crate::batch::BatchInfo;
use crate::control::Marker;

/// An aborted transaction's range in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose records in the range are dropped.
    pub producer_id: i64,
    /// Offset of its first batch in the partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

/// What one appended batch changes in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnChange {
    /// Nothing (a plain batch, a later batch of an open transaction, a marker for a
    /// producer with nothing open here).
    None,
    /// A producer's first transactional batch in the partition since its last marker.
    Begin {
        /// Producer id.
        producer_id: i64,
        /// The batch's base offset.
        first_offset: i64,
    },
    /// A marker ends the producer's open transaction; `aborted` when it is an abort.
    End {
        /// Producer id.
        producer_id: i64,
        /// The aborted range, for an abort marker.
        aborted: Option<AbortedTxn>,
    },
}

/// The index itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    /// Open transactions: producer id -> first offset.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions in marker (so `last_offset`) order.
    aborted: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// An index as stored: open transactions (producer id -> first offset) and the aborted
    /// ones in any order.
    pub fn from_parts(open: BTreeMap<i64, i64>, mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|a| a.last_offset);
        TxnIndex { open, aborted }
    }

    /// The change a batch stored at `base` makes; `marker` is what a control batch holds.
    pub fn change(&self, base: i64, info: &BatchInfo, marker: Option<Marker>) -> TxnChange {
        let pid = info.producer_id;
        if info.control {
            let Some(&first_offset) = self.open.get(&pid) else {
                return TxnChange::None;
            };
            let aborted = (marker == Some(Marker::Abort)).then_some(AbortedTxn {
                producer_id: pid,
                first_offset,
                last_offset: base,
            });
            return TxnChange::End {
                producer_id: pid,
                aborted,
            };
        }
        if info.transactional && !self.open.contains_key(&pid) {
            return TxnChange::Begin {
                producer_id: pid,
                first_offset: base,
            };
        }
        TxnChange::None
    }

    /// Applies a change computed by [`TxnIndex::change`].
    pub fn apply(&mut self, change: TxnChange) {
        match change {
            TxnChange::None => {}
            TxnChange::Begin {
                producer_id,
                first_offset,
            } => {
                self.open.insert(producer_id, first_offset);
            }
            TxnChange::End {
                producer_id,
                aborted,
            } => {
                self.open.remove(&producer_id);
                self.aborted.extend(aborted);
            }
        }
    }

    /// Offset of the earliest open transaction's first batch.
    pub fn first_unstable(&self) -> Option<i64> {
        self.open.values().min().copied()
    }

    /// Open transactions: producer id -> first offset.
    pub fn open(&self) -> &BTreeMap<i64, i64> {
        &self.open
    }

    /// Aborted transactions with a marker at or after `from` that started before `to`.
    pub fn aborted(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let at = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[at..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }
}

/// A [`TxnIndex`] shared by a log's appender and its readers; the first unstable offset
/// is readable without a lock.
#[derive(Debug)]
pub struct SharedTxnIndex {
    /// `i64::MAX` when no transaction is open.
    unstable: AtomicI64,
    inner: Mutex<TxnIndex>,
}

impl Default for SharedTxnIndex {
    fn default() -> Self {
        Self::new(TxnIndex::default())
    }
}

impl SharedTxnIndex {
    /// Shares `index` (as recovered).
    pub fn new(index: TxnIndex) -> Self {
        SharedTxnIndex {
            unstable: AtomicI64::new(index.first_unstable().unwrap_or(i64::MAX)),
            inner: Mutex::new(index),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TxnIndex> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`TxnIndex::change`] on the current index.
    pub fn change(&self, base: i64, info: &BatchInfo, marker: Option<Marker>) -> TxnChange {
        if !info.transactional {
            return TxnChange::None;
        }
        self.lock().change(base, info, marker)
    }

    /// [`TxnIndex::apply`].
    pub fn apply(&self, change: TxnChange) {
        if change == TxnChange::None {
            return;
        }
        let mut index = self.lock();
        index.apply(change);
        let unstable = index.first_unstable().unwrap_or(i64::MAX);
        self.unstable.store(unstable, Ordering::Release);
    }

    /// [`TxnIndex::first_unstable`].
    pub fn first_unstable(&self) -> Option<i64> {
        let v = self.unstable.load(Ordering::Acquire);
        (v != i64::MAX).then_some(v)
    }

    /// [`TxnIndex::aborted`].
    pub fn aborted(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.lock().aborted(from, to)
    }

    /// Open transactions: (producer id, first offset).
    pub fn open(&self) -> Vec<(i64, i64)> {
        self.lock().open().iter().map(|(&p, &o)| (p, o)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;
    use crate::control::marker_batch;

    fn txn_batch(pid: i64) -> BatchInfo {
        let mut b = batch::uncompressed_batch(&[b"v"], 0, 0, (pid, 0, 0));
        batch::set_transactional(&mut b);
        batch::info(&b).unwrap()
    }

    fn append(index: &mut TxnIndex, base: i64, info: &BatchInfo, marker: Option<Marker>) {
        let change = index.change(base, info, marker);
        index.apply(change);
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_and_aborts_are_listed() {
        let mut index = TxnIndex::default();
        let plain = batch::info(&batch::uncompressed_batch(&[b"p"], 0, 0, (-1, -1, -1))).unwrap();
        let commit = batch::info(&marker_batch(1, 0, Marker::Commit, 0)).unwrap();
        let abort = batch::info(&marker_batch(2, 0, Marker::Abort, 0)).unwrap();
        append(&mut index, 0, &plain, None);
        assert_eq!(index.first_unstable(), None);
        append(&mut index, 1, &txn_batch(1), None);
        append(&mut index, 2, &txn_batch(2), None);
        append(&mut index, 3, &txn_batch(1), None);
        assert_eq!(index.first_unstable(), Some(1));
        append(&mut index, 4, &commit, Some(Marker::Commit));
        assert_eq!(index.first_unstable(), Some(2));
        append(&mut index, 5, &abort, Some(Marker::Abort));
        assert_eq!(index.first_unstable(), None);
        let aborted = AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 5,
        };
        assert_eq!(index.aborted(0, 6), vec![aborted]);
        assert_eq!(index.aborted(5, 6), vec![aborted]);
        assert!(index.aborted(6, 9).is_empty());
        assert!(index.aborted(0, 2).is_empty());
        // a repeated marker (a completion retried after a restart) changes nothing
        assert_eq!(
            index.change(6, &abort, Some(Marker::Abort)),
            TxnChange::None
        );
    }

    #[test]
    fn shared_index_tracks_the_first_unstable_offset() {
        let shared = SharedTxnIndex::default();
        let info = txn_batch(7);
        let change = shared.change(10, &info, None);
        shared.apply(change);
        assert_eq!(shared.first_unstable(), Some(10));
        assert_eq!(shared.open(), vec![(7, 10)]);
        let abort = batch::info(&marker_batch(7, 0, Marker::Abort, 0)).unwrap();
        let change = shared.change(11, &abort, Some(Marker::Abort));
        shared.apply(change);
        assert_eq!(shared.first_unstable(), None);
        assert_eq!(shared.aborted(0, 20).len(), 1);
    }
}
