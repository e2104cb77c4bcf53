//! TLS and SASL (PLAIN, SCRAM-SHA-256) on the broker's listener, with librdkafka (the rdkafka
//! crate, PLAIN) and kcat (TLS, SCRAM over TLS).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureRecord;

/// A self-signed certificate for 127.0.0.1 (openssl CLI): (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

fn users_file(dir: &Path) -> PathBuf {
    let path = dir.join("users");
    std::fs::write(&path, "# user:password\nalice:s3cret\nbob:hunter2\n").unwrap();
    path
}

/// A broker with TLS and the users of [`users_file`]; returns it and its certificate.
fn tls_and_sasl_broker(dir: &Path) -> (BinaryBroker, PathBuf) {
    let (cert, key) = certificate(dir);
    let users = users_file(dir);
    let args = [
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--sasl-users",
        s(&users),
    ];
    (BinaryBroker::start_with(&dir.join("data"), &args), cert)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A plain Kafka request on the connection: the broker must close it without an answer.
fn plain_request_is_refused(addr: &str) {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // ApiVersions v0, correlation 1, no client id: accepted before SASL, so send Metadata v1.
    let body = [0u8, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    sock.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    // Nothing, or a TLS alert record (content type 21): never a Kafka response.
    assert!(
        answer.is_empty() || answer[0] == 21,
        "answered {answer:?} without authentication/TLS"
    );
}

#[test]
fn tls_listener_round_trips_with_kcat_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let broker = BinaryBroker::start_with(
        &dir.path().join("data"),
        &["--tls-cert", s(&cert), "--tls-key", s(&key)],
    );
    let tls = [
        "-X",
        "security.protocol=ssl",
        "-X",
        &format!("ssl.ca.location={}", s(&cert)),
    ];
    let b = broker.addr.as_str();
    let (ok, _, err) = kcat(
        &[&["-b", b, "-P", "-t", "secure"][..], &tls].concat(),
        b"one\ntwo\n",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(
        &[&["-b", b, "-C", "-t", "secure", "-e", "-q"][..], &tls].concat(),
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "one\ntwo\n");
    plain_request_is_refused(b);
    // A client that does not trust the certificate fails.
    let (ok, _, _) = kcat(
        &["-b", b, "-L", "-m", "5", "-X", "security.protocol=ssl"],
        b"",
    );
    assert!(!ok, "an untrusted certificate must fail verification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_with_librdkafka_and_no_requests_before_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let broker = BinaryBroker::start_with(&dir.path().join("data"), &["--sasl-users", s(&users)]);
    let b = broker.addr.as_str();
    let sasl = |user: &'static str, password: &'static str| {
        producer(
            b,
            &[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", user),
                ("sasl.password", password),
                ("message.timeout.ms", "5000"),
            ],
        )
    };
    let good = sasl("alice", "s3cret");
    good.send(
        FutureRecord::to("private").key("k").payload("v"),
        Duration::from_secs(10),
    )
    .await
    .expect("authenticated produce");
    let bad = sasl("alice", "wrong");
    assert!(
        bad.send(
            FutureRecord::to("private").key("k").payload("x"),
            Duration::from_secs(10)
        )
        .await
        .is_err(),
        "a wrong password must not produce"
    );
    plain_request_is_refused(b);
    let (ok, out, err) = kcat(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "private",
            "-e",
            "-q",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=bob",
            "-X",
            "sasl.password=hunter2",
        ],
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "v\n", "exactly the authenticated message");
}

#[test]
fn scram_sha_256_over_tls_with_kcat() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cert) = tls_and_sasl_broker(dir.path());
    let b = broker.addr.as_str();
    let ca = format!("ssl.ca.location={}", s(&cert));
    let scram = |password: &str| -> Vec<String> {
        [
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-256",
            "-X",
            "sasl.username=alice",
            "-X",
            &format!("sasl.password={password}"),
            "-X",
            &ca,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let args = |base: &[&str], password: &str| -> Vec<String> {
        base.iter()
            .map(|x| x.to_string())
            .chain(scram(password))
            .collect()
    };
    let run = |a: Vec<String>, stdin: &[u8]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        kcat(&refs, stdin)
    };
    let (ok, _, err) = run(args(&["-b", b, "-P", "-t", "vault"], "s3cret"), b"gold\n");
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        args(&["-b", b, "-C", "-t", "vault", "-e", "-q"], "s3cret"),
        b"",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "gold\n");
    let (ok, _, err) = run(args(&["-b", b, "-L", "-m", "5"], "wrong"), b"");
    assert!(!ok, "a wrong SCRAM password must fail: {err}");
}

/// The production path, against the embedded broker: `finstream produce` and `consume` with
/// the SASL_SSL / SCRAM-SHA-256 settings docs/production.md gives for a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finstream_produce_and_consume_over_sasl_ssl() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cert) = tls_and_sasl_broker(dir.path());
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-256\nsasl.username=bob\nsasl.password=hunter2\nssl.ca.location={}\n",
            s(&cert)
        ),
    )
    .unwrap();
    let csv = dir.path().join("tx.csv");
    std::fs::write(&csv, "Description,Amount\nCoffee 2,3.5\nRent,900\n").unwrap();
    let common = [
        "--bootstrap-servers",
        broker.addr.as_str(),
        "--topic",
        "secure-tx",
        "--client-config",
        s(&props),
    ];
    let out = output_with_timeout(
        Command::new(finstream_bin())
            .arg("produce")
            .args(common)
            .args(["--scaler", "data/scaler.json", "--csv", s(&csv)]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sent 2,"), "{stdout}");
    let db = TestDb::new("sasl_ssl").await;
    let out = output_with_timeout(
        Command::new(finstream_bin())
            .arg("consume")
            .args(common)
            .args(["--database-url", &db.url, "--stop-at-end"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_rows(&db.client().await, "transactions").await, 2);
}
