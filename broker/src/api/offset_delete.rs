//! OffsetDelete (v0): removes a group's committed offsets for some partitions, as
//! `kafka-consumer-groups --delete-offsets` does; answered once durable. A group with
//! members keeps its offsets (GROUP_SUBSCRIBED_TO_TOPIC per partition); an unknown group
//! gets GROUP_ID_NOT_FOUND.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;

fn respond(req: &OffsetDeleteRequest, code_for: impl Fn(&str, i32) -> i16) -> OffsetDeleteResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code_for(&t.name, p.partition_index))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

pub fn handle(state: &Arc<State>, req: OffsetDeleteRequest, version: i16) -> Reply {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let outcome = match state.groups.delete_offsets(&req.group_id, &wanted) {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(group = %req.group_id.0, "deleting offsets failed: {e}");
            Err(ResponseError::KafkaStorageError)
        }
    };
    let ready = |r: OffsetDeleteResponse| Reply::Ready(Box::new(r.into()), version);
    match outcome {
        Err(ResponseError::GroupSubscribedToTopic) => {
            let code = ResponseError::GroupSubscribedToTopic.code();
            ready(respond(&req, |_, _| code))
        }
        Err(e) => ready(respond(&req, |_, _| 0).with_error_code(e.code())),
        Ok(()) => {
            let response = respond(&req, super::offset_commit::partition_code(state, 0));
            super::when_durable(state, response, version, |r| {
                r.with_error_code(ResponseError::KafkaStorageError.code())
            })
        }
    }
}
