//! The operations endpoint: /metrics, /healthz, /readyz and the status page, on the real
//! binary; the page is also checked in headless Chromium, as a person would see it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

use common::http_get as get;

#[test]
fn metrics_health_and_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let (kafka, http) = (broker.addr.clone(), broker.http.clone());
    let (ok, _, err) = kcat(
        &["-b", &kafka, "-P", "-t", "payments", "-K:"],
        b"a:1\nb:2\nc:3\n",
    );
    assert!(ok, "{err}");
    assert!(kcat(&["-b", &kafka, "-P", "-t", "payments.dlq"], b"bad row\n").0);

    let (code, metrics) = get(&http, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("finstream_broker_requests_total{api=\"Produce\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finstream_broker_high_watermark{topic=\"payments\",partition=\"0\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finstream_broker_flush_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE finstream_broker_request_seconds histogram"));
    assert_eq!(get(&http, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&http, "/readyz").0, 200);
    assert_eq!(get(&http, "/nope").0, 404);

    let (code, page) = get(&http, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains(
            "<td><a href=\"/topics/payments\">payments</a></td><td>0</td><td>0</td><td>3</td><td>3</td>"
        ),
        "{page}"
    );
    assert!(
        page.contains("<td><a href=\"/topics/payments.dlq\">payments.dlq</a></td><td>1</td>"),
        "{page}"
    );
    assert!(page.contains("<script defer src=\"/assets/console.js\">"));

    // What a person sees: render in headless Chromium and read the visible text.
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed (scripts/setup.sh installs it)");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=1000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{http}/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<h1>finstream</h1>"),
        "chromium rendered: {dom}"
    );
    assert!(dom.contains("payments.dlq"), "{dom}");
    assert!(dom.contains("Consumer groups"), "{dom}");

    assert!(broker.terminate().success());
}

/// Polls `path` until `check` accepts the body (or 30 s pass, returning the last body).
fn poll(addr: &str, path: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    http_poll(addr, path, Duration::from_secs(30), check)
}

/// The consumer's endpoint, configured the way deploy/docker-compose.yml configures the
/// consumer container (a config file plus environment): not ready while PostgreSQL is
/// unreachable; ready once assigned; lag per partition in /metrics and on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_readiness_lag_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let db = TestDb::new("http_consumer").await;
    let config = dir.path().join("finstream.toml");
    std::fs::write(
        &config,
        format!(
            "bootstrap_servers = \"{}\"\ndatabase_url = \"postgres://postgres@127.0.0.1:1/none\"\n\n[consume]\ntopic = \"ledger\"\ngroup = \"loaders\"\nhttp = \"127.0.0.1:0\"\n",
            broker.addr
        ),
    )
    .unwrap();

    // PostgreSQL unreachable (the file's URL): alive but not ready.
    let (mut down, addrs) = spawn_reporting(
        Command::new(finstream_bin())
            .args(["--config"])
            .arg(&config)
            .arg("consume"),
        "consume-pg-down",
    );
    let http = wait_for_addresses(&addrs, &["http"]).remove(0);
    assert_eq!(get(&http, "/healthz").0, 200);
    let (code, why) = get(&http, "/readyz");
    assert_eq!(code, 503, "{why}");
    let _ = down.kill();
    let _ = down.wait();

    // The environment wins over the file: DATABASE_URL points at the real database.
    let (ok, _, err) = kcat(&["-b", &broker.addr, "-P", "-t", "ledger"], {
        b"{\"description\": \"coffee shop\", \"amount\": 0.25}\n{\"description\": \"rent\", \"amount\": 0.5}\n"
    });
    assert!(ok, "{err}");
    let (mut consumer, addrs) = spawn_reporting(
        Command::new(finstream_bin())
            .args(["--config"])
            .arg(&config)
            .arg("consume")
            .env("DATABASE_URL", &db.url),
        "consume",
    );
    let http = wait_for_addresses(&addrs, &["http"]).remove(0);
    let (code, why) = poll(&http, "/readyz", |c, _| c == 200);
    assert_eq!(code, 200, "{why}");
    let (_, metrics) = poll(&http, "/metrics", |_, m| {
        m.contains("finstream_consumer_lag{topic=\"ledger\",partition=\"0\"} 0\n")
            && m.contains("finstream_consumer_rows_loaded_total 2\n")
    });
    assert!(
        metrics.contains("finstream_consumer_rows_loaded_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finstream_consumer_lag{topic=\"ledger\",partition=\"0\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finstream_consumer_high_watermark{topic=\"ledger\",partition=\"0\"} 2\n"),
        "{metrics}"
    );
    let (_, page) = get(&http, "/");
    assert!(page.contains("id=\"consumer-lag\""), "{page}");
    assert_eq!(
        count_rows(&db.client().await, "transactions").await,
        2,
        "the consumer loaded into DATABASE_URL, not the file's URL"
    );
    let _ = consumer.kill();
    let _ = consumer.wait();
}

/// `produce --http`: the counters are live while the file is being sent (here, to a broker
/// that does not answer, so the run lasts until the delivery timeout).
#[test]
fn producer_metrics_while_sending() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tx.csv");
    std::fs::write(&csv, "Description,Amount\nCoffee 2,3.5\nRent,900\n,\n").unwrap();
    let (mut producer, addrs) = spawn_reporting(
        Command::new(finstream_bin())
            .args([
                "produce",
                "--bootstrap-servers",
                "127.0.0.1:1",
                "--http",
                "127.0.0.1:0",
            ])
            .args([
                "-X",
                "message.timeout.ms=6000",
                "--scaler",
                "data/scaler.json",
                "--csv",
            ])
            .arg(&csv),
        "produce",
    );
    let http = wait_for_addresses(&addrs, &["http"]).remove(0);
    let (_, metrics) = poll(&http, "/metrics", |_, m| {
        m.contains("finstream_producer_rows_read_total 3\n")
    });
    assert!(
        metrics.contains("finstream_producer_rows_read_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finstream_producer_rows_sent_total 0\n"),
        "{metrics}"
    );
    let (_, page) = get(&http, "/");
    assert!(page.contains("id=\"producer\""), "{page}");
    let status = producer.wait().unwrap();
    assert_eq!(status.code(), Some(1), "undelivered rows give exit code 1");
}

/// Sends `raw` and reads until the server closes: (response, time until closed).
fn exchange(addr: &str, raw: &[u8]) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let t = std::time::Instant::now();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    (String::from_utf8_lossy(&resp).into_owned(), t.elapsed())
}

/// Open file descriptors of `pid` that are sockets.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// HEAD and query strings work; a request head that trickles in is cut off at one deadline
/// for the whole head; no more than the connection cap are held at once.
#[test]
fn head_query_strings_slow_heads_and_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let http = broker.http.clone();

    let (resp, _) = exchange(&http, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        len > 100 && body.is_empty(),
        "HEAD: length {len}, body {body:?}"
    );
    let (code, metrics) = get(&http, "/metrics?name[]=finstream_broker_up#x");
    assert_eq!(code, 200);
    assert!(metrics.contains("finstream_uptime_seconds"), "{metrics}");
    assert_eq!(get(&http, "/healthz?probe=k8s"), (200, "ok\n".to_string()));
    let (resp, _) = exchange(&http, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 405") && resp.contains("Allow: GET, HEAD"));

    // A byte every 500 ms, forever: closed once the head deadline (5 s) passes.
    let mut slow = TcpStream::connect(&http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(b"GET / HTTP/1.1\r\n");
        for _ in 0..120 {
            std::thread::sleep(Duration::from_millis(500));
            if writer.write_all(b"X").is_err() {
                return;
            }
        }
    });
    let t = std::time::Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "a trickling head held the connection for {:?}",
        t.elapsed()
    );
    assert!(sink.is_empty(), "nothing is answered to an incomplete head");

    // 200 idle connections: at most 64 are accepted at a time, the rest wait.
    let pid = broker.child.id();
    let before = sockets_of(pid);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = sockets_of(pid) - before;
    assert!(held <= 64, "{held} idle connections held");
    drop(idle);
    let (code, _) = poll(&http, "/healthz", |c, _| c == 200);
    assert_eq!(code, 200, "served again once the idle ones are gone");
}

/// Out of file descriptors, the HTTP endpoint waits between accept attempts instead of
/// spinning on the error; it serves again once descriptors are free.
#[test]
fn failed_accepts_pause_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 64 && exec \"$0\" \"$@\"",
        finstream_bin(),
        "broker",
    ])
    .args([
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.path());
    let (mut child, addrs) = spawn_reporting(&mut cmd, "broker-64-fds");
    let http = wait_for_addresses(&addrs, &["listen", "http"]).remove(1);
    let pid = child.id();
    // Idle connections until the process has no descriptor left to accept with.
    let conns: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - cpu;
    assert!(
        used < 1.0,
        "{used:.2} CPU seconds in 3 s while accept fails: a busy loop"
    );
    drop(conns);
    let (code, _) = poll(&http, "/healthz", |c, _| c == 200);
    assert_eq!(code, 200);
    let _ = child.kill();
    let _ = child.wait();
}
