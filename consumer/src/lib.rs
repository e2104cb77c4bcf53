//! # finstream-consumer
//!
//! Kafka -> PostgreSQL, exactly once: each batch's rows (binary COPY), its poison messages
//! (dead-letter table) and its partitions' next offsets (compare-and-set) are committed in
//! one PostgreSQL transaction; see [`run`] for the whole protocol.
//!
//! * [`config`]: what a run is given and reports;
//! * [`db`]: connection settings, connecting, migrations;
//! * [`sink`]: the batch transaction and the stored positions;
//! * [`tracker`]: positions, batches and counts as a state machine without I/O;
//! * [`copy`]: rows in binary COPY format; rows PostgreSQL refuses become dead letters;
//! * [`pgerror`]: which PostgreSQL errors are retried, dead-lettered or fatal;
//! * [`gap`]: whether a stored position still fits its log (recreated topics, retention);
//! * [`topic_id`]: a topic's id, through librdkafka;
//! * [`message`]: decoding message values, poison detection;
//! * [`run`]: the consumer loop.

#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod config;
pub mod copy;
pub mod db;
pub mod dead_letters;
pub mod gap;
mod kafka;
pub mod message;
pub mod pgerror;
pub mod pgtls;
mod positions;
pub mod run;
pub mod sink;
pub mod stats;
pub mod topic_id;
pub mod tracker;

pub use config::{ConsumeConfig, ConsumeError, Summary, Targets};
pub use db::{pg_config, PgTarget};
pub use gap::OnGap;
pub use run::run;
pub use stats::Stats;
