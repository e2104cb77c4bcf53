//! Group commit: one task turns many "make this durable" requests into one fsync.
//!
//! Produce handlers append to the logs, then call [`Flusher::request`] with the end offset
//! of every partition they touched. The flusher task takes every request queued so far,
//! runs one [`Store::sync`], then advances those partitions' high watermarks, wakes
//! long-polling fetches and answers the waiting producers. Requests that arrive during a
//! sync are served by the next one, so N concurrent producers cost ~1 fsync, not N.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::state::Partition;
use crate::storage::Store;

/// Marks to apply after the flush: partition and its end offset at append time.
pub type Marks = Vec<(Arc<Partition>, i64)>;

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
    pub fn start(store: Arc<dyn Store>, hw_changed: watch::Sender<u64>) -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, hw_changed, rx));
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
) {
    let mut pending = Vec::new();
    while rx.recv_many(&mut pending, 4096).await > 0 {
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.sync()).await;
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
                for (partition, end) in &req.marks {
                    partition.advance_high_watermark(*end);
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
