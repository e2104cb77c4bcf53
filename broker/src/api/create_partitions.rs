//! CreatePartitions (v0-3): topics grow, never shrink; answered once the new partition
//! count is durable. Replica assignments may only name this broker.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, Reply};
use crate::state::State;

pub fn handle(state: &Arc<State>, req: CreatePartitionsRequest, version: i16) -> Reply {
    let node = state.config.node_id;
    let results: Vec<_> = req
        .topics
        .iter()
        .map(|t| {
            let foreign = t
                .assignments
                .iter()
                .flatten()
                .any(|a| a.broker_ids.iter().any(|b| b.0 != node));
            let outcome = if foreign {
                Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("only broker {node} exists"),
                ))
            } else {
                state
                    .create_partitions(&t.name, t.count, req.validate_only)
                    .map_err(|e| (e.code, e.message))
            };
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match outcome {
                Ok(()) => r,
                Err((code, msg)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(msg))),
            }
        })
        .collect();
    let response = CreatePartitionsResponse::default().with_results(results);
    if req.validate_only {
        return Reply::Ready(Box::new(response.into()), version);
    }
    super::when_durable(state, response, version, |mut r| {
        for t in &mut r.results {
            if t.error_code == 0 {
                t.error_code = ResponseError::KafkaStorageError.code();
            }
        }
        r
    })
}
