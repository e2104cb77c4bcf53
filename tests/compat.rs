//! Compatibility matrix (docs/COMPATIBILITY.md): the same scenario set for every client
//! against the built `finstream broker` binary on a random port — create a 3-partition
//! topic, produce 5k messages idempotently with compression, consume with a group and
//! commit, restart and read nothing twice, two members split the partitions and one takes
//! over when the other leaves, list offsets, list/describe groups.
//!
//! Python clients run from `.venv` / `.venv-aiokafka010` and kafkajs from
//! `tests/compat/node/node_modules`, all installed by `scripts/setup.sh`.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, TopicPartitionList};

const N: usize = 5000;

/// The scenarios run one at a time: each starts a broker and several clients, and on a
/// 2-core machine running them together starves heartbeats into spurious rebalances.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a scenario script against a fresh broker and fails with its output if it fails.
fn run_scenario(program: &Path, script: &Path) {
    let _one_at_a_time = serial();
    run_client_script(program, script, 7);
}

#[test]
fn python_confluent_kafka() {
    run_scenario(
        &root().join(".venv/bin/python"),
        &root().join("tests/compat/python/scenario_confluent.py"),
    );
}

/// confluent-kafka's AdminClient: list_offsets (once reported to time out),
/// create_partitions, incremental_alter_configs and describe_configs, delete_records.
#[test]
fn python_confluent_kafka_admin() {
    let _one_at_a_time = serial();
    run_client_script(
        &root().join(".venv/bin/python"),
        &root().join("tests/compat/python/admin_confluent.py"),
        4,
    );
}

/// kafka-python's KafkaAdminClient: create_partitions, alter_configs and describe_configs,
/// delete_records.
#[test]
fn python_kafka_python_admin() {
    let _one_at_a_time = serial();
    run_client_script(
        &root().join(".venv/bin/python"),
        &root().join("tests/compat/python/admin_kafka_python.py"),
        3,
    );
}

/// kafkajs' admin: createPartitions, alterConfigs and describeConfigs, deleteTopicRecords.
#[test]
fn kafkajs_admin() {
    let _one_at_a_time = serial();
    run_client_script(
        &which("node").expect("node is installed"),
        &root().join("tests/compat/node/admin_kafkajs.js"),
        3,
    );
}

#[test]
fn python_kafka_python() {
    run_scenario(
        &root().join(".venv/bin/python"),
        &root().join("tests/compat/python/scenario_kafka_python.py"),
    );
}

#[test]
fn python_aiokafka_newest() {
    run_scenario(
        &root().join(".venv/bin/python"),
        &root().join("tests/compat/python/scenario_aiokafka.py"),
    );
}

#[test]
fn python_aiokafka_0_10_0() {
    run_scenario(
        &root().join(".venv-aiokafka010/bin/python"),
        &root().join("tests/compat/python/scenario_aiokafka.py"),
    );
}

#[test]
fn node_kafkajs() {
    let node = which("node").expect("node is installed");
    let script = root().join("tests/compat/node/scenario_kafkajs.js");
    assert!(
        root()
            .join("tests/compat/node/node_modules/kafkajs")
            .exists(),
        "kafkajs is missing: run `bash scripts/setup.sh` first"
    );
    run_scenario(&node, &script);
}

fn group_consumer(bs: &str, group: &str) -> StreamConsumer {
    let mut c = client_config(bs);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let c: StreamConsumer = c.create().expect("consumer");
    c.subscribe(&["compat-rdkafka"]).expect("subscribe");
    c
}

async fn drain(c: &StreamConsumer, idle: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(m) = tokio::time::timeout(idle, c.recv()).await {
        let m = m.expect("consume");
        got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
    }
    got
}

fn assigned(c: &StreamConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The serialising guard is meant to span the whole scenario; nothing else in this test's
// runtime takes it, so holding it across awaits cannot deadlock.
#[allow(clippy::await_holding_lock)]
async fn rust_rdkafka() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let bs = broker.addr.clone();
    create_topic(&bs, "compat-rdkafka", 3).await;

    let producer = producer(
        &bs,
        &[("enable.idempotence", "true"), ("compression.type", "lz4")],
    );
    let futures: Vec<_> = (0..N)
        .map(|i| {
            producer
                .send_result(
                    FutureRecord::to("compat-rdkafka")
                        .key(&format!("key-{i}"))
                        .payload(&format!("value-{i}")),
                )
                .expect("queue")
        })
        .collect();
    for f in futures {
        f.await.unwrap().expect("acknowledged");
    }

    let c = group_consumer(&bs, "cg-rdkafka-1");
    let got = drain(&c, Duration::from_secs(4)).await;
    assert_eq!(got.len(), N);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), N);
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(c);

    let c = group_consumer(&bs, "cg-rdkafka-1");
    assert!(
        drain(&c, Duration::from_secs(4)).await.is_empty(),
        "nothing read twice"
    );
    drop(c);

    let a = group_consumer(&bs, "cg-rdkafka-2");
    let b = group_consumer(&bs, "cg-rdkafka-2");
    let all: BTreeSet<i32> = (0..3).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(100), b.recv()).await;
        let (pa, pb) = (assigned(&a), assigned(&b));
        if !pa.is_empty()
            && !pb.is_empty()
            && pa.is_disjoint(&pb)
            && pa.union(&pb).copied().collect::<BTreeSet<_>>() == all
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never split the partitions: {pa:?} {pb:?}"
        );
    }
    drop(b); // closes the consumer: LeaveGroup
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
        if assigned(&a) == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "survivor never took over: {:?}",
            assigned(&a)
        );
    }

    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("compat-rdkafka", p);
    }
    let mut high = 0;
    for p in 0..3 {
        let (lo, hi) = a
            .fetch_watermarks("compat-rdkafka", p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(lo, 0);
        high += hi;
    }
    assert_eq!(high as usize, N);
    drop(a);

    let groups = admin(&bs);
    let list = groups
        .inner()
        .fetch_group_list(None, Duration::from_secs(10))
        .unwrap();
    let names: HashSet<&str> = list.groups().iter().map(|g| g.name()).collect();
    assert!(
        names.contains("cg-rdkafka-1") && names.contains("cg-rdkafka-2"),
        "{names:?}"
    );
    let g1 = groups
        .inner()
        .fetch_group_list(Some("cg-rdkafka-1"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(g1.groups()[0].state(), "Empty");
}

/// kcat -G members print "assigned: topic [p], ..." lines on stderr.
fn spawn_kcat_member(
    bs: &str,
    group: &str,
    topic: &str,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("kcat")
        .args([
            "-b",
            bs,
            "-G",
            group,
            "-o",
            "beginning",
            "-X",
            "session.timeout.ms=6000",
            topic,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat installed");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn latest_assignment(rx: &mpsc::Receiver<String>, current: &mut BTreeSet<i32>) {
    while let Ok(line) = rx.try_recv() {
        if let Some(rest) = line.split("assigned:").nth(1) {
            *current = rest
                .split(',')
                .filter_map(|p| {
                    p.split('[')
                        .nth(1)?
                        .trim_end_matches(']')
                        .trim()
                        .parse()
                        .ok()
                })
                .collect();
        } else if line.contains("revoked:") {
            current.clear();
        }
    }
}

#[test]
fn kcat_balanced_consumer() {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start_with(dir.path(), &["--default-partitions", "3"]);
    let b = broker.addr.as_str();
    let input: String = (0..N).map(|i| format!("key-{i}:value-{i}\n")).collect();
    let (ok, _, err) = kcat(
        &[
            "-b",
            b,
            "-P",
            "-K:",
            "-t",
            "compat-kcat",
            "-z",
            "snappy",
            "-X",
            "enable.idempotence=true",
        ],
        input.as_bytes(),
    );
    assert!(ok, "{err}");

    // consume with a group and commit (kcat commits on exit), then nothing twice
    let (ok, out, err) = kcat(
        &[
            "-b",
            b,
            "-G",
            "cg-kcat-1",
            "-o",
            "beginning",
            "-e",
            "-q",
            "compat-kcat",
        ],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<HashSet<_>>().len(), N);
    let (ok, out, err) = kcat(
        &["-b", b, "-G", "cg-kcat-1", "-e", "-q", "compat-kcat"],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "", "a restarted group member reads nothing twice");

    // two members split the partitions; the survivor takes over
    let (mut ca, ra) = spawn_kcat_member(b, "cg-kcat-2", "compat-kcat");
    let (mut cb, rb) = spawn_kcat_member(b, "cg-kcat-2", "compat-kcat");
    let (mut pa, mut pb) = (BTreeSet::new(), BTreeSet::new());
    let all: BTreeSet<i32> = (0..3).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        latest_assignment(&ra, &mut pa);
        latest_assignment(&rb, &mut pb);
        if !pa.is_empty()
            && !pb.is_empty()
            && pa.union(&pb).copied().collect::<BTreeSet<_>>() == all
            && pa.is_disjoint(&pb)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kcat members never split: {pa:?} {pb:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &cb.id().to_string()])
        .status();
    let _ = cb.wait();
    loop {
        latest_assignment(&ra, &mut pa);
        if pa == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kcat survivor never took over: {pa:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ca.kill();
    let _ = ca.wait();

    // list offsets
    let (ok, out, _) = kcat(
        &[
            "-b",
            b,
            "-Q",
            "-t",
            "compat-kcat:0:0",
            "-t",
            "compat-kcat:1:0",
            "-t",
            "compat-kcat:2:0",
        ],
        b"",
    );
    assert!(ok);
    assert_eq!(out.matches("offset 0").count(), 3, "{out}");
}
