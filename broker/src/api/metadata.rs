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
    let topics = match req.topics {
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
    let (host, port) = &state.advertised;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(state.config.node_id))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)])
        .with_cluster_id(Some(str_bytes(state.cluster_id.clone())))
        .with_controller_id(BrokerId(state.config.node_id))
        .with_cluster_authorized_operations(OPS_NOT_REQUESTED)
        .with_topics(topics)
}
