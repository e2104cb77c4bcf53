//! Consumer groups: the sans-io [`coordinator`] state machine, and [`service`] which runs
//! it for the broker (parked requests, the clock, committed offsets in the store).

pub mod coordinator;
pub mod service;
