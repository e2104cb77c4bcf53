//! OffsetCommit: checked against group membership, stored, and acknowledged after a flush.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::group::service::Committed;
use crate::state::State;

fn respond(req: &OffsetCommitRequest, code_for: impl Fn(&str, i32) -> i16) -> OffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code_for(&t.name, p.partition_index))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Each partition's answer to a commit whose group-level outcome is `group_code`: that
/// error for all, else 0, or UNKNOWN_TOPIC_OR_PARTITION where the partition does not exist.
pub(super) fn partition_code(state: &State, group_code: i16) -> impl Fn(&str, i32) -> i16 + '_ {
    move |topic, p| {
        if group_code != 0 {
            group_code
        } else if state.topic(topic).is_some_and(|t| t.partition(p).is_some()) {
            0
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        }
    }
}

pub fn handle(state: &Arc<State>, req: OffsetCommitRequest, version: i16) -> Reply {
    let exists = |topic: &str, p: i32| state.topic(topic).is_some_and(|t| t.partition(p).is_some());
    let offsets: Vec<(String, i32, Committed)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| exists(&t.name, p.partition_index))
                .map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let group_code = match state.groups.commit(
        &req.group_id,
        req.generation_id_or_member_epoch,
        &req.member_id,
        req.group_instance_id.as_deref(),
        offsets,
    ) {
        Ok(outcome) => super::code(outcome),
        Err(e) => {
            tracing::error!(group = %req.group_id.0, "storing offsets failed: {e}");
            ResponseError::KafkaStorageError.code()
        }
    };
    let response = respond(&req, partition_code(state, group_code));
    if group_code != 0 {
        return Reply::Ready(Box::new(response.into()), version);
    }
    super::when_durable(state, response, version, |mut response| {
        for t in &mut response.topics {
            for p in &mut t.partitions {
                p.error_code = ResponseError::KafkaStorageError.code();
            }
        }
        response
    })
}
