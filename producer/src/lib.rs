//! # finstream-producer
//!
//! CSV -> cleaned JSON messages -> Kafka, with byte-for-byte parity with the original
//! Python producer (pandas + NLTK + scikit-learn's MinMaxScaler + aiokafka).
//!
//! * [`clean`]: the description cleaning rules (pure functions);
//! * [`scaler`]: min-max scaling, fit and `scaler.json`;
//! * [`pyjson`]: the message body exactly as Python's `json.dumps` wrote it;
//! * [`source`]: streaming CSV input, columns by header name, rows to messages or dead letters;
//! * [`pipeline`]: the multi-threaded run through librdkafka;
//! * [`stats`]: live counters for metrics;
//! * [`generate`]: synthetic transactions for demos and benchmarks.

#![forbid(unsafe_code)]
#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod clean;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod pipeline;
pub mod pyjson;
pub mod scaler;
pub mod sink;
pub mod source;
pub mod stats;
pub mod txn_sink;

pub use pipeline::{run, ProduceConfig, ProduceError, Summary};
pub use scaler::Scaler;
pub use stats::Stats;
