//! deploy/docker-compose.yml cannot run here (no Docker engine), so this runs what its
//! producer and consumer containers run: the same binary, the same settings file
//! (deploy/finstream.toml through FINSTREAM_CONFIG), the addresses from the environment,
//! against the embedded broker instead of the bitnami Kafka.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_settings_load_the_sample_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let db = TestDb::new("deploy").await;
    let settings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/finstream.toml");
    let container = |args: &[&str]| {
        let mut c = Command::new(finstream_bin());
        c.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR")) // the image's WORKDIR holds data/ too
            .env("FINSTREAM_CONFIG", &settings)
            .env("KAFKA_BOOTSTRAP_SERVERS", &broker.addr)
            .env("DATABASE_URL", &db.url)
            // The file binds 0.0.0.0:9644 inside the container; a test takes any free port.
            .env("FINSTREAM_HTTP", "127.0.0.1:0");
        c
    };
    let out = output_with_timeout(&mut container(&["produce"]), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rows read 10000, sent 10000, dead-lettered 0"),
        "{stdout}"
    );

    let out = output_with_timeout(
        &mut container(&["consume", "--stop-at-end"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = db.client().await;
    let expected = expected_multiset(
        std::path::Path::new("data/sample.csv"),
        &finstream_producer::Scaler::load(std::path::Path::new("data/scaler.json")).unwrap(),
    );
    assert_eq!(table_multiset(&client, "transactions").await, expected);
    let group: i64 = client
        .query_one(
            "SELECT count(*) FROM finstream_offsets WHERE group_id = 'finstream' AND topic = 'financial_transactions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(group, 1, "the file's group and topic were used");
}
