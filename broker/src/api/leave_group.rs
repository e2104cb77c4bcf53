//! LeaveGroup: one member (v0-2) or a batch of members (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if version < 3 {
        let outcomes = state
            .groups
            .leave(&req.group_id, &[(req.member_id.to_string(), None)]);
        let outcome = outcomes.first().copied().unwrap_or(Ok(()));
        return LeaveGroupResponse::default().with_error_code(super::code(outcome));
    }
    let leaving: Vec<(String, Option<String>)> = req
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        })
        .collect();
    let outcomes = state.groups.leave(&req.group_id, &leaving);
    let members = leaving
        .into_iter()
        .zip(outcomes)
        .map(|((id, instance), outcome)| {
            MemberResponse::default()
                .with_member_id(str_bytes(id))
                .with_group_instance_id(instance.map(str_bytes))
                .with_error_code(super::code(outcome))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
