//! DescribeLogDirs (v1-4): the one log directory (the data directory) with each
//! partition's size on disk, as `kafka-log-dirs` and UIs show it. Sizes are the segment
//! files' bytes; the sled storage format reports 0 (its batches share sled's files).

use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{str_bytes, topic_name};
use crate::state::{Partition, State};

fn size(p: &Partition) -> i64 {
    p.log.segments().iter().map(|s| s.bytes as i64).sum()
}

pub fn handle(state: &Arc<State>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect()
    });
    let topics = state
        .topics()
        .into_iter()
        .filter_map(|topic| {
            let only = match &wanted {
                None => None,
                Some(w) => Some(w.iter().find(|(n, _)| **n == *topic.name)?.1.clone()),
            };
            let partitions = topic
                .partitions
                .iter()
                .filter(|p| only.as_ref().is_none_or(|o| o.contains(&p.index)))
                .map(|p| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(size(p))
                        .with_offset_lag(0)
                })
                .collect();
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(partitions),
            )
        })
        .collect();
    let dir = state.config.data_dir.clone();
    let usable = dir
        .as_deref()
        .and_then(|d| crate::disk::available_bytes(d).ok())
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let name = dir.map_or_else(|| "(memory)".to_string(), |d| d.display().to_string());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(name))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(usable)])
}
