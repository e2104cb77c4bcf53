//! The log cleaner's task: every `--log-cleaner-backoff-ms` (10 s by default, as
//! Redpanda's housekeeping) each partition of a topic whose `cleanup.policy` has `compact`
//! gets a pass if the planner finds it dirty enough ([`crate::cleaner`]); the segment
//! store does the rewriting and the crash-safe swap. Passes run one at a time on the
//! cleaner's own thread, at a lower CPU priority (nice 10) than the request path, so the
//! cleaner takes at most one core and one key map of memory, and yields to produce.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::storage::CompactJob;

/// Largest inflated records section the cleaner reads; a batch past it is kept whole.
pub(crate) const DECODE_LIMIT: usize = 128 * 1024 * 1024;

/// One pass over every compacted partition while `go_on()` says so; returns how many were
/// cleaned.
pub fn sweep(state: &crate::state::State, go_on: &dyn Fn() -> bool) -> usize {
    let mut cleaned = 0;
    for topic in state.topics() {
        let Some(policy) = state.topic_configs.compaction(&topic.name) else {
            continue;
        };
        for p in &topic.partitions {
            if !go_on() {
                return cleaned;
            }
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

/// The running cleaner thread; [`Cleaner::stop`] ends it.
pub struct Cleaner {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Cleaner {
    /// Wakes the thread and waits for it to end: at once when it is idle, after the
    /// partition at hand when it is cleaning (a pass cut short at any step is as safe as a
    /// kill -9: see the swap protocol). Afterwards nothing of it holds the broker's state.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the log cleaner thread panicked");
        }
    }
}

/// Runs [`sweep`] every `interval` on a thread named `cleaner-<tag>` until
/// [`Cleaner::stop`].
pub fn spawn(state: &Arc<crate::state::State>, interval: Duration, tag: &str) -> Option<Cleaner> {
    let state = state.clone();
    let (stop, stopped) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(format!("cleaner-{tag}"))
        .spawn(move || {
            lower_priority();
            // Anything but a timeout (the sender dropped) means stop.
            let go_on = || matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Empty));
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                sweep(&state, &go_on);
            }
        });
    match spawned {
        Ok(thread) => Some(Cleaner { stop, thread }),
        Err(e) => {
            tracing::error!("cannot start the log cleaner thread: {e}");
            None
        }
    }
}
