//! A fixed request sequence for instruction counting (bench/instructions.sh): one warm-up
//! Produce (it creates the topic), PRODUCE Produce requests (acks=-1, one uncompressed
//! batch of 100 × 100 B records each), then FETCH Fetch requests (each asks for the next
//! batch from where the previous ended, one batch's worth of bytes). Requests are encoded
//! once and sent on one connection, one at a time, so the broker's work per request is
//! the same in every run.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const RECORDS: usize = 100;
const VALUE: [u8; 100] = [b'x'; 100];

/// A length-prefixed request frame.
pub(crate) fn frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    req: &R,
) -> anyhow::Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("instructions")));
    let mut body = BytesMut::new();
    header.encode(&mut body, key.request_header_version(version))?;
    req.encode(&mut body, version)?;
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(i32::try_from(body.len())?);
    out.put_slice(&body);
    Ok(out.freeze())
}

/// Sends `frame` and returns the response body after its header.
pub(crate) fn call(
    sock: &mut TcpStream,
    frame: &[u8],
    key: ApiKey,
    version: i16,
) -> anyhow::Result<Bytes> {
    sock.write_all(frame)?;
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len)).context("negative response length")?;
    anyhow::ensure!(len <= 64 << 20, "response of {len} bytes");
    let mut resp = vec![0u8; len];
    sock.read_exact(&mut resp)?;
    let mut buf = Bytes::from(resp);
    ResponseHeader::decode(&mut buf, key.response_header_version(version))?;
    Ok(buf)
}

fn produce_frame(topic: &str, correlation: i32) -> anyhow::Result<Bytes> {
    let values: Vec<&[u8]> = (0..RECORDS).map(|_| &VALUE[..]).collect();
    let batch =
        finstream_broker::batch::uncompressed_batch(&values, 1_700_000_000_000, 0, (-1, -1, -1));
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    frame(ApiKey::Produce, 9, correlation, &req)
}

fn fetch_frame(
    topic: &str,
    offset: i64,
    max_bytes: i32,
    correlation: i32,
) -> anyhow::Result<Bytes> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])]);
    frame(ApiKey::Fetch, 11, correlation, &req)
}

/// Runs the sequence against `bootstrap`.
pub fn run(bootstrap: &str, topic: &str, produce: usize, fetch: usize) -> anyhow::Result<()> {
    let mut sock = TcpStream::connect(bootstrap).with_context(|| format!("connect {bootstrap}"))?;
    sock.set_nodelay(true)?;
    let produce_req = produce_frame(topic, 1)?;
    let batch_len = i32::try_from(produce_req.len())?;
    for i in 0..=produce {
        let mut buf = call(&mut sock, &produce_req, ApiKey::Produce, 9)?;
        let r = kafka_protocol::messages::ProduceResponse::decode(&mut buf, 9)?;
        let code = r.responses[0].partition_responses[0].error_code;
        if code != 0 {
            bail!("produce {i}: error code {code}");
        }
    }
    for i in 0..fetch {
        let offset = i64::try_from(i * RECORDS)?;
        let req = fetch_frame(topic, offset, batch_len, 2)?;
        let mut buf = call(&mut sock, &req, ApiKey::Fetch, 11)?;
        let r = kafka_protocol::messages::FetchResponse::decode(&mut buf, 11)?;
        let p = &r.responses[0].partitions[0];
        if p.error_code != 0 || p.records.as_ref().is_none_or(Bytes::is_empty) {
            bail!(
                "fetch {i} at offset {offset}: error code {}, no records",
                p.error_code
            );
        }
    }
    println!(
        "{}",
        serde_json::json!({ "produce": produce, "fetch": fetch })
    );
    Ok(())
}
