//! InitProducerId for idempotent (non-transactional) producers: a new producer id, or an
//! epoch bump of an existing one (KIP-360). Ids are persisted before they are handed out,
//! so they never repeat after a restart. Transactional ids are refused.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;

pub fn handle(
    state: &Arc<State>,
    req: InitProducerIdRequest,
    version: i16,
    client_id: &str,
) -> Reply {
    let fail = |code: ResponseError| {
        Reply::Ready(
            Box::new(
                InitProducerIdResponse::default()
                    .with_error_code(code.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .into(),
            ),
            version,
        )
    };
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        tracing::warn!(
            client_id,
            "refusing a transactional producer: transactions are not supported"
        );
        return fail(ResponseError::InvalidRequest);
    }
    let result = if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
        state.bump_producer_epoch(req.producer_id.0, req.producer_epoch)
    } else {
        state.allocate_producer_id().map(|id| Ok((id, 0)))
    };
    let (id, epoch) = match result {
        Ok(Ok(pair)) => pair,
        Ok(Err(code)) => return fail(code),
        Err(e) => {
            tracing::error!("allocating a producer id failed: {e}");
            return fail(ResponseError::KafkaStorageError);
        }
    };
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    super::when_durable(state, response, version, |_| {
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::KafkaStorageError.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    })
}
