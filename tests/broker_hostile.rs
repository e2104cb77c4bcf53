//! Malformed and hostile input: each bad connection is closed, the broker keeps serving
//! everyone else.

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::*;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn request_frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("hostile-test")));
    let header_version = ApiKey::try_from(key)
        .map(|k| k.request_header_version(version))
        .unwrap_or(1);
    let mut buf = BytesMut::new();
    header.encode(&mut buf, header_version).unwrap();
    buf.put_slice(body);
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

async fn read_response(sock: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), sock.read_exact(&mut len))
        .await
        .expect("response within 10 s")
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    sock.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// The broker closes the connection: EOF or reset, within a few seconds.
async fn assert_closed(sock: &mut TcpStream, case: &str) {
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "{case}: connection still open after 10 s");
}

async fn api_versions(addr: &str, version: i16) -> (ResponseHeader, ApiVersionsResponse) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut body = BytesMut::new();
    if version <= 4 {
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"))
            .encode(&mut body, version)
            .unwrap();
    } else {
        body.put_slice(b"\x05test\x021\x00"); // a future version's body; must not matter
    }
    sock.write_all(&request_frame(18, version, 77, &body))
        .await
        .unwrap();
    let resp = read_response(&mut sock)
        .await
        .expect("ApiVersions answered");
    let mut buf = bytes::Bytes::from(resp);
    let header = ResponseHeader::decode(&mut buf, 0).unwrap();
    // Responses to unknown versions are always encoded as v0.
    let v = if version > 3 { 0 } else { version };
    (header, ApiVersionsResponse::decode(&mut buf, v).unwrap())
}

async fn well_behaved_client_still_works(producer: &FutureProducer, case: &str) {
    producer
        .send(
            FutureRecord::<(), _>::to("healthy").payload(case),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("after {case}: well-behaved produce failed: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let broker = start_broker(None).await;
    let addr = broker.local_addr().to_string();
    let good = producer(&broker.bootstrap_servers(), &[]);
    // A connection opened before the attacks must survive them too.
    let mut bystander = TcpStream::connect(&addr).await.unwrap();
    well_behaved_client_still_works(&good, "start").await;

    let mut forged_array = BytesMut::new();
    forged_array.put_i32(i32::MAX); // Metadata v1 "topics" array claiming 2^31 entries
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length prefix 2 GiB", 0x7fff_ffffi32.to_be_bytes().to_vec()),
        ("negative length prefix", (-5i32).to_be_bytes().to_vec()),
        ("zero length prefix", 0i32.to_be_bytes().to_vec()),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "TLS ClientHello",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
        ),
        ("unknown API key", request_frame(999, 0, 1, b"")),
        ("unsupported Produce version", request_frame(0, 99, 1, b"")),
        ("header too short for its version", {
            let mut f = 8i32.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 3, 0, 9, 0, 0, 0, 1]); // Metadata v9 needs a client id
            f
        }),
        ("forged array count", request_frame(3, 1, 1, &forged_array)),
        ("random bytes", {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        }),
    ];
    for (case, bytes) in cases {
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        let _ = sock.write_all(&bytes).await;
        assert_closed(&mut sock, case).await;
        well_behaved_client_still_works(&good, case).await;
    }

    // Truncated frame: announces 100 bytes, sends 10, then half-closes.
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let mut f = 100i32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0u8; 10]);
    sock.write_all(&f).await.unwrap();
    sock.shutdown().await.unwrap();
    assert_closed(&mut sock, "truncated frame").await;
    well_behaved_client_still_works(&good, "truncated frame").await;

    // The bystander connection is unaffected.
    bystander
        .write_all(&request_frame(18, 0, 5, b""))
        .await
        .unwrap();
    let resp = read_response(&mut bystander)
        .await
        .expect("bystander answered");
    assert_eq!(&resp[..4], &5i32.to_be_bytes(), "correlation id echoed");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_before_reading_it() {
    let broker = start_broker_with(None, |c| c.max_request_bytes = 1024).await;
    let addr = broker.local_addr().to_string();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(&2048i32.to_be_bytes()).await.unwrap();
    assert_closed(&mut sock, "2 KiB frame over a 1 KiB limit").await;
    let (h, r) = api_versions(&addr, 3).await;
    assert_eq!((h.correlation_id, r.error_code), (77, 0));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_advertises_what_is_implemented_and_downgrades_unknown_versions() {
    let broker = start_broker(None).await;
    let addr = broker.local_addr().to_string();
    let (header, resp) = api_versions(&addr, 3).await;
    assert_eq!(header.correlation_id, 77);
    assert_eq!(resp.error_code, 0);
    let advertised: Vec<(i16, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let expected: Vec<(i16, i16, i16)> = finstream_broker::api::SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| (k as i16, lo, hi))
        .collect();
    assert_eq!(advertised, expected);
    assert!(advertised.contains(&(ApiKey::Produce as i16, 3, 11)));

    // A version from the future gets a v0 answer with UNSUPPORTED_VERSION and the ranges.
    let (header, resp) = api_versions(&addr, 42).await;
    assert_eq!(header.correlation_id, 77);
    assert_eq!(resp.error_code, 35);
    assert_eq!(resp.api_keys.len(), expected.len());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let broker = start_broker_with(None, |c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut sock = TcpStream::connect(broker.local_addr()).await.unwrap();
    sock.write_all(&100i32.to_be_bytes()).await.unwrap(); // a slowloris: half a frame, then silence
    assert_closed(&mut sock, "idle half frame").await;
    broker.shutdown().await.unwrap();
}

/// gzip of one record whose value is `n` zero bytes (a decompression bomb: ~1000:1).
fn gzip_bomb(n: usize) -> Vec<u8> {
    let script = r#"
import sys, zlib
n = int(sys.argv[1])
def varint(v):
    z, out = (v << 1) ^ (v >> 63), bytearray()
    while True:
        b, z = z & 0x7f, z >> 7
        if z == 0:
            out.append(b); return bytes(out)
        out.append(b | 0x80)
head = b"\0" + varint(0) + varint(0) + varint(-1) + varint(n)
tail = varint(0)
c = zlib.compressobj(9, zlib.DEFLATED, 31)
out = [c.compress(varint(len(head) + n + len(tail)) + head)]
chunk = bytes(1 << 20)
for _ in range(n >> 20):
    out.append(c.compress(chunk))
out.append(c.compress(tail) + c.flush())
sys.stdout.buffer.write(b"".join(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &n.to_string()])
        .output()
        .expect("python3");
    assert!(out.status.success());
    out.stdout
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fetch(c: &mut RawClient, topic: &str, replica_id: i32) -> (i16, i64, Option<bytes::Bytes>) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(0)
        .with_max_bytes(16 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(16 << 20)])]);
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &req);
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.records.clone())
}

/// The broker never decompresses: a 512 MiB gzip bomb is stored and served at its
/// compressed size, without the broker's memory moving. A Fetch claiming to come from a
/// follower (`replica_id` >= 0) is served exactly like a consumer's: up to the high
/// watermark, nothing more, no replica state.
#[test]
fn decompression_bombs_are_never_expanded_and_replica_ids_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(dir.path());
    let pid = broker.child.id();
    let compressed = gzip_bomb(512 << 20);
    assert!(compressed.len() < 1 << 20, "{} bytes", compressed.len());
    let batch = finstream_broker::batch::batch_of_records(
        &compressed,
        1,
        1, // gzip
        (1_700_000_000_000, 1_700_000_000_000),
        finstream_broker::batch::NO_PRODUCER,
    );
    let before = vm_rss_kib(pid);
    let mut c = RawClient::connect(&broker.addr);
    assert_eq!(raw_produce(&mut c, "bombs", batch.clone().into()), (0, 0));
    let (code, hw, records) = fetch(&mut c, "bombs", -1);
    assert_eq!((code, hw), (0, 1));
    let records = records.expect("records");
    assert_eq!(records.len(), batch.len(), "served at its compressed size");
    assert!(
        records[16..] == batch[16..],
        "byte for byte, but the base offset and leader epoch"
    );
    let grown = vm_rss_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "broker RSS grew by {grown} KiB");

    // Bogus replica ids: the same answer as a consumer gets.
    for replica_id in [0, 1, 7, i32::MAX, -2] {
        let (code, hw2, r) = fetch(&mut c, "bombs", replica_id);
        assert_eq!(
            (code, hw2, r.map(|r| r.len())),
            (0, 1, Some(batch.len())),
            "replica_id {replica_id}"
        );
    }
}
