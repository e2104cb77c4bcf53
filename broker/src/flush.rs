//! Group commit: one task turns many "make this durable" requests into one fsync.
//!
//! Produce handlers append to the logs, then call [`Flusher::request`] with the end offset
//! of every partition they touched. The flusher task takes every request queued so far,
//! runs one [`Store::sync`], then advances those partitions' high watermarks, wakes
//! long-polling fetches and answers the waiting producers. Requests that arrive during a
//! sync are served by the next one, so N concurrent producers cost ~1 fsync, not N.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::BrokerMetrics;
use crate::storage::Store;

/// A partition's high watermark: offsets below it are durable and visible to consumers.
/// Shared by the partition, which reads it, and the flusher, which advances it.
#[derive(Debug, Clone, Default)]
pub struct HighWatermark(Arc<AtomicI64>);

impl HighWatermark {
    /// A high watermark at `at`.
    pub fn new(at: i64) -> HighWatermark {
        HighWatermark(Arc::new(AtomicI64::new(at)))
    }

    /// Its value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves it up to `to` (never down).
    pub(crate) fn advance(&self, to: i64) {
        self.0.fetch_max(to, Ordering::AcqRel);
    }
}

/// Marks to apply after the flush: a partition's high watermark and its end offset at
/// append time.
pub type Marks = Vec<(HighWatermark, i64)>;

struct FlushRequest {
    marks: Marks,
    done: Option<oneshot::Sender<bool>>,
}

/// Handle to the flusher task. Cloning is cheap.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<FlushRequest>,
}

impl Flusher {
    /// Starts the flusher task on the current tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        hw_changed: watch::Sender<u64>,
        metrics: Arc<BrokerMetrics>,
    ) -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, hw_changed, rx, metrics));
        Flusher { tx }
    }

    /// Asks for a flush covering `marks`. `done` receives `true` once durable, `false`
    /// if the flush failed (then the high watermarks do not move).
    pub fn request(&self, marks: Marks, done: Option<oneshot::Sender<bool>>) {
        if let Err(mpsc::error::SendError(req)) = self.tx.send(FlushRequest { marks, done }) {
            // Flusher gone (shutdown): nothing will be acknowledged.
            if let Some(done) = req.done {
                let _ = done.send(false);
            }
        }
    }

    /// Requests a flush and waits for it. Returns whether it succeeded.
    pub async fn flush(&self, marks: Marks) -> bool {
        let (tx, rx) = oneshot::channel();
        self.request(marks, Some(tx));
        rx.await.unwrap_or(false)
    }
}

async fn run(
    store: Arc<dyn Store>,
    hw_changed: watch::Sender<u64>,
    mut rx: mpsc::UnboundedReceiver<FlushRequest>,
    metrics: Arc<BrokerMetrics>,
) {
    let mut pending = Vec::new();
    while rx.recv_many(&mut pending, 4096).await > 0 {
        let store = store.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || store.sync()).await;
        metrics.flush.observe(started.elapsed());
        let ok = match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!("flush failed, produce requests get KAFKA_STORAGE_ERROR: {e}");
                false
            }
            Err(e) => {
                tracing::error!("flush task panicked: {e}");
                false
            }
        };
        let mut advanced = false;
        for req in pending.drain(..) {
            if ok {
                for (hw, end) in &req.marks {
                    hw.advance(*end);
                    advanced = true;
                }
            }
            if let Some(done) = req.done {
                let _ = done.send(ok);
            }
        }
        if advanced {
            hw_changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::error::StorageError;
    use crate::storage::memory::MemoryStore;
    use crate::storage::{Log, MetaRecord, TopicMeta};

    /// A store whose fsync takes 20 ms and is counted.
    struct SlowSync {
        inner: MemoryStore,
        syncs: AtomicUsize,
    }

    impl Store for SlowSync {
        fn cluster_id(&self) -> String {
            self.inner.cluster_id()
        }
        fn topics(&self) -> Result<Vec<TopicMeta>, StorageError> {
            self.inner.topics()
        }
        fn create_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
            self.inner.create_topic(meta)
        }
        fn open_log(&self, topic: &str, partition: i32) -> Result<Arc<dyn Log>, StorageError> {
            self.inner.open_log(topic, partition)
        }
        fn delete_topic(&self, meta: &TopicMeta) -> Result<(), StorageError> {
            self.inner.delete_topic(meta)
        }
        fn sync(&self) -> Result<(), StorageError> {
            std::thread::sleep(Duration::from_millis(20));
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn meta_put(&self, k: &[u8], v: &[u8]) -> Result<(), StorageError> {
            self.inner.meta_put(k, v)
        }
        fn meta_remove(&self, k: &[u8]) -> Result<(), StorageError> {
            self.inner.meta_remove(k)
        }
        fn meta_scan(&self, p: &[u8]) -> Result<Vec<MetaRecord>, StorageError> {
            self.inner.meta_scan(p)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_share_one_fsync() {
        let store = Arc::new(SlowSync {
            inner: MemoryStore::new("c"),
            syncs: AtomicUsize::new(0),
        });
        let (hw_tx, mut hw_rx) = watch::channel(0u64);
        let flusher = Flusher::start(store.clone(), hw_tx, Arc::default());
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let f = flusher.clone();
                tokio::spawn(async move { f.flush(Vec::new()).await })
            })
            .collect();
        for w in waiters {
            assert!(w.await.unwrap(), "every request is acknowledged as durable");
        }
        let syncs = store.syncs.load(Ordering::SeqCst);
        assert!(
            (1..=5).contains(&syncs),
            "100 concurrent requests took {syncs} fsyncs"
        );
        // A flush that advances no partition does not wake fetchers.
        assert!(!hw_rx.has_changed().unwrap());
        hw_rx.mark_unchanged();
    }
}
