//! End-to-end latency: a librdkafka producer sends RATE messages a second (acks=all,
//! linger.ms=0), a librdkafka consumer in the same process reads them; each message's
//! latency is from just before `send` to the consumer's `poll` returning it. Optionally a
//! second producer adds a background load to another topic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::percentile;

/// What to measure: RATE messages of SIZE bytes a second for SECONDS, beside LOAD_RATE
/// messages a second of background load (0: none).
pub struct Shape {
    pub rate: u64,
    pub seconds: u64,
    pub size: usize,
    pub load_rate: u64,
}

fn producer(
    bootstrap: &str,
    linger_ms: &str,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .create()?)
}

/// Sends one message and waits until it is acknowledged: the topic exists afterwards.
fn create_by_sending(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
) -> anyhow::Result<()> {
    p.send(BaseRecord::<(), _>::to(topic).payload("warm up"))
        .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Runs the measurement against `bootstrap`; prints nothing, returns the JSON result.
pub fn run(bootstrap: &str, topic: &str, shape: &Shape) -> anyhow::Result<serde_json::Value> {
    let total = (shape.rate * shape.seconds) as usize;
    let p = producer(bootstrap, "0")?;
    create_by_sending(&p, topic)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("e2e-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)?;
    consumer.assign(&tpl)?;
    warm_up(&p, &consumer, topic)?;

    let load_topic = format!("{topic}-load");
    let stop = Arc::new(AtomicBool::new(false));
    let load = (shape.load_rate > 0)
        .then(|| spawn_load(bootstrap, &load_topic, shape.load_rate, stop.clone()))
        .transpose()?;

    let epoch = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let sender = {
        let (sent, topic, rate, size) = (sent.clone(), topic.to_string(), shape.rate, shape.size);
        thread::spawn(move || send_paced(&p, &topic, (rate, size), &sent, epoch))
    };
    let mut micros = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(shape.seconds + 30);
    while micros.len() < total && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let now = epoch.elapsed().as_nanos() as u64;
        let m = m.context("consume")?;
        let Some(i) = m
            .payload()
            .and_then(|b| b.get(..8))
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8])) as usize)
        else {
            continue;
        };
        if let Some(at) = sent.get(i).map(|s| s.load(Ordering::Acquire)) {
            micros.push(now.saturating_sub(at) / 1000);
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    stop.store(true, Ordering::Release);
    let load_sent = match load {
        Some(h) => h.join().map_err(|_| anyhow::anyhow!("load panicked"))??,
        None => 0,
    };
    let received = micros.len();
    micros.sort_unstable();
    let ms = |q: f64| percentile(&micros, q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "rate": shape.rate, "seconds": shape.seconds, "size": shape.size,
        "load_rate": shape.load_rate, "load_sent": load_sent,
        "sent": total, "received": received,
        "p50_ms": ms(0.50), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": micros.last().copied().unwrap_or(0) as f64 / 1000.0,
    }))
}

/// Sends until the consumer, assigned at the end, reads one back: it is fetching.
fn warm_up(
    p: &ThreadedProducer<DefaultProducerContext>,
    consumer: &BaseConsumer,
    topic: &str,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        p.send(BaseRecord::<(), _>::to(topic).payload("warm up"))
            .map_err(|(e, _)| e)?;
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m.context("consume")?;
            // drain what else the warm-up left
            while consumer.poll(Duration::from_millis(200)).is_some() {}
            return Ok(());
        }
    }
    bail!("the consumer read nothing in 30 s")
}

/// Sends message `i` (its index in the first 8 bytes) at `i / rate` s, recording when.
fn send_paced(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    (rate, size): (u64, usize),
    sent: &[AtomicU64],
    epoch: Instant,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut payload = vec![b'x'; size.max(8)];
    for (i, slot) in sent.iter().enumerate() {
        let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
        slot.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
        p.send(BaseRecord::<(), _>::to(topic).payload(&payload))
            .map_err(|(e, _)| e)?;
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// A second producer (acks=all, librdkafka's default linger) sending `rate` messages of
/// 100 B a second to `topic`, a millisecond's worth at a time, until `stop`. Returns how
/// many it sent.
fn spawn_load(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<thread::JoinHandle<anyhow::Result<u64>>> {
    let p = producer(bootstrap, "5")?;
    create_by_sending(&p, topic)?;
    let topic = topic.to_string();
    Ok(thread::spawn(move || {
        let payload = [b'l'; 100];
        let start = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let due = (start.elapsed().as_micros() as u64).saturating_mul(rate) / 1_000_000;
            while n < due {
                match p.send(BaseRecord::<(), _>::to(&topic).payload(&payload[..])) {
                    Ok(()) => n += 1,
                    Err((e, _)) => bail!("load producer: {e}"),
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        p.flush(Duration::from_secs(30))?;
        Ok(n)
    }))
}
