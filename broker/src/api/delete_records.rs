//! DeleteRecords (v0-2): moves partitions' log start (offset -1: the high watermark) and
//! answers each with its new low watermark, once the move is durable. An offset above the
//! high watermark gets OFFSET_OUT_OF_RANGE; the start never passes an open transaction.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::Reply;
use crate::state::State;

/// One partition's answer: the new low watermark, or an error.
fn delete(state: &State, topic: &str, index: i32, offset: i64) -> DeleteRecordsPartitionResult {
    let r = DeleteRecordsPartitionResult::default()
        .with_partition_index(index)
        .with_low_watermark(-1);
    let Some(partition) = state.topic(topic).and_then(|t| t.partition(index).cloned()) else {
        return r.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let hw = partition.high_watermark();
    let offset = if offset == -1 { hw } else { offset };
    if !(0..=hw).contains(&offset) {
        return r.with_error_code(ResponseError::OffsetOutOfRange.code());
    }
    match partition.log.delete_records(offset) {
        Ok(start) => {
            tracing::info!(topic, partition = index, start, "records deleted");
            r.with_low_watermark(start)
        }
        Err(e) => {
            tracing::error!(topic, partition = index, "deleting records failed: {e}");
            r.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

pub fn handle(state: &Arc<State>, req: DeleteRecordsRequest, version: i16) -> Reply {
    let state = state.clone();
    Reply::Later(
        Box::pin(async move {
            // The segment format fsyncs its checkpoint and unlinks files: off the runtime.
            let s = state.clone();
            let topics = tokio::task::spawn_blocking(move || {
                req.topics
                    .into_iter()
                    .map(|t| {
                        let partitions = t
                            .partitions
                            .iter()
                            .map(|p| delete(&s, &t.name, p.partition_index, p.offset))
                            .collect();
                        DeleteRecordsTopicResult::default()
                            .with_name(t.name)
                            .with_partitions(partitions)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!("DeleteRecords task failed: {e}");
                Vec::new()
            });
            let mut response = DeleteRecordsResponse::default().with_topics(topics);
            if !state.flusher.flush(Vec::new()).await {
                for p in response.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                    p.error_code = ResponseError::KafkaStorageError.code();
                }
            }
            response.into()
        }),
        version,
    )
}
