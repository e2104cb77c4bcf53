//! `finstream topics ...` and `finstream groups ...` against the embedded broker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn finstream(broker: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(finstream_bin())
        .args(args)
        .args(["--bootstrap-servers", broker])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn topics_and_groups_commands_work_against_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let b = broker.addr.as_str();
    let (ok, out, err) = finstream(
        b,
        &[
            "topics",
            "create",
            "ledger",
            "--partitions",
            "3",
            "--add-config",
            "segment.bytes=100000",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created topic ledger (3 partitions)"));
    let (ok, _, err) = finstream(b, &["topics", "create", "ledger"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    let input: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    assert!(kcat(&["-b", b, "-P", "-t", "ledger", "-K:"], input.as_bytes()).0);
    let (ok, out, _) = finstream(b, &["topics", "list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("ledger") && l.trim_end().ends_with('3')),
        "{out}"
    );
    let (ok, out, _) = finstream(b, &["topics", "describe", "ledger"]);
    assert!(ok, "{out}");
    let messages: i64 = out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().last().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(messages, 30, "{out}");
    assert!(
        out.contains("max.message.bytes = 1048576  (STATIC_BROKER_CONFIG)"),
        "{out}"
    );

    // alter: configs set, one removed again, the others kept; partitions grow
    let set = [
        "--add-config",
        "retention.ms=3600000",
        "--add-config",
        "delete.retention.ms=1000",
    ];
    let (ok, out, err) = finstream(b, &[&["topics", "alter", "ledger"][..], &set].concat());
    assert!(ok && out.contains("retention.ms = 3600000"), "{out}{err}");
    let args = [
        "topics",
        "alter",
        "ledger",
        "--delete-config",
        "retention.ms",
        "--partitions",
        "4",
    ];
    let (ok, out, err) = finstream(b, &args);
    assert!(ok && out.contains("now has 4 partitions"), "{out}{err}");
    let (_, out, _) = finstream(b, &["topics", "describe", "ledger"]);
    assert!(
        out.contains("delete.retention.ms = 1000  (DYNAMIC_TOPIC_CONFIG)"),
        "{out}"
    );
    assert!(
        out.contains("retention.ms = 604800000  (STATIC_BROKER_CONFIG)"),
        "{out}"
    );
    assert!(out.contains("topic ledger: 4 partitions"), "{out}");
    let (ok, out, err) = finstream(
        b,
        &[
            "topics",
            "alter",
            "ledger",
            "--add-config",
            "retention.ms=soon",
        ],
    );
    assert!(!ok && err.contains("retention.ms"), "{out}{err}");

    // delete-records: partition 1 from its start to offset 2
    let (ok, out, err) = finstream(
        b,
        &[
            "topics",
            "delete-records",
            "ledger",
            "--partition",
            "1",
            "--offset",
            "2",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "2"]),
        "{out}"
    );
    let (ok, _, err) = finstream(
        b,
        &[
            "topics",
            "delete-records",
            "ledger",
            "--partition",
            "9",
            "--offset",
            "2",
        ],
    );
    assert!(!ok && err.contains("no partition 9"), "{err}");

    // A group with committed offsets: 10 of partition 0 consumed.
    let mut c = client_config(b);
    c.set("group.id", "auditors");
    let consumer: rdkafka::consumer::BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ledger", 0, Offset::Offset(5))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    drop(consumer);
    let (ok, out, _) = finstream(b, &["groups", "list"]);
    assert!(
        ok && out.contains("auditors") && out.contains("Empty"),
        "{out}"
    );
    let (ok, out, _) = finstream(b, &["groups", "describe", "auditors", "--topic", "ledger"]);
    assert!(ok, "{out}");
    let p0 = out
        .lines()
        .find(|l| l.starts_with("ledger") && l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = p0.split_whitespace().collect();
    let high: i64 = cols[3].parse().unwrap();
    assert_eq!(cols[2], "5", "committed offset: {p0}");
    assert_eq!(cols[4].parse::<i64>().unwrap(), high - 5, "lag: {p0}");

    let (ok, out, _) = finstream(b, &["topics", "delete", "ledger"]);
    assert!(ok && out.contains("deleted topic ledger"));
    std::thread::sleep(Duration::from_millis(100));
    let (_, out, _) = finstream(b, &["topics", "list"]);
    assert!(!out.contains("ledger"), "{out}");
}
