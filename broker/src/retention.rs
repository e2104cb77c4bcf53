//! Retention: every `--log-retention-check-interval-ms` (10 s by default, as Redpanda's
//! housekeeping; Kafka waits 5 minutes), each partition's oldest segments go once they
//! are past `--log-retention-ms`/`--log-retention-hours` (by their largest record
//! timestamp) or while the partition is over `--log-retention-bytes` by at least a whole
//! segment, as in Kafka. The active segment never goes. [`plan`] decides, sans-io; the task
//! moves the log start there with [`crate::storage::Log::delete_records`] (durable: a
//! checkpoint, then the files), so a consumer positioned below it gets OFFSET_OUT_OF_RANGE
//! and its reset policy applies. Only the segment storage format has segments; sled data
//! directories keep everything (DeleteRecords still works there).

use std::sync::Arc;
use std::time::Duration;

use crate::storage::SegmentInfo;

/// The retention limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Segments whose newest record is older than this go (`None`: no time limit).
    pub max_age_ms: Option<i64>,
    /// Oldest segments go while the partition is larger than this (`None`: no size limit).
    pub max_bytes: Option<u64>,
}

/// The new log start for a partition made of `segments` (oldest first, the last active),
/// or `None` if nothing is to go: the `next` of the last segment to delete.
pub fn plan(segments: &[SegmentInfo], now_ms: i64, limits: Limits) -> Option<i64> {
    let closed = segments.len().checked_sub(1)?;
    let mut size: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut start = None;
    for s in &segments[..closed] {
        let too_old = limits
            .max_age_ms
            .is_some_and(|age| s.max_timestamp < now_ms.saturating_sub(age));
        let too_big = limits
            .max_bytes
            .is_some_and(|max| size.saturating_sub(s.bytes) >= max);
        if !(too_old || too_big) {
            break;
        }
        size -= s.bytes;
        start = Some(s.next);
    }
    start
}

/// One pass over every partition (with its topic's limits, else `limits`); returns how
/// many log starts moved.
pub fn sweep(state: &crate::state::State, limits: Limits) -> usize {
    let mut moved = 0;
    for topic in state.topics() {
        if !state.topic_configs.deletes(&topic.name) {
            continue;
        }
        for p in &topic.partitions {
            // Never past what consumers may read (the high watermark).
            let limits = state.topic_configs.retention(&topic.name, limits);
            let Some(start) = plan(&p.log.segments(), crate::clock::now_ms(), limits)
                .map(|s| s.min(p.high_watermark()))
                .filter(|&s| s > p.log.log_start_offset())
            else {
                continue;
            };
            match p.log.delete_records(start) {
                Ok(new) => {
                    moved += 1;
                    tracing::info!(topic = %topic.name, partition = p.index, start = new, "retention moved the log start");
                }
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = p.index, "retention failed: {e}");
                }
            }
        }
    }
    moved
}

/// Runs [`sweep`] every `interval` on a blocking thread until shutdown (topics may set
/// their own limits, so it runs even when the broker's keep everything).
pub fn spawn(state: &Arc<crate::state::State>, limits: Limits, interval: Duration) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut shutdown = state.shutting_down.clone();
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let s = state.clone();
            let moved = tokio::task::spawn_blocking(move || sweep(&s, limits)).await;
            if matches!(moved, Ok(n) if n > 0) {
                state.flusher.request(Vec::new(), None);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(base: i64, next: i64, bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo::of(base, next, bytes, ts)
    }

    #[test]
    fn old_segments_go_but_never_the_active_one() {
        let day = 86_400_000;
        let segs = [
            seg(0, 10, 100, day),
            seg(10, 20, 100, 2 * day),
            seg(20, 30, 100, 9 * day),
            seg(30, 35, 50, day), // active, old but kept
        ];
        let week = Limits {
            max_age_ms: Some(7 * day),
            max_bytes: None,
        };
        assert_eq!(plan(&segs, 10 * day, week), Some(20));
        assert_eq!(plan(&segs, 8 * day + 1, week), Some(10));
        assert_eq!(plan(&segs, 5 * day, week), None);
        assert_eq!(plan(&segs[3..], 100 * day, week), None);
        let size = Limits {
            max_age_ms: None,
            max_bytes: Some(160),
        };
        // 350 bytes: dropping 100 leaves 250 >= 160, another leaves 150 < 160: stop
        assert_eq!(plan(&segs, 0, size), Some(10));
    }

    proptest! {
        #[test]
        fn what_is_kept_obeys_the_limits(
            sizes in prop::collection::vec((1u64..1000, 0i64..1000), 1..20),
            now in 0i64..2000,
            age in prop::option::of(0i64..1000),
            max in prop::option::of(0u64..5000),
        ) {
            let mut segs = Vec::new();
            let mut base = 0;
            for (bytes, ts) in &sizes {
                segs.push(seg(base, base + 10, *bytes, *ts));
                base += 10;
            }
            let limits = Limits { max_age_ms: age, max_bytes: max };
            let start = plan(&segs, now, limits);
            let kept: Vec<&SegmentInfo> = segs.iter().filter(|s| start.is_none_or(|st| s.base >= st)).collect();
            // the active segment always stays, and deletion is a prefix
            prop_assert!(kept.last().is_some_and(|s| s.base == segs[segs.len() - 1].base));
            prop_assert_eq!(kept.len() + segs.iter().filter(|s| start.is_some_and(|st| s.base < st)).count(), segs.len());
            // the first kept closed segment (if any) was kept for a reason
            if kept.len() > 1 {
                let first = kept[0];
                let size: u64 = kept.iter().map(|s| s.bytes).sum();
                let too_old = age.is_some_and(|a| first.max_timestamp < now - a);
                let too_big = max.is_some_and(|m| size - first.bytes >= m);
                prop_assert!(!too_old && !too_big);
            }
            // every deleted segment was deletable when its turn came
            let mut size: u64 = segs.iter().map(|s| s.bytes).sum();
            for s in segs.iter().filter(|s| start.is_some_and(|st| s.base < st)) {
                let too_old = age.is_some_and(|a| s.max_timestamp < now - a);
                let too_big = max.is_some_and(|m| size - s.bytes >= m);
                prop_assert!(too_old || too_big);
                size -= s.bytes;
            }
        }
    }
}
