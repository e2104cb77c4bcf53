//! What a consumer run is given, what it reports, and how it fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;

use crate::db::DbError;
use crate::gap::OnGap;
use crate::stats::Stats;
use crate::topic_id::TopicIdError;

/// Everything a consumer run needs.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Topic to load.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// PostgreSQL connection settings.
    pub pg: crate::db::PgTarget,
    /// Target table (`NAME` or `SCHEMA.NAME`).
    pub table: String,
    /// A batch closes at this many messages...
    pub batch_size: usize,
    /// ...or this long after its first message, whichever comes first.
    pub batch_timeout: Duration,
    /// librdkafka properties, applied after our defaults.
    pub kafka_properties: Vec<(String, String)>,
    /// Exit once everything up to the high watermarks seen at start is loaded.
    pub stop_at_end: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Live counters, shared with metrics endpoints.
    pub stats: Arc<Stats>,
    /// Wait for each batch's COMMIT to reach PostgreSQL's disk (`synchronous_commit = on`).
    /// Off by default: rows and offsets still commit atomically, so a PostgreSQL crash can
    /// only lose whole recent batches *and their offsets* together, and they are loaded again
    /// from Kafka; a durable commit is made before the consumer exits.
    pub synchronous_commit: bool,
    /// What to do when a stored position does not fit its log (see [`crate::gap`]).
    pub on_gap: OnGap,
    /// How often the topic's id is checked while running (a topic deleted and created again
    /// under the same name is loaded from its start).
    pub topic_check_interval: Duration,
}

impl ConsumeConfig {
    /// Defaults for everything but the essentials.
    pub fn new(bootstrap_servers: &str, topic: &str, group: &str, pg: crate::db::PgTarget) -> Self {
        ConsumeConfig {
            bootstrap_servers: bootstrap_servers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            pg,
            table: "transactions".into(),
            batch_size: 5000,
            batch_timeout: Duration::from_millis(20),
            kafka_properties: Vec::new(),
            stop_at_end: false,
            max_backoff: Duration::from_secs(5),
            stats: Arc::default(),
            synchronous_commit: false,
            on_gap: OnGap::Earliest,
            topic_check_interval: Duration::from_secs(10),
        }
    }
}

/// Errors that end a consumer run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// PostgreSQL refused something retrying will not fix (table shape, permissions...).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A stored position does not fit its log and `--on-gap fail` was given.
    #[error("{0}; stopping as --on-gap fail asks (nothing was written)")]
    Gap(String),
    /// The topic could not be described.
    #[error(transparent)]
    TopicId(#[from] TopicIdError),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Rows committed to the table.
    pub rows_loaded: u64,
    /// Poison messages committed to the dead-letter table.
    pub dead_letters: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Times the consumer went back to PostgreSQL's positions (PostgreSQL failures, offset
    /// conflicts) and loaded again from there.
    pub retries: u64,
    /// Stored positions that did not fit their log (recorded in `finstream_gaps`).
    pub gaps: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.rows_loaded as f64 / self.seconds
        } else {
            0.0
        };
        write!(
            f,
            "rows loaded {}, dead letters {}, batches {}, retries {}, ",
            self.rows_loaded, self.dead_letters, self.batches, self.retries
        )?;
        if self.gaps > 0 {
            write!(f, "gaps {}, ", self.gaps)?;
        }
        write!(f, "{:.2} s, {rate:.0} rows/s", self.seconds)
    }
}

/// Target offsets: the run ends once PostgreSQL holds at least these for every partition.
pub type Targets = HashMap<i32, i64>;
