//! # finstream-consumer
//!
//! Kafka -> PostgreSQL, exactly once: each batch's rows (binary COPY), its poison messages
//! (dead-letter table) and its partitions' next offsets (compare-and-set) are committed in
//! one PostgreSQL transaction; see [`run`] for the whole protocol.
//!
//! * [`db`]: connection, migrations, the batch transaction;
//! * [`message`]: decoding message values, poison detection;
//! * [`run`]: the consumer loop.

pub mod db;
pub mod message;
pub mod run;
pub mod stats;

pub use run::{pg_config, run, ConsumeConfig, ConsumeError, Summary, Targets};
pub use stats::Stats;
