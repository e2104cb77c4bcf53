//! Kafka transactions: the coordinator's state machine ([`coordinator`]), its stored form
//! ([`types`]) and the service that keeps it durable ([`service`]). Markers are written by
//! the API layer (`api::txn_end`), which sees the partitions.

pub mod coordinator;
#[cfg(test)]
mod coordinator_props;
pub mod service;
pub mod types;
