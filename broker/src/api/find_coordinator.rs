//! FindCoordinator: this broker coordinates every group and every transactional id (v0-3
//! one key, v4 batched keys).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::state::State;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn lookup(state: &State, key_type: i8) -> Result<(BrokerId, StrBytes, i32), (i16, String)> {
    if key_type != KEY_TYPE_GROUP && key_type != KEY_TYPE_TRANSACTION {
        return Err((
            ResponseError::InvalidRequest.code(),
            format!("unknown coordinator key type {key_type}"),
        ));
    }
    let (host, port) = &state.advertised;
    Ok((
        BrokerId(state.config.node_id),
        str_bytes(host.clone()),
        *port,
    ))
}

pub fn handle(
    state: &Arc<State>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| match lookup(state, req.key_type) {
                Ok((node, host, port)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port),
                Err((code, msg)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(msg))),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match lookup(state, req.key_type) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err((code, msg)) => {
            let r = FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                r.with_error_message(Some(str_bytes(msg)))
            } else {
                r
            }
        }
    }
}
