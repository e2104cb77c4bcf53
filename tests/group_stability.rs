//! Consumer groups stay stable on a busy machine: two consumers of one group in one
//! process, both cores kept busy by a CPU hog, round after round. Every round they must
//! split a 3-partition topic, and after one leaves the other must take all three; a member
//! that is alive must never be expired. kafka-python and confluent-kafka (librdkafka), each
//! with its default session and heartbeat settings. 20 rounds each in CI,
//! `FINSTREAM_GROUP_ROUNDS` for more (scripts/reliability.sh runs 200).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Busy loops on every core until dropped.
struct CpuHog(Vec<Child>);

impl CpuHog {
    fn start() -> CpuHog {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuHog(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("spawn a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rounds(client: &str) {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh` first",
        python.display()
    );
    let rounds = std::env::var("FINSTREAM_GROUP_ROUNDS").unwrap_or_else(|_| "20".into());
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let script = root().join("tests/compat/python/group_rounds.py");
    let _hog = CpuHog::start();
    let out = output_with_timeout(
        Command::new(python)
            .arg(&script)
            .args([broker.addr.as_str(), client, rounds.as_str()])
            .current_dir(script.parent().unwrap()),
        Duration::from_secs(3600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(&format!("PASS {client}: {rounds} rounds")),
        "{client}: {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// The two clients run one after the other: each brings its own hog.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kafka_python_members_stay_in_the_group_under_cpu_load() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rounds("kafka-python");
}

#[test]
fn confluent_kafka_members_stay_in_the_group_under_cpu_load() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rounds("confluent-kafka");
}
