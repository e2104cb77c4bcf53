//! AddOffsetsToTxn (v0-3): a group's offsets join the producer's transaction; they are
//! sent next with TxnOffsetCommit and applied when the transaction commits.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;
use crate::txn::service::wall_clock;

pub fn handle(state: &Arc<State>, req: AddOffsetsToTxnRequest, version: i16) -> Reply {
    let id = req.transactional_id.to_string();
    let outcome = {
        let mut c = state.txns.lock();
        c.add_offsets(
            &id,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id,
            wall_clock(),
        )
        .map(|changed| !changed || state.txns.persist(&c, &id).is_ok())
    };
    let answer = |code: i16| AddOffsetsToTxnResponse::default().with_error_code(code);
    match outcome {
        Err(e) => Reply::Ready(
            Box::new(answer(super::txn_code(e, version, 2)).into()),
            version,
        ),
        Ok(false) => Reply::Ready(
            Box::new(answer(ResponseError::KafkaStorageError.code()).into()),
            version,
        ),
        Ok(true) => super::when_durable(state, answer(0), version, |r| {
            r.with_error_code(ResponseError::KafkaStorageError.code())
        }),
    }
}
