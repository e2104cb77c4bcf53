//! CreateTopics: partitions, configs (checked: INVALID_CONFIG; stored with the topic),
//! validate_only, TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION.
//! Answered once the new topics are durable (KAFKA_STORAGE_ERROR if the flush fails).

use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, Reply};
use crate::state::State;
use crate::topic_config::{self, Overrides};

/// The configs given at creation, each checked (INVALID_CONFIG's message otherwise).
fn overrides(configs: &[CreatableTopicConfig]) -> Result<Overrides, String> {
    let mut out = Overrides::new();
    for c in configs {
        let Some(value) = c.value.as_deref() else {
            continue;
        };
        topic_config::validate(&c.name, value)?;
        out.insert(c.name.to_string(), value.to_string());
    }
    Ok(out)
}

/// Creates the topic and stores its configs.
fn create_one(
    state: &State,
    name: &str,
    partitions: i32,
    overrides: Overrides,
) -> Result<uuid::Uuid, (ResponseError, String)> {
    let topic = state
        .create_topic(name, partitions)
        .map_err(|e| (e.code, e.message))?;
    state.set_topic_configs(name, overrides).map_err(|e| {
        (
            ResponseError::KafkaStorageError,
            format!("storing the topic's configs: {e}"),
        )
    })?;
    Ok(topic.id)
}

pub fn handle(state: &Arc<State>, req: CreateTopicsRequest, version: i16) -> Reply {
    let validate_only = req.validate_only;
    let response = create(state, req, version);
    let created = !validate_only && response.topics.iter().any(|t| t.error_code == 0);
    if !created {
        return Reply::Ready(Box::new(response.into()), version);
    }
    super::when_durable(state, response, version, |mut response| {
        for t in response.topics.iter_mut().filter(|t| t.error_code == 0) {
            t.error_code = ResponseError::KafkaStorageError.code();
        }
        response
    })
}

fn create(state: &Arc<State>, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            let partitions = if !t.assignments.is_empty() {
                t.assignments.len() as i32
            } else if t.num_partitions == -1 {
                state.config.default_partitions
            } else {
                t.num_partitions
            };
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(Some(Vec::new()));
            let max_rf = state.config.max_replication_factor;
            let outcome = if t.replication_factor != -1
                && !(1..=max_rf).contains(&t.replication_factor)
            {
                Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {} requested, this broker is a single node: use 1 (or start it with --max-replication-factor)",
                        t.replication_factor
                    ),
                ))
            } else {
                let overrides = overrides(&t.configs);
                match overrides {
                    Err(msg) => Err((ResponseError::InvalidConfig, msg)),
                    Ok(_) if req.validate_only => state
                        .check_new_topic(&name, partitions)
                        .map(|()| uuid::Uuid::nil())
                        .map_err(|e| (e.code, e.message)),
                    Ok(overrides) => create_one(state, &name, partitions, overrides),
                }
            };
            match outcome {
                Ok(id) => result.with_topic_id(id),
                Err((code, message)) => {
                    let result = result
                        .with_error_code(code.code())
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_configs(None);
                    if version >= 1 {
                        result.with_error_message(Some(str_bytes(message)))
                    } else {
                        result
                    }
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
