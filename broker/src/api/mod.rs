//! Request handlers, one module per Kafka API. Handlers are plain functions of the
//! shared [`State`] and a decoded request; no socket in sight.

mod api_versions;
mod create_topics;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod fetch;
mod list_offsets;
mod metadata;
mod produce;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::error::ConnectionError;
use crate::state::State;

/// API versions this broker implements, advertised verbatim by ApiVersions.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

/// The version range we implement for `key`, if any.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// A response still being computed (e.g. waiting for a flush or a long poll).
pub type Later = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// What a request produces.
pub enum Reply {
    /// Send this response, encoded at `version`.
    Ready(Box<ResponseKind>, i16),
    /// Send the response this future yields, encoded at `version`.
    Later(Later, i16),
    /// Send nothing (produce with acks=0).
    Nothing,
}

/// Decodes and handles one request. Side effects that must happen in request order
/// (appends) happen before this returns; waiting happens in the returned [`Reply::Later`].
pub fn dispatch(
    state: &Arc<State>,
    header: &RequestHeader,
    mut body: Bytes,
) -> Result<Reply, ConnectionError> {
    let version = header.request_api_version;
    let unsupported = || ConnectionError::UnsupportedApi {
        api_key: header.request_api_key,
        api_version: version,
    };
    let key = ApiKey::try_from(header.request_api_key).map_err(|_| unsupported())?;
    let (lo, hi) = supported(key).ok_or_else(unsupported)?;
    if key == ApiKey::ApiVersions && !(lo..=hi).contains(&version) {
        // Like Kafka: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the
        // client retries with a version we speak.
        return Ok(Reply::Ready(
            Box::new(api_versions::unsupported_version()),
            0,
        ));
    }
    if !(lo..=hi).contains(&version) {
        return Err(unsupported());
    }
    let request =
        RequestKind::decode(key, &mut body, version).map_err(|e| ConnectionError::Malformed {
            api_key: header.request_api_key,
            api_version: version,
            detail: e.to_string(),
        })?;
    let ready = |r: ResponseKind| Ok(Reply::Ready(Box::new(r), version));
    match request {
        RequestKind::ApiVersions(_) => ready(api_versions::handle().into()),
        RequestKind::Metadata(req) => ready(metadata::handle(state, req, version).into()),
        RequestKind::Produce(req) => Ok(produce::handle(state, req, version)),
        RequestKind::Fetch(req) => Ok(Reply::Later(
            Box::pin(fetch::handle(state.clone(), req, version)),
            version,
        )),
        RequestKind::ListOffsets(req) => ready(list_offsets::handle(state, req).into()),
        RequestKind::CreateTopics(req) => ready(create_topics::handle(state, req, version).into()),
        RequestKind::DeleteTopics(req) => ready(delete_topics::handle(state, req, version).into()),
        RequestKind::DescribeConfigs(req) => ready(describe_configs::handle(state, req).into()),
        RequestKind::DescribeCluster(req) => ready(describe_cluster::handle(state, req).into()),
        _ => Err(unsupported()),
    }
}

fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(s))
}
