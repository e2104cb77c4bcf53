//! The operations endpoint: /metrics, /healthz, /readyz and the status page, on the real
//! binary; the page is also checked in headless Chromium, as a person would see it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

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
        page.contains("<td>payments</td><td>0</td><td>0</td><td>3</td><td>3</td>"),
        "{page}"
    );
    assert!(page.contains("<td>payments.dlq</td><td>1</td>"), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""));

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
