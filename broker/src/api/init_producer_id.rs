//! InitProducerId. For idempotent producers: a new producer id, or an epoch bump of an
//! existing one (KIP-360). For transactional ones, the transaction coordinator's id and
//! epoch for the `transactional.id`, after aborting the transaction a previous producer
//! left open (which fences it). Ids are persisted before they are handed out, so they never
//! repeat after a restart.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::txn_complete::{prepare_and_complete, NotCompleted};
use super::Reply;
use crate::state::State;
use crate::txn::coordinator::Init;
use crate::txn::service::wall_clock;

fn failed(code: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// One step of a transactional init: the coordinator's answer, stored when it changed.
fn init_step(state: &State, id: &str, req: &InitProducerIdRequest) -> Result<Init, ResponseError> {
    let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let mut c = state.txns.lock();
    let mut alloc = || state.allocate_producer_id().ok();
    let init = c.init(
        id,
        req.transaction_timeout_ms,
        expected,
        wall_clock(),
        &mut alloc,
    )?;
    state.txns.persist(&c, id).map_err(|e| {
        tracing::error!(
            transactional_id = id,
            "storing the producer's state failed: {e}"
        );
        ResponseError::KafkaStorageError
    })?;
    Ok(init)
}

/// A transactional producer's init: a transaction its predecessor left open is aborted
/// first (at most twice round: the abort bumps the epoch, the init bumps it again).
async fn transactional(
    state: std::sync::Arc<State>,
    id: String,
    req: InitProducerIdRequest,
    version: i16,
    client_id: String,
) -> kafka_protocol::messages::ResponseKind {
    for _ in 0..3 {
        match init_step(&state, &id, &req) {
            Ok(Init::Ready(pid, epoch)) => {
                if !state.flusher.flush(Vec::new()).await {
                    return failed(ResponseError::KafkaStorageError.code()).into();
                }
                tracing::debug!(transactional_id = %id, client_id, pid, epoch, "transactional producer ready");
                return InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .into();
            }
            Ok(Init::MustAbort(done)) => {
                tracing::info!(transactional_id = %id, client_id, "a new producer fences the previous one: aborting its open transaction");
                if let Err(NotCompleted(e)) = prepare_and_complete(&state, done).await {
                    tracing::error!(transactional_id = %id, "aborting the transaction failed: {e}");
                    return failed(ResponseError::KafkaStorageError.code()).into();
                }
            }
            Err(e) => return failed(super::txn_code(e, version, 4)).into(),
        }
    }
    failed(ResponseError::ConcurrentTransactions.code()).into()
}

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
    if let Some(id) = req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        return Reply::Later(
            Box::pin(transactional(
                state.clone(),
                id.to_string(),
                req,
                version,
                client_id.to_string(),
            )),
            version,
        );
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
