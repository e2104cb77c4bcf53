//! Fetch with long polling. read_committed readers see records up to the last stable
//! offset, with the aborted transactions in that range listed so they can drop them. Long polling: answer at once when `min_bytes` are available or something is
//! wrong, otherwise wait until a flush advances a high watermark (no sleeping loops), the
//! `max_wait_ms` deadline, or shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use crate::state::{Partition, State, Topic};

/// `isolation_level` of a read_committed consumer.
pub(crate) const READ_COMMITTED: i8 = 1;

/// Longest long poll we honour, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(300);

fn partition_error(index: i32, code: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(Bytes::new()))
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in &batches {
                out.extend_from_slice(b);
            }
            out.freeze()
        }
    }
}

/// Builds the response from the current state. Returns it with the record bytes it holds
/// and whether any partition carries an error.
/// The aborted transactions a read_committed reader of `from..end` must drop, from the
/// partition's transaction index (the log is not read).
fn aborted(partition: &Partition, from: i64, end: i64) -> Vec<AbortedTransaction> {
    if from >= end {
        return Vec::new();
    }
    partition
        .log
        .txn_index()
        .aborted(from, end)
        .into_iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_first_offset(a.first_offset)
        })
        .collect()
}

/// The topic a fetch names: by id from v13 (KIP-516), by name before.
fn fetched_topic(state: &State, ft: &FetchTopic, version: i16) -> Option<Arc<Topic>> {
    if version >= 13 {
        state.topic_by_id(ft.topic_id)
    } else {
        state.topic(&ft.topic)
    }
}

fn build(state: &State, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let read_committed = req.isolation_level == READ_COMMITTED;
    let mut remaining = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let topic = fetched_topic(state, ft, version);
        let unknown = if version >= 13 && topic.is_none() {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(fp.partition)) else {
                any_error = true;
                partitions.push(partition_error(fp.partition, unknown));
                continue;
            };
            let hw = partition.high_watermark();
            let lso = partition.last_stable_offset();
            let end = if read_committed { lso } else { hw };
            let start = partition.log.log_start_offset();
            let mut data = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(hw)
                .with_last_stable_offset(lso)
                .with_log_start_offset(start)
                .with_preferred_read_replica(BrokerId(-1));
            if fp.fetch_offset < start || fp.fetch_offset > hw {
                any_error = true;
                data.error_code = ResponseError::OffsetOutOfRange.code();
                data.records = Some(Bytes::new());
                partitions.push(data);
                continue;
            }
            let budget = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            let batches = if fp.fetch_offset >= end || (budget == 0 && total > 0) {
                Ok(Vec::new())
            } else {
                partition.log.read(fp.fetch_offset, end, budget.max(1))
            };
            if read_committed {
                data.aborted_transactions = Some(aborted(partition, fp.fetch_offset, end));
            }
            match batches {
                // KIP-74: only the first batch of the response may go past the limits (so a
                // consumer always makes progress); a later partition whose next batch does
                // not fit what is left sends nothing this time.
                Ok(batches)
                    if total > 0 && batches.iter().map(Bytes::len).sum::<usize>() > budget =>
                {
                    data.records = Some(Bytes::new());
                }
                Ok(batches) => {
                    let records = concat(batches);
                    total += records.len();
                    remaining = remaining.saturating_sub(records.len());
                    data.records = Some(records);
                }
                Err(e) => {
                    tracing::error!(topic = %ft.topic.0, partition = fp.partition, "read failed: {e}");
                    any_error = true;
                    data.error_code = ResponseError::KafkaStorageError.code();
                    data.records = Some(Bytes::new());
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(topic.as_ref().map_or(ft.topic_id, |t| t.id))
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        any_error,
    )
}

pub async fn handle(state: Arc<State>, req: FetchRequest, version: i16) -> ResponseKind {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut hw_changed = state.hw_changed.clone();
    let mut shutdown = state.shutting_down.clone();
    loop {
        // Mark the current version seen *before* reading, so a flush that lands while we
        // build the response wakes the wait below.
        hw_changed.borrow_and_update();
        let (response, bytes, any_error) = build(&state, &req, version);
        if bytes >= min_bytes.max(1)
            || any_error
            || Instant::now() >= deadline
            || *shutdown.borrow()
        {
            return response.into();
        }
        tokio::select! {
            changed = hw_changed.changed() => if changed.is_err() { return response.into() },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}
