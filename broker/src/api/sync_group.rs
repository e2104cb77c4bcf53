//! SyncGroup: followers wait for the leader's assignment.

use std::sync::Arc;

use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, wait_answer, Later};
use crate::group::coordinator::{SyncRequest, SyncResult};
use crate::group::service::Answer;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: SyncGroupRequest, version: i16) -> Later {
    let sync = SyncRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let rx = state.groups.sync(sync);
    let state = state.clone();
    Box::pin(async move {
        let r = match wait_answer(&state, rx).await {
            Some(Answer::Sync(r)) => r,
            _ => SyncResult {
                error: Some(ResponseError::CoordinatorNotAvailable),
                ..Default::default()
            },
        };
        let resp = SyncGroupResponse::default()
            .with_error_code(r.error.map_or(0, |e| e.code()))
            .with_assignment(r.assignment);
        let resp = if version >= 5 {
            resp.with_protocol_type(r.protocol_type.map(str_bytes))
                .with_protocol_name(r.protocol_name.map(str_bytes))
        } else {
            resp
        };
        ResponseKind::from(resp)
    })
}
