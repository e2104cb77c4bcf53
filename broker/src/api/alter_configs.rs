//! AlterConfigs (v0-2, the older API): a topic's configs replaced by the given set, each
//! checked (INVALID_CONFIG, nothing changed), applied live, answered once durable.

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::incremental_alter_configs::change_topic;
use super::{str_bytes, Reply};
use crate::state::State;
use crate::topic_config::{self, Overrides};

pub fn handle(state: &Arc<State>, req: AlterConfigsRequest, version: i16) -> Reply {
    let responses = req
        .resources
        .iter()
        .map(|res| {
            let outcome = change_topic(
                state,
                res.resource_type,
                &res.resource_name,
                req.validate_only,
                |_| {
                    let mut next = Overrides::new();
                    for c in &res.configs {
                        let Some(value) = c.value.as_deref() else {
                            continue;
                        };
                        topic_config::validate(&c.name, value)?;
                        next.insert(c.name.to_string(), value.to_string());
                    }
                    Ok(next)
                },
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
    let response = AlterConfigsResponse::default().with_responses(responses);
    super::when_durable(state, response, version, |mut r| {
        for res in &mut r.responses {
            if res.error_code == 0 {
                res.error_code = ResponseError::KafkaStorageError.code();
            }
        }
        r
    })
}
