//! `finstream broker` as a process: kcat scenarios, restart recovery, `kill -9` safety,
//! graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::FutureRecord;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn kcat_lists_produces_keyed_consumes_and_queries_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let b = broker.addr.as_str();

    // -P keyed, from a file
    let file = dir.path().join("keyed.txt");
    let lines: Vec<String> = (0..200)
        .map(|i| format!("acct-{}:payment {i}", i % 7))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = kcat(
        &[
            "-b",
            b,
            "-P",
            "-t",
            "payments",
            "-K:",
            "-l",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "kcat -P failed: {err}");

    // -L shows the broker and the auto-created topic
    let (ok, out, err) = kcat(&["-b", b, "-L"], b"");
    assert!(ok, "kcat -L failed: {err}");
    assert!(out.contains(&format!("broker 1 at {b}")), "{out}");
    assert!(
        out.contains("topic \"payments\" with 1 partitions"),
        "{out}"
    );

    // -C -e reads everything back, in order, with keys
    let (ok, out, err) = kcat(
        &["-b", b, "-C", "-t", "payments", "-e", "-f", "%k:%s@%o\n"],
        b"",
    );
    assert!(ok, "kcat -C failed: {err}");
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{l}@{i}"))
        .collect();
    assert_eq!(got, want);

    // -Q: offset by timestamp; 0 is before everything, the far future after everything
    let (ok, out, err) = kcat(&["-b", b, "-Q", "-t", "payments:0:0"], b"");
    assert!(ok, "kcat -Q failed: {err}");
    assert!(out.contains("payments [0] offset 0"), "{out}");
    let (ok, out, _) = kcat(&["-b", b, "-Q", "-t", "payments:0:99999999999999"], b"");
    assert!(ok);
    assert!(out.contains("payments [0] offset -1"), "{out}");
}

#[test]
fn kcat_round_trips_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let b = broker.addr.as_str();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        let input: String = (0..300)
            .map(|i| format!("{codec} record {i} {}\n", "data ".repeat(10)))
            .collect();
        let (ok, _, err) = kcat(
            &["-b", b, "-P", "-t", &topic, "-z", codec],
            input.as_bytes(),
        );
        assert!(ok, "kcat -P -z {codec}: {err}");
        let (ok, out, err) = kcat(&["-b", b, "-C", "-t", &topic, "-e", "-f", "%s\n"], b"");
        assert!(ok, "kcat -C {codec}: {err}");
        assert_eq!(out, input, "{codec}");
    }
}

async fn produce_acked(bootstrap: &str, topic: &str, from: usize, n: usize) -> Vec<(i32, i64)> {
    let producer = producer(bootstrap, &[("acks", "all"), ("linger.ms", "2")]);
    let futures: Vec<_> = (from..from + n)
        .map(|i| {
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .key(&format!("k{i}"))
                        .payload(&format!("v{i}")),
                )
                .expect("queue")
        })
        .collect();
    let mut acked = Vec::new();
    for f in futures {
        let d = f.await.unwrap().expect("acknowledged");
        acked.push((d.partition, d.offset));
    }
    acked
}

async fn read_values(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    let consumer = assigned_consumer(bootstrap, topic, 1, &[]);
    consume_n(&consumer, n, WAIT)
        .await
        .into_iter()
        .map(|r| {
            assert!(r.offset >= 0);
            String::from_utf8(r.value.unwrap()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_everything_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let acked = produce_acked(&broker.addr, "ledger", 0, 1000).await;
    assert_eq!(acked.last(), Some(&(0, 999)));
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let broker = BinaryBroker::start(dir.path());
    let values = read_values(&broker.addr, "ledger", 1000).await;
    assert_eq!(
        values,
        (0..1000).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    let more = produce_acked(&broker.addr, "ledger", 1000, 10).await;
    assert_eq!(
        more.first(),
        Some(&(0, 1000)),
        "offsets continue after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_acks_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for round in 0..3 {
        let mut broker = BinaryBroker::start(dir.path());
        let acked = produce_acked(&broker.addr, "crashy", total, 2000).await;
        broker.kill9(); // no shutdown, no final flush
        assert_eq!(
            acked.first().map(|a| a.1),
            Some(total as i64),
            "round {round}"
        );
        total += acked.len();
    }
    let broker = BinaryBroker::start(dir.path());
    let values = read_values(&broker.addr, "crashy", total).await;
    assert_eq!(
        values,
        (0..total).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
}
