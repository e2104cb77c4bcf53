//! DescribeProducers (v0): each partition's active idempotent and transactional producers,
//! with their epoch, last sequence and the start of their open transaction, as
//! `kafka-transactions.sh describe-producers` shows them.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::state::Partition;
use crate::state::State;

fn producers(partition: &Partition) -> Vec<ProducerState> {
    let open = partition.log.txn_index().open();
    let mut all: Vec<_> = partition
        .log
        .producers()
        .into_iter()
        .map(|(pid, entry)| {
            let txn_start = open
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(-1, |&(_, first)| first);
            ProducerState::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(i32::from(entry.epoch))
                .with_last_sequence(entry.batches.back().map_or(-1, |b| b.last_seq))
                .with_last_timestamp(-1)
                .with_coordinator_epoch(if txn_start >= 0 { 0 } else { -1 })
                .with_current_txn_start_offset(txn_start)
        })
        .collect();
    all.sort_by_key(|p| p.producer_id.0);
    all
}

pub fn handle(state: &Arc<State>, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topic(&t.name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let r = PartitionResponse::default().with_partition_index(p);
                    match topic.as_ref().and_then(|topic| topic.partition(p)) {
                        Some(partition) => r.with_active_producers(producers(partition)),
                        None => r
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "topic '{}' has no partition {p}",
                                t.name.0
                            )))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
