//! ListTransactions (v0-1): every transactional id, filtered by state, producer id and
//! (v1) how long its transaction has been open.

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::str_bytes;
use crate::state::State;
use crate::txn::service::wall_clock;
use crate::txn::types::TxnState as S;

const STATES: [S; 6] = [
    S::Empty,
    S::Ongoing,
    S::PrepareCommit,
    S::PrepareAbort,
    S::CompleteCommit,
    S::CompleteAbort,
];

pub fn handle(state: &Arc<State>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = wall_clock();
    let c = state.txns.lock();
    let states = c
        .all()
        .filter(|(_, m)| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.state.name())
        })
        .filter(|(_, m)| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|(_, m)| {
            req.duration_filter < 0
                || (m.state == S::Ongoing
                    && now.saturating_sub(m.started) as i64 >= req.duration_filter)
        })
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(id.clone())))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
