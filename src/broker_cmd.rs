//! `finstream broker`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args};
use finstream_broker::BrokerConfig;
use finstream_broker::StorageFormat;

#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Address to listen on (HOST:PORT); port 0 picks a free port.
    #[arg(long, env = "FINSTREAM_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Directory of the durable log (created if missing).
    #[arg(long, env = "FINSTREAM_DATA_DIR", default_value = "./finstream-data")]
    pub data_dir: PathBuf,
    /// HOST:PORT announced to clients (for NAT or containers); default: the bound address.
    #[arg(long, env = "FINSTREAM_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Create unknown topics when a client asks for them (Metadata/Produce).
    #[arg(long, env = "FINSTREAM_AUTO_CREATE_TOPICS", default_value_t = true, action = ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    #[arg(long, env = "FINSTREAM_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,
    /// Largest record batch accepted, in bytes (Kafka's message.max.bytes).
    #[arg(long, env = "FINSTREAM_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Largest request accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, env = "FINSTREAM_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest request of an API other than Produce (Metadata, OffsetCommit...), in bytes.
    #[arg(long, env = "FINSTREAM_MAX_OTHER_REQUEST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_other_request_bytes: usize,
    /// Memory for requests being read and decoded, in MiB, shared by all connections
    /// (Kafka's queued.max.request.bytes): requests wait for it rather than allocate past it.
    #[arg(long, env = "FINSTREAM_REQUEST_MEMORY_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub request_memory_mb: u64,
    /// An empty consumer group waits this long (ms) for more members before its first
    /// generation, and again after each new member (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "FINSTREAM_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 1000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Largest transaction.timeout.ms a transactional producer may ask for (Kafka's
    /// transaction.max.timeout.ms).
    #[arg(long, env = "FINSTREAM_TRANSACTION_MAX_TIMEOUT_MS", default_value_t = 900_000, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub transaction_max_timeout_ms: u64,
    /// How often (ms) open transactions are checked against their timeout and aborted.
    #[arg(long, env = "FINSTREAM_TRANSACTION_CHECK_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub transaction_check_interval_ms: u64,
    /// Delete log segments whose newest record is older than this many hours (Kafka's
    /// log.retention.hours; -1 keeps data forever).
    #[arg(long, env = "FINSTREAM_LOG_RETENTION_HOURS", default_value_t = 168, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pub log_retention_hours: i64,
    /// The same in milliseconds; overrides --log-retention-hours (-1 keeps data forever).
    #[arg(long, env = "FINSTREAM_LOG_RETENTION_MS", allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pub log_retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition is larger than this many bytes (Kafka's
    /// log.retention.bytes; -1: no size limit).
    #[arg(long, env = "FINSTREAM_LOG_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    pub log_retention_bytes: i64,
    /// How often (ms) retention runs.
    #[arg(long, env = "FINSTREAM_LOG_RETENTION_CHECK_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub log_retention_check_interval_ms: u64,
    /// Close the active log segment once it is this many hours old (Kafka's
    /// log.roll.hours; topics set segment.ms).
    #[arg(long, env = "FINSTREAM_LOG_ROLL_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_roll_hours: u64,
    /// The same in milliseconds; overrides --log-roll-hours.
    #[arg(long, env = "FINSTREAM_LOG_ROLL_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub log_roll_ms: Option<u64>,
    /// Size of a log segment file in bytes (Kafka's log.segment.bytes); overrides
    /// --segment-mb. Topics set segment.bytes.
    #[arg(long, env = "FINSTREAM_LOG_SEGMENT_BYTES", value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    pub log_segment_bytes: Option<u64>,
    /// Compact topics whose cleanup.policy has "compact" (Kafka's log.cleaner.enable).
    #[arg(long, env = "FINSTREAM_LOG_CLEANER_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_cleaner_enable: bool,
    /// How often (ms) the cleaner looks for logs to compact (Kafka's log.cleaner.backoff.ms).
    #[arg(long, env = "FINSTREAM_LOG_CLEANER_BACKOFF_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub log_cleaner_backoff_ms: u64,
    /// Memory for the cleaner's key map, in MiB: about 37,000 keys per MiB are cleaned per
    /// pass (Kafka's log.cleaner.dedupe.buffer.size).
    #[arg(long, env = "FINSTREAM_LOG_CLEANER_DEDUPE_BUFFER_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16384))]
    pub log_cleaner_dedupe_buffer_mb: u64,
    /// Accept CreateTopics with a replication factor up to N (kept as one replica): for
    /// tests written for a cluster. 1 refuses more, as a one-node Kafka does.
    #[arg(long, env = "FINSTREAM_MAX_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
    pub max_replication_factor: i16,
    /// Most concurrent client connections.
    #[arg(long, env = "FINSTREAM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Close connections idle for this many milliseconds (Kafka's connections.max.idle.ms).
    #[arg(long, env = "FINSTREAM_IDLE_TIMEOUT_MS", default_value_t = 600_000)]
    pub idle_timeout_ms: u64,
    /// Metrics, health and status page on this HTTP address ("off" to disable).
    #[arg(long, env = "FINSTREAM_HTTP", default_value = "127.0.0.1:9644")]
    pub http: String,
    /// sled page cache, in MiB (metadata only with the segments storage format).
    #[arg(long, env = "FINSTREAM_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// How a new data directory stores partition logs: "segments" (append-only files,
    /// the default) or "sled" (batches inside sled, the only format before segment files). An existing
    /// data directory keeps the format it was created with.
    #[arg(long, env = "FINSTREAM_STORAGE_FORMAT", default_value = "segments", value_parser = ["segments", "sled"])]
    pub storage_format: String,
    /// Size of a log segment file, in MiB, before the next one is started.
    #[arg(long, env = "FINSTREAM_SEGMENT_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub segment_mb: u64,
    /// Refuse produce (KAFKA_STORAGE_ERROR, which clients retry) while the data directory's
    /// filesystem has less than this many bytes free; reads go on.
    #[arg(long, env = "FINSTREAM_MIN_FREE_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub min_free_bytes: u64,
    /// TLS certificate chain (PEM); with --tls-key, the listener speaks TLS only.
    #[arg(
        long,
        env = "FINSTREAM_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "FINSTREAM_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require SASL (PLAIN or SCRAM-SHA-256) from every client; FILE has `user:password`
    /// lines. Use with TLS: PLAIN sends the password in clear.
    #[arg(long, env = "FINSTREAM_SASL_USERS", value_name = "FILE")]
    pub sasl_users: Option<PathBuf>,
}

impl BrokerArgs {
    pub fn to_config(&self) -> anyhow::Result<BrokerConfig> {
        let sasl = match &self.sasl_users {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read SASL users file {}", path.display()))?;
                let users = finstream_broker::sasl::Users::parse_file(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                anyhow::ensure!(!users.is_empty(), "{}: no users", path.display());
                finstream_broker::sasl::Users::new(&users)
            }
            None => finstream_broker::sasl::Users::default(),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(finstream_broker::config::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(BrokerConfig {
            sasl,
            tls,
            listen: self.listen.clone(),
            data_dir: Some(self.data_dir.clone()),
            advertised_listener: self.advertised_listener.clone(),
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            max_message_bytes: self.max_message_bytes,
            max_request_bytes: self.max_request_bytes,
            max_other_request_bytes: self.max_other_request_bytes,
            request_memory_bytes: usize::try_from(self.request_memory_mb * 1024 * 1024)
                .unwrap_or(usize::MAX),
            max_connections: self.max_connections,
            max_replication_factor: self.max_replication_factor,
            log_retention: {
                let ms = self
                    .log_retention_ms
                    .unwrap_or(self.log_retention_hours.saturating_mul(3_600_000));
                u64::try_from(ms).ok().map(Duration::from_millis)
            },
            log_retention_bytes: u64::try_from(self.log_retention_bytes).ok(),
            log_retention_check_interval: Duration::from_millis(
                self.log_retention_check_interval_ms,
            ),
            group_initial_rebalance_delay: Duration::from_millis(
                self.group_initial_rebalance_delay_ms,
            ),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            transaction_max_timeout: Duration::from_millis(self.transaction_max_timeout_ms),
            transaction_check_interval: Duration::from_millis(self.transaction_check_interval_ms),
            cache_bytes: self.cache_mb * 1024 * 1024,
            storage_format: StorageFormat::from_name(&self.storage_format).ok_or_else(|| {
                anyhow::anyhow!("unknown --storage-format {}", self.storage_format)
            })?,
            segment_bytes: self
                .log_segment_bytes
                .unwrap_or(self.segment_mb * 1024 * 1024),
            log_roll: Some(Duration::from_millis(
                self.log_roll_ms
                    .unwrap_or(self.log_roll_hours.saturating_mul(3_600_000)),
            )),
            log_cleaner_enable: self.log_cleaner_enable,
            log_cleaner_backoff: Duration::from_millis(self.log_cleaner_backoff_ms),
            log_cleaner_dedupe_buffer_bytes: usize::try_from(
                self.log_cleaner_dedupe_buffer_mb * 1024 * 1024,
            )
            .unwrap_or(usize::MAX),
            min_free_bytes: self.min_free_bytes,
            ..BrokerConfig::default()
        })
    }
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let broker = finstream_broker::start(args.to_config()?)
        .await
        .context("cannot start the broker")?;
    let observed = crate::http::Observed {
        broker: Some(broker.view()),
        ..Default::default()
    };
    crate::http::maybe_serve(&args.http, observed).await?;
    crate::shutdown_signal().await;
    broker.shutdown().await.context("broker shutdown")?;
    Ok(ExitCode::SUCCESS)
}
