//! Ending transactions: the coordinator's [`Completion`]s carried out against the logs and
//! the groups, and the task that aborts timed-out transactions and finishes those a crash
//! interrupted.
//!
//! Order, as in Kafka: the `Prepare*` state is stored and flushed first (then the outcome is
//! decided for good), then a marker is appended to every partition of the transaction and,
//! on commit, its offsets are stored in their groups; a flush makes them durable and moves
//! the high watermarks past the markers; only then does the state become `Complete*` (in
//! memory, and stored for the next flush). A crash before that leaves `Prepare*` stored,
//! and the completion runs again at start-up; a marker written twice changes nothing (the
//! second finds no open transaction). Until `Complete*`, requests for the transactional id
//! get CONCURRENT_TRANSACTIONS, so no state of its next transaction can be stored before the
//! markers of this one are durable.

use std::sync::Arc;

use crate::control::marker_batch;
use crate::state::State;
use crate::txn::service::wall_clock;
use crate::txn::types::Completion;

/// Why a completion failed; it stays `Prepare*` (every client request for it gets
/// CONCURRENT_TRANSACTIONS) and is finished at the next start. Failures are storage
/// failures, after which the store refuses writes until a restart anyway.
#[derive(Debug)]
pub struct NotCompleted(pub String);

/// Makes the stored `Prepare*` state durable, then carries out `done`.
pub async fn prepare_and_complete(
    state: &Arc<State>,
    done: Completion,
) -> Result<(), NotCompleted> {
    if !state.flusher.flush(Vec::new()).await {
        return Err(NotCompleted("flushing the prepared state failed".into()));
    }
    crate::failpoint::hit("txn-after-prepare");
    complete(state, done).await
}

/// Writes the markers, applies the offsets and stores the `Complete*` state, all durable
/// when this returns `Ok`.
pub async fn complete(state: &Arc<State>, done: Completion) -> Result<(), NotCompleted> {
    let marker = marker_batch(
        done.producer_id,
        done.epoch,
        done.marker,
        wall_clock() as i64,
    );
    let info = crate::batch::info(&marker)
        .ok_or_else(|| NotCompleted("marker batch does not parse".into()))?;
    let mut marks = Vec::with_capacity(done.partitions.len());
    for (topic, index) in &done.partitions {
        let Some(partition) = state
            .topic(topic)
            .and_then(|t| t.partition(*index).cloned())
        else {
            tracing::warn!(
                topic,
                partition = index,
                "no marker for a partition that is gone"
            );
            continue;
        };
        partition
            .log
            .append(&marker, &info)
            .map_err(|e| NotCompleted(format!("marker for {topic}/{index}: {e}")))?;
        marks.push((partition.watermark(), partition.log.log_end_offset()));
    }
    state
        .groups
        .apply_transaction_offsets(&done.offsets)
        .map_err(|e| NotCompleted(format!("storing the transaction's offsets: {e}")))?;
    if !state.flusher.flush(marks).await {
        return Err(NotCompleted("flushing the markers failed".into()));
    }
    // Only now: a `Complete*` state made durable by a flush that began before the markers
    // were appended would outlive them in a crash (the metadata is flushed after the logs,
    // but with whatever it holds by then).
    let mut c = state.txns.lock();
    if c.completed(&done.transactional_id) {
        state
            .txns
            .persist(&c, &done.transactional_id)
            .map_err(|e| NotCompleted(format!("storing the completed state: {e}")))?;
    }
    tracing::debug!(
        transactional_id = %done.transactional_id,
        marker = ?done.marker,
        partitions = done.partitions.len(),
        "transaction completed"
    );
    Ok(())
}

/// Runs completions one after the other, logging failures (they stay `Prepare*`).
async fn complete_all(state: &Arc<State>, all: Vec<Completion>, why: &str) {
    for done in all {
        let id = done.transactional_id.clone();
        tracing::info!(transactional_id = %id, marker = ?done.marker, "{why}");
        if let Err(NotCompleted(e)) = prepare_and_complete(state, done).await {
            tracing::error!(transactional_id = %id, "completing the transaction failed: {e}");
        }
    }
}

/// Finishes the completions a restart interrupted, then every `--transaction-check-interval`
/// aborts the transactions open longer than their timeout. Each completion has one owner:
/// the request or tick that moved its transaction to `Prepare*`.
pub fn spawn_ticker(state: &Arc<State>) {
    let state = state.clone();
    tokio::spawn(async move {
        let interrupted = state.txns.lock().interrupted();
        complete_all(
            &state,
            interrupted,
            "finishing a transaction interrupted by a restart",
        )
        .await;
        let mut shutdown = state.shutting_down.clone();
        let mut tick = tokio::time::interval(state.config.transaction_check_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let expired = {
                let mut c = state.txns.lock();
                let expired = c.expire(wall_clock());
                for done in &expired {
                    if let Err(e) = state.txns.persist(&c, &done.transactional_id) {
                        tracing::error!("storing an expired transaction failed: {e}");
                    }
                }
                expired
            };
            complete_all(&state, expired, "aborting a transaction past its timeout").await;
        }
    });
}
