//! OffsetFetch: one group (v1-7) or several (v8); -1 where nothing is committed. With
//! `require_stable` (v7+, sent by read_committed consumers), a partition whose offset an
//! open or committing transaction is about to change gets UNSTABLE_OFFSET_COMMIT, and the
//! client asks again (KIP-447): otherwise a new processor could start from an offset its
//! predecessor's commit is moving past.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::ResponseError;

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
    ($offsets:expr, $unstable:expr, $topic:ty, $partition:ty) => {
        $offsets
            .into_iter()
            .map(|(t, ps)| {
                <$topic>::default()
                    .with_name(topic_name(&t))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, c)| {
                                let (offset, epoch, meta) = parts(c);
                                let code = if $unstable(&t, p) {
                                    ResponseError::UnstableOffsetCommit.code()
                                } else {
                                    0
                                };
                                <$partition>::default()
                                    .with_error_code(code)
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

/// Whether a transaction holds an offset of `group` for a partition, when the client asked
/// for stable offsets only.
fn unstable<'a>(
    state: &'a State,
    group: &'a str,
    require_stable: bool,
) -> impl Fn(&str, i32) -> bool + 'a {
    move |topic, partition| {
        require_stable && state.txns.lock().holds_offset(group, topic, partition)
    }
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
                let group = g.group_id.to_string();
                let unstable = unstable(state, &group, req.require_stable);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics!(
                        offsets,
                        unstable,
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
    let unstable = unstable(state, &req.group_id, req.require_stable);
    OffsetFetchResponse::default().with_topics(topics!(
        offsets,
        unstable,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    ))
}
