//! Heartbeat.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::state::State;

pub fn handle(state: &Arc<State>, req: HeartbeatRequest) -> HeartbeatResponse {
    let outcome = state.groups.heartbeat(
        &req.group_id,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
    );
    HeartbeatResponse::default().with_error_code(super::code(outcome))
}
