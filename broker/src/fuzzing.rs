//! Entry points for the cargo-fuzz targets in `fuzz/` and for the corpus regression test
//! (`tests/fuzz_corpus.rs`), which replays every saved input on stable Rust. Each one
//! takes arbitrary bytes and must neither panic nor allocate beyond the configured limits.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::api::{self, Reply};
use crate::config::BrokerConfig;
use crate::connection::decode_header;
use crate::frame::{read_frame, MIN_REQUEST_LEN};
use crate::state::State;
use crate::storage::memory::MemoryStore;

/// Frame limit used by the targets: small, so a forged length is refused quickly.
pub const MAX_FRAME: usize = 1 << 20;

/// Polls a future whose I/O is an in-memory slice (always ready) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A byte stream as a client connection would deliver it: frames are cut out (length
/// checked before allocation), and each is handled like a request.
pub fn frames(data: &[u8]) {
    let mut input = data;
    while let Ok(Some(frame)) = ready(read_frame(&mut input, MAX_FRAME)) {
        assert!(frame.len() <= MAX_FRAME && frame.len() <= data.len());
        request(frame);
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    state: Arc<State>,
}

fn harness() -> Option<&'static Harness> {
    static HARNESS: OnceLock<Option<Harness>> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .ok()?;
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let _guard = runtime.enter();
            let state = State::recover(
                BrokerConfig::default(),
                Arc::new(MemoryStore::new("fuzz")),
                ("127.0.0.1".into(), 9092),
                rx,
            )
            .ok()?;
            Some(Harness { runtime, state })
        })
        .as_ref()
}

/// One request frame (after the length prefix): header, then the body decoded for its API
/// and version and handled against an in-memory broker. Handlers' deferred parts (flush
/// waits, long polls, group rendezvous) are dropped unawaited.
pub fn request(frame: Bytes) {
    if frame.len() < MIN_REQUEST_LEN {
        return;
    }
    let mut frame = frame;
    let Ok((header, key)) = decode_header(&mut frame) else {
        return;
    };
    let Some(h) = harness() else {
        return;
    };
    let _guard = h.runtime.enter();
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    if let Ok(Reply::Ready(resp, version)) = api::dispatch(&h.state, &header, frame, peer) {
        // The response must encode (a panic here is a bug in a handler).
        let _ = crate::connection::encode_response(header.correlation_id, key, version, &resp);
    }
}

/// Record batch validation, then what the broker does with a valid batch: rewrite its
/// base offset and search it by offset.
pub fn record_batch(data: &[u8]) {
    let Ok(info) = crate::batch::validate(data, MAX_FRAME) else {
        return;
    };
    assert!(info.record_count >= 0);
    let rebased = crate::batch::with_base_offset(data, 1000);
    assert_eq!(rebased.len(), data.len());
    assert_eq!(crate::batch::base_offset(&rebased), Some(1000));
    let _ = crate::batch::first_record_at_or_after(&rebased, 1000);
    let _ = crate::batch::info(&rebased);
}

/// Valid inputs to start fuzzing from, per target: real requests of every API family (as
/// frames without the length prefix) and record batches. `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let batch =
        crate::batch::uncompressed_batch(&[b"a", b"bb"], 1_700_000_000_000, 1, (-1, -1, -1));
    let idempotent = crate::batch::uncompressed_batch(&[b"c"], 1_700_000_000_000, 0, (7, 0, 0));
    let mut out = Vec::new();
    for (key, version, req) in data_requests(&batch).into_iter().chain(group_requests()) {
        let Some(body) = encode_request(key, version, &req) else {
            continue;
        };
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        out.push(("request", format!("{key:?}-v{version}"), body));
        out.push(("frames", format!("{key:?}-v{version}"), framed));
    }
    out.push(("record_batch", "two-records".into(), batch));
    out.push(("record_batch", "idempotent".into(), idempotent));
    out
}

fn seed_topic() -> TopicName {
    TopicName(StrBytes::from_static_str("fuzz"))
}

fn seed_group() -> GroupId {
    GroupId(StrBytes::from_static_str("g"))
}

/// Requests on topics and their data.
fn data_requests(batch: &[u8]) -> Vec<(ApiKey, i16, RequestKind)> {
    let topic = seed_topic;
    let batch = batch.to_vec();
    vec![
        (ApiKey::ApiVersions, 3, ApiVersionsRequest::default().into()),
        (
            ApiKey::Metadata,
            12,
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(topic()))]))
                .into(),
        ),
        (
            ApiKey::Produce,
            9,
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch)))])])
                .into(),
        ),
        (
            ApiKey::Fetch,
            12,
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20)])])
                .into(),
        ),
        (
            ApiKey::ListOffsets,
            6,
            ListOffsetsRequest::default()
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ])])
                .into(),
        ),
        (
            ApiKey::CreateTopics,
            5,
            CreateTopicsRequest::default()
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("made")))
                    .with_num_partitions(3)
                    .with_replication_factor(1)])
                .into(),
        ),
    ]
}

/// Requests on groups and producer ids.
fn group_requests() -> Vec<(ApiKey, i16, RequestKind)> {
    let topic = seed_topic;
    let group = seed_group;
    vec![
        (
            ApiKey::FindCoordinator,
            4,
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
                .into(),
        ),
        (
            ApiKey::JoinGroup,
            7,
            JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))])
                .into(),
        ),
        (
            ApiKey::OffsetCommit,
            8,
            OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ])
                .into(),
        ),
        (
            ApiKey::InitProducerId,
            4,
            InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .into(),
        ),
    ]
}

/// A request header and body, encoded; `None` if the version cannot encode it.
fn encode_request(key: ApiKey, version: i16, req: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    header
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    req.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}
