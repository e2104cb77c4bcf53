//! # finstream-broker
//!
//! A single-node Kafka-wire-compatible broker: append-only segment-file logs, metadata in
//! sled, optional TLS and SASL (PLAIN, SCRAM-SHA-256); no replication. Enough of the
//! protocol for librdkafka, kcat and the mainstream clients to produce, fetch, use
//! consumer groups and administer topics.
//!
//! Public: [`start`] a broker from a [`BrokerConfig`]; a [`RunningBroker`] gives a
//! read-only [`BrokerView`]. Inside, layers point one way (docs/architecture.md): `server`
//! (listener) -> `connection` (frames, SASL gate, ordered request pipeline) -> `api` (one
//! module per Kafka API) -> `state` (topics, partitions, high watermarks) and `group`
//! (consumer groups) -> `flush` (group commit) -> `storage` (the `Log`/`Store` traits:
//! segment files, all-sled, in-memory).

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[doc(hidden)]
pub mod api;
pub mod batch;
pub mod browse;
pub(crate) mod budget;
pub(crate) mod cleaner;
pub(crate) mod clock;
pub(crate) mod compaction;
pub mod config;
pub(crate) mod connection;
pub(crate) mod control;
pub(crate) mod disk;
pub mod error;
pub(crate) mod failpoint;
pub(crate) mod flush;
pub(crate) mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod group;
pub(crate) mod ids;
pub(crate) mod metrics;
pub(crate) mod producer_state;
pub(crate) mod retention;
pub mod sasl;
pub mod server;
pub(crate) mod state;
pub(crate) mod storage;
pub mod testing;
pub(crate) mod tls;
pub(crate) mod topic_config;
pub(crate) mod topic_config_store;
pub(crate) mod topic_name;
pub(crate) mod txn;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use browse::{BrowseError, Page, Record, Start};
pub use config::{BrokerConfig, StorageFormat};
pub use error::{BrokerError, StorageError};
pub use view::{BrokerView, CommittedView, GroupView, PartitionView, TopicView};

use state::State;
use storage::{memory::MemoryStore, Store};

/// A broker that is accepting connections.
pub struct RunningBroker {
    local_addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), BrokerError>>,
}

impl RunningBroker {
    /// The address the listener is bound to (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `host:port` announced to clients; use this as `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("{}:{}", self.state.advertised.0, self.state.advertised.1)
    }

    /// A read-only view (topics, groups, stored batches, metrics), e.g. for status pages.
    pub fn view(&self) -> BrokerView {
        BrokerView(self.state.clone())
    }

    /// Creates `topic` with the default partition count unless it exists.
    pub fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        self.state
            .topic_or_create(topic, true)
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Stops accepting, finishes in-flight requests, flushes to disk and returns.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(BrokerError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

fn advertised(config: &BrokerConfig, local: SocketAddr) -> Result<(String, i32), BrokerError> {
    if let Some(adv) = &config.advertised_listener {
        let (host, port) = adv.rsplit_once(':').ok_or_else(|| {
            BrokerError::Config(format!("advertised listener '{adv}' is not HOST:PORT"))
        })?;
        let port: u16 = port.parse().map_err(|_| {
            BrokerError::Config(format!("advertised listener '{adv}' has a bad port"))
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return Ok((host.to_string(), i32::from(port)));
    }
    let host = if local.ip().is_unspecified() {
        tracing::warn!(
            "listening on {local} without --advertised-listener: announcing 127.0.0.1, \
             remote clients will need --advertised-listener"
        );
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    Ok((host, i32::from(local.port())))
}

/// Opens the store, recovers state, binds the listener and starts serving.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
    if config.default_partitions < 1 || config.default_partitions > config::MAX_PARTITIONS {
        return Err(BrokerError::Config(format!(
            "default partitions must be 1..={}, got {}",
            config::MAX_PARTITIONS,
            config.default_partitions
        )));
    }
    let store: Arc<dyn Store> = match &config.data_dir {
        Some(dir) => {
            let dir = dir.clone();
            let (cache, format, segment) = (
                config.cache_bytes,
                config.storage_format,
                config.segment_bytes,
            );
            tokio::task::spawn_blocking(move || storage::open(&dir, cache, format, segment))
                .await
                .map_err(|e| BrokerError::Io(std::io::Error::other(e.to_string())))??
        }
        None => Arc::new(MemoryStore::new(ids::new_cluster_id())),
    };
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| BrokerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr()?;
    let exposed = exposure_warning(local_addr, config.tls.is_some());
    if let Some(warning) = exposed.filter(|_| !config.sasl.enabled()) {
        tracing::warn!(listen = %local_addr, "{warning}");
    }
    let advertised = advertised(&config, local_addr)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = State::recover(config, store, advertised, shutdown_rx.clone())?;
    api::txn_complete::spawn_ticker(&state);
    retention::spawn(
        &state,
        retention::Limits {
            max_age_ms: state.config.log_retention.map(|d| d.as_millis() as i64),
            max_bytes: state.config.log_retention_bytes,
        },
        state.config.log_retention_check_interval,
    );
    let cleaner = state
        .config
        .log_cleaner_enable
        .then(|| {
            let tag = local_addr.port().to_string();
            compaction::spawn(&state, state.config.log_cleaner_backoff, &tag)
        })
        .flatten();
    tracing::info!(
        listen = %local_addr,
        advertised = %format!("{}:{}", state.advertised.0, state.advertised.1),
        cluster_id = %state.cluster_id,
        "broker ready"
    );
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let mut rx = shutdown_rx;
        server::run(listener, task_state.clone(), tls, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
        let s = task_state.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(c) = cleaner {
                c.stop();
            }
            s.sync()
        })
        .await
        .map_err(|e| BrokerError::Io(std::io::Error::other(e.to_string())))??;
        tracing::info!("broker stopped, data flushed");
        Ok(())
    });
    Ok(RunningBroker {
        local_addr,
        state,
        shutdown: shutdown_tx,
        task,
    })
}

/// What to warn about a listener without SASL users beyond this machine: anyone who can
/// reach it can read and write every topic (over TLS, if `tls`, which encrypts but
/// authenticates no one).
pub fn exposure_warning(addr: std::net::SocketAddr, tls: bool) -> Option<String> {
    let how = if tls {
        "without authentication (TLS encrypts, but admits anyone)"
    } else {
        "without authentication or TLS"
    };
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} {how}: anyone who can reach this address can read and write every topic; give --sasl-users, or bind 127.0.0.1 unless the network is trusted"
        )
    })
}

#[cfg(test)]
mod exposure_tests {
    #[test]
    fn only_non_loopback_addresses_are_warned_about() {
        for quiet in ["127.0.0.1:9092", "[::1]:9092", "127.0.0.2:1"] {
            assert_eq!(
                super::exposure_warning(quiet.parse().unwrap(), false),
                None,
                "{quiet}"
            );
        }
        for loud in ["0.0.0.0:9092", "[::]:9092", "192.168.1.10:9092"] {
            let w = super::exposure_warning(loud.parse().unwrap(), false).unwrap();
            assert!(w.contains("without authentication or TLS"), "{loud}: {w}");
            let w = super::exposure_warning(loud.parse().unwrap(), true).unwrap();
            assert!(w.contains("TLS encrypts, but admits anyone"), "{loud}: {w}");
        }
    }
}
