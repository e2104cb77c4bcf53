//! `finstream consume` and `all-in-one` against a real broker and a real PostgreSQL:
//! exactly once through crashes, PostgreSQL restarts, poison messages and rebalances.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use finstream_consumer::{ConsumeConfig, Targets};
use tokio::sync::watch;

fn consume_cfg(bootstrap: &str, topic: &str, url: &str) -> ConsumeConfig {
    let mut c = ConsumeConfig::new(
        bootstrap,
        topic,
        "finstream-test",
        finstream_consumer::pg_config(Some(url)).unwrap(),
    );
    c.stop_at_end = true;
    c.max_backoff = Duration::from_millis(500);
    c
}

async fn consume(cfg: ConsumeConfig) -> finstream_consumer::Summary {
    let (_stop_tx, stop) = watch::channel(false);
    let (_t_tx, targets) = watch::channel::<Option<Targets>>(None);
    tokio::time::timeout(
        Duration::from_secs(240),
        finstream_consumer::run(cfg, stop, targets),
    )
    .await
    .expect("consumer finished in time")
    .expect("consumer ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_rows_arrive_exactly_once_with_the_right_values() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 100_000, 1);
    let db = TestDb::new("e2e").await;
    let broker = start_broker(Some(&dir.path().join("broker"))).await;
    let bs = broker.bootstrap_servers();
    produce_csv(&bs, "tx", &csv).await;

    let s = consume(consume_cfg(&bs, "tx", &db.url)).await;
    assert_eq!((s.rows_loaded, s.dead_letters), (100_000, 0), "{s}");
    let client = db.client().await;
    assert_eq!(
        table_multiset(&client, "transactions").await,
        expected_multiset(&csv, &reference_scaler())
    );
    // Running again loads nothing twice.
    let again = consume(consume_cfg(&bs, "tx", &db.url)).await;
    assert_eq!(again.rows_loaded, 0);
    assert_eq!(count_rows(&client, "transactions").await, 100_000);
    let (offset,): (i64,) = {
        let r = client
            .query_one(
                "SELECT next_offset FROM finstream_offsets WHERE topic = 'tx'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0),)
    };
    assert_eq!(offset, 100_000, "offsets stored with the rows");
    broker.shutdown().await.unwrap();
}

/// Closing the consumer waits for the coordinator's answer to LeaveGroup. With the broker on
/// the same runtime, as in all-in-one, the worker blocked on it must not be one the broker
/// needs: with one worker it is the only one, so without care LeaveGroup is answered only
/// after librdkafka gives up on it, and the member stays in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_consumer_leaves_its_group_when_the_broker_shares_its_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 1_000, 3);
    let db = TestDb::new("leave").await;
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    produce_csv(&bs, "tx", &csv).await;
    let members = || {
        let groups = broker.view().groups();
        let group = groups.iter().find(|g| g.id == "finstream-test");
        group.map(|g| (g.members, g.state))
    };
    // On the worker, as all-in-one runs it (the test's own future runs on another thread).
    let mut cfg = consume_cfg(&bs, "tx", &db.url);
    cfg.stop_at_end = false;
    let (_stop_tx, stop) = watch::channel(false);
    let (_t_tx, targets) = watch::channel::<Option<Targets>>(None);
    let task = tokio::spawn(finstream_consumer::run(cfg, stop, targets));
    let deadline = Instant::now() + Duration::from_secs(60);
    while members().is_none_or(|(n, _)| n == 0) {
        assert!(Instant::now() < deadline, "the consumer never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropped on the worker: the consumer closes there.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        members(),
        Some((0, "Empty")),
        "the consumer left its group when it closed"
    );
    broker.shutdown().await.unwrap();
}

/// `finstream consume` into `url` with `extra` flags, output piped.
fn consume_command(
    broker: &str,
    topic: &str,
    url: &str,
    group: &str,
    extra: &[&str],
    log: &str,
) -> Command {
    let mut c = Command::new(finstream_bin());
    c.args([
        "consume",
        "--bootstrap-servers",
        broker,
        "--topic",
        topic,
        "--group",
        group,
        "--database-url",
        url,
    ])
    .args(extra)
    .env("RUST_LOG", log)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// `finstream all-in-one` on `csv` with its data under `data` and the sample scaler, plus
/// `extra` flags.
fn all_in_one_command(csv: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Command {
    let scaler = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/scaler.json");
    let mut c = Command::new(finstream_bin());
    c.arg("all-in-one");
    if !extra.contains(&"--http") {
        c.args(["--http", "127.0.0.1:0"]); // never the fixed default port
    }
    c.args(extra)
        .arg("--csv")
        .arg(csv)
        .arg("--data-dir")
        .arg(data)
        .arg("--scaler")
        .arg(scaler);
    c
}

fn spawn_consume(broker: &str, topic: &str, url: &str, group: &str, extra: &[&str]) -> Child {
    let mut extra = extra.to_vec();
    extra.push("--stop-at-end");
    consume_command(broker, topic, url, group, &extra, "warn")
        .spawn()
        .expect("spawn finstream consume")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_consumer_repeatedly_and_every_row_is_there_once() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    // scripts/reliability.sh raises both for its long run.
    let env = |k: &str, default: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (rows, kills) = (
        env("FINSTREAM_KILL_ROWS", 100_000),
        env("FINSTREAM_CONSUMER_KILLS", 5),
    );
    generate_csv(&csv, rows, 2);
    let db = TestDb::new("kill").await;
    let broker = BinaryBroker::start(&dir.path().join("broker"));
    produce_csv(&broker.addr, "tx", &csv).await;
    let client = db.client().await;
    let mut interrupted_mid_load = 0;
    // A short session: the killed consumer never leaves the group, and the next one waits
    // for its session to expire before it gets the partition.
    let opts = [
        "--batch-size",
        "500",
        "-X",
        "session.timeout.ms=3000",
        "-X",
        "heartbeat.interval.ms=500",
    ];
    // Rows in the table, 0 before the first consumer creates it.
    async fn loaded(client: &tokio_postgres::Client) -> i64 {
        client
            .query_one("SELECT count(*) FROM transactions", &[])
            .await
            .map_or(0, |r| r.get(0))
    }
    for delay_ms in [30u64, 80, 50, 120, 60]
        .into_iter()
        .cycle()
        .take(kills as usize)
    {
        let before = loaded(&client).await;
        if before >= rows as i64 {
            break; // all loaded already: nothing left to interrupt
        }
        let mut child = spawn_consume(&broker.addr, "tx", &db.url, "g", &opts);
        // Kill once loading is under way (after the group formed), a little into it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while loaded(&client).await == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let n = loaded(&client).await;
        if n > before && n < rows as i64 {
            interrupted_mid_load += 1;
        }
    }
    assert!(
        interrupted_mid_load >= kills.min(2) as usize,
        "only {interrupted_mid_load} of {kills} kills landed in the middle of the load"
    );
    let out = spawn_consume(&broker.addr, "tx", &db.url, "g", &[])
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table_multiset(&client, "transactions").await,
        expected_multiset(&csv, &reference_scaler())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    generate_csv(&first, 30_000, 3);
    generate_csv(&second, 30_000, 33);
    let pg = PrivatePg::start(&tempfile::tempdir().unwrap().keep());
    let broker = start_broker(Some(&dir.path().join("broker"))).await;
    let bs = broker.bootstrap_servers();
    produce_csv(&bs, "tx", &first).await;

    // The consumer runs until told the target offsets (set once everything is produced).
    let mut cfg = consume_cfg(&bs, "tx", &pg.url());
    cfg.stop_at_end = false;
    cfg.batch_size = 500;
    let (_stop_tx, stop) = watch::channel(false);
    let (targets_tx, targets) = watch::channel::<Option<Targets>>(None);
    let loader = tokio::spawn(finstream_consumer::run(cfg, stop, targets));
    let client = pg_connect(&pg.url()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = match client
            .query_one("SELECT count(*) FROM transactions", &[])
            .await
        {
            Ok(r) => r.get(0),
            Err(_) => 0, // table not created yet
        };
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no rows appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // PostgreSQL goes down while rows are flowing, and more rows arrive meanwhile.
    let pg = tokio::task::spawn_blocking(move || {
        // A crash, not a clean stop: batches committed asynchronously but not yet on disk
        // are lost with their offsets and must be loaded again.
        pg.ctl_mode("stop", "immediate");
        pg
    })
    .await
    .unwrap();
    produce_csv(&bs, "tx", &second).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.ctl("start");
        pg
    })
    .await
    .unwrap();
    let hw = broker.view().topic("tx").unwrap().partitions[0].high_watermark;
    assert_eq!(hw, 60_000);
    targets_tx
        .send(Some([(0, hw)].into_iter().collect()))
        .unwrap();
    let s = tokio::time::timeout(Duration::from_secs(240), loader)
        .await
        .expect("finished")
        .unwrap()
        .unwrap();
    assert!(s.retries >= 1, "the outage was noticed: {s}");
    assert_eq!(s.rows_loaded, 60_000, "{s}");
    let client = pg_connect(&pg.url()).await;
    let mut want = expected_multiset(&first, &reference_scaler());
    want.extend(expected_multiset(&second, &reference_scaler()));
    want.sort();
    assert_eq!(table_multiset(&client, "transactions").await, want);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_table_and_good_ones_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("poison").await;
    let broker = BinaryBroker::start(&dir.path().join("broker"));
    let input = concat!(
        "{\"description\": \"coffee\", \"amount\": 0.25}\n",
        "not json at all\n",
        "{\"description\": \"no amount\"}\n",
        "{\"description\": \"nan\", \"amount\": NaN}\n",
        "{\"description\": 7, \"amount\": 1}\n",
        "{\"description\": \"rent\", \"amount\": 0.75}\n",
    );
    let (ok, _, err) = kcat(&["-b", &broker.addr, "-P", "-t", "mixed"], input.as_bytes());
    assert!(ok, "{err}");
    let s = consume(consume_cfg(&broker.addr, "mixed", &db.url)).await;
    assert_eq!((s.rows_loaded, s.dead_letters), (2, 4), "{s}");
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT description, amount FROM transactions ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        vec![("coffee".to_string(), 0.25), ("rent".to_string(), 0.75)]
    );
    let dead = client
        .query("SELECT topic, partition, \"offset\", value, error FROM finstream_dead_letters ORDER BY \"offset\"", &[])
        .await
        .unwrap();
    let dead: Vec<(String, i32, i64, Vec<u8>, String)> = dead
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        dead.iter().map(|d| d.2).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(dead.iter().all(|d| d.0 == "mixed" && d.1 == 0));
    assert_eq!(dead[0].3, b"not json at all".to_vec(), "raw value kept");
    assert!(dead[0].4.contains("not JSON"), "{}", dead[0].4);
    assert!(dead[1].4.contains("missing field amount"), "{}", dead[1].4);
    assert!(
        dead[3].4.contains("description is not a string"),
        "{}",
        dead[3].4
    );
}

/// A `finstream consume` process whose stderr is watched for "partitions assigned".
struct Member {
    child: Child,
    assigned: std::sync::mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Member {
    fn start(broker: &str, topic: &str, url: &str, group: &str) -> Member {
        use std::io::{BufRead, BufReader, Read};
        let mut child =
            consume_command(broker, topic, url, group, &["--batch-size", "500"], "info")
                .spawn()
                .expect("spawn finstream consume");
        let stderr = child.stderr.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, assigned) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("partitions assigned") {
                    let _ = tx.send(line);
                }
            }
        });
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        Member {
            child,
            assigned,
            stdout,
        }
    }

    fn wait_assigned(&self) {
        self.assigned
            .recv_timeout(Duration::from_secs(60))
            .expect("partitions assigned");
    }

    /// SIGTERM, clean exit, and the number of rows this member loaded.
    fn stop(mut self) -> u64 {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "consumer exits 0 on SIGTERM: {status}");
        let out = self.stdout.join().unwrap();
        out.split("rows loaded ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary in {out}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumer_processes_share_the_partitions_and_the_total_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 100_000, 4);
    let db = TestDb::new("pair").await;
    let broker = BinaryBroker::start(&dir.path().join("broker"));
    create_topic(&broker.addr, "tx4", 4).await;
    let a = Member::start(&broker.addr, "tx4", &db.url, "pair");
    a.wait_assigned();
    let b = Member::start(&broker.addr, "tx4", &db.url, "pair");
    b.wait_assigned(); // the group rebalanced: a and b each hold part of the partitions
    produce_csv(&broker.addr, "tx4", &csv).await;
    let client = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_rows(&client, "transactions").await < 100_000 {
        assert!(Instant::now() < deadline, "load did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (la, lb) = (a.stop(), b.stop());
    assert_eq!(la + lb, 100_000, "{la} + {lb}");
    assert!(la > 0 && lb > 0, "both members loaded a share: {la} / {lb}");
    assert_eq!(
        table_multiset(&client, "transactions").await,
        expected_multiset(&csv, &reference_scaler())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tables_are_used_as_they_are_and_wrong_shapes_refused() {
    let db = TestDb::new("shape").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE transactions (id SERIAL PRIMARY KEY, amount FLOAT NOT NULL, description TEXT NOT NULL,
                                        timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, note TEXT DEFAULT 'kept');
             CREATE TABLE wrong (id SERIAL PRIMARY KEY, amount TEXT, description TEXT);",
        )
        .await
        .unwrap();
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let p = producer(&bs, &[]);
    p.send(
        rdkafka::producer::FutureRecord::<(), _>::to("t")
            .payload(r#"{"description": "x", "amount": 0.5}"#),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let s = consume(consume_cfg(&bs, "t", &db.url)).await;
    assert_eq!(s.rows_loaded, 1);
    let note: String = client
        .query_one("SELECT note FROM transactions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "kept", "the existing table was written as it is");

    let mut cfg = consume_cfg(&bs, "t", &db.url);
    cfg.table = "wrong".into();
    let (_s, stop) = watch::channel(false);
    let (_t, targets) = watch::channel(None);
    let err = finstream_consumer::run(cfg, stop, targets)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong") && err.contains("amount is text"),
        "{err}"
    );
    broker.shutdown().await.unwrap();
}

#[test]
fn all_in_one_loads_the_csv_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 5_000, 5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new("aio"));
    let out = output_with_timeout(
        all_in_one_command(&csv, &dir.path().join("data"), &["--database-url", &db.url])
            .env("RUST_LOG", "warn"),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rows read 5000, loaded 5000"), "{stdout}");
    let client = rt.block_on(db.client());
    assert_eq!(
        rt.block_on(table_multiset(&client, "transactions")),
        expected_multiset(&csv, &reference_scaler())
    );
}

#[test]
fn all_in_one_starts_a_private_postgres_when_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 1_000, 6);
    let data = dir.path().join("data");
    let out = output_with_timeout(
        all_in_one_command(&csv, &data, &[])
            .env_remove("DATABASE_URL")
            .env("PGPORT", "1") // nothing answers there
            .env("RUST_LOG", "info"),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("rows read 1000, loaded 1000"), "{stdout}");
    assert!(
        stderr.contains("private PostgreSQL cluster started"),
        "{stderr}"
    );
    assert!(data.join("postgres/PG_VERSION").exists());
}

#[test]
fn all_in_one_serve_keeps_loading_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 100, 7);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new("serve"));
    let child = all_in_one_command(
        &csv,
        &dir.path().join("data"),
        &[
            "--serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ],
    )
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let serving = lines.next().expect("a line").unwrap();
    let addr = serving
        .split("serving on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {serving}"))
        .to_string();
    // Another producer (kcat) adds two rows while all-in-one serves.
    let more = "{\"description\": \"late one\", \"amount\": 0.1}\n{\"description\": \"late two\", \"amount\": 0.2}\n";
    let (ok, _, err) = kcat(
        &["-b", &addr, "-P", "-t", "financial_transactions"],
        more.as_bytes(),
    );
    assert!(ok, "{err}");
    let client = rt.block_on(db.client());
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(count_rows(&client, "transactions")) < 102 {
        assert!(Instant::now() < deadline, "late rows never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends --serve cleanly: {status}");
    assert_eq!(rt.block_on(count_rows(&client, "transactions")), 102);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_is_loaded_from_the_beginning_whatever_kafka_committed() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    generate_csv(&csv, 5_000, 8);
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    produce_csv(&bs, "tx", &csv).await;
    let first = TestDb::new("fresh_a").await;
    assert_eq!(
        consume(consume_cfg(&bs, "tx", &first.url))
            .await
            .rows_loaded,
        5_000
    );
    // Same group, so Kafka now holds committed offsets at the end of the topic; a new
    // database must still get every row: PostgreSQL's offsets are the truth.
    let second = TestDb::new("fresh_b").await;
    assert_eq!(
        consume(consume_cfg(&bs, "tx", &second.url))
            .await
            .rows_loaded,
        5_000
    );
    let client = second.client().await;
    assert_eq!(
        table_multiset(&client, "transactions").await,
        expected_multiset(&csv, &reference_scaler())
    );
    broker.shutdown().await.unwrap();
}
