//! The embedded broker against a real Kafka client (librdkafka through the `rdkafka`
//! crate): produce, fetch, long poll, offsets by time, compression, admin operations.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_messages_come_back_in_order_with_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "orders", 3).await;

    let producer = producer(&bs, &[("acks", "all")]);
    let mut deliveries = Vec::new();
    for i in 0..10_000u32 {
        let key = format!("key-{}", i % 100);
        let value = format!("value-{i}");
        deliveries.push(
            producer
                .send_result(FutureRecord::to("orders").key(&key).payload(&value))
                .expect("queue"),
        );
    }
    // (partition, offset) -> (key, value) as acknowledged by the broker
    let mut acked = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let d = d.await.expect("not cancelled").expect("acknowledged");
        acked.insert(
            (d.partition, d.offset),
            (format!("key-{}", i % 100), format!("value-{i}")),
        );
    }
    assert_eq!(acked.len(), 10_000, "every ack has its own offset");

    let consumer = assigned_consumer(&bs, "orders", 3, &[]);
    let records = consume_n(&consumer, 10_000, WAIT).await;
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    for r in &records {
        let expected = next_offset.entry(r.partition).or_insert(0);
        assert_eq!(
            r.offset, *expected,
            "offsets dense and in order on partition {}",
            r.partition
        );
        *expected += 1;
        let (k, v) = &acked[&(r.partition, r.offset)];
        assert_eq!(r.key.as_deref(), Some(k.as_bytes()));
        assert_eq!(r.value.as_deref(), Some(v.as_bytes()));
        let p = key_partition
            .entry(r.key.clone().unwrap())
            .or_insert(r.partition);
        assert_eq!(*p, r.partition, "a key always maps to one partition");
    }
    assert_eq!(next_offset.len(), 3, "all three partitions were used");
    for p in 0..3 {
        let (lo, hi) = consumer
            .fetch_watermarks("orders", p, Duration::from_secs(10))
            .unwrap();
        assert_eq!((lo, hi), (0, next_offset[&p]));
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_is_woken_by_an_append_not_by_its_timeout() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "quiet", 1).await;
    // The consumer parks fetches for up to 20 s waiting for one byte.
    let consumer = assigned_consumer(
        &bs,
        "quiet",
        1,
        &[("fetch.wait.max.ms", "20000"), ("fetch.min.bytes", "1")],
    );
    let waiter = tokio::spawn(async move { consume_n(&consumer, 1, WAIT).await });
    tokio::time::sleep(Duration::from_millis(1500)).await; // fetch is parked by now

    let sent = Instant::now();
    producer(&bs, &[])
        .send(
            FutureRecord::<(), _>::to("quiet").payload("wake up"),
            Duration::from_secs(10),
        )
        .await
        .expect("acknowledged");
    let got = waiter.await.unwrap();
    let latency = sent.elapsed();
    assert_eq!(got[0].value.as_deref(), Some(&b"wake up"[..]));
    assert!(
        latency < Duration::from_secs(10),
        "record arrived after {latency:?}: the parked fetch waited for its 20 s timeout"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_timestamp_finds_the_first_record_at_or_after() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "timed", 1).await;
    // Ten records, timestamps 1000..=10000, lingering so they share one batch.
    let producer = producer(&bs, &[("linger.ms", "200")]);
    let futures: Vec<_> = (1..=10i64)
        .map(|i| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to("timed")
                        .payload("x")
                        .timestamp(i * 1000),
                )
                .expect("queue")
        })
        .collect();
    for f in futures {
        f.await.unwrap().expect("acknowledged");
    }
    let consumer = assigned_consumer(&bs, "timed", 1, &[]);
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("timed", 0, Offset::Offset(ts))
            .unwrap();
        let r = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .expect("ListOffsets");
        r.find_partition("timed", 0).unwrap().offset()
    };
    assert_eq!(lookup(0), Offset::Offset(0));
    assert_eq!(lookup(1000), Offset::Offset(0));
    assert_eq!(lookup(2500), Offset::Offset(2));
    assert_eq!(lookup(10_000), Offset::Offset(9));
    assert_eq!(lookup(10_001), Offset::End);
    assert_eq!(
        consumer
            .fetch_watermarks("timed", 0, Duration::from_secs(10))
            .unwrap(),
        (0, 10)
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips_and_stays_compressed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let bs = broker.bootstrap_servers();
    for (codec, id) in [
        ("none", 0u8),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        let topic = format!("codec-{codec}");
        let producer = producer(&bs, &[("compression.type", codec), ("linger.ms", "50")]);
        let values: Vec<String> = (0..500)
            .map(|i| format!("{codec} transaction {i:05} {}", "payload ".repeat(20)))
            .collect();
        let futures: Vec<_> = values
            .iter()
            .map(|v| {
                producer
                    .send_result(FutureRecord::<(), _>::to(&topic).payload(v))
                    .expect("queue")
            })
            .collect();
        for f in futures {
            f.await.unwrap().expect("acknowledged");
        }
        let consumer = assigned_consumer(&bs, &topic, 1, &[]);
        let got = consume_n(&consumer, values.len(), WAIT).await;
        let got: Vec<String> = got
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
            .collect();
        assert_eq!(got, values, "codec {codec}");

        let stored = broker
            .view()
            .read_batches(&topic, 0, 0, usize::MAX)
            .unwrap();
        assert!(!stored.is_empty());
        let codecs: Vec<u8> = stored
            .iter()
            .map(|b| finstream_broker::batch::info(b).unwrap().codec)
            .collect();
        assert!(
            codecs.iter().all(|&c| c == id),
            "{codec}: stored codecs {codecs:?}"
        );
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_validate_describe_and_delete_topics() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let admin = admin(&bs);
    let opts = AdminOptions::new();

    let dry = admin
        .create_topics(
            &[NewTopic::new("dry-run", 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().validate_only(true),
        )
        .await
        .unwrap();
    assert!(dry[0].is_ok());
    assert!(
        broker.view().topic("dry-run").is_none(),
        "validate_only creates nothing"
    );

    let created = admin
        .create_topics(
            &[NewTopic::new("ledger", 4, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());
    assert_eq!(broker.view().topic("ledger").unwrap().partitions.len(), 4);

    let again = admin
        .create_topics(
            &[NewTopic::new("ledger", 4, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );

    let bad = admin
        .create_topics(
            &[NewTopic::new(
                "no spaces allowed",
                1,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidTopic
    );

    let replicated = admin
        .create_topics(
            &[NewTopic::new("replicated", 1, TopicReplication::Fixed(3))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        replicated[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );

    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic("ledger")], &opts)
        .await
        .unwrap();
    let ledger = configs[0].as_ref().expect("described");
    let max = ledger
        .get("max.message.bytes")
        .expect("max.message.bytes listed");
    assert_eq!(max.value.as_deref(), Some("1048576"));

    let deleted = admin.delete_topics(&["ledger"], &opts).await.unwrap();
    assert!(deleted[0].is_ok());
    assert!(broker.view().topic("ledger").is_none());
    let missing = admin.delete_topics(&["ledger"], &opts).await.unwrap();
    assert_eq!(
        missing[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batch_gets_message_too_large_and_the_topic_stays_usable() {
    let broker = start_broker_with(None, |c| c.max_message_bytes = 10_000).await;
    let bs = broker.bootstrap_servers();
    let producer = producer(
        &bs,
        &[("linger.ms", "0"), ("message.send.max.retries", "0")],
    );
    let big = "x".repeat(50_000);
    let err = producer
        .send(
            FutureRecord::<(), _>::to("limits").payload(&big),
            Duration::from_secs(10),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        err.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let ok = producer
        .send(
            FutureRecord::<(), _>::to("limits").payload("small"),
            Duration::from_secs(10),
        )
        .await
        .expect("small message accepted");
    assert_eq!(ok.offset, 0, "the refused batch took no offset");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_and_one_are_served_and_auto_create_works() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    for acks in ["0", "1"] {
        let topic = format!("auto-acks-{acks}");
        let producer = producer(&bs, &[("acks", acks)]);
        for i in 0..100 {
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic).payload(&format!("m{i}")),
                    Duration::from_secs(10),
                )
                .await
                .expect("delivered");
        }
        let consumer = assigned_consumer(&bs, &topic, 1, &[]);
        let got = consume_n(&consumer, 100, WAIT).await;
        assert_eq!(got.last().unwrap().value.as_deref(), Some(&b"m99"[..]));
        assert_eq!(broker.view().topic(&topic).unwrap().partitions.len(), 1);
    }
    broker.shutdown().await.unwrap();
}

/// Counts the partitions a consumer had revoked.
#[derive(Default)]
struct RevokeCounter(std::sync::atomic::AtomicUsize);

impl rdkafka::ClientContext for RevokeCounter {}

impl rdkafka::consumer::ConsumerContext for RevokeCounter {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            self.0
                .fetch_add(tpl.count(), std::sync::atomic::Ordering::SeqCst);
        }
    }
}

type StaticConsumer = rdkafka::consumer::StreamConsumer<RevokeCounter>;

fn static_member(bs: &str, instance: &str) -> StaticConsumer {
    let mut c = client_config(bs);
    c.set("group.id", "static-group")
        .set("group.instance.id", instance)
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest");
    let c: StaticConsumer = c
        .create_with_context(RevokeCounter::default())
        .expect("consumer");
    c.subscribe(&["static-topic"]).expect("subscribe");
    c
}

fn partitions_of(c: &StaticConsumer) -> Vec<i32> {
    let mut ps: Vec<i32> = c
        .assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default();
    ps.sort_unstable();
    ps
}

/// Polls both consumers until `done` holds, or fails after `WAIT`.
async fn poll_until(
    a: &StaticConsumer,
    b: &StaticConsumer,
    what: &str,
    done: impl Fn(&StaticConsumer, &StaticConsumer) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(a, b) {
        assert!(
            Instant::now() < deadline,
            "{what}: {:?} {:?}",
            partitions_of(a),
            partitions_of(b)
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(100), b.recv()).await;
    }
}

/// Static membership (KIP-345), as a user deploying consumers with `group.instance.id`
/// relies on: a member that restarts within its session comes back to its own partitions,
/// and the other member keeps consuming without a rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    create_topic(&bs, "static-topic", 4).await;
    let a = static_member(&bs, "a");
    let b = static_member(&bs, "b");
    poll_until(&a, &b, "members never split the partitions", |a, b| {
        let (pa, pb) = (partitions_of(a), partitions_of(b));
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4
    })
    .await;
    let (a_before, b_before) = (partitions_of(&a), partitions_of(&b));
    let revoked_before = a.context().0.load(std::sync::atomic::Ordering::SeqCst);

    drop(b); // a static member leaves no LeaveGroup behind: its session holds its place
    let b = static_member(&bs, "b");
    poll_until(
        &a,
        &b,
        "the restarted member never got its partitions",
        |_, b| !partitions_of(b).is_empty(),
    )
    .await;
    assert_eq!(partitions_of(&b), b_before, "the same partitions as before");
    // a few more polls: a rebalance of `a`, if any, would show now
    for _ in 0..10 {
        let _ = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
    }
    assert_eq!(partitions_of(&a), a_before);
    assert_eq!(
        a.context().0.load(std::sync::atomic::Ordering::SeqCst),
        revoked_before,
        "the other member was not rebalanced"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_added_durably_and_never_removed() {
    use rdkafka::admin::NewPartitions;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let bs = broker.addr.clone();
    create_topic(&bs, "growing", 2).await;
    let admin = admin(&bs);
    let opts = AdminOptions::new();
    let dry = admin
        .create_partitions(
            &[NewPartitions::new("growing", 3)],
            &AdminOptions::new().validate_only(true),
        )
        .await
        .unwrap();
    assert!(dry[0].is_ok());
    let grown = admin
        .create_partitions(&[NewPartitions::new("growing", 5)], &opts)
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    for (count, why) in [(5, "same count"), (3, "fewer")] {
        let r = admin
            .create_partitions(&[NewPartitions::new("growing", count)], &opts)
            .await
            .unwrap();
        assert!(
            matches!(&r[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
            "{why}: {r:?}"
        );
    }
    let unknown = admin
        .create_partitions(&[NewPartitions::new("nope", 3)], &opts)
        .await
        .unwrap();
    assert!(unknown[0].is_err());
    // the new partitions take data, and survive a restart
    let p = producer(&bs, &[]);
    p.send(
        FutureRecord::<(), _>::to("growing")
            .partition(4)
            .payload("in p4"),
        WAIT,
    )
    .await
    .unwrap();
    broker.kill9();
    let broker = BinaryBroker::start_with(dir.path(), &["--listen", &bs]);
    let c = assigned_consumer(&broker.addr, "growing", 5, &[]);
    let got = consume_n(&c, 1, WAIT).await;
    assert_eq!((got[0].partition, got[0].offset), (4, 0));
    let md = c.fetch_metadata(Some("growing"), WAIT).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
}
