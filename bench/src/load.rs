//! `finstream-bench load`: a well-behaved producer's throughput alone, then beside IDLE idle
//! connections, one slowloris sender and PRODUCERS other producers; the broker's RSS at each
//! step (docs/RELIABILITY.md).

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

struct Acks(AtomicU64, AtomicU64);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn producer(bootstrap: &str) -> anyhow::Result<ThreadedProducer<Acks>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .create_with_context(Acks(AtomicU64::new(0), AtomicU64::new(0)))?)
}

/// Sends 100-byte messages as fast as librdkafka takes them (or `rate` per second) until
/// `stop`; returns (acknowledged, failed).
fn send_until(
    p: &ThreadedProducer<Acks>,
    topic: &str,
    rate: Option<u64>,
    stop: &AtomicBool,
) -> (u64, u64) {
    let payload = [b'x'; 100];
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
        }
        let mut rec = BaseRecord::to(topic).payload(&payload[..]).key("");
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        sent += 1;
    }
    let _ = p.flush(Duration::from_secs(60));
    let c = p.context();
    (c.0.load(Ordering::Relaxed), c.1.load(Ordering::Relaxed))
}

/// The measured producer for `seconds`: acknowledged messages per second.
fn measure(bootstrap: &str, topic: &str, seconds: u64) -> anyhow::Result<(f64, u64)> {
    let p = producer(bootstrap)?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (acked, failed) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::Relaxed);
        });
        send_until(&p, topic, None, &stop)
    });
    Ok((acked as f64 / start.elapsed().as_secs_f64(), failed))
}

/// Resident memory of process `pid`, in MiB.
pub(crate) fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Sends one 100-byte message per Produce request (acks=-1) at `rate` requests per second
/// until `stop`; returns (acknowledged, failed).
fn raw_producer(addr: &str, topic: &str, rate: u64, stop: &AtomicBool) -> (u64, u64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let Ok(mut sock) = TcpStream::connect(addr) else {
        return (0, 0);
    };
    let _ = sock.set_nodelay(true);
    let batch = bytes::Bytes::from(finstream_broker::batch::uncompressed_batch(
        &[&[b'x'; 100]],
        0,
        0,
        finstream_broker::batch::NO_PRODUCER,
    ));
    let (mut acked, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        sent += 1;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.clone()))])]);
        let ok = crate::requests::frame(ApiKey::Produce, 9, sent as i32, &req)
            .and_then(|f| crate::requests::call(&mut sock, &f, ApiKey::Produce, 9))
            .ok()
            .and_then(|mut buf| ProduceResponse::decode(&mut buf, 9).ok())
            .is_some_and(|r| {
                r.responses
                    .iter()
                    .all(|t| t.partition_responses.iter().all(|p| p.error_code == 0))
            });
        if ok {
            acked += 1;
        } else {
            failed += 1;
        }
    }
    (acked, failed)
}

/// User + system CPU seconds the process has used so far.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn run(
    bootstrap: &str,
    topic: &str,
    idle: usize,
    producers: usize,
    rate: u64,
    seconds: u64,
    broker_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let rss_start = rss_mib(broker_pid);
    let (solo, solo_failed) = measure(bootstrap, topic, seconds)?;
    let rss_after_solo = rss_mib(broker_pid);
    let cpu_start = cpu_seconds(broker_pid);

    // The hostile crowd: idle sockets, a slowloris trickling one request byte per second,
    // and paced producers on another topic.
    let addr = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut idle_socks = Vec::with_capacity(idle);
    for _ in 0..idle {
        idle_socks.push(TcpStream::connect(addr)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_mib(broker_pid);
    let stop = Arc::new(AtomicBool::new(false));
    let slow_stop = stop.clone();
    let slow_addr = addr.to_string();
    let slowloris = std::thread::spawn(move || -> u64 {
        let Ok(mut s) = TcpStream::connect(&slow_addr) else {
            return 0;
        };
        let mut frame = 1000i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0u8; 1000]);
        let mut written = 0;
        for b in frame {
            if slow_stop.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                break;
            }
            written += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        written
    });
    // The other producers speak the protocol directly (one blocking thread each, one
    // 100-byte message per acks=all request, paced): all of their cost lands on the broker,
    // not on the load generator, which shares the machine's cores with it.
    let noise_topic = format!("{topic}-noise");
    let mut noise = Vec::new();
    for _ in 0..producers {
        let (stop, t, a) = (stop.clone(), noise_topic.clone(), addr.to_string());
        noise.push(std::thread::spawn(move || {
            raw_producer(&a, &t, rate, &stop)
        }));
    }
    std::thread::sleep(Duration::from_secs(2)); // let them connect and settle
    let rss_loaded_before = rss_mib(broker_pid);
    let (loaded, loaded_failed) = measure(bootstrap, topic, seconds)?;
    let rss_loaded = rss_mib(broker_pid);
    let broker_cpu = match (cpu_start, cpu_seconds(broker_pid)) {
        (Some(a), Some(b)) => Some((b - a) / (seconds as f64 + 2.0)),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    let mut noise_acked = 0;
    let mut noise_failed = 0;
    for h in noise {
        if let Ok((a, f)) = h.join() {
            noise_acked += a;
            noise_failed += f;
        }
    }
    let slow_bytes = slowloris.join().unwrap_or(0);
    drop(idle_socks);
    Ok(serde_json::json!({
        "idle_connections": idle, "producers": producers, "producer_rate": rate, "seconds": seconds,
        "solo_msgs_per_s": solo, "loaded_msgs_per_s": loaded, "slowdown": solo / loaded.max(1e-9),
        "failed": solo_failed + loaded_failed, "noise_acked": noise_acked, "noise_failed": noise_failed,
        "slowloris_bytes_sent": slow_bytes,
        "broker_rss_mib": {"start": rss_start, "after_solo": rss_after_solo, "with_idle_connections": rss_idle, "under_load_start": rss_loaded_before, "under_load_end": rss_loaded},
        "broker_cores_busy_under_load": broker_cpu,
    }))
}
