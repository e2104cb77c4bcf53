//! JoinGroup: handed to the coordinator; the answer may come after a rebalance.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::{str_bytes, wait_answer, Later};
use crate::group::coordinator::{JoinRequest, JoinResult};
use crate::group::service::Answer;
use crate::state::State;

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let resp = JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation_id)
        .with_protocol_name(Some(str_bytes(r.protocol_name.unwrap_or_default())))
        .with_leader(str_bytes(r.leader))
        .with_member_id(str_bytes(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if version >= 7 {
        resp.with_protocol_type(r.protocol_type.map(str_bytes))
    } else {
        resp
    }
}

pub fn handle(
    state: &Arc<State>,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: SocketAddr,
) -> Later {
    let join = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: client_id.to_string(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let rx = state.groups.join(join);
    let state = state.clone();
    Box::pin(async move {
        let result = match wait_answer(&state, rx).await {
            Some(Answer::Join(r)) => r,
            _ => JoinResult {
                error: Some(ResponseError::CoordinatorNotAvailable),
                generation_id: -1,
                ..Default::default()
            },
        };
        ResponseKind::from(response(result, version))
    })
}
