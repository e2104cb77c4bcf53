//! Broker configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Everything `finstream broker` can be told. Defaults follow Kafka's where one exists.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to listen on, `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Data directory (segment files and sled metadata); `None` keeps everything in memory (tests only).
    pub data_dir: Option<PathBuf>,
    /// `host:port` announced to clients in Metadata; defaults to the bound address.
    pub advertised_listener: Option<String>,
    /// Create unknown topics on Metadata/Produce (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics (`num.partitions`).
    pub default_partitions: i32,
    /// Largest accepted record batch (`message.max.bytes`), default 1 MiB.
    pub max_message_bytes: usize,
    /// Largest accepted request (`socket.request.max.bytes`), default 100 MiB.
    pub max_request_bytes: usize,
    /// Largest accepted request of an API other than Produce (at most
    /// `max_request_bytes`), default 8 MiB.
    pub max_other_request_bytes: usize,
    /// Memory for requests being read and decoded, shared by every connection
    /// (`queued.max.request.bytes`); requests wait for it. Default 256 MiB.
    pub request_memory_bytes: usize,
    /// Concurrent client connections; further clients wait in the accept backlog.
    pub max_connections: usize,
    /// A connection that sends no complete request for this long is closed
    /// (`connections.max.idle.ms`, default 10 minutes).
    pub idle_timeout: Duration,
    /// Largest replication factor CreateTopics accepts; the topic is kept as one replica
    /// either way. 1 (the default) refuses anything more, as a one-node Kafka does; more
    /// lets tests written for a cluster create their topics.
    pub max_replication_factor: i16,
    /// Node id announced in Metadata.
    pub node_id: i32,
    /// An empty consumer group waits this long for more members before its first
    /// generation, and again after each new member, within the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`). Default 1 s: Kafka's 3 s would slow every test
    /// that starts a consumer; 0 (what Kafka test setups use) lets a leader assign before
    /// its client knows the topic's partitions, and the rejoin that follows is where
    /// kafka-python loses its assignment (docs/RELIABILITY.md).
    pub group_initial_rebalance_delay: Duration,
    /// Largest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`, default 15 minutes).
    pub transaction_max_timeout: Duration,
    /// How often open transactions are checked for their timeout (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` is 10 s; default 1 s).
    pub transaction_check_interval: Duration,
    /// Segments whose newest record is older than this are deleted (Kafka's
    /// `log.retention.ms`; default 7 days; `None`: kept forever).
    pub log_retention: Option<Duration>,
    /// Oldest segments are deleted while a partition is larger than this (Kafka's
    /// `log.retention.bytes`; default `None`: no size limit).
    pub log_retention_bytes: Option<u64>,
    /// How often retention runs (10 s by default, as Redpanda; Kafka's
    /// `log.retention.check.interval.ms` is 5 minutes).
    pub log_retention_check_interval: Duration,
    /// The active segment is closed once it is this old (Kafka's `log.roll.ms`/
    /// `log.roll.hours`, default 7 days; topics set `segment.ms`).
    pub log_roll: Option<Duration>,
    /// Compacted topics (`cleanup.policy=compact`) are cleaned (Kafka's
    /// `log.cleaner.enable`, default on).
    pub log_cleaner_enable: bool,
    /// How often the cleaner looks for logs to compact (10 s by default, as Redpanda's
    /// housekeeping; Kafka's `log.cleaner.backoff.ms` is 15 s).
    pub log_cleaner_backoff: Duration,
    /// Memory for the cleaner's key map (Kafka's `log.cleaner.dedupe.buffer.size`;
    /// default 64 MiB, about 2.4 million keys a pass).
    pub log_cleaner_dedupe_buffer_bytes: usize,
    /// sled page cache size in bytes.
    pub cache_bytes: u64,
    /// Storage format of a new data directory (an existing one keeps its own).
    pub storage_format: StorageFormat,
    /// Size at which a log segment file is closed and the next one started.
    pub segment_bytes: u64,
    /// Produce is refused (KAFKA_STORAGE_ERROR) while the data directory's filesystem has
    /// less than this many bytes free (see [`crate::disk`]).
    pub min_free_bytes: u64,
    /// SASL users (PLAIN and SCRAM-SHA-256); none = no authentication.
    pub sasl: crate::sasl::Users,
    /// TLS certificate chain and private key (PEM files); `None` = plaintext.
    pub tls: Option<TlsFiles>,
}

/// Where the listener's TLS certificate and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".into(),
            data_dir: None,
            advertised_listener: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_message_bytes: 1024 * 1024,
            max_request_bytes: 100 * 1024 * 1024,
            max_other_request_bytes: 8 * 1024 * 1024,
            request_memory_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            node_id: 1,
            max_replication_factor: 1,
            group_initial_rebalance_delay: Duration::from_secs(1),
            transaction_max_timeout: Duration::from_secs(900),
            transaction_check_interval: Duration::from_secs(1),
            log_retention: Some(Duration::from_secs(168 * 3600)),
            log_retention_bytes: None,
            log_retention_check_interval: Duration::from_secs(10),
            log_roll: Some(Duration::from_secs(168 * 3600)),
            log_cleaner_enable: true,
            log_cleaner_backoff: Duration::from_secs(10),
            log_cleaner_dedupe_buffer_bytes: 64 * 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            storage_format: StorageFormat::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            min_free_bytes: 100 * 1024 * 1024,
            sasl: crate::sasl::Users::default(),
            tls: None,
        }
    }
}

/// Default size at which a log segment is closed and the next one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How a data directory stores its partition logs. Chosen when the directory is created and
/// kept for its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StorageFormat {
    /// Append-only segment files (`storage::segments::SegmentStore`).
    #[default]
    Segments,
    /// Batches in sled (`storage::sled::SledStore`).
    Sled,
}

impl StorageFormat {
    /// The name used by `--storage-format` and recorded in the data directory.
    pub fn name(self) -> &'static str {
        match self {
            StorageFormat::Segments => "segments",
            StorageFormat::Sled => "sled",
        }
    }

    /// The format called `name`, if any.
    pub fn from_name(name: &str) -> Option<StorageFormat> {
        match name {
            "segments" => Some(StorageFormat::Segments),
            "sled" => Some(StorageFormat::Sled),
            _ => None,
        }
    }
}

/// Largest request accepted before SASL authentication completes (Kafka's
/// `sasl.server.max.receive.size`).
pub const MAX_UNAUTHENTICATED_REQUEST: usize = 512 * 1024;

/// Largest partition count a topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;
