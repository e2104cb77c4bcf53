//! EndTxn (v0-3): commit or abort. The prepared state is stored and flushed, then the
//! markers are written and the offsets applied ([`super::txn_complete`]); the answer comes
//! once all of it is durable.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use kafka_protocol::ResponseError;

use super::txn_complete::{prepare_and_complete, NotCompleted};
use super::Reply;
use crate::state::State;
use crate::txn::coordinator::End;

pub fn handle(state: &Arc<State>, req: EndTxnRequest, version: i16) -> Reply {
    let id = req.transactional_id.to_string();
    let answer = |code: i16| EndTxnResponse::default().with_error_code(code);
    let ready = |code: i16| Reply::Ready(Box::new(answer(code).into()), version);
    let outcome = {
        let mut c = state.txns.lock();
        let end = c.end(&id, req.producer_id.0, req.producer_epoch, req.committed);
        if let Ok(End::Complete(_)) = &end {
            if let Err(e) = state.txns.persist(&c, &id) {
                tracing::error!(transactional_id = %id, "storing the prepared state failed: {e}");
                return ready(ResponseError::KafkaStorageError.code());
            }
        }
        end
    };
    match outcome {
        Err(e) => ready(super::txn_code(e, version, 2)),
        Ok(End::Done) => ready(0),
        Ok(End::Complete(done)) => {
            let state = state.clone();
            Reply::Later(
                Box::pin(async move {
                    match prepare_and_complete(&state, done).await {
                        Ok(()) => answer(0).into(),
                        Err(NotCompleted(e)) => {
                            tracing::error!(transactional_id = %id, "ending the transaction failed: {e}");
                            answer(ResponseError::KafkaStorageError.code()).into()
                        }
                    }
                }),
                version,
            )
        }
    }
}
