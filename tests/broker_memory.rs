//! The broker's memory stays bounded under hostile and heavy requests: per-API size limits,
//! a broker-wide budget for requests being read and decoded, and a decode allowance that
//! stops a request whose counts fit its size but would take many times its size in memory.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::producer::FutureRecord;

const MB: usize = 1000 * 1000;

/// A request frame: length, header (v2, flexible), then `body_len` bytes from `body`.
fn frame_head(key: ApiKey, version: i16, body_len: usize) -> Vec<u8> {
    let mut header = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut header, key.request_header_version(version))
        .unwrap();
    let mut f = ((header.len() + body_len) as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&header);
    f
}

/// Unsigned varint (Kafka's compact array counts are count + 1).
fn uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Metadata v12 naming `size / 18` topics (16-byte id, null name, no tags): about 420 MB
/// once decoded, from the report.
fn hostile_metadata(size: usize) -> Vec<u8> {
    let n = size / 18;
    let mut body = Vec::with_capacity(size + 16);
    uvarint(n as u64 + 1, &mut body);
    for i in 0..n {
        body.extend_from_slice(&(i as u128).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
    }
    body.extend_from_slice(&[1, 0, 0]); // allow auto create, authorized ops, tags
    let mut f = frame_head(ApiKey::Metadata, 12, body.len());
    f.extend_from_slice(&body);
    f
}

/// Produce v9 to one topic with `size / 6` partitions, each with null records: about 17
/// million partition entries of ~64 bytes each once decoded, from 100 MB.
fn hostile_produce(size: usize) -> Vec<u8> {
    let n = size / 6;
    let mut body = Vec::with_capacity(size + 32);
    body.push(0); // transactional id: null
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    body.extend_from_slice(&30_000i32.to_be_bytes()); // timeout
    uvarint(2, &mut body); // one topic
    body.extend_from_slice(&[2, b't']); // name "t"
    uvarint(n as u64 + 1, &mut body);
    for i in 0..n {
        body.extend_from_slice(&(i as i32).to_be_bytes());
        body.extend_from_slice(&[0, 0]); // records: null; no tags
    }
    body.extend_from_slice(&[0, 0]); // topic tags, request tags
    let mut f = frame_head(ApiKey::Produce, 9, body.len());
    f.extend_from_slice(&body);
    f
}

/// Peak resident memory of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_hostile_100_mb_requests_stay_under_1_gib_while_a_producer_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start_with(dir.path(), &["--max-message-bytes", "67108864"]);
    let addr = broker.addr.clone();
    let pid = broker.child.id();

    // A bystander producer, sending and counting acknowledgements all along.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let bystander = {
        let (stop, acked, addr) = (stop.clone(), acked.clone(), addr.clone());
        tokio::spawn(async move {
            let p = producer(&addr, &[("enable.idempotence", "true")]);
            while !stop.load(Ordering::Relaxed) {
                p.send(
                    FutureRecord::<(), _>::to("bystander").payload("still served"),
                    Duration::from_secs(60),
                )
                .await
                .expect("the bystander's messages are acknowledged");
                acked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    while acked.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let metadata = Arc::new(hostile_metadata(100 * MB));
    let produce = Arc::new(hostile_produce(100 * MB));
    let before = acked.load(Ordering::Relaxed);
    let attackers: Vec<_> = (0..16)
        .map(|i| {
            let frame = if i % 2 == 0 { &metadata } else { &produce }.clone();
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                // Closed by the broker part-way (limit, decode allowance): a write error.
                let _ = s.write_all(&frame);
                let _ = s.flush();
                let mut b = [0u8; 64];
                let _ = std::io::Read::read(&mut s, &mut b);
            })
        })
        .collect();
    let mut served_during = 0;
    for a in attackers {
        tokio::task::spawn_blocking(move || a.join().unwrap())
            .await
            .unwrap();
        served_during = acked.load(Ordering::Relaxed) - before;
    }
    let peak = peak_rss(pid);
    eprintln!("broker peak RSS after the attack: {} MiB", peak >> 20);
    assert!(
        peak < 1 << 30,
        "peak RSS {} MiB under 16 hostile 100 MB requests",
        peak >> 20
    );
    assert!(
        served_during >= 5,
        "the bystander was served {served_during} times while under attack"
    );

    // A legitimate 50 MB produce (one batch, --max-message-bytes raised) still works.
    let value = vec![b'x'; 50 * MB];
    let batch = record_batch(&[&value], -1, 0, 0);
    let (code, offset) = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(&addr);
        raw_produce(&mut c, "big", batch)
    })
    .await
    .unwrap();
    assert_eq!((code, offset), (0, 0), "50 MB produce accepted");
    let http = broker.http.clone();
    let metrics = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&http).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("finstream_broker_request_memory_bytes 0\n"),
        "every request's memory is given back: {metrics}"
    );
    stop.store(true, Ordering::Relaxed);
    bystander.await.unwrap();
}
