//! Power cuts, not just kill -9: the broker runs on a lazy filesystem (tests/lazyfs, after
//! Jepsen's LazyFS) that keeps every write not covered by fsync/fdatasync in memory. At a
//! random moment the broker is killed and those writes are thrown away (all of them, or a
//! random half of their pages as if the kernel had written those back first); the broker
//! restarts on what is left. After every cut:
//! * every acknowledged batch is there, with its offset, and nothing unacknowledged is
//!   visible except whole batches that were sent;
//! * every acknowledged OffsetCommit is there (or a later one);
//! * every acknowledged topic creation is there;
//! * no producer id is handed out twice;
//! * transactions are all or nothing, and every acknowledged commit is visible to
//!   read_committed readers (`power_cut_txn`);
//! * the broker opens.
//!
//! 20 cuts per storage format (`FINSTREAM_POWER_CUTS` for more; scripts/reliability.sh).
//! Needs root (FUSE mount); CI runs as root.

mod common;
mod power_cut_txn;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use finstream_lazyfs::{Cut, LazyFs};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;

const TOPIC: &str = "pc";
const PARTITIONS: i32 = 2;
const GROUP: &str = "pc-group";

/// Everything acknowledged so far, over all cycles.
#[derive(Default)]
struct Acked {
    /// (partition, offset) -> value, from delivery reports.
    messages: BTreeMap<(i32, i64), String>,
    /// Every value ever handed to the producer.
    sent: HashSet<String>,
    /// Highest acknowledged committed offset per partition.
    commits: HashMap<i32, i64>,
    topics: Vec<String>,
    producer_ids: Vec<i64>,
}

/// One request on a raw connection; `None` once the broker is gone.
fn call<Req: Encodable, Resp: Decodable>(
    sock: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("power-cut")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .ok()?;
    req.encode(&mut body, version).ok()?;
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    sock.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    sock.read_exact(&mut len).ok()?;
    let mut resp = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    sock.read_exact(&mut resp).ok()?;
    let mut buf = bytes::Bytes::from(resp);
    ResponseHeader::decode(&mut buf, key.response_header_version(version)).ok()?;
    Resp::decode(&mut buf, version).ok()
}

fn connect(addr: &str) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(s)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn commit(sock: &mut TcpStream, offset: i64) -> bool {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(
                (0..PARTITIONS)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    call::<_, OffsetCommitResponse>(sock, ApiKey::OffsetCommit, 8, &req).is_some_and(|r| {
        r.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .all(|p| p.error_code == 0)
    })
}

fn committed(addr: &str) -> HashMap<i32, i64> {
    let mut sock = connect(addr).expect("connect");
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name(TOPIC))
            .with_partition_indexes((0..PARTITIONS).collect())]));
    let r: OffsetFetchResponse =
        call(&mut sock, ApiKey::OffsetFetch, 7, &req).expect("OffsetFetch answered");
    r.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.committed_offset))
        .collect()
}

fn create(sock: &mut TcpStream, topic: &str) -> bool {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    call::<_, CreateTopicsResponse>(sock, ApiKey::CreateTopics, 5, &req)
        .is_some_and(|r| r.topics.iter().all(|t| t.error_code == 0))
}

fn producer_id(sock: &mut TcpStream) -> Option<i64> {
    let req = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
    let r: InitProducerIdResponse = call(sock, ApiKey::InitProducerId, 4, &req)?;
    (r.error_code == 0).then_some(r.producer_id.0)
}

/// Commits, topic creations and producer ids, as fast as the broker answers, until it is
/// gone or `stop`; each acknowledged one is recorded as soon as its answer arrives.
fn metadata_load(addr: String, cycle: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let Some(mut sock) = connect(&addr) else {
        return;
    };
    let start = acked
        .lock()
        .unwrap()
        .commits
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let offset = start + 1 + i;
        if !commit(&mut sock, offset) {
            return;
        }
        let mut a = acked.lock().unwrap();
        for p in 0..PARTITIONS {
            a.commits.insert(p, offset);
        }
        drop(a);
        if i % 10 == 0 {
            let topic = format!("created-{cycle}-{i}");
            if !create(&mut sock, &topic) {
                return;
            }
            acked.lock().unwrap().topics.push(topic);
        }
        match producer_id(&mut sock) {
            Some(pid) => acked.lock().unwrap().producer_ids.push(pid),
            None => return,
        }
    }
}

/// An idempotent acks=all producer sending `c<cycle>-m<i>` in windows of 100 until the
/// broker is gone; each acknowledged message is recorded with its partition and offset.
async fn produce_load(addr: String, cycle: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let producer = producer(
        &addr,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "3000"),
        ],
    );
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut window = Vec::new();
        for _ in 0..100 {
            let value = format!("c{cycle}-m{i}");
            i += 1;
            acked.lock().unwrap().sent.insert(value.clone());
            let record = FutureRecord::<(), _>::to(TOPIC)
                .partition((i % PARTITIONS as usize) as i32)
                .payload(&value);
            match producer.send_result(record) {
                Ok(f) => window.push((value, f)),
                Err(_) => return,
            }
        }
        for (value, f) in window {
            match f.await {
                Ok(Ok(d)) => {
                    acked
                        .lock()
                        .unwrap()
                        .messages
                        .insert((d.partition, d.offset), value);
                }
                _ => return, // the broker went away: unknown, not acknowledged
            }
        }
    }
}

/// Reads every partition up to its high watermark: (partition, offset) -> value.
async fn read_all(addr: &str) -> BTreeMap<(i32, i64), String> {
    let consumer = assigned_consumer(addr, TOPIC, PARTITIONS, &[("check.crcs", "true")]);
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .expect("watermarks");
        total += high as usize;
    }
    consume_n(&consumer, total, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|r| {
            let v = String::from_utf8(r.value.unwrap_or_default()).expect("UTF-8 value");
            ((r.partition, r.offset), v)
        })
        .collect()
}

/// Everything acknowledged is there; nothing is there that was not sent, or twice.
async fn check(addr: &str, acked: &Acked, cycle: usize) {
    let consumer = assigned_consumer(addr, TOPIC, 1, &[]);
    let md = tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(10)))
        .expect("metadata");
    let names: HashSet<&str> = md.topics().iter().map(|t| t.name()).collect();
    for t in &acked.topics {
        assert!(
            names.contains(t.as_str()),
            "cycle {cycle}: created topic {t} lost"
        );
    }
    let log = read_all(addr).await;
    for ((p, o), v) in &acked.messages {
        assert_eq!(
            log.get(&(*p, *o)),
            Some(v),
            "cycle {cycle}: acknowledged {v} at {p}/{o} lost or changed"
        );
    }
    let mut seen = HashSet::new();
    for v in log.values() {
        assert!(
            acked.sent.contains(v),
            "cycle {cycle}: {v:?} was never sent"
        );
        assert!(seen.insert(v), "cycle {cycle}: {v} is in the log twice");
    }
    let now = committed(addr);
    for (p, want) in &acked.commits {
        let got = now.get(p).copied().unwrap_or(-1);
        assert!(
            got >= *want,
            "cycle {cycle}: partition {p} committed {want} (acknowledged), now {got}"
        );
    }
    let mut sock = connect(addr).expect("connect");
    let pid = producer_id(&mut sock).expect("InitProducerId answered");
    let max = acked.producer_ids.iter().max().copied().unwrap_or(-1);
    assert!(
        pid > max,
        "cycle {cycle}: producer id {pid} handed out again (had {max})"
    );
}

/// A tiny deterministic random source (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn start_broker(data: &Path, format: &str) -> BinaryBroker {
    BinaryBroker::start_with(
        data,
        &[
            "--storage-format",
            format,
            "--segment-mb",
            "1",
            "--min-free-bytes",
            "0",
        ],
    )
}

async fn power_cut_loop(format: &str) {
    let cuts: usize = std::env::var("FINSTREAM_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let root = tempfile::tempdir().unwrap();
    let (backing, mnt) = (root.path().join("disk"), root.path().join("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let data = mnt.join("data");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let txns = Arc::new(Mutex::new(power_cut_txn::Txns::default()));
    let mut rng = Rng(0x5eed_0000 + format.len() as u64);
    let (mut lost, mut partial) = (0u64, 0);
    let started = Instant::now();
    let mut fs = LazyFs::mount(&backing, &mnt)
        .expect("mount the lazy filesystem (needs root and /dev/fuse; CI runs as root)");
    let mut broker = start_broker(&data, format);
    create_topic(&broker.addr, TOPIC, PARTITIONS).await;
    create_topic(&broker.addr, power_cut_txn::TOPIC, 2).await;
    acked.lock().unwrap().topics.push(TOPIC.into());
    for cycle in 0..cuts {
        let stop = Arc::new(AtomicBool::new(false));
        let producing = tokio::spawn(produce_load(
            broker.addr.clone(),
            cycle,
            stop.clone(),
            acked.clone(),
        ));
        let (addr, s, a) = (broker.addr.clone(), stop.clone(), acked.clone());
        let meta = std::thread::spawn(move || metadata_load(addr, cycle, s, a));
        let (addr, s, t) = (broker.addr.clone(), stop.clone(), txns.clone());
        let transactional = std::thread::spawn(move || power_cut_txn::load(addr, cycle, s, t));
        tokio::time::sleep(Duration::from_millis(150 + rng.below(900))).await;
        // The power goes: the broker dies, unsynced writes are lost.
        broker.kill9();
        stop.store(true, Ordering::Relaxed);
        // Deliveries not reported by now are unknown: drop the producer (purging them).
        producing.abort();
        let _ = producing.await;
        let _ = meta.join();
        let _ = transactional.join();
        let cut = if cycle % 2 == 0 {
            Cut::drop_all()
        } else {
            partial += 1;
            Cut {
                writeback_ratio: 0.5,
                seed: rng.below(u64::MAX),
            }
        };
        lost += fs.power_cut(cut).expect("power cut").lost_bytes;
        fs = LazyFs::mount(&backing, &mnt).expect("remount");
        broker = start_broker(&data, format);
        let a = std::mem::take(&mut *acked.lock().unwrap());
        check(&broker.addr, &a, cycle).await;
        *acked.lock().unwrap() = a;
        let t = std::mem::take(&mut *txns.lock().unwrap());
        power_cut_txn::check(&broker.addr, &t, cycle).await;
        *txns.lock().unwrap() = t;
    }
    let a = acked.lock().unwrap();
    let t = txns.lock().unwrap();
    eprintln!(
        "power cuts ({format}): transactions: {} committed (acknowledged), {} aborted, {} commits under way at a cut",
        t.committed.len(),
        t.aborted.len(),
        t.commit_asked.len() - t.committed.len()
    );
    assert!(!t.committed.is_empty(), "no transaction committed");
    eprintln!(
        "power cuts ({format}): {cuts} cuts ({partial} with half the unsynced pages written \
         back) in {:.0} s; {} messages acknowledged of {} sent, {} offset commits, \
         {} topics created, {} producer ids; {} KiB of unsynced writes lost; all acknowledged \
         data present after every cut",
        started.elapsed().as_secs_f64(),
        a.messages.len(),
        a.sent.len(),
        a.commits.values().max().unwrap_or(&0),
        a.topics.len(),
        a.producer_ids.len(),
        lost / 1024
    );
    assert!(!a.messages.is_empty() && !a.topics.is_empty() && !a.producer_ids.is_empty());
    drop(broker);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_nothing_acknowledged_segment_files() {
    power_cut_loop("segments").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_nothing_acknowledged_sled_store() {
    power_cut_loop("sled").await;
}
