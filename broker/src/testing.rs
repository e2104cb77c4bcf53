//! A broker for other projects' tests: no Docker, no fixed port, no leftovers.
//!
//! [`EmbeddedKafka::start`] runs a broker on `127.0.0.1:0` with a temporary data directory,
//! on its own threads, so it works from plain `#[test]`s and from `#[tokio::test]`s alike.
//! Point any Kafka client at [`EmbeddedKafka::bootstrap_servers`]; create topics and read
//! back what was produced with the helpers; dropping it shuts the broker down and deletes
//! its data.
//!
//! ```
//! use finstream_broker::testing::EmbeddedKafka;
//!
//! let kafka = EmbeddedKafka::start().expect("broker starts");
//! kafka.create_topic("payments", 3).expect("topic created");
//! assert!(kafka.bootstrap_servers().starts_with("127.0.0.1:"));
//! // ... produce with rdkafka, kafka-python, kcat ... pointed at kafka.bootstrap_servers()
//! assert!(kafka.records("payments", 0).expect("readable").is_empty());
//! ```

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::browse::{Start, MAX_LIMIT};
use crate::{BrokerConfig, BrokerError, RunningBroker};

pub use crate::browse::Record;

/// A running broker with a temporary data directory; stops when dropped.
pub struct EmbeddedKafka {
    bootstrap: String,
    view: crate::BrokerView,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl EmbeddedKafka {
    /// A broker on `127.0.0.1:0` with the default configuration (topics auto-created, one
    /// partition each).
    pub fn start() -> Result<Self, BrokerError> {
        Self::start_with(|_| {})
    }

    /// The same, with the configuration adjusted by `f` first (the listener and the data
    /// directory are set already).
    pub fn start_with(f: impl FnOnce(&mut BrokerConfig)) -> Result<Self, BrokerError> {
        let dir = tempfile::tempdir()?;
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: Some(dir.path().to_path_buf()),
            group_initial_rebalance_delay: Duration::ZERO,
            ..BrokerConfig::default()
        };
        f(&mut config);
        let (ready_tx, ready_rx) =
            mpsc::channel::<Result<(String, crate::BrokerView), BrokerError>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || serve(config, ready_tx, stopped))?;
        let (bootstrap, view) = ready_rx
            .recv()
            .map_err(|_| BrokerError::Io(std::io::Error::other("the broker thread ended")))??;
        Ok(EmbeddedKafka {
            bootstrap,
            view,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// `host:port` for the clients' `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with `partitions` partitions (an error if it exists).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        self.view
            .0
            .create_topic(topic, partitions)
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Every record of `topic`'s `partition` below the high watermark, in order (control
    /// records of transactions left out, aborted ones included, as read_uncommitted).
    pub fn records(&self, topic: &str, partition: i32) -> Result<Vec<Record>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let page = self
                .view
                .browse(topic, partition, Start::Offset(at), MAX_LIMIT)
                .map_err(|e| e.to_string())?;
            out.extend(page.records);
            if page.next_offset >= page.high_watermark || page.next_offset == at {
                return Ok(out);
            }
            at = page.next_offset;
        }
    }
}

/// The broker thread: its own runtime, the broker, and a clean shutdown when told.
fn serve(
    config: BrokerConfig,
    ready: mpsc::Sender<Result<(String, crate::BrokerView), BrokerError>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    rt.block_on(async move {
        let broker: RunningBroker = match crate::start(config).await {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok((broker.bootstrap_servers(), broker.view())));
        let _ = stopped.await;
        if let Err(e) = broker.shutdown().await {
            tracing::warn!("embedded broker shutdown: {e}");
        }
    });
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
