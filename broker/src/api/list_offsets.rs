//! ListOffsets: earliest (-2), latest (-1: the high watermark, or for read_committed the
//! last stable offset), the record with the largest timestamp (-3, v7) and by timestamp.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::state::State;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub fn handle(state: &Arc<State>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == super::fetch::READ_COMMITTED;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = state.topic(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some(partition) =
                        topic.as_ref().and_then(|t| t.partition(p.partition_index))
                    else {
                        return r.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let hw = if read_committed {
                        partition.last_stable_offset()
                    } else {
                        partition.high_watermark()
                    };
                    match p.timestamp {
                        LATEST => r.with_offset(hw),
                        EARLIEST => r.with_offset(partition.log.log_start_offset()),
                        MAX_TIMESTAMP => match partition.log.max_timestamp() {
                            Ok(Some((offset, ts))) if offset < hw => {
                                r.with_offset(offset).with_timestamp(ts)
                            }
                            Ok(_) => r,
                            Err(e) => {
                                tracing::error!(topic = %t.name.0, "offset lookup failed: {e}");
                                r.with_error_code(ResponseError::KafkaStorageError.code())
                            }
                        },
                        ts if ts >= 0 => match partition.log.offset_for_timestamp(ts) {
                            // The batch found may begin below a moved log start.
                            Ok(Some((offset, found_ts))) if offset < hw => r
                                .with_offset(offset.max(partition.log.log_start_offset()))
                                .with_timestamp(found_ts),
                            Ok(_) => r,
                            Err(e) => {
                                tracing::error!(topic = %t.name.0, "offset lookup failed: {e}");
                                r.with_error_code(ResponseError::KafkaStorageError.code())
                            }
                        },
                        _ => r.with_error_code(ResponseError::UnsupportedVersion.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
