//! `finstream produce --transactional-id`: the file's rows (and dead letters) in Kafka
//! transactions, byte-for-byte the same messages; an interrupted run leaves nothing for
//! read_committed readers and nothing in PostgreSQL, and the next run with the same id
//! goes on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

fn parity_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity")
}

fn produce_command(broker: &str, topic: &str, csv: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(finstream_bin());
    c.args(["produce", "--bootstrap-servers", broker, "--topic", topic])
        .arg("--csv")
        .arg(csv)
        .arg("--scaler")
        .arg(parity_dir().join("scaler.json"))
        .args(extra)
        .env("RUST_LOG", "info");
    c
}

/// Values read by a consumer until `quiet` passes with nothing new.
async fn read_values(c: &StreamConsumer, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(msg) = tokio::time::timeout(quiet, c.recv()).await {
        let msg = msg.expect("consume");
        out.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
    }
    out
}

fn read_committed(broker: &str, topic: &str) -> StreamConsumer {
    assigned_consumer(broker, topic, 1, &[("isolation.level", "read_committed")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_of_n_rows_carry_the_same_bytes_and_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data"));
    // the parity file, plus two bad rows
    let mut csv = std::fs::read_to_string(parity_dir().join("cleaning_parity_in.csv")).unwrap();
    csv.push_str("bad amount,not-a-number\n,\n");
    let file = dir.path().join("in.csv");
    std::fs::write(&file, csv).unwrap();
    let out = output_with_timeout(
        &mut produce_command(
            &broker.addr,
            "txp",
            &file,
            &[
                "--transactional-id",
                "parity-load",
                "--transaction-rows",
                "300",
            ],
        ),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sent 2000, dead-lettered 2, failed 0"),
        "{stdout}"
    );
    let expected: Vec<String> =
        std::fs::read_to_string(parity_dir().join("cleaning_parity_out.jsonl"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    let got = read_values(&read_committed(&broker.addr, "txp"), Duration::from_secs(3)).await;
    assert_eq!(got, expected, "the exact bytes, in file order, once each");
    let dlq = read_values(
        &read_committed(&broker.addr, "txp.dlq"),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_file_leaves_nothing_visible_and_nothing_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data"));
    let csv = dir.path().join("big.csv");
    generate_csv(&csv, 1_500_000, 7);
    let mut child = produce_command(
        &broker.addr,
        "atomic",
        &csv,
        &["--transactional-id", "atomic-load"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // wait until part of the file is in the log (not yet committed)
    let uncommitted = assigned_consumer(
        &broker.addr,
        "atomic",
        1,
        &[("isolation.level", "read_uncommitted")],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, high) = uncommitted
            .fetch_watermarks("atomic", 0, Duration::from_secs(5))
            .unwrap_or((0, 0));
        if high > 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the producer sent nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the producer finished too soon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted");
    let got = read_values(
        &read_committed(&broker.addr, "atomic"),
        Duration::from_secs(3),
    )
    .await;
    assert!(
        got.is_empty(),
        "{} rows of an aborted load are visible",
        got.len()
    );

    let db = TestDb::new("txn_sigint").await;
    let consume = |group: &str| {
        output_with_timeout(
            Command::new(finstream_bin())
                .args([
                    "consume",
                    "--bootstrap-servers",
                    &broker.addr,
                    "--topic",
                    "atomic",
                ])
                .args(["--group", group, "--database-url", &db.url, "--stop-at-end"])
                .env("RUST_LOG", "warn"),
            Duration::from_secs(120),
        )
    };
    let out = consume("atomic-loader");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = db.client().await;
    assert_eq!(count_rows(&client, "transactions").await, 0);

    // the same transactional id goes on with a small file, which loads entirely
    let small = dir.path().join("small.csv");
    generate_csv(&small, 500, 8);
    let out = output_with_timeout(
        &mut produce_command(
            &broker.addr,
            "atomic",
            &small,
            &["--transactional-id", "atomic-load"],
        ),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = consume("atomic-loader");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = expected_multiset(&small, &reference_scaler());
    assert_eq!(table_multiset(&client, "transactions").await, want);
}
