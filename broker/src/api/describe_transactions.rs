//! DescribeTransactions (v0): each transactional id's state, producer, timeout, start time
//! and partitions, as `kafka-transactions.sh describe` shows them.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::state::State;
use crate::txn::types::TxnState as S;

pub fn handle(
    state: &Arc<State>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let c = state.txns.lock();
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let r = TransactionState::default().with_transactional_id(id.clone());
            let Some(m) = c.get(&id) else {
                return r
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1)
                    .with_transaction_state(str_bytes(""));
            };
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in &m.partitions {
                by_topic.entry(t).or_default().push(*p);
            }
            let topics = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    TopicData::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps)
                })
                .collect();
            let started = if m.state == S::Empty {
                -1
            } else {
                m.started as i64
            };
            r.with_transaction_state(str_bytes(m.state.name()))
                .with_transaction_timeout_ms(i32::try_from(m.timeout_ms).unwrap_or(i32::MAX))
                .with_transaction_start_time_ms(started)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
