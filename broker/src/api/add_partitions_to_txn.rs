//! AddPartitionsToTxn (v0-3): partitions join the producer's transaction before it writes
//! to them. Every partition gets the same answer: the coordinator's, or
//! UNKNOWN_TOPIC_OR_PARTITION for all when one does not exist (Kafka's
//! OPERATION_NOT_ATTEMPTED for the others is a v4 batching detail the clients handle the
//! same way).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;
use crate::txn::service::wall_clock;

fn respond(req: &AddPartitionsToTxnRequest, code: i16) -> AddPartitionsToTxnResponse {
    let topics = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

pub fn handle(state: &Arc<State>, req: AddPartitionsToTxnRequest, version: i16) -> Reply {
    let ready = |r: AddPartitionsToTxnResponse| Reply::Ready(Box::new(r.into()), version);
    let mut partitions = Vec::new();
    for t in &req.v3_and_below_topics {
        let topic = state.topic(&t.name);
        for &p in &t.partitions {
            if topic.as_ref().and_then(|t| t.partition(p)).is_none() {
                return ready(respond(&req, ResponseError::UnknownTopicOrPartition.code()));
            }
            partitions.push((t.name.to_string(), p));
        }
    }
    let id = req.v3_and_below_transactional_id.to_string();
    let outcome = {
        let mut c = state.txns.lock();
        c.add_partitions(
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &partitions,
            wall_clock(),
        )
        .map(|changed| !changed || state.txns.persist(&c, &id).is_ok())
    };
    match outcome {
        Err(e) => ready(respond(&req, super::txn_code(e, version, 2))),
        Ok(false) => ready(respond(&req, ResponseError::KafkaStorageError.code())),
        Ok(true) => {
            let response = respond(&req, 0);
            super::when_durable(state, response, version, |mut r| {
                for t in &mut r.results_by_topic_v3_and_below {
                    for p in &mut t.results_by_partition {
                        p.partition_error_code = ResponseError::KafkaStorageError.code();
                    }
                }
                r
            })
        }
    }
}
