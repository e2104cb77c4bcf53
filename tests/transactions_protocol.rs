//! The transaction APIs' exact answers, which client libraries hide: a transactional batch
//! only into a partition of the producer's open transaction, PRODUCER_FENCED or
//! INVALID_PRODUCER_EPOCH by API version, timeouts above the broker's maximum, retried and
//! contradictory EndTxn, FindCoordinator for transactions, offsets of a transaction
//! invisible (or unstable, KIP-447) until it commits, and the admin view
//! (DescribeTransactions, ListTransactions, DescribeProducers).

mod common;

use common::*;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "txp";

fn txn_id(s: &'static str) -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(s))
}

fn init(c: &mut RawClient, id: &'static str, timeout_ms: i32) -> InitProducerIdResponse {
    c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(id)))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
}

fn add_partition(c: &mut RawClient, version: i16, id: &'static str, pid: i64, epoch: i16) -> i16 {
    let r: AddPartitionsToTxnResponse = c.call(
        ApiKey::AddPartitionsToTxn,
        version,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(id))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![0])]),
    );
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end(c: &mut RawClient, id: &'static str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let r: EndTxnResponse = c.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(txn_id(id))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    );
    r.error_code
}

/// The group's committed offset for partition 0 of the topic (OffsetFetch v7), and the
/// partition's error code.
fn committed(c: &mut RawClient, require_stable: bool) -> (i64, i16) {
    let r: OffsetFetchResponse = c.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_require_stable(require_stable)
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    let p = &r.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

/// AddOffsetsToTxn for group "g", then TxnOffsetCommit of `offset` for partition 0.
fn txn_offsets(c: &mut RawClient, pid: i64, epoch: i16, offset: i64) -> (i16, i16) {
    let added: AddOffsetsToTxnResponse = c.call(
        ApiKey::AddOffsetsToTxn,
        3,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id("tx"))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(StrBytes::from_static_str("g"))),
    );
    let sent: TxnOffsetCommitResponse = c.call(
        ApiKey::TxnOffsetCommit,
        3,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id("tx"))
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]),
    );
    (added.error_code, sent.topics[0].partitions[0].error_code)
}

fn txn_batch(value: &[u8], pid: i64, epoch: i16, seq: i32) -> bytes::Bytes {
    let mut b = finstream_broker::batch::uncompressed_batch(
        &[value],
        1_700_000_000_000,
        0,
        (pid, epoch, seq),
    );
    finstream_broker::batch::set_transactional(&mut b);
    b.into()
}

#[test]
fn transaction_apis_answer_like_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let mut c = RawClient::connect(&broker.addr);
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        4,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    let coordinator: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("tx"))
            .with_key_type(1),
    );
    assert_eq!(coordinator.error_code, 0);
    assert!(coordinator.port > 0);

    assert_eq!(
        init(&mut c, "tx", 900_001).error_code,
        50,
        "INVALID_TRANSACTION_TIMEOUT"
    );
    let r = init(&mut c, "tx", 60_000);
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);

    // a transactional batch before its partition joined the transaction is refused
    let (code, _) = raw_produce(&mut c, TOPIC, txn_batch(b"early", pid, epoch, 0));
    assert_eq!(code, 48, "INVALID_TXN_STATE");
    assert_eq!(add_partition(&mut c, 3, "tx", pid, epoch), 0);
    assert_eq!(
        raw_produce(&mut c, TOPIC, txn_batch(b"a", pid, epoch, 0)),
        (0, 0)
    );

    let described: DescribeTransactionsResponse = c.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id("tx")]),
    );
    let s = &described.transaction_states[0];
    assert_eq!((s.error_code, s.transaction_state.as_str()), (0, "Ongoing"));
    assert_eq!((s.producer_id.0, s.transaction_timeout_ms), (pid, 60_000));
    assert_eq!(s.topics[0].partitions, vec![0]);
    let listed: ListTransactionsResponse = c.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_static_str("Ongoing")])
            .with_duration_filter(-1),
    );
    assert_eq!(listed.transaction_states.len(), 1);

    // offsets sent in the transaction are invisible until it commits
    assert_eq!(txn_offsets(&mut c, pid, epoch, 7), (0, 0));
    assert_eq!(committed(&mut c, false), (-1, 0));
    assert_eq!(committed(&mut c, true).1, 88, "UNSTABLE_OFFSET_COMMIT");

    assert_eq!(end(&mut c, "tx", pid, epoch, true), 0);
    assert_eq!(committed(&mut c, true), (7, 0));
    assert_eq!(
        end(&mut c, "tx", pid, epoch, true),
        0,
        "a retried commit succeeds"
    );
    assert_eq!(
        end(&mut c, "tx", pid, epoch, false),
        48,
        "abort after commit: INVALID_TXN_STATE"
    );
    // the commit marker took offset 1
    let offsets: ListOffsetsResponse = c.call(
        ApiKey::ListOffsets,
        2,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(1)
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ])]),
    );
    assert_eq!(offsets.topics[0].partitions[0].offset, 2);

    // a second producer fences the first: PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before
    let r = init(&mut c, "tx", 60_000);
    assert_eq!((r.error_code, r.producer_id.0), (0, pid));
    assert!(r.producer_epoch > epoch);
    assert_eq!(
        add_partition(&mut c, 3, "tx", pid, epoch),
        90,
        "PRODUCER_FENCED"
    );
    assert_eq!(
        add_partition(&mut c, 1, "tx", pid, epoch),
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (code, _) = raw_produce(&mut c, TOPIC, txn_batch(b"zombie", pid, epoch, 1));
    assert_eq!(code, 47, "INVALID_PRODUCER_EPOCH");
    assert_eq!(
        end(&mut c, "unknown", pid, epoch, true),
        49,
        "INVALID_PRODUCER_ID_MAPPING"
    );
}
