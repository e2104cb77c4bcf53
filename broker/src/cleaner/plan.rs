//! Which part of a compacted log a pass cleans, sans-io (Kafka's `LogCleanerManager`
//! rules). The cleanable part is the closed segments below the first one that is active,
//! not yet wholly stable (high watermark, open transactions) or younger than
//! `min.compaction.lag.ms`. Its dirty part starts at the offset the last pass mapped up to.
//! A pass runs when the dirty part is at least `min.cleanable.dirty.ratio` of the
//! cleanable bytes, or when a tombstone's delete horizon has passed.

use crate::storage::SegmentInfo;

/// A topic's compaction settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// `min.cleanable.dirty.ratio`.
    pub min_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this stay uncompacted.
    pub min_lag_ms: i64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
}

/// A log as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Its segments, oldest first, the last the active one.
    pub segments: &'a [SegmentInfo],
    /// Where the last pass's key map ended (the log start when never cleaned).
    pub first_dirty: i64,
    /// The first offset that is not stable: min(high watermark, first open transaction).
    pub stable: i64,
    /// The earliest delete horizon the last pass left, if any.
    pub horizon: Option<i64>,
}

/// The part to clean: segments below `until` (a segment base), with keys mapped from
/// `dirty_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First offset whose keys go into the map.
    pub dirty_from: i64,
    /// End of the cleaned segments (the base of the first one left alone).
    pub until: i64,
}

/// The range a pass at `now_ms` should clean, or `None`.
pub fn plan(view: View, policy: Policy, now_ms: i64) -> Option<Range> {
    let closed = view.segments.len().checked_sub(1)?;
    let cleanable = view.segments[..closed]
        .iter()
        .take_while(|s| {
            s.next <= view.stable && s.max_timestamp <= now_ms.saturating_sub(policy.min_lag_ms)
        })
        .count();
    let last = view.segments[..cleanable].last()?;
    let until = last.next;
    let dirty_from = view.first_dirty.max(view.segments[0].base);
    let (mut clean, mut dirty) = (0u64, 0u64);
    for s in &view.segments[..cleanable] {
        if s.next > dirty_from {
            dirty += s.bytes;
        } else {
            clean += s.bytes;
        }
    }
    let ratio = if clean + dirty == 0 {
        0.0
    } else {
        dirty as f64 / (clean + dirty) as f64
    };
    let dirty_enough = dirty > 0 && dirty_from < until && ratio >= policy.min_dirty_ratio;
    let horizon_due = view.horizon.is_some_and(|h| h <= now_ms);
    (dirty_enough || horizon_due).then_some(Range { dirty_from, until })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(base: i64, next: i64, bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo::of(base, next, bytes, ts)
    }

    const POLICY: Policy = Policy {
        min_dirty_ratio: 0.5,
        min_lag_ms: 0,
        delete_retention_ms: 1000,
    };

    #[test]
    fn cleans_closed_stable_old_segments_when_dirty_enough() {
        let segs = [seg(0, 10, 100, 1), seg(10, 20, 100, 2), seg(20, 25, 50, 3)];
        let view = View {
            segments: &segs,
            first_dirty: 0,
            stable: 25,
            horizon: None,
        };
        let all = Some(Range {
            dirty_from: 0,
            until: 20,
        });
        assert_eq!(plan(view, POLICY, 100), all);
        // the second segment is not stable yet: only the first
        let unstable = View { stable: 15, ..view };
        assert_eq!(plan(unstable, POLICY, 100).map(|r| r.until), Some(10));
        // too young for a 100 ms lag: nothing
        let lag = Policy {
            min_lag_ms: 100,
            ..POLICY
        };
        assert_eq!(plan(view, lag, 100), None);
        // cleaned up to 10: 100 dirty of 200 bytes is 0.5, enough; 0.6 is not
        let half = View {
            first_dirty: 10,
            ..view
        };
        assert_eq!(plan(half, POLICY, 100).map(|r| r.dirty_from), Some(10));
        let picky = Policy {
            min_dirty_ratio: 0.6,
            ..POLICY
        };
        assert_eq!(plan(half, picky, 100), None);
        // all clean: only a passed horizon brings a pass
        let clean = View {
            first_dirty: 20,
            ..view
        };
        assert_eq!(plan(clean, POLICY, 100), None);
        let due = View {
            horizon: Some(100),
            ..clean
        };
        assert_eq!(plan(due, POLICY, 100).map(|r| r.until), Some(20));
        assert_eq!(
            plan(
                View {
                    horizon: Some(101),
                    ..clean
                },
                POLICY,
                100
            ),
            None
        );
    }

    proptest! {
        #[test]
        fn never_cleans_the_active_segment_or_unstable_offsets(
            sizes in prop::collection::vec((1u64..1000, 0i64..100, 1i64..20), 1..12),
            dirty in 0i64..200, stable in 0i64..200, now in 0i64..200,
            lag in 0i64..100, ratio in 0.0f64..1.0, horizon in prop::option::of(0i64..200),
        ) {
            let mut segs = Vec::new();
            let mut base = 0;
            for (bytes, ts, n) in &sizes {
                segs.push(seg(base, base + n, *bytes, *ts));
                base += n;
            }
            let view = View { segments: &segs, first_dirty: dirty, stable, horizon };
            let policy = Policy { min_dirty_ratio: ratio, min_lag_ms: lag, delete_retention_ms: 0 };
            if let Some(r) = plan(view, policy, now) {
                let active = segs[segs.len() - 1].base;
                prop_assert!(r.until <= active && r.until <= stable);
                prop_assert!(segs.iter().any(|s| s.next == r.until), "ends at a segment end");
                for s in segs.iter().filter(|s| s.next <= r.until) {
                    prop_assert!(s.max_timestamp <= now - lag);
                }
                prop_assert!(r.dirty_from < r.until || horizon.is_some_and(|h| h <= now));
            }
        }
    }
}
