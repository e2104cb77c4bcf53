//! The reliability battery's quick parts (docs/RELIABILITY.md): broker crashes in a loop
//! under an idempotent acks=all producer, graceful shutdown under load, and a full disk.
//! `scripts/reliability.sh` runs the same with more cycles.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "ledger";

/// Sends `m0`, `m1`, ... in windows of 200 with an idempotent acks=all producer until
/// `stop`; returns every index librdkafka reported as acknowledged, and how many were sent.
async fn keep_producing(bootstrap: String, stop: Arc<AtomicBool>) -> (Vec<usize>, usize) {
    let producer = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "120000"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let (mut acked, mut sent) = (Vec::new(), 0usize);
    while !stop.load(Ordering::Relaxed) {
        let window: Vec<_> = (sent..sent + 200)
            .map(|i| {
                let f = producer
                    .send_result(FutureRecord::to(TOPIC).key("k").payload(&format!("m{i}")))
                    .expect("queue has room");
                (i, f)
            })
            .collect();
        sent += window.len();
        for (i, f) in window {
            match f.await {
                Ok(Ok(_)) => acked.push(i),
                Ok(Err((e, _))) => panic!("m{i} failed although librdkafka retries: {e}"),
                Err(_) => panic!("m{i}: delivery future cancelled"),
            }
        }
    }
    (acked, sent)
}

/// Tells [`keep_producing`] to stop and waits for its last deliveries.
async fn stop_producing(
    stop: &AtomicBool,
    producing: tokio::task::JoinHandle<(Vec<usize>, usize)>,
) -> (Vec<usize>, usize) {
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .expect("producer finishes")
        .expect("producer task")
}

/// The whole topic, as (offset, value) in offset order.
async fn read_all(bootstrap: &str) -> Vec<(i64, String)> {
    let consumer = assigned_consumer(bootstrap, TOPIC, 1, &[]);
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    consume_n(&consumer, high as usize, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap_or_default()).unwrap(),
            )
        })
        .collect()
}

/// Every acknowledged message is there exactly once, nothing is there twice, nothing is
/// there that was never sent, and offsets are dense from 0.
fn check_log(log: &[(i64, String)], acked: &[usize], sent: usize) {
    for (i, (offset, _)) in log.iter().enumerate() {
        assert_eq!(*offset, i as i64, "offsets are dense");
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, v) in log {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicated: {twice:?}");
    for i in acked {
        assert!(
            seen.contains_key(format!("m{i}").as_str()),
            "acknowledged m{i} lost"
        );
    }
    for v in seen.keys() {
        let i: usize = v[1..].parse().expect("our payload");
        assert!(i < sent, "{v} was never sent");
    }
}

fn group_consumer(bootstrap: &str) -> StreamConsumer {
    let mut c = client_config(bootstrap);
    c.set("group.id", "auditors")
        .set("enable.auto.commit", "false");
    c.create().expect("consumer")
}

fn committed(bootstrap: &str) -> Offset {
    let consumer = group_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("OffsetFetch");
    got.find_partition(TOPIC, 0).expect("partition").offset()
}

fn cycles() -> usize {
    std::env::var("FINSTREAM_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill_9_loop_under_idempotent_producer_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let addr = broker.addr.clone();
    create_topic(&addr, TOPIC, 1).await;

    // A group with a committed offset, which every crash must keep.
    let consumer = group_consumer(&addr);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(TOPIC, 0, Offset::Offset(42))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).expect("commit");
    drop(consumer);

    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(keep_producing(addr.clone(), stop.clone()));
    let restarts = Arc::new(Mutex::new(0));
    for cycle in 0..cycles() {
        // Kill at varying points of the produce stream: 150..550 ms apart.
        tokio::time::sleep(Duration::from_millis(150 + (cycle as u64 * 137) % 400)).await;
        broker.kill9();
        broker = BinaryBroker::start_with(dir.path(), &["--listen", &addr]);
        *restarts.lock().unwrap() += 1;
    }
    // Let the producer get through its retries, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, sent) = stop_producing(&stop, producing).await;
    assert!(
        acked.len() > 1000,
        "the load was real: {} acknowledged",
        acked.len()
    );

    let log = read_all(&addr).await;
    check_log(&log, &acked, sent);
    assert_eq!(
        committed(&addr),
        Offset::Offset(42),
        "committed offset kept"
    );
    eprintln!(
        "{} kills: {} sent, {} acknowledged, {} in the log",
        restarts.lock().unwrap(),
        sent,
        acked.len(),
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_nothing_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let addr = broker.addr.clone();
    create_topic(&addr, TOPIC, 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(keep_producing(addr.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM under load exits 0, got {status}");
    // The producer keeps retrying while the broker is away; bring it back.
    let broker = BinaryBroker::start_with(dir.path(), &["--listen", &addr]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, sent) = stop_producing(&stop, producing).await;
    let log = read_all(&broker.addr).await;
    check_log(&log, &acked, sent);
    assert!(!acked.is_empty());
}

/// Unmounts on drop (even when an assertion fails).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A 64 MiB tmpfs, or None when this user may not mount (CI runs as root and must).
fn small_filesystem(at: &std::path::Path) -> Option<Mounted> {
    std::fs::create_dir_all(at).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(Mounted(at.to_path_buf()));
    }
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_ne!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "root could not mount a tmpfs"
    );
    None
}

#[test]
fn full_disk_refuses_produce_keeps_serving_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = small_filesystem(&dir.path().join("small")) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let ballast = mnt.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 16 << 20]).unwrap();
    let mut broker =
        BinaryBroker::start_with(&mnt.0.join("broker"), &["--min-free-bytes", "8388608"]);
    let mut client = RawClient::connect(&broker.addr);
    let value = vec![b'x'; 256 * 1024];
    let batch = || record_batch(&[&value], -1, -1, -1);

    // Fill the disk through the broker until it refuses.
    let mut acked = 0i64;
    let refused = loop {
        let (code, base) = raw_produce(&mut client, "disk", batch());
        if code != 0 {
            break code;
        }
        assert_eq!(base, acked);
        acked += 1;
        assert!(acked < 1000, "a 64 MiB disk took {acked} x 256 KiB");
    };
    assert_eq!(refused, 56, "KAFKA_STORAGE_ERROR");
    assert!(acked > 10, "only {acked} batches before the disk was full");
    // The same connection keeps working; produce stays refused; reads serve everything.
    assert_eq!(raw_produce(&mut client, "disk", batch()).0, 56);
    let (ok, out, err) = kcat(
        &["-b", &broker.addr, "-C", "-t", "disk", "-e", "-f", "%o\n"],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().count() as i64,
        acked,
        "every acknowledged batch is readable"
    );

    // Space returns: produce is accepted again, at the next offset.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(raw_produce(&mut client, "disk", batch()), (0, acked));
    assert!(broker.terminate().success());
    drop(broker);
}

/// Hundreds of idle connections and a slowloris sender cost the broker little memory and
/// do not stop a well-behaved producer (the throughput comparison is `finstream-bench load`,
/// in docs/RELIABILITY.md: timings do not belong in tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_crowds_and_a_slowloris_do_not_stop_a_producer() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let pid = broker.child.id();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    // 500 idle sockets: under the 1024 open files a fresh machine allows a test process.
    let idle: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(&broker.addr).unwrap())
        .collect();
    let mut slow = std::net::TcpStream::connect(&broker.addr).unwrap();
    slow.write_all(&1000i32.to_be_bytes()).unwrap(); // then one byte at a time, forever
    let stop = Arc::new(AtomicBool::new(false));
    let slow_stop = stop.clone();
    let slowloris = std::thread::spawn(move || {
        while !slow_stop.load(Ordering::Relaxed) && slow.write_all(&[0]).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let p = producer(
        &broker.addr,
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let futures: Vec<_> = (0..10_000)
        .map(|i| {
            p.send_result(FutureRecord::to("busy").key("k").payload(&format!("v{i}")))
                .expect("queue")
        })
        .collect();
    for f in futures {
        f.await.unwrap().expect("acknowledged beside the crowd");
    }
    let grown_kib = rss().saturating_sub(before);
    assert!(grown_kib < 64 * 1024, "broker RSS grew by {grown_kib} KiB");
    let (ok, out, err) = kcat(
        &[
            "-b",
            &broker.addr,
            "-C",
            "-t",
            "busy",
            "-e",
            "-q",
            "-f",
            "%o\n",
        ],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 10_000);
    stop.store(true, Ordering::Relaxed);
    slowloris.join().unwrap();
    drop(idle);
}
