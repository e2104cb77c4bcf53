//! Exact protocol behaviour that client libraries hide: idempotent retries and sequence gaps
//! (and their survival across a restart), producer id allocation, committed offsets across
//! a restart, group deletion, the connection limit.

mod common;

use std::time::Duration;

use common::*;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

fn init_producer_id(c: &mut RawClient) -> (i64, i16) {
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(60000),
    );
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

fn bump_epoch(c: &mut RawClient, pid: i64, epoch: i16) -> (i64, i16) {
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_transaction_timeout_ms(60000),
    );
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

fn high_watermark(addr: &str, topic: &str) -> i64 {
    let c: rdkafka::consumer::BaseConsumer = client_config(addr).create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}

#[test]
fn idempotent_retries_are_acknowledged_once_and_gaps_refused_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let mut c = RawClient::connect(&broker.addr);
    let (pid, epoch) = init_producer_id(&mut c);
    let first = record_batch(&[b"a", b"b", b"c"], pid, epoch, 0);
    assert_eq!(raw_produce(&mut c, "idem", first.clone()), (0, 0));
    assert_eq!(
        raw_produce(&mut c, "idem", record_batch(&[b"d"], pid, epoch, 3)),
        (0, 3)
    );
    // The retry of the first batch is acknowledged with its original offset...
    assert_eq!(raw_produce(&mut c, "idem", first.clone()), (0, 0));
    // ...and a gap is refused.
    assert_eq!(
        raw_produce(&mut c, "idem", record_batch(&[b"x"], pid, epoch, 9)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    drop(c);
    assert!(broker.terminate().success());

    let broker = BinaryBroker::start(dir.path());
    let mut c = RawClient::connect(&broker.addr);
    assert_eq!(
        raw_produce(&mut c, "idem", first),
        (0, 0),
        "duplicate still recognised after restart"
    );
    assert_eq!(
        raw_produce(&mut c, "idem", record_batch(&[b"e"], pid, epoch, 4)),
        (0, 4),
        "sequence continues"
    );
    assert_eq!(
        high_watermark(&broker.addr, "idem"),
        5,
        "nothing stored twice"
    );

    // KIP-360 epoch bump: the new epoch starts again at sequence 0, and once a partition
    // has seen it the old epoch is fenced there (as in Kafka).
    let (same, bumped) = bump_epoch(&mut c, pid, epoch);
    assert_eq!((same, bumped), (pid, epoch + 1));
    assert_eq!(
        raw_produce(&mut c, "idem", record_batch(&[b"new"], pid, bumped, 0)),
        (0, 5)
    );
    assert_eq!(
        raw_produce(&mut c, "idem", record_batch(&[b"old"], pid, epoch, 5)).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );

    let (pid2, _) = init_producer_id(&mut c);
    assert!(
        pid2 > pid,
        "producer ids never repeat after a restart ({pid2} after {pid})"
    );
}

fn group_consumer(bs: &str, group: &str) -> StreamConsumer {
    let mut c = client_config(bs);
    c.set("group.id", group).set("enable.auto.commit", "false");
    c.create().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_and_groups_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    create_topic(&broker.addr, "ledger", 2).await;
    let c = group_consumer(&broker.addr, "auditors");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ledger", 0, Offset::Offset(0))
        .unwrap();
    tpl.add_partition_offset("ledger", 1, Offset::Offset(0))
        .unwrap();
    // commit with metadata through a manual (no-membership) commit
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset("ledger", 0, Offset::Offset(42))
        .unwrap();
    commit
        .add_partition_offset("ledger", 1, Offset::Offset(7))
        .unwrap();
    c.commit(&commit, CommitMode::Sync).unwrap();
    drop(c);
    assert!(broker.terminate().success());

    let broker = BinaryBroker::start(dir.path());
    let c = group_consumer(&broker.addr, "auditors");
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        got.find_partition("ledger", 0).unwrap().offset(),
        Offset::Offset(42)
    );
    assert_eq!(
        got.find_partition("ledger", 1).unwrap().offset(),
        Offset::Offset(7)
    );
    drop(c);

    let admin = admin(&broker.addr);
    let deleted = admin
        .delete_groups(&["auditors", "nobody"], &AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    assert_eq!(
        deleted[1].as_ref().unwrap_err().1,
        RDKafkaErrorCode::GroupIdNotFound
    );
    let c = group_consumer(&broker.addr, "auditors");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("ledger", 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        got.find_partition("ledger", 0).unwrap().offset(),
        Offset::Invalid,
        "offsets went with the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = start_broker_with(None, |c| c.max_connections = 1).await;
    let addr = broker.local_addr();
    let api_versions = {
        // ApiVersions v0: key 18, version 0, correlation 1, client id "t"
        let mut f = 11i32.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0, 1, b't']);
        f
    };
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap(); // sits in the backlog
    second.write_all(&api_versions).await.unwrap();
    let mut len = [0u8; 4];
    let early = tokio::time::timeout(Duration::from_millis(700), second.read_exact(&mut len)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), second.read_exact(&mut len))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_removes_one_partitions_offset_durably() {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    create_topic(&broker.addr, "kept", 2).await;
    let c = group_consumer(&broker.addr, "cleaners");
    let mut commit = TopicPartitionList::new();
    for (p, o) in [(0, 42), (1, 7)] {
        commit
            .add_partition_offset("kept", p, Offset::Offset(o))
            .unwrap();
    }
    c.commit(&commit, CommitMode::Sync).unwrap();
    drop(c);
    let request = |group: &'static str| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("kept")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])])
    };
    let mut raw = RawClient::connect(&broker.addr);
    let r: OffsetDeleteResponse = raw.call(ApiKey::OffsetDelete, 0, &request("cleaners"));
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r: OffsetDeleteResponse = raw.call(ApiKey::OffsetDelete, 0, &request("nobody"));
    assert_eq!(r.error_code, 69, "GROUP_ID_NOT_FOUND");
    assert!(broker.terminate().success());
    let broker = BinaryBroker::start(dir.path());
    let c = group_consumer(&broker.addr, "cleaners");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("kept", 0);
    tpl.add_partition("kept", 1);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        got.find_partition("kept", 0).unwrap().offset(),
        Offset::Invalid
    );
    assert_eq!(
        got.find_partition("kept", 1).unwrap().offset(),
        Offset::Offset(7)
    );
}

#[test]
fn authorized_operations_are_all_operations_when_asked() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
        TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let mut c = RawClient::connect(&broker.addr);
    let topics = Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("ops"))))]);
    let asked: MetadataResponse = c.call(
        ApiKey::Metadata,
        10,
        &MetadataRequest::default()
            .with_topics(topics.clone())
            .with_allow_auto_topic_creation(true)
            .with_include_topic_authorized_operations(true),
    );
    // READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS
    assert_eq!(asked.topics[0].topic_authorized_operations.count_ones(), 8);
    let not_asked: MetadataResponse = c.call(
        ApiKey::Metadata,
        10,
        &MetadataRequest::default().with_topics(topics),
    );
    assert_eq!(not_asked.topics[0].topic_authorized_operations, i32::MIN);
    let cluster: DescribeClusterResponse = c.call(
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
    );
    assert_eq!(cluster.cluster_authorized_operations.count_ones(), 7);
}

/// Fetch v13+ names topics by id (KIP-516): the id Metadata gave, stable across a restart;
/// an unknown id gets UNKNOWN_TOPIC_ID.
#[test]
fn fetch_by_topic_id_from_v13() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let metadata = |addr: &str| -> uuid::Uuid {
        let mut c = RawClient::connect(addr);
        let md: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("byid"))))]))
                .with_allow_auto_topic_creation(true),
        );
        md.topics[0].topic_id
    };
    let id = metadata(&broker.addr);
    assert!(!id.is_nil());
    let mut c = RawClient::connect(&broker.addr);
    let (code, _) = raw_produce(&mut c, "byid", record_batch(&[b"one", b"two"], -1, -1, -1));
    assert_eq!(code, 0);
    let fetch = |c: &mut RawClient, version: i16, topic_id: uuid::Uuid| -> FetchResponse {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        c.call(ApiKey::Fetch, version, &req)
    };
    for version in [13, 16] {
        let r = fetch(&mut c, version, id);
        let t = &r.responses[0];
        assert_eq!(t.topic_id, id, "v{version}");
        let p = &t.partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 2), "v{version}");
        assert!(
            p.records.as_ref().is_some_and(|b| !b.is_empty()),
            "v{version}"
        );
    }
    let unknown = fetch(&mut c, 13, uuid::Uuid::from_u128(7));
    assert_eq!(
        unknown.responses[0].partitions[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
    drop(c);
    broker.kill9();
    let broker = BinaryBroker::start(dir.path());
    assert_eq!(metadata(&broker.addr), id, "the same id after a restart");
    let r = fetch(&mut RawClient::connect(&broker.addr), 13, id);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);
}

/// A fetch never goes past its `max_bytes` but for the response's first batch (KIP-74): a
/// second partition whose batch does not fit what is left sends nothing (librdkafka's
/// 0082 refused 1.8 MB answers to a 1 MB fetch).
#[test]
fn fetch_max_bytes_caps_every_partition_but_the_first_batch() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start_with(
        dir.path(),
        &[
            "--default-partitions",
            "2",
            "--max-message-bytes",
            "2000000",
        ],
    );
    let mut c = RawClient::connect(&broker.addr);
    let big = vec![b'x'; 600_000];
    for p in 0..2 {
        let req = kafka_protocol::messages::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("wide")))
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(record_batch(&[&big], -1, -1, -1))),
                    ]),
            ]);
        let r: kafka_protocol::messages::ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 0,
            "partition {p}"
        );
    }
    let fetch = |max_bytes: i32| -> FetchResponse {
        let parts = (0..2)
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_partition_max_bytes(20_000_000)
            })
            .collect();
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("wide")))
                .with_partitions(parts)]);
        RawClient::connect(&broker.addr).call(ApiKey::Fetch, 12, &req)
    };
    let sizes = |r: &FetchResponse| -> Vec<usize> {
        r.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
            .collect()
    };
    let one_mb = sizes(&fetch(1_000_000));
    assert!(one_mb[0] > 600_000 && one_mb[1] == 0, "{one_mb:?}");
    let small = sizes(&fetch(1_000));
    assert!(
        small[0] > 600_000 && small[1] == 0,
        "the first batch goes whole: {small:?}"
    );
    let both = sizes(&fetch(2_000_000));
    assert!(both.iter().all(|&s| s > 600_000), "{both:?}");
}
