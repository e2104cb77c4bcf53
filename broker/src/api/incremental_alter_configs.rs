//! IncrementalAlterConfigs (v0-1): SET, DELETE, APPEND and SUBTRACT on topic configs,
//! checked as a whole per topic (INVALID_CONFIG with the reason, nothing changed), applied
//! live and answered once stored durably. Broker configs are set by flags: refused.

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, Reply};
use crate::state::State;
use crate::topic_config::{self, Op, Overrides};

pub(super) const RESOURCE_TOPIC: i8 = 2;

/// Changes the overrides of topic `name` to what `change` makes of them (unless
/// `validate_only`); the error code and message otherwise.
pub(super) fn change_topic(
    state: &State,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&Overrides) -> Result<Overrides, String>,
) -> Result<(), (ResponseError, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest,
            format!("resource type {resource_type}: only topic configs can be changed (broker settings are flags)"),
        ));
    }
    if state.topic(name).is_none() {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ));
    }
    let next =
        change(&state.topic_configs.get(name)).map_err(|m| (ResponseError::InvalidConfig, m))?;
    if validate_only {
        return Ok(());
    }
    state.set_topic_configs(name, next).map_err(|e| {
        (
            ResponseError::KafkaStorageError,
            format!("storing the configs: {e}"),
        )
    })?;
    tracing::info!(topic = name, "topic configs changed");
    Ok(())
}

pub fn handle(state: &Arc<State>, req: IncrementalAlterConfigsRequest, version: i16) -> Reply {
    let responses = req
        .resources
        .iter()
        .map(|res| {
            let ops: Result<Vec<Op>, String> = res
                .configs
                .iter()
                .map(|c| {
                    let (name, value) = (
                        c.name.to_string(),
                        c.value.as_deref().unwrap_or("").to_string(),
                    );
                    match c.config_operation {
                        0 => Ok(Op::Set(name, value)),
                        1 => Ok(Op::Delete(name)),
                        2 => Ok(Op::Append(name, value)),
                        3 => Ok(Op::Subtract(name, value)),
                        other => Err(format!("unknown config operation {other}")),
                    }
                })
                .collect();
            let outcome = change_topic(
                state,
                res.resource_type,
                &res.resource_name,
                req.validate_only,
                |current| topic_config::apply(&state.config, current, &ops?),
            );
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match outcome {
                Ok(()) => r,
                Err((code, msg)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(msg))),
            }
        })
        .collect();
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
    super::when_durable(state, response, version, |mut r| {
        for res in &mut r.responses {
            if res.error_code == 0 {
                res.error_code = ResponseError::KafkaStorageError.code();
            }
        }
        r
    })
}
