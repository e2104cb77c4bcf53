//! TxnOffsetCommit (v0-3): offsets a transaction commits for a consumer group, held by the
//! transaction coordinator and stored in the group only when the transaction commits. From
//! v3 the consumer's group metadata comes along and a zombie consumer (an old generation)
//! is fenced, as in KIP-447.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::group::service::Committed;
use crate::state::State;

fn respond(
    req: &TxnOffsetCommitRequest,
    code_for: impl Fn(&str, i32) -> i16,
) -> TxnOffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code_for(&t.name, p.partition_index))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The transaction's answer for every partition: 0 or an error code.
fn commit(state: &State, req: &TxnOffsetCommitRequest, version: i16) -> i16 {
    if req.generation_id >= 0 {
        let instance = req.group_instance_id.as_deref();
        if let Err(e) =
            state
                .groups
                .check_commit(&req.group_id, req.generation_id, &req.member_id, instance)
        {
            return e.code();
        }
    }
    let exists = |topic: &str, p: i32| state.topic(topic).is_some_and(|t| t.partition(p).is_some());
    let offsets = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| exists(&t.name, p.partition_index))
                .map(|p| {
                    let committed = Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    };
                    (t.name.to_string(), p.partition_index, committed)
                })
        })
        .collect();
    let id = req.transactional_id.to_string();
    let mut c = state.txns.lock();
    let outcome = c.commit_offsets(
        &id,
        req.producer_id.0,
        req.producer_epoch,
        &req.group_id,
        offsets,
    );
    match outcome {
        Err(e) => super::txn_code(e, version, 3),
        Ok(()) => match state.txns.persist(&c, &id) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(transactional_id = %id, "storing transaction offsets failed: {e}");
                ResponseError::KafkaStorageError.code()
            }
        },
    }
}

pub fn handle(state: &Arc<State>, req: TxnOffsetCommitRequest, version: i16) -> Reply {
    let code = commit(state, &req, version);
    let response = respond(&req, super::offset_commit::partition_code(state, code));
    if code != 0 {
        return Reply::Ready(Box::new(response.into()), version);
    }
    super::when_durable(state, response, version, |mut r| {
        for t in &mut r.topics {
            for p in &mut t.partitions {
                p.error_code = ResponseError::KafkaStorageError.code();
            }
        }
        r
    })
}
