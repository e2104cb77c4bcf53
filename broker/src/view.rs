//! A read-only view of a running broker, for status pages, consoles and tests: topics with
//! their offsets, consumer groups with their committed offsets and lag, stored batches,
//! and the metrics in Prometheus text. The broker's state itself stays private.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::StorageError;
use crate::state::State;

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// Partition index.
    pub index: i32,
    /// First offset in the log.
    pub log_start: i64,
    /// One past the last durable offset (what consumers can read).
    pub high_watermark: i64,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: uuid::Uuid,
    /// Partitions, by index.
    pub partitions: Vec<PartitionView>,
}

/// A consumer group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset (the next to consume), if any.
    pub offset: Option<i64>,
    /// The partition's high watermark, if it still exists.
    pub end_offset: Option<i64>,
    /// Messages between it and the high watermark, when both are known.
    pub lag: Option<i64>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Group id.
    pub id: String,
    /// State, as Kafka names it (Empty, Stable...).
    pub state: &'static str,
    /// Members now.
    pub members: usize,
    /// Committed offsets.
    pub committed: Vec<CommittedView>,
}

/// A cheap, cloneable, read-only handle on a running broker.
#[derive(Clone)]
pub struct BrokerView(pub(crate) Arc<State>);

impl BrokerView {
    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicView> {
        let mut topics: Vec<TopicView> = self.0.topics().iter().map(|t| topic_view(t)).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<TopicView> {
        self.0.topic(name).map(|t| topic_view(&t))
    }

    /// Every consumer group, by id.
    pub fn groups(&self) -> Vec<GroupView> {
        let groups = &self.0.groups;
        groups
            .list()
            .into_iter()
            .map(|(id, _, state)| {
                let members = groups.describe(&id).map_or(0, |d| d.members.len());
                let committed = groups
                    .committed(&id, None)
                    .into_iter()
                    .flat_map(|(topic, parts)| {
                        parts.into_iter().map(move |(p, c)| (topic.clone(), p, c))
                    })
                    .map(|(topic, partition, c)| {
                        let hw = self
                            .0
                            .topic(&topic)
                            .and_then(|t| t.partition(partition).map(|x| x.high_watermark()));
                        let offset = c.map(|c| c.offset);
                        let lag = hw.zip(offset).map(|(hw, o)| (hw - o).max(0));
                        CommittedView {
                            topic,
                            partition,
                            offset,
                            end_offset: hw,
                            lag,
                        }
                    })
                    .collect();
                GroupView {
                    id,
                    state: state.name(),
                    members,
                    committed,
                }
            })
            .collect()
    }

    /// Stored record batches of a partition from the one holding `offset`, up to the high
    /// watermark and about `max_bytes` (at least one batch), exactly as a fetch serves them.
    pub fn read_batches(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, StorageError> {
        let p = self.partition(topic, partition)?;
        p.log.read(offset, p.high_watermark(), max_bytes)
    }

    /// The partition, or an error naming it.
    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<crate::state::Partition>, StorageError> {
        self.0
            .topic(topic)
            .and_then(|t| t.partition(partition).cloned())
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Produce requests answered so far and their summed latency in seconds.
    pub fn produce_latency(&self) -> (u64, f64) {
        self.0.metrics.produce_latency()
    }

    /// The broker's metrics in Prometheus text format.
    pub fn render_metrics(&self, t: &mut finstream_promtext::Text) {
        self.0.render_metrics(t);
    }
}

fn topic_view(t: &crate::state::Topic) -> TopicView {
    TopicView {
        name: t.name.to_string(),
        id: t.id,
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionView {
                index: p.index,
                log_start: p.log.log_start_offset(),
                high_watermark: p.high_watermark(),
            })
            .collect(),
    }
}
