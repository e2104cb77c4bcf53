//! Kafka transactions from Rust (the rdkafka crate, i.e. librdkafka's transactional
//! producer and read_committed consumer) against the embedded broker: visibility of
//! committed and aborted data, the last stable offset, fencing of zombies, timeouts, a
//! consume-transform-produce loop with `send_offsets_to_transaction`, and broker crashes
//! with a transaction open or half committed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

/// Runs librdkafka's blocking transaction calls without stalling the runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut all = vec![("transactional.id", id), ("linger.ms", "1")];
    all.extend_from_slice(extra);
    let p = producer(bootstrap, &all);
    blocking(|| p.init_transactions(T)).expect("init_transactions");
    p
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value),
        T,
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

fn committed_reader(bootstrap: &str, topic: &str, partitions: i32) -> StreamConsumer {
    assigned_consumer(
        bootstrap,
        topic,
        partitions,
        &[("isolation.level", "read_committed")],
    )
}

fn uncommitted_reader(bootstrap: &str, topic: &str, partitions: i32) -> StreamConsumer {
    assigned_consumer(
        bootstrap,
        topic,
        partitions,
        &[("isolation.level", "read_uncommitted")],
    )
}

/// Values read, by partition, until `quiet` passes with nothing new.
async fn read_all(c: &StreamConsumer, quiet: Duration) -> BTreeMap<i32, Vec<String>> {
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    while let Ok(msg) = tokio::time::timeout(quiet, c.recv()).await {
        let msg = msg.expect("consume");
        let value = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        out.entry(msg.partition()).or_default().push(value);
    }
    out
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_records_only_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "tx", 2).await;
    let p = txn_producer(&addr, "visibility", &[]);
    for (prefix, commit) in [("c", true), ("a", false), ("d", true)] {
        blocking(|| p.begin_transaction()).unwrap();
        for (i, v) in values(prefix, 10).iter().enumerate() {
            send(&p, "tx", (i % 2) as i32, v).await;
        }
        if commit {
            blocking(|| p.commit_transaction(T)).unwrap();
        } else {
            blocking(|| p.abort_transaction(T)).unwrap();
        }
    }
    let committed = read_all(&committed_reader(&addr, "tx", 2), Duration::from_secs(3)).await;
    let want = |parity: usize, prefixes: &[&str]| -> Vec<String> {
        prefixes
            .iter()
            .flat_map(|pre| {
                values(pre, 10)
                    .into_iter()
                    .enumerate()
                    .filter(move |(i, _)| i % 2 == parity)
                    .map(|(_, v)| v)
            })
            .collect()
    };
    assert_eq!(committed.get(&0), Some(&want(0, &["c", "d"])));
    assert_eq!(committed.get(&1), Some(&want(1, &["c", "d"])));
    // read_uncommitted also sees the aborted records; nobody sees the markers
    let all = read_all(&uncommitted_reader(&addr, "tx", 2), Duration::from_secs(3)).await;
    assert_eq!(all.get(&0), Some(&want(0, &["c", "a", "d"])));
    assert_eq!(all.get(&1), Some(&want(1, &["c", "a", "d"])));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_read_committed_readers_at_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "lso", 1).await;
    let p = txn_producer(&addr, "lso", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    for v in values("t", 5) {
        send(&p, "lso", 0, &v).await;
    }
    let plain = producer(&addr, &[]);
    send(&plain, "lso", 0, "plain").await;
    let reader = committed_reader(&addr, "lso", 1);
    assert!(read_all(&reader, Duration::from_secs(2)).await.is_empty());
    let (low, high) = blocking(|| reader.fetch_watermarks("lso", 0, T)).unwrap();
    assert_eq!(
        (low, high),
        (0, 0),
        "read_committed latest is the last stable offset"
    );
    let uncommitted = uncommitted_reader(&addr, "lso", 1);
    let (_, high) = blocking(|| uncommitted.fetch_watermarks("lso", 0, T)).unwrap();
    assert_eq!(high, 6);
    blocking(|| p.commit_transaction(T)).unwrap();
    let mut want = values("t", 5);
    want.push("plain".into());
    let got = read_all(&reader, Duration::from_secs(3)).await;
    assert_eq!(got.get(&0), Some(&want));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_producer_is_fenced_and_its_transaction_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "zombie", 1).await;
    let old = txn_producer(&addr, "z", &[]);
    blocking(|| old.begin_transaction()).unwrap();
    send(&old, "zombie", 0, "from-zombie").await;
    let new = txn_producer(&addr, "z", &[]);
    let err = blocking(|| old.commit_transaction(T)).expect_err("the zombie's commit fails");
    let txn_err = err.rdkafka_error_code();
    assert!(
        format!("{err}").to_lowercase().contains("fenced"),
        "{err} ({txn_err:?})"
    );
    blocking(|| new.begin_transaction()).unwrap();
    send(&new, "zombie", 0, "from-new").await;
    blocking(|| new.commit_transaction(T)).unwrap();
    let got = read_all(
        &committed_reader(&addr, "zombie", 1),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(got.get(&0), Some(&vec!["from-new".to_string()]));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_aborts_an_abandoned_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(Some(dir.path()), |c| {
        c.transaction_check_interval = Duration::from_millis(100);
    })
    .await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "abandoned", 1).await;
    let timeouts = [
        ("transaction.timeout.ms", "2000"),
        ("message.timeout.ms", "2000"),
    ];
    let p = txn_producer(&addr, "abandoned", &timeouts);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "abandoned", 0, "never-committed").await;
    let reader = committed_reader(&addr, "abandoned", 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // the abort moved the last stable offset: a later plain record is visible at once
    send(&producer(&addr, &[]), "abandoned", 0, "later").await;
    let got = read_all(&reader, Duration::from_secs(3)).await;
    assert_eq!(got.get(&0), Some(&vec!["later".to_string()]));
    assert!(
        blocking(|| p.commit_transaction(T)).is_err(),
        "the abandoned producer was fenced"
    );
    broker.shutdown().await.unwrap();
}

/// Reads up to `max` input records; fewer (maybe none) after 1 s of quiet.
async fn poll_batch(c: &StreamConsumer, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < max {
        match tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
            Ok(msg) => {
                let msg = msg.expect("consume");
                out.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
            }
            Err(_) => break,
        }
    }
    out
}

/// The consumer's position in `in`/0 (-1 before it is assigned).
fn input_position(c: &StreamConsumer) -> i64 {
    let positions = c.position().unwrap_or_default();
    match positions.find_partition("in", 0).map(|p| p.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    }
}

fn ctp_consumer(addr: &str) -> StreamConsumer {
    let mut c = client_config(addr);
    c.set("group.id", "ctp")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000");
    let consumer: StreamConsumer = c.create().expect("consumer");
    consumer.subscribe(&["in"]).expect("subscribe");
    consumer
}

/// One processor of the consume-transform-produce loop: batches of up to 10, each in one
/// transaction with its input offsets, until all `inputs` are consumed. `die_after` batches
/// it stops in the middle of one.
async fn process(addr: &str, inputs: i64, die_after: Option<usize>) -> usize {
    let consumer = ctp_consumer(addr);
    let p = txn_producer(addr, "ctp-processor", &[]);
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let batch = poll_batch(&consumer, 10).await;
        if batch.is_empty() {
            if input_position(&consumer) >= inputs {
                return done;
            }
            continue;
        }
        blocking(|| p.begin_transaction()).unwrap();
        for (i, v) in batch.iter().enumerate() {
            if die_after == Some(done) && i == batch.len() / 2 {
                p.flush(T).unwrap();
                return done; // dropped mid-transaction: a crashed processor
            }
            send(&p, "out", 0, &format!("out-{v}")).await;
        }
        let positions: TopicPartitionList = consumer.position().unwrap();
        let meta = consumer.group_metadata().unwrap();
        blocking(|| p.send_offsets_to_transaction(&positions, &meta, T)).unwrap();
        blocking(|| p.commit_transaction(T)).unwrap();
        done += 1;
    }
    panic!("the processor did not reach the end of the input in 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_is_exactly_once_across_a_crashed_processor() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "in", 1).await;
    create_topic(&addr, "out", 1).await;
    let plain = producer(&addr, &[]);
    let inputs = values("in", 100);
    for v in &inputs {
        send(&plain, "in", 0, v).await;
    }
    assert_eq!(process(&addr, 100, Some(3)).await, 3);
    process(&addr, 100, None).await;
    let got = read_all(&committed_reader(&addr, "out", 1), Duration::from_secs(3)).await;
    let want: Vec<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    assert_eq!(got.get(&0), Some(&want));
    // and the group's committed offset is past every input
    let consumer = ctp_consumer(&addr);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let committed = blocking(|| consumer.committed_offsets(tpl, T)).unwrap();
    let offset = committed.find_partition("in", 0).unwrap().offset();
    assert_eq!(offset, Offset::Offset(100));
    broker.shutdown().await.unwrap();
}

/// kill -9 with a transaction open, restart on the same address: the same transactional
/// id goes on, nothing of the killed transaction is visible.
async fn open_transaction_survives_kill9(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start_with(dir.path(), &["--storage-format", format]);
    let addr = broker.addr.clone();
    create_topic(&addr, "crash", 1).await;
    let p = txn_producer(&addr, "crash", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "crash", 0, "killed").await;
    broker.kill9();
    drop(p);
    let _broker = BinaryBroker::start_with(dir.path(), &["--listen", &addr]);
    let p = txn_producer(&addr, "crash", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "crash", 0, "after").await;
    blocking(|| p.commit_transaction(T)).unwrap();
    let got = read_all(&committed_reader(&addr, "crash", 1), Duration::from_secs(3)).await;
    assert_eq!(got.get(&0), Some(&vec!["after".to_string()]), "{format}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_aborted_after_kill9_segments() {
    open_transaction_survives_kill9("segments").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_aborted_after_kill9_sled() {
    open_transaction_survives_kill9("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_commit_completes_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let failpoint = [("FINSTREAM_FAILPOINT", "txn-after-prepare")];
    let mut broker = BinaryBroker::start_env(dir.path(), &[], &failpoint);
    let addr = broker.addr.clone();
    create_topic(&addr, "half", 2).await;
    let p = txn_producer(&addr, "half", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "half", 0, "one").await;
    send(&p, "half", 1, "two").await;
    // the broker dies once the commit is decided, before any marker is written
    let commit = std::thread::spawn(move || p.commit_transaction(Duration::from_secs(5)));
    let status = blocking(|| broker.child.wait()).unwrap();
    assert!(!status.success(), "the failpoint aborted the broker");
    let _ = commit.join();
    let _broker = BinaryBroker::start_with(dir.path(), &["--listen", &addr]);
    let got = read_all(&committed_reader(&addr, "half", 2), Duration::from_secs(3)).await;
    assert_eq!(got.get(&0), Some(&vec!["one".to_string()]));
    assert_eq!(got.get(&1), Some(&vec!["two".to_string()]));
    // and the transactional id goes on
    let p = txn_producer(&addr, "half", &[]);
    blocking(|| p.begin_transaction()).unwrap();
    send(&p, "half", 0, "three").await;
    blocking(|| p.commit_transaction(T)).unwrap();
}

#[test]
fn python_confluent_kafka_transactions() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    run_client_script(
        &root.join(".venv/bin/python"),
        &root.join("tests/compat/python/transactions_confluent.py"),
        4,
    );
}

#[test]
fn kafkajs_transactions() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    run_client_script(
        &which("node").expect("node is installed"),
        &root.join("tests/compat/node/transactions_kafkajs.js"),
        2,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_reads_committed_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let addr = broker.local_addr().to_string();
    create_topic(&addr, "kc", 1).await;
    let p = txn_producer(&addr, "kcat", &[]);
    for (v, commit) in [("kept", true), ("dropped", false)] {
        blocking(|| p.begin_transaction()).unwrap();
        send(&p, "kc", 0, v).await;
        if commit {
            blocking(|| p.commit_transaction(T)).unwrap();
        } else {
            p.flush(T).unwrap();
            blocking(|| p.abort_transaction(T)).unwrap();
        }
    }
    let read = |isolation: &str| {
        let iso = format!("isolation.level={isolation}");
        let args = [
            "-C", "-b", &addr, "-t", "kc", "-e", "-q", "-f", "%s\n", "-X", &iso,
        ];
        let (ok, out, err) = blocking(|| kcat(&args, b""));
        assert!(ok, "kcat: {err}");
        out
    };
    assert_eq!(read("read_committed"), "kept\n");
    assert_eq!(read("read_uncommitted"), "kept\ndropped\n");
    broker.shutdown().await.unwrap();
}
