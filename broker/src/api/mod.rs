//! Request handlers, one module per Kafka API. Handlers are plain functions of the
//! shared [`State`] and a decoded request; no socket in sight.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_transactions;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
pub mod sasl;
mod sync_group;
pub(crate) mod txn_complete;
mod txn_offset_commit;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::error::ConnectionError;
use crate::state::State;

/// API versions this broker implements, advertised verbatim by ApiVersions.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 8),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    // v0 is listed because librdkafka requires it to enable SASL; clients then use v1
    // with SaslAuthenticate (raw v0 tokens after the handshake are not supported).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
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
    peer: SocketAddr,
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
    let request = decode(header, key, &mut body)?;
    let ready = |r: ResponseKind| Ok(Reply::Ready(Box::new(r), version));
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    match request {
        RequestKind::ApiVersions(_) => ready(api_versions::handle().into()),
        RequestKind::Metadata(req) => ready(metadata::handle(state, req, version).into()),
        RequestKind::Produce(req) => Ok(produce::handle(state, req, version)),
        RequestKind::Fetch(req) => Ok(Reply::Later(
            Box::pin(fetch::handle(state.clone(), req, version)),
            version,
        )),
        RequestKind::ListOffsets(req) => ready(list_offsets::handle(state, req).into()),
        RequestKind::CreateTopics(req) => Ok(create_topics::handle(state, req, version)),
        RequestKind::DeleteTopics(req) => ready(delete_topics::handle(state, req, version).into()),
        RequestKind::DescribeConfigs(req) => ready(describe_configs::handle(state, req).into()),
        RequestKind::DescribeCluster(req) => ready(describe_cluster::handle(state, req).into()),
        RequestKind::FindCoordinator(req) => {
            ready(find_coordinator::handle(state, req, version).into())
        }
        RequestKind::JoinGroup(req) => Ok(Reply::Later(
            join_group::handle(state, req, version, &client_id, peer),
            version,
        )),
        RequestKind::SyncGroup(req) => Ok(Reply::Later(
            sync_group::handle(state, req, version),
            version,
        )),
        RequestKind::Heartbeat(req) => ready(heartbeat::handle(state, req).into()),
        RequestKind::LeaveGroup(req) => ready(leave_group::handle(state, req, version).into()),
        RequestKind::OffsetCommit(req) => Ok(offset_commit::handle(state, req, version)),
        RequestKind::OffsetFetch(req) => ready(offset_fetch::handle(state, req, version).into()),
        RequestKind::ListGroups(req) => ready(list_groups::handle(state, req).into()),
        RequestKind::DescribeGroups(req) => ready(describe_groups::handle(state, req).into()),
        RequestKind::DeleteGroups(req) => Ok(delete_groups::handle(state, req, version)),
        RequestKind::InitProducerId(req) => {
            Ok(init_producer_id::handle(state, req, version, &client_id))
        }
        RequestKind::AddPartitionsToTxn(req) => {
            Ok(add_partitions_to_txn::handle(state, req, version))
        }
        RequestKind::AddOffsetsToTxn(req) => Ok(add_offsets_to_txn::handle(state, req, version)),
        RequestKind::EndTxn(req) => Ok(end_txn::handle(state, req, version)),
        RequestKind::TxnOffsetCommit(req) => Ok(txn_offset_commit::handle(state, req, version)),
        RequestKind::DescribeTransactions(req) => {
            ready(describe_transactions::handle(state, req).into())
        }
        RequestKind::ListTransactions(req) => ready(list_transactions::handle(state, req).into()),
        RequestKind::DescribeProducers(req) => ready(describe_producers::handle(state, req).into()),
        RequestKind::CreatePartitions(req) => Ok(create_partitions::handle(state, req, version)),
        RequestKind::DeleteRecords(req) => Ok(delete_records::handle(state, req, version)),
        RequestKind::DescribeLogDirs(req) => ready(describe_log_dirs::handle(state, req).into()),
        RequestKind::OffsetDelete(req) => Ok(offset_delete::handle(state, req, version)),
        RequestKind::IncrementalAlterConfigs(req) => {
            Ok(incremental_alter_configs::handle(state, req, version))
        }
        RequestKind::AlterConfigs(req) => Ok(alter_configs::handle(state, req, version)),
        _ => Err(unsupported()),
    }
}

/// Decodes the body of a request whose version was checked against [`SUPPORTED`].
pub fn decode(
    header: &RequestHeader,
    key: ApiKey,
    body: &mut Bytes,
) -> Result<RequestKind, ConnectionError> {
    RequestKind::decode(key, body, header.request_api_version).map_err(|e| {
        ConnectionError::Malformed {
            api_key: header.request_api_key,
            api_version: header.request_api_version,
            detail: format!("{e:#}"),
        }
    })
}

/// Answers `response` once every earlier write is durable (a flush of its own, shared with
/// any flush under way); if the flush fails, `failed` turns it into the API's
/// KAFKA_STORAGE_ERROR answer.
fn when_durable<R>(state: &State, response: R, version: i16, failed: fn(R) -> R) -> Reply
where
    R: Into<ResponseKind> + Send + 'static,
{
    let flusher = state.flusher.clone();
    Reply::Later(
        Box::pin(async move {
            if flusher.flush(Vec::new()).await {
                response.into()
            } else {
                failed(response).into()
            }
        }),
        version,
    )
}

/// Waits for a parked group request's answer; `None` if the broker shuts down first.
async fn wait_answer(
    state: &State,
    rx: tokio::sync::oneshot::Receiver<crate::group::service::Answer>,
) -> Option<crate::group::service::Answer> {
    let mut shutdown = state.shutting_down.clone();
    tokio::select! {
        answer = rx => answer.ok(),
        _ = shutdown.wait_for(|s| *s) => None,
    }
}

/// The wire code of a transaction coordinator's error for an API at `version`:
/// PRODUCER_FENCED exists for clients from the version `fenced_since` on (KIP-588); older
/// ones get INVALID_PRODUCER_EPOCH, as Kafka sends them.
pub(crate) fn txn_code(e: kafka_protocol::ResponseError, version: i16, fenced_since: i16) -> i16 {
    use kafka_protocol::ResponseError as E;
    match e {
        E::ProducerFenced if version < fenced_since => E::InvalidProducerEpoch.code(),
        other => other.code(),
    }
}

/// The wire code of an outcome: 0 for success.
pub(crate) fn code(outcome: Result<(), kafka_protocol::ResponseError>) -> i16 {
    outcome.err().map_or(0, |e| e.code())
}

pub(crate) fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(s))
}
