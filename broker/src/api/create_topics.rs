//! CreateTopics: partitions, validate_only, TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION.
//! Answered once the new topics are durable (KAFKA_STORAGE_ERROR if the flush fails).

use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, Reply};
use crate::state::State;

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
            } else if req.validate_only {
                state
                    .check_new_topic(&name, partitions)
                    .map(|()| uuid::Uuid::nil())
                    .map_err(|e| (e.code, e.message))
            } else {
                if !t.configs.is_empty() {
                    let keys: Vec<_> = t.configs.iter().map(|c| c.name.to_string()).collect();
                    tracing::warn!(topic = %name, ?keys, "topic configs are accepted but not applied");
                }
                state
                    .create_topic(&name, partitions)
                    .map(|topic| topic.id)
                    .map_err(|e| (e.code, e.message))
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
