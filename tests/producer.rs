//! `finstream produce` end to end: parity with the original Python tool through a real
//! broker, dead letters for every kind of bad row, input errors, SIGINT, and the
//! fit-scaler / generate commands.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use finstream_producer::pipeline::header_pairs;
use finstream_producer::{ProduceConfig, ProduceError, Scaler, Summary};
use rdkafka::consumer::StreamConsumer;
use rdkafka::Message;

const WAIT: Duration = Duration::from_secs(60);

fn parity_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity")
}

fn reference_scaler() -> Scaler {
    Scaler::load(&parity_dir().join("scaler.json")).unwrap()
}

async fn produce(cfg: ProduceConfig) -> Result<Summary, ProduceError> {
    tokio::task::spawn_blocking(move || {
        finstream_producer::run(&cfg, Arc::new(AtomicBool::new(false)), ())
    })
    .await
    .unwrap()
}

struct Got {
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

async fn read_topic(consumer: &StreamConsumer, n: usize) -> Vec<Got> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .unwrap();
        out.push(Got {
            value: m.payload().unwrap_or_default().to_vec(),
            headers: m.headers().map(header_pairs).unwrap_or_default(),
        });
    }
    out
}

fn header<'a>(g: &'a Got, key: &str) -> &'a str {
    g.headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {key} in {:?}", g.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_match_the_original_tool_byte_for_byte() {
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let cfg = ProduceConfig::new(
        &bs,
        "parity",
        &parity_dir().join("cleaning_parity_in.csv"),
        reference_scaler(),
    );
    let summary = produce(cfg).await.unwrap();
    assert_eq!(
        (
            summary.rows_read,
            summary.sent,
            summary.dead_lettered,
            summary.failed
        ),
        (2000, 2000, 0, 0)
    );
    assert!(summary.complete());

    let expected: Vec<String> =
        std::fs::read_to_string(parity_dir().join("cleaning_parity_out.jsonl"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    let consumer = assigned_consumer(&bs, "parity", 1, &[]);
    let got = read_topic(&consumer, expected.len()).await;
    let mut last_line = 1;
    for (i, (g, want)) in got.iter().zip(&expected).enumerate() {
        let text = std::str::from_utf8(&g.value).unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(text).unwrap(),
            serde_json::from_str(want).unwrap(),
        );
        assert_eq!(a["description"], b["description"], "row {i}");
        let (x, y) = (a["amount"].as_f64().unwrap(), b["amount"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12, "row {i}: amount {x} vs {y}");
        assert_eq!(text, want, "row {i}: the exact bytes json.dumps wrote");
        assert_eq!(header(g, "source_file"), "cleaning_parity_in.csv");
        let line: u64 = header(g, "source_line").parse().unwrap();
        assert!(line > last_line, "row {i}: source lines increase");
        last_line = line;
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_dead_lettered_with_the_reason_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("corpus.csv");
    let mut data: Vec<u8> = Vec::new();
    data.extend_from_slice("\u{feff}Date,Description,Amount,Extra\r\n".as_bytes()); // BOM, CRLF, extra column
    data.extend_from_slice(b"2024-01-01,COFFEE SHOP 12,-4.50,x\r\n"); // line 2: good
    data.extend_from_slice(b"2024-01-02,Bad amount,abc\n"); // 3
    data.extend_from_slice(b"2024-01-03,Only two fields\n"); // 4
    data.extend_from_slice(b"2024-01-04,Caf\xe9 latin-1,3.00\n"); // 5: invalid UTF-8
    data.extend_from_slice(b"2024-01-05,Empty amount,\n"); // 6
    data.extend_from_slice(b"2024-01-06,Not a number,NaN\n"); // 7
    data.extend_from_slice(format!("2024-01-07,{},1.00\n", "H".repeat(5000)).as_bytes()); // 8: huge
    data.extend_from_slice(b"2024-01-08,\"multi\nline\",7.25\n"); // 9-10: good
    data.extend_from_slice(b"2024-01-09,\"unterminated quote,5.00\n"); // 11: runs to EOF
    std::fs::write(&csv, &data).unwrap();

    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let mut cfg = ProduceConfig::new(&bs, "tx", &csv, reference_scaler());
    cfg.max_row_bytes = 1000;
    let s = produce(cfg).await.unwrap();
    assert_eq!(
        (s.rows_read, s.sent, s.dead_lettered, s.failed),
        (9, 2, 7, 0),
        "{s}"
    );
    assert!(s.complete());

    let good = read_topic(&assigned_consumer(&bs, "tx", 1, &[]), 2).await;
    assert_eq!(
        std::str::from_utf8(&good[0].value).unwrap(),
        format!(
            r#"{{"description": "coffee shop 12", "amount": {}}}"#,
            finstream_producer::pyjson::float_repr(reference_scaler().transform(-4.5))
        )
    );
    assert!(std::str::from_utf8(&good[1].value)
        .unwrap()
        .starts_with(r#"{"description": "multi line""#));

    let dlq = read_topic(&assigned_consumer(&bs, "tx.dlq", 1, &[]), 7).await;
    let summary: Vec<(&str, &str)> = dlq
        .iter()
        .map(|g| (header(g, "source_line"), header(g, "error")))
        .collect();
    let expect = [
        ("3", "is not a number"),
        ("4", "missing field Amount"),
        ("5", "not valid UTF-8"),
        ("6", "Amount is empty"),
        ("7", "is not finite"),
        ("8", "exceeds the limit of 1000"),
        ("11", "missing field Amount"), // the unterminated quote swallows the rest of the file
    ];
    assert_eq!(summary.len(), expect.len(), "{summary:?}");
    for ((line, error), (want_line, want_error)) in summary.iter().zip(expect) {
        assert_eq!(*line, want_line, "{summary:?}");
        assert!(error.contains(want_error), "line {line}: {error}");
    }
    // The raw row is kept (the invalid UTF-8 byte included), with its file name.
    let latin = dlq
        .iter()
        .find(|g| header(g, "source_line") == "5")
        .unwrap();
    assert_eq!(latin.value, b"2024-01-04,Caf\xe9 latin-1,3.00".to_vec());
    assert_eq!(header(latin, "source_file"), "corpus.csv");
    let huge = dlq
        .iter()
        .find(|g| header(g, "source_line") == "8")
        .unwrap();
    assert_eq!(huge.value.len(), 1000, "truncated to the row limit");
    assert_eq!(header(huge, "original_size"), "5016");
    broker.shutdown().await.unwrap();
}

/// A 100 MB line between rows with mixed line endings: the line is dead-lettered (cut to
/// the row limit, its real size in a header), the rows around it keep their line numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_line_among_mixed_line_endings() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mixed.csv");
    let mut data: Vec<u8> = Vec::with_capacity(101 << 20);
    data.extend_from_slice(b"Description,Amount\r\n"); // 1, CRLF
    data.extend_from_slice(b"Grocery 1,10\n"); // 2, LF
    data.extend_from_slice(b"Pharmacy,20\r\n"); // 3, CRLF
    data.extend_from_slice(b"\""); // 4: a quoted 100 MB description
    data.resize(data.len() + (100 << 20), b'z');
    data.extend_from_slice(b"\",30\n");
    data.extend_from_slice(b"Fuel 7,40\r\n"); // 5
    data.extend_from_slice(b"Books,50"); // 6, no final newline
    std::fs::write(&csv, &data).unwrap();
    drop(data);

    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();
    let cfg = ProduceConfig::new(&bs, "tx", &csv, reference_scaler());
    let limit = cfg.max_row_bytes;
    let s = produce(cfg).await.unwrap();
    assert_eq!((s.rows_read, s.sent, s.dead_lettered), (5, 4, 1), "{s}");
    let good = read_topic(&assigned_consumer(&bs, "tx", 1, &[]), 4).await;
    let lines: Vec<&str> = good.iter().map(|g| header(g, "source_line")).collect();
    assert_eq!(lines, ["2", "3", "5", "6"]);
    assert!(std::str::from_utf8(&good[2].value)
        .unwrap()
        .starts_with(r#"{"description": "fuel 7""#));
    let dlq = read_topic(&assigned_consumer(&bs, "tx.dlq", 1, &[]), 1).await;
    assert_eq!(header(&dlq[0], "source_line"), "4");
    let error = header(&dlq[0], "error");
    assert!(error.contains("exceeds the limit"), "{error}");
    let size: usize = header(&dlq[0], "original_size").parse().unwrap();
    assert!(size > 100 << 20, "{size}");
    assert_eq!(dlq[0].value.len(), limit);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_only_sends_nothing_and_max_errors_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(None).await;
    let bs = broker.bootstrap_servers();

    let header_only = dir.path().join("header.csv");
    std::fs::write(&header_only, "Description,Amount\n").unwrap();
    let s = produce(ProduceConfig::new(
        &bs,
        "empty",
        &header_only,
        reference_scaler(),
    ))
    .await
    .unwrap();
    assert_eq!((s.rows_read, s.sent, s.dead_lettered), (0, 0, 0));

    let bad = dir.path().join("bad.csv");
    let rows: String = (0..50).map(|i| format!("row {i},oops\n")).collect();
    std::fs::write(&bad, format!("Description,Amount\n{rows}")).unwrap();
    let mut cfg = ProduceConfig::new(&bs, "aborting", &bad, reference_scaler());
    cfg.max_errors = Some(3);
    let s = produce(cfg).await.unwrap();
    assert!(
        s.aborted
            .as_deref()
            .unwrap_or("")
            .contains("more than 3 bad rows"),
        "{s:?}"
    );
    assert_eq!(s.rows_read, 4);
    assert_eq!(
        s.dead_lettered, 4,
        "what was read is still dead-lettered, not lost"
    );
    broker.shutdown().await.unwrap();
}

fn finstream(args: &[&str]) -> std::process::Output {
    Command::new(finstream_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run finstream")
}

#[test]
fn unusable_files_fail_before_sending_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data"));
    let scaler = parity_dir().join("scaler.json");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no-amount.csv",
            b"Date,Description\n2024-01-01,x\n".to_vec(),
            "missing column 'Amount'",
        ),
        ("empty.csv", Vec::new(), "missing column 'Description'"),
        (
            "dupe.csv",
            b"Description,Amount,Amount\nx,1,2\n".to_vec(),
            "column 'Amount' appears more than once",
        ),
        (
            "binary.csv",
            (0..=255u8).cycle().take(4096).collect(),
            "missing column",
        ),
    ];
    for (name, content, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = finstream(&[
            "produce",
            "--bootstrap-servers",
            &broker.addr,
            "--topic",
            "never",
            "--csv",
            path.to_str().unwrap(),
            "--scaler",
            scaler.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(
            stderr.contains(name),
            "{name}: the error names the file: {stderr}"
        );
    }
    let missing = finstream(&[
        "produce",
        "--bootstrap-servers",
        &broker.addr,
        "--csv",
        "/nonexistent.csv",
        "--scaler",
        scaler.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    let (ok, out, _) = kcat(&["-b", &broker.addr, "-L"], b"");
    assert!(ok);
    assert!(!out.contains("\"never\""), "nothing was sent: {out}");
}

#[test]
fn sigint_stops_reading_delivers_what_is_in_flight_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data"));
    let csv = dir.path().join("big.csv");
    let gen = finstream(&[
        "generate",
        "--rows",
        "1500000",
        "--seed",
        "3",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(gen.status.success());
    let child = Command::new(finstream_bin())
        .args([
            "produce",
            "--bootstrap-servers",
            &broker.addr,
            "--topic",
            "interrupted",
            "--csv",
            csv.to_str().unwrap(),
        ])
        .arg("--scaler")
        .arg(parity_dir().join("scaler.json"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "produce: rows read R, sent S, dead-lettered D, failed F, ..."
    let nums: Vec<u64> = stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(4)
        .map(|s| s.parse().unwrap())
        .collect();
    let (read, sent, dead, failed) = (nums[0], nums[1], nums[2], nums[3]);
    assert!(
        read > 0 && read < 1_500_000,
        "interrupted part way: {stdout}"
    );
    assert_eq!(
        (sent + dead, failed),
        (read, 0),
        "every row read was delivered: {stdout}"
    );
    // and the topic holds exactly what was acknowledged
    let (ok, out, _) = kcat(&["-b", &broker.addr, "-Q", "-t", "interrupted:0:-1"], b"");
    assert!(ok);
    assert!(
        out.contains(&format!("offset {sent}")),
        "{out} vs sent {sent}"
    );
}

#[test]
fn generate_then_fit_scaler_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gen.csv");
    let out = dir.path().join("scaler.json");
    assert!(finstream(&[
        "generate",
        "--rows",
        "3000",
        "--seed",
        "9",
        "--out",
        csv.to_str().unwrap()
    ])
    .status
    .success());
    let fit = finstream(&[
        "fit-scaler",
        "--csv",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        fit.status.success(),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );
    let amounts: Vec<f64> = csv::Reader::from_path(&csv)
        .unwrap()
        .records()
        .map(|r| r.unwrap()[2].parse().unwrap())
        .collect();
    let s = Scaler::load(&out).unwrap();
    let (lo, hi) = amounts
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    assert_eq!((s.data_min, s.data_max, s.n_samples_seen), (lo, hi, 3000));
    assert_eq!(s.transform(lo), 0.0);
    assert!((s.transform(hi) - 1.0).abs() < 1e-15);
}

#[test]
fn delivery_failures_are_reported_per_row_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        BinaryBroker::start_with(&dir.path().join("data"), &["--max-message-bytes", "200"]);
    let csv = dir.path().join("long.csv");
    std::fs::write(
        &csv,
        format!(
            "Description,Amount\nshort,1.0\n{},2.0\n",
            "word ".repeat(100)
        ),
    )
    .unwrap();
    let out = finstream(&[
        "produce",
        "--bootstrap-servers",
        &broker.addr,
        "--topic",
        "small",
        "--csv",
        csv.to_str().unwrap(),
        "--scaler",
        parity_dir().join("scaler.json").to_str().unwrap(),
        "-X",
        "linger.ms=0",
        "-X",
        "compression.type=none",
        "-X",
        "batch.num.messages=1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rows read 2, sent 1, dead-lettered 0, failed 1"),
        "{stdout}"
    );
    assert!(
        stderr.contains("long.csv:3: delivery to small failed"),
        "{stderr}"
    );
}

#[test]
fn the_original_tools_flag_spellings_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data"));
    let out = finstream(&[
        "produce",
        "--bootstrap_servers",
        &broker.addr,
        "--topic",
        "legacy",
        "--csv_name",
        parity_dir()
            .join("cleaning_parity_in.csv")
            .to_str()
            .unwrap(),
        "--chunk_size",
        "100",
        "--num_tasks",
        "3",
        "--scaler",
        parity_dir().join("scaler.json").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rows read 2000, sent 2000"), "{stdout}");
    let (_, got, _) = kcat(
        &[
            "-b",
            &broker.addr,
            "-C",
            "-t",
            "legacy",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ],
        b"",
    );
    let want = std::fs::read_to_string(parity_dir().join("cleaning_parity_out.jsonl")).unwrap();
    assert_eq!(
        got, want,
        "parity holds with several workers and small chunks"
    );
}

#[test]
fn dry_run_cleans_and_counts_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mixed.csv");
    std::fs::write(&csv, "Description,Amount\ngood,1.0\nbad,xyz\nalso good,2\n").unwrap();
    let out = finstream(&[
        "produce",
        "--dry-run",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--csv",
        csv.to_str().unwrap(),
        "--scaler",
        parity_dir().join("scaler.json").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("rows read 3, sent 2, dead-lettered 1, failed 0"),
        "{stdout}"
    );
}
