//! DeleteGroups: empty groups only (NON_EMPTY_GROUP otherwise), with their offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: DeleteGroupsRequest, version: i16) -> Reply {
    let results = req
        .groups_names
        .into_iter()
        .map(|g| {
            let outcome = state.groups.delete(&g).unwrap_or_else(|e| {
                tracing::error!(group = %g.0, "deleting group offsets failed: {e}");
                Err(ResponseError::KafkaStorageError)
            });
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(super::code(outcome))
        })
        .collect();
    let response = DeleteGroupsResponse::default().with_results(results);
    super::when_durable(state, response, version, |mut response| {
        for r in response.results.iter_mut().filter(|r| r.error_code == 0) {
            r.error_code = ResponseError::KafkaStorageError.code();
        }
        response
    })
}
