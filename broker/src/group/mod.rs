//! Consumer groups: the sans-io [`coordinator`] state machine, and [`service`] which runs
//! it for the broker (parked requests, the clock, committed offsets in the store).

pub mod coordinator;
mod membership;
pub mod service;
mod types;
