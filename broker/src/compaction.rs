//! The log cleaner's task: every `--log-cleaner-backoff-ms` (10 s by default, as
//! Redpanda's housekeeping) each partition of a topic whose `cleanup.policy` has `compact`
//! gets a pass if the planner finds it dirty enough ([`crate::cleaner`]); the segment
//! store does the rewriting and the crash-safe swap. Passes run one at a time on the
//! `log-cleaner` thread, at a lower CPU priority (nice 10) than the request path, so the
//! cleaner takes at most one core and one key map of memory, and yields to produce.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::CompactJob;

/// Largest inflated records section the cleaner reads; a batch past it is kept whole.
pub(crate) const DECODE_LIMIT: usize = 128 * 1024 * 1024;

/// One pass over every compacted partition; returns how many were cleaned.
pub fn sweep(state: &crate::state::State) -> usize {
    let mut cleaned = 0;
    for topic in state.topics() {
        let Some(policy) = state.topic_configs.compaction(&topic.name) else {
            continue;
        };
        for p in &topic.partitions {
            let job = CompactJob {
                policy,
                now_ms: crate::clock::now_ms(),
                high_watermark: p.high_watermark(),
                map_budget: state.config.log_cleaner_dedupe_buffer_bytes,
                decode_limit: DECODE_LIMIT,
            };
            let started = Instant::now();
            match p.log.compact(&job) {
                Ok(Some(r)) => {
                    cleaned += 1;
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(
                        topic = %topic.name,
                        partition = p.index,
                        read_bytes = r.bytes_read,
                        written_bytes = r.bytes_written,
                        segments_replaced = r.segments,
                        records_read = r.stats.records_read,
                        records_removed = r.stats.records_removed,
                        tombstones_removed = r.stats.tombstones_removed,
                        unreadable_batches = r.stats.unreadable,
                        map_keys = r.map_keys,
                        map_bytes = r.map_bytes,
                        dirty_from = r.mapped_to,
                        seconds = secs,
                        mb_per_s = r.bytes_read as f64 / 1e6 / secs.max(1e-9),
                        "compacted"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = p.index, "compaction failed: {e}");
                }
            }
        }
    }
    cleaned
}

/// Lowers the calling thread's CPU priority to nice 10.
#[allow(unsafe_code)] // setpriority(2) on this thread
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if done != 0 {
        tracing::debug!(
            "the log cleaner keeps its CPU priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs [`sweep`] every `interval` on the `log-cleaner` thread until shutdown (a pass
/// under way when the process exits is as safe as a kill -9: see the swap protocol).
pub fn spawn(state: &Arc<crate::state::State>, interval: Duration) {
    let state = state.clone();
    let spawned = std::thread::Builder::new()
        .name("log-cleaner".into())
        .spawn(move || {
            lower_priority();
            let shutdown = state.shutting_down.clone();
            loop {
                let deadline = Instant::now() + interval;
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    if *shutdown.borrow() {
                        return;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
                sweep(&state);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the log cleaner thread: {e}");
    }
}
