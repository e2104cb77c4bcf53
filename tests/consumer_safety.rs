//! The consumer never stalls on a row PostgreSQL refuses and never skips a log silently:
//! rows refused for their content go to the dead-letter table while the rest loads, fatal
//! errors say what PostgreSQL said, and a recreated topic or a stored position that no
//! longer fits its log is recorded in `finstream_gaps` and loaded from the log start.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use finstream_consumer::{ConsumeConfig, OnGap, Targets};
use rdkafka::admin::AdminOptions;
use rdkafka::producer::FutureRecord;
use tokio::sync::watch;

fn cfg(bootstrap: &str, topic: &str, url: &str) -> ConsumeConfig {
    let mut c = ConsumeConfig::new(
        bootstrap,
        topic,
        "safety",
        finstream_consumer::pg_config(Some(url)).unwrap(),
    );
    c.stop_at_end = true;
    c.max_backoff = Duration::from_millis(500);
    c
}

async fn run(cfg: ConsumeConfig) -> Result<finstream_consumer::Summary, String> {
    let (_stop_tx, stop) = watch::channel(false);
    let (_t_tx, targets) = watch::channel::<Option<Targets>>(None);
    tokio::time::timeout(
        Duration::from_secs(120),
        finstream_consumer::run(cfg, stop, targets),
    )
    .await
    .expect("consumer finished in time")
    .map_err(|e| e.to_string())
}

/// Sends `values` to partition 0 of `topic`, in order.
async fn send(bootstrap: &str, topic: &str, values: &[String]) {
    let p = producer(bootstrap, &[("enable.idempotence", "true")]);
    for v in values {
        p.send(
            FutureRecord::<(), _>::to(topic).partition(0).payload(v),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    }
}

fn row(description: &str, amount: f64) -> String {
    serde_json::json!({"description": description, "amount": amount}).to_string()
}

/// `finstream consume --stop-at-end` as a process: (exit code, stdout, stderr).
fn consume_binary(
    bootstrap: &str,
    topic: &str,
    url: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut c = Command::new(finstream_bin());
    c.args([
        "consume",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
    ])
    .args(["--group", "safety", "--database-url", url, "--stop-at-end"])
    .args(extra)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null());
    let out = output_with_timeout(&mut c, Duration::from_secs(120));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (partition, offset, error) of every dead letter, by offset.
async fn dead_letters(client: &tokio_postgres::Client) -> Vec<(i32, i64, String)> {
    client
        .query(
            "SELECT partition, \"offset\", error FROM finstream_dead_letters ORDER BY \"offset\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// (kind, stored offset, resumed at) of every recorded gap.
async fn gaps(client: &tokio_postgres::Client) -> Vec<(String, i64, i64)> {
    client
        .query(
            "SELECT kind, stored_offset, resumed_at FROM finstream_gaps ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn stored_offset(client: &tokio_postgres::Client, topic: &str) -> (i64, Option<String>) {
    let r = client
        .query_one(
            "SELECT next_offset, topic_id FROM finstream_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_among_a_thousand_good_rows_are_dead_lettered_and_the_run_exits_0() {
    let db = TestDb::new("nul").await;
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let mut values = Vec::new();
    let mut nul_offsets = Vec::new();
    for i in 0..1000 {
        if i % 250 == 17 {
            nul_offsets.push(values.len() as i64);
            values.push(r#"{"description":"a\u0000b","amount":0.5}"#.to_string());
        }
        values.push(row(&format!("good {i}"), i as f64 / 1000.0));
    }
    send(&bs, "nul", &values).await;
    let (code, out, err) = consume_binary(&bs, "nul", &db.url, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("rows loaded 1000, dead letters 4"), "{out}");
    let client = db.client().await;
    assert_eq!(count_rows(&client, "transactions").await, 1000);
    let dead = dead_letters(&client).await;
    assert_eq!(
        dead.iter().map(|d| d.1).collect::<Vec<_>>(),
        nul_offsets,
        "one dead letter per NUL row, at its offset"
    );
    assert!(dead.iter().all(|d| d.2.contains("NUL")), "{dead:?}");
    assert_eq!(stored_offset(&client, "nul").await.0, 1004);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_users_check_constraint_refuses_are_dead_lettered_and_the_rest_loads() {
    let db = TestDb::new("check").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE transactions (id SERIAL PRIMARY KEY, amount FLOAT NOT NULL,
                 description TEXT NOT NULL CHECK (description NOT LIKE 'refund%'),
                 timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                 CONSTRAINT small_amounts CHECK (amount < 0.9))",
        )
        .await
        .unwrap();
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let mut values = Vec::new();
    let mut refused = Vec::new();
    for i in 0..600 {
        let (d, a) = match i % 97 {
            5 => ("refund coffee", 0.1),
            40 => ("big purchase", 0.95),
            _ => ("coffee", 0.2),
        };
        if d != "coffee" {
            refused.push(i as i64);
        }
        values.push(row(d, a));
    }
    send(&bs, "chk", &values).await;
    // Small batches and large ones: the refused rows are found either way.
    for (topic_group, batch) in [("small", 50), ("large", 5000)] {
        client
            .batch_execute(
                "TRUNCATE transactions, finstream_dead_letters; DELETE FROM finstream_offsets",
            )
            .await
            .ok();
        let mut c = cfg(&bs, "chk", &db.url);
        c.batch_size = batch;
        c.group = topic_group.into();
        let s = run(c).await.unwrap();
        assert_eq!(
            (s.rows_loaded, s.dead_letters),
            (600 - refused.len() as u64, refused.len() as u64),
            "{topic_group}: {s}"
        );
        assert_eq!(
            count_rows(&client, "transactions").await,
            600 - refused.len() as i64
        );
        let dead = dead_letters(&client).await;
        assert_eq!(dead.iter().map(|d| d.1).collect::<Vec<_>>(), refused);
        for d in &dead {
            assert!(d.2.contains("23514"), "SQLSTATE named: {}", d.2);
            assert!(d.2.contains("violates check constraint"), "{}", d.2);
        }
        assert!(
            dead.iter().any(|d| d.2.contains("small_amounts")),
            "{dead:?}"
        );
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_stops_the_run_with_postgres_own_words() {
    let db = TestDb::new("dropped").await;
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let client = db.client().await;
    client.batch_execute("CREATE SCHEMA bank").await.unwrap();
    send(&bs, "gone2", &[row("a", 0.1)]).await;
    let mut c = cfg(&bs, "gone2", &db.url);
    c.table = "bank.tx".into();
    c.stop_at_end = false;
    c.batch_timeout = Duration::from_millis(1);
    let (stop_tx, stop) = watch::channel(false);
    let (_t_tx, targets) = watch::channel::<Option<Targets>>(None);
    let task = tokio::spawn(finstream_consumer::run(c, stop, targets));
    // Once the first row is in, drop the table and send another.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let loaded = "SELECT to_regclass('bank.tx') IS NOT NULL AND (SELECT count(*) > 0 FROM bank.tx)";
    while !client
        .query_one(loaded, &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first row never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("DROP TABLE bank.tx").await.unwrap();
    send(&bs, "gone2", &[row("b", 0.2)]).await;
    let err = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the consumer stops")
        .unwrap()
        .expect_err("a dropped table is fatal")
        .to_string();
    drop(stop_tx);
    for want in [
        "42P01",
        "does not exist",
        "topic gone2",
        "partition 0 offsets",
    ] {
        assert!(err.contains(want), "'{want}' in: {err}");
    }
    assert!(!err.contains("db error"), "{err}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_with_more_rows_is_loaded_from_its_start() {
    let db = TestDb::new("recreate").await;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let bs = broker.bootstrap_servers();
    let old: Vec<String> = (0..5).map(|i| row(&format!("old {i}"), 0.1)).collect();
    send(&bs, "re", &old).await;
    let s = run(cfg(&bs, "re", &db.url)).await.unwrap();
    assert_eq!(s.rows_loaded, 5);
    let client = db.client().await;
    let (_, old_id) = stored_offset(&client, "re").await;
    assert!(
        old_id.is_some(),
        "the topic id is recorded with the position"
    );

    for r in admin(&bs)
        .delete_topics(&["re"], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    create_topic(&bs, "re", 1).await;
    let new: Vec<String> = (0..8).map(|i| row(&format!("new {i}"), 0.2)).collect();
    send(&bs, "re", &new).await;
    let s = run(cfg(&bs, "re", &db.url)).await.unwrap();
    assert_eq!((s.rows_loaded, s.gaps), (8, 1), "{s}");
    let rows = client
        .query(
            "SELECT count(*) FROM transactions WHERE description LIKE 'new %'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 8, "every row of the new log");
    assert_eq!(gaps(&client).await, vec![("topic_recreated".into(), 5, 0)]);
    let (next, new_id) = stored_offset(&client, "re").await;
    assert_eq!(next, 8);
    assert!(
        new_id.is_some() && new_id != old_id,
        "{old_id:?} -> {new_id:?}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_position_past_the_end_is_recorded_and_by_policy_reloaded_or_refused() {
    let db = TestDb::new("pastend").await;
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let values: Vec<String> = (0..10).map(|i| row(&format!("r {i}"), 0.1)).collect();
    send(&bs, "pe", &values).await;
    run(cfg(&bs, "pe", &db.url)).await.unwrap();
    let client = db.client().await;
    client
        .batch_execute("UPDATE finstream_offsets SET next_offset = 1000")
        .await
        .unwrap();

    // --on-gap fail: stops, names the partition and the offsets, writes nothing.
    let mut c = cfg(&bs, "pe", &db.url);
    c.on_gap = OnGap::Fail;
    let err = run(c).await.unwrap_err();
    for want in ["pe/0", "1000", "high watermark 10", "--on-gap fail"] {
        assert!(err.contains(want), "'{want}' in: {err}");
    }
    assert_eq!(stored_offset(&client, "pe").await.0, 1000);
    assert!(gaps(&client).await.is_empty());

    // The default: recorded, loaded from the log start.
    let s = run(cfg(&bs, "pe", &db.url)).await.unwrap();
    assert_eq!((s.rows_loaded, s.gaps), (10, 1), "{s}");
    assert_eq!(gaps(&client).await, vec![("past_end".into(), 1000, 0)]);
    assert_eq!(stored_offset(&client, "pe").await.0, 10);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_below_the_stored_position_are_recorded_as_a_gap() {
    let db = TestDb::new("belowstart").await;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(Some(dir.path())).await;
    let bs = broker.bootstrap_servers();
    let first: Vec<String> = (0..5).map(|i| row(&format!("r {i}"), 0.1)).collect();
    send(&bs, "bs", &first).await;
    run(cfg(&bs, "bs", &db.url)).await.unwrap();
    let client = db.client().await;
    assert_eq!(stored_offset(&client, "bs").await.0, 5);
    // five more rows, of which DeleteRecords (as retention would) removes the first three
    let more: Vec<String> = (5..10).map(|i| row(&format!("r {i}"), 0.1)).collect();
    send(&bs, "bs", &more).await;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("bs", 0, rdkafka::Offset::Offset(8))
        .unwrap();
    admin(&bs)
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    let s = run(cfg(&bs, "bs", &db.url)).await.unwrap();
    assert_eq!((s.rows_loaded, s.gaps), (2, 1), "{s}");
    assert_eq!(gaps(&client).await, vec![("below_start".into(), 5, 8)]);
    assert_eq!(stored_offset(&client, "bs").await.0, 10);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_table_from_before_topic_ids_is_upgraded_without_reloading() {
    let db = TestDb::new("upgrade").await;
    let client = db.client().await;
    // The schema as migration 1 left it, with 5 of 8 rows loaded.
    client
        .batch_execute(
            "CREATE TABLE finstream_schema_migrations (version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO finstream_schema_migrations (version) VALUES (1);
             CREATE TABLE finstream_offsets (group_id TEXT NOT NULL, topic TEXT NOT NULL,
                 partition INTEGER NOT NULL, next_offset BIGINT NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (group_id, topic, partition));
             CREATE TABLE finstream_dead_letters (id BIGSERIAL PRIMARY KEY,
                 group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
                 \"offset\" BIGINT NOT NULL, key BYTEA, value BYTEA, error TEXT NOT NULL,
                 received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 UNIQUE (group_id, topic, partition, \"offset\"));
             INSERT INTO finstream_offsets (group_id, topic, partition, next_offset)
                 VALUES ('safety', 'up', 0, 5);",
        )
        .await
        .unwrap();
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let values: Vec<String> = (0..8).map(|i| row(&format!("r {i}"), 0.1)).collect();
    send(&bs, "up", &values).await;
    let s = run(cfg(&bs, "up", &db.url)).await.unwrap();
    assert_eq!((s.rows_loaded, s.gaps), (3, 0), "{s}");
    let (next, id) = stored_offset(&client, "up").await;
    assert_eq!(next, 8);
    assert!(id.is_some(), "the id is adopted on the first commit");
    assert!(gaps(&client).await.is_empty());
    broker.shutdown().await.unwrap();
}
