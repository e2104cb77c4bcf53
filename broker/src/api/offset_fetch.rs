//! OffsetFetch: one group (v1-7) or several (v8); -1 where nothing is committed.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{str_bytes, topic_name};
use crate::group::service::{Committed, TopicOffsets};
use crate::state::State;

fn parts(c: Option<Committed>) -> (i64, i32, String) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, c.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

/// Builds the response topics; v8 and older versions use distinct generated types with the
/// same builder methods, hence a macro rather than a function.
macro_rules! topics {
    ($offsets:expr, $topic:ty, $partition:ty) => {
        $offsets
            .into_iter()
            .map(|(t, ps)| {
                <$topic>::default()
                    .with_name(topic_name(&t))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, c)| {
                                let (offset, epoch, meta) = parts(c);
                                <$partition>::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(str_bytes(meta)))
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

fn committed(
    state: &State,
    group: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
) -> TopicOffsets {
    let wanted: Option<Vec<(String, Vec<i32>)>> =
        wanted.map(|ts| ts.into_iter().map(|(t, ps)| (t.to_string(), ps)).collect());
    state.groups.committed(group, wanted.as_deref())
}

pub fn handle(state: &Arc<State>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let offsets = committed(state, &g.group_id, wanted);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics!(
                        offsets,
                        OffsetFetchResponseTopics,
                        OffsetFetchResponsePartitions
                    ))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let offsets = committed(state, &req.group_id, wanted);
    OffsetFetchResponse::default().with_topics(topics!(
        offsets,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    ))
}
