//! Produce: validate each batch, append in request order, then (acks 1/-1) answer once
//! the group-commit flush covering every appended batch is done.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, Reply};
use crate::batch;
use crate::flush::Marks;
use crate::state::{Partition, State};
use crate::storage::Appended;

fn partition_error(index: i32, code: ResponseError, msg: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(str_bytes(msg)))
}

/// A compacted topic refuses a batch holding records without a key, naming each of them
/// (KIP-467), as Kafka does: compaction keeps records by key.
fn keyless_records(
    state: &State,
    topic: &str,
    index: i32,
    records: &[u8],
) -> Option<PartitionProduceResponse> {
    state.topic_configs.compaction(topic)?;
    let recs = crate::cleaner::records::decode(records, crate::compaction::DECODE_LIMIT).ok()?;
    let msg = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{index}."
    );
    let errors: Vec<BatchIndexAndErrorMessage> = recs
        .recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(at, _)| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(at as i32)
                .with_batch_index_error_message(Some(str_bytes(msg.clone())))
        })
        .collect();
    if errors.is_empty() {
        return None;
    }
    tracing::warn!(
        topic,
        partition = index,
        records = errors.len(),
        "rejected batch: records without a key"
    );
    Some(partition_error(index, ResponseError::InvalidRecord, msg).with_record_errors(errors))
}

pub fn handle(state: &Arc<State>, req: ProduceRequest, version: i16) -> Reply {
    let acks = req.acks;
    let mut marks = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic_data in req.topic_data {
        let name = topic_data.name.to_string();
        let topic = state.topic_or_create(&name, true);
        let partitions = topic_data
            .partition_data
            .into_iter()
            .map(|pd| {
                let index = pd.index;
                if !matches!(acks, -1..=1) {
                    let msg = format!("acks={acks}; only -1, 0 and 1 are valid");
                    return partition_error(index, ResponseError::InvalidRequiredAcks, msg);
                }
                let partition = match &topic {
                    Ok(t) => t.partition(index).cloned().ok_or_else(|| {
                        let msg = format!("topic '{name}' has no partition {index}");
                        (ResponseError::UnknownTopicOrPartition, msg)
                    }),
                    Err(e) => Err((e.code, e.message.clone())),
                };
                match partition {
                    Ok(p) => append(state, &name, &p, pd.records.unwrap_or_default(), &mut marks),
                    Err((code, msg)) => partition_error(index, code, msg),
                }
            })
            .collect();
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partitions),
        );
    }
    for p in responses.iter().flat_map(|t| &t.partition_responses) {
        if p.error_code != 0 {
            state.metrics.produce_error(p.error_code);
        }
    }
    let response = ProduceResponse::default().with_responses(responses);
    answer(state, response, marks, acks, version)
}

/// Validates one partition's batch and appends it; the flush that makes it durable is
/// added to `marks`.
fn append(
    state: &State,
    topic: &str,
    partition: &Partition,
    records: bytes::Bytes,
    marks: &mut Marks,
) -> PartitionProduceResponse {
    let index = partition.index;
    let max_bytes = state
        .topic_configs
        .max_message_bytes(topic, state.config.max_message_bytes);
    let info = match batch::validate(&records, max_bytes) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(topic, partition = index, "rejected batch: {e}");
            let code =
                ResponseError::try_from_code(e.code()).unwrap_or(ResponseError::CorruptMessage);
            return partition_error(index, code, e.to_string());
        }
    };
    if let Some(refused) = keyless_records(state, topic, index, &records) {
        return refused;
    }
    if let Err(why) = state.disk.check(records.len()) {
        return partition_error(index, ResponseError::KafkaStorageError, why);
    }
    let appended = if info.transactional {
        // Checked and appended under the coordinator's lock, so the transaction cannot end
        // (and its markers be written) between the two.
        let txns = state.txns.lock();
        let tp = (topic, index);
        if let Err(code) = txns.check_produce(info.producer_id, info.producer_epoch, tp) {
            let msg = format!(
                "transactional batch of producer {} epoch {}: {code} (the partition is not in an open transaction of this producer)",
                info.producer_id, info.producer_epoch
            );
            tracing::warn!(topic, partition = index, "{msg}");
            return partition_error(index, code, msg);
        }
        partition.log.append(&records, &info)
    } else {
        partition.log.append(&records, &info)
    };
    match appended {
        // A duplicate is a retry of a batch that may still be waiting for its flush:
        // acknowledge it (with its original offset, like Kafka) only once the same flush
        // covers it.
        Ok(Appended::At(base)) | Ok(Appended::Duplicate(base)) => {
            marks.push((
                partition.watermark(),
                base + i64::from(info.last_offset_delta) + 1,
            ));
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(base)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(partition.log.log_start_offset())
        }
        Ok(Appended::Rejected(code)) => {
            tracing::warn!(
                topic,
                partition = index,
                producer_id = info.producer_id,
                epoch = info.producer_epoch,
                base_sequence = info.base_sequence,
                "rejected batch: {code}"
            );
            let msg = format!(
                "producer {} epoch {} sequence {}: {code}",
                info.producer_id, info.producer_epoch, info.base_sequence
            );
            partition_error(index, code, msg)
        }
        Err(e) => {
            tracing::error!(topic, partition = index, "append failed: {e}");
            partition_error(index, ResponseError::KafkaStorageError, e.to_string())
        }
    }
}

/// acks=0: nothing (the flush still happens); acks=1/-1: the response once the flush
/// covering every appended batch is done (KAFKA_STORAGE_ERROR if it fails).
fn answer(
    state: &State,
    response: ProduceResponse,
    marks: Marks,
    acks: i16,
    version: i16,
) -> Reply {
    if acks == 0 {
        state.flusher.request(marks, None);
        return Reply::Nothing;
    }
    if marks.is_empty() {
        return Reply::Ready(Box::new(response.into()), version);
    }
    let flusher = state.flusher.clone();
    let metrics = state.metrics.clone();
    Reply::Later(
        Box::pin(async move {
            let mut response = response;
            if !flusher.flush(marks).await {
                metrics.produce_error(ResponseError::KafkaStorageError.code());
                for t in &mut response.responses {
                    for p in &mut t.partition_responses {
                        if p.error_code == 0 {
                            p.error_code = ResponseError::KafkaStorageError.code();
                            p.error_message = Some(str_bytes("flush to disk failed"));
                        }
                    }
                }
            }
            response.into()
        }),
        version,
    )
}
