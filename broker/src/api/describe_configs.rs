//! DescribeConfigs for topics (every config of the catalog, with its value and source:
//! DYNAMIC_TOPIC_CONFIG when the topic sets it, STATIC_BROKER_CONFIG when a broker flag
//! gives the default, DEFAULT_CONFIG otherwise) and for the broker (its flags).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::state::State;
use crate::topic_config;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// ConfigType values.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// A topic's configs: (name, value, source, type), with its overrides.
fn topic_configs(state: &State, topic: &str) -> Vec<(&'static str, String, i8, i8)> {
    topic_config::describe(&state.config, &state.topic_configs.get(topic))
        .into_iter()
        .map(|d| {
            let source = if d.overridden {
                SOURCE_DYNAMIC_TOPIC
            } else if d.from_broker {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            (d.name, d.value, source, d.kind)
        })
        .collect()
}

fn broker_configs(state: &State) -> Vec<(&'static str, String, i8)> {
    let c = &state.config;
    let (host, port) = &state.advertised;
    vec![
        (
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{port}"),
            TYPE_STRING,
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        (
            "connections.max.idle.ms",
            c.idle_timeout.as_millis().to_string(),
            TYPE_LONG,
        ),
        (
            "log.dirs",
            c.data_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            TYPE_STRING,
        ),
        ("max.connections", c.max_connections.to_string(), TYPE_INT),
        (
            "message.max.bytes",
            c.max_message_bytes.to_string(),
            TYPE_INT,
        ),
        ("node.id", c.node_id.to_string(), TYPE_INT),
        ("num.partitions", c.default_partitions.to_string(), TYPE_INT),
        (
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            TYPE_INT,
        ),
    ]
}

pub fn handle(state: &Arc<State>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let (configs, read_only) = match res.resource_type {
                RESOURCE_TOPIC if state.topic(&res.resource_name).is_some() => {
                    (topic_configs(state, &res.resource_name), false)
                }
                RESOURCE_TOPIC => {
                    return result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(str_bytes(format!(
                            "topic '{}' does not exist",
                            res.resource_name
                        ))))
                }
                RESOURCE_BROKER
                    if res.resource_name.is_empty()
                        || *res.resource_name == *state.config.node_id.to_string() =>
                {
                    let all = broker_configs(state).into_iter();
                    (
                        all.map(|(n, v, t)| (n, v, SOURCE_STATIC_BROKER, t))
                            .collect(),
                        true,
                    )
                }
                other => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(str_bytes(format!(
                            "resource type {other} '{}' is not described by this broker",
                            res.resource_name
                        ))))
                }
            };
            let wanted = res.configuration_keys.as_ref();
            let configs = configs
                .into_iter()
                .filter(|(name, ..)| wanted.is_none_or(|w| w.iter().any(|k| &**k == *name)))
                .map(|(name, value, source, kind)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(value)))
                        .with_read_only(read_only)
                        .with_config_source(source)
                        .with_config_type(kind)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
