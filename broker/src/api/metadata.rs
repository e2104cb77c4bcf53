//! Metadata: the single broker, and topics (auto-created when allowed).

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{str_bytes, topic_name};
use crate::state::{State, Topic};

/// "Authorized operations not requested" in Kafka's encoding.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// Operations on a topic, as Kafka's bit set (bit n = AclOperation n): READ, WRITE, CREATE,
/// DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS. There are no ACLs: every
/// client may do all of them.
const TOPIC_OPS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Operations on the cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub(super) const CLUSTER_OPS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// What a request that asks for authorized operations is told.
pub(super) fn ops(requested: bool, all: i32) -> i32 {
    if requested {
        all
    } else {
        OPS_NOT_REQUESTED
    }
}

pub fn topic_entry(state: &State, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(state.config.node_id);
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

fn error_entry(name: Option<&str>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(code)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}

pub fn handle(state: &Arc<State>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let topics: Vec<MetadataResponseTopic> = match req.topics {
        // v0: an empty list means "all topics"; v1+: null means all.
        Some(list) if !(version == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => match state.topic_or_create(&name, allow_create) {
                    Ok(topic) => topic_entry(state, &topic),
                    Err(e) => error_entry(Some(&name), t.topic_id, e.code.code()),
                },
                None => match state.topic_by_id(t.topic_id) {
                    Some(topic) => topic_entry(state, &topic),
                    None => error_entry(
                        None,
                        t.topic_id,
                        kafka_protocol::ResponseError::UnknownTopicId.code(),
                    ),
                },
            })
            .collect(),
        _ => state
            .topics()
            .iter()
            .map(|t| topic_entry(state, t))
            .collect(),
    };
    let topics = topics
        .into_iter()
        .map(|t| {
            let requested = req.include_topic_authorized_operations && t.error_code == 0;
            t.with_topic_authorized_operations(ops(requested, TOPIC_OPS))
        })
        .collect();
    let (host, port) = &state.advertised;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(state.config.node_id))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)])
        .with_cluster_id(Some(str_bytes(state.cluster_id.clone())))
        .with_controller_id(BrokerId(state.config.node_id))
        .with_cluster_authorized_operations(ops(
            req.include_cluster_authorized_operations,
            CLUSTER_OPS,
        ))
        .with_topics(topics)
}
