//! Compaction: fill a topic with keyed records (a given share of distinct keys), and
//! measure a trickle producer's acknowledgement latency (acks=all) while the broker's
//! housekeeping (the cleaner, retention) runs or not.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::percentile;

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> anyhow::Result<BaseProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("acks", "all");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    Ok(c.create()?)
}

/// Writes `bytes` of records of `value_bytes` bytes whose keys cycle through
/// `bytes / record size * distinct` distinct keys (in a scattered order), stamped
/// `age_ms` in the past; prints counts and the rate.
pub fn fill(
    bootstrap: &str,
    topic: &str,
    (bytes, value_bytes, distinct): (u64, usize, f64),
    (codec, age_ms): (&str, i64),
) -> anyhow::Result<String> {
    let p = producer(
        bootstrap,
        &[
            ("linger.ms", "20"),
            ("batch.size", "1000000"),
            ("compression.type", codec),
            ("queue.buffering.max.messages", "500000"),
        ],
    )?;
    let records = bytes / (value_bytes as u64 + 24);
    let keys = ((records as f64 * distinct) as u64).max(1);
    let value = vec![b'v'; value_bytes];
    let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - age_ms;
    let started = Instant::now();
    for i in 0..records {
        // 1_000_003 is prime and larger than any key count used: a scattered order
        let key = format!("key-{:012}", (i.wrapping_mul(1_000_003)) % keys);
        let mut r = BaseRecord::<str, [u8]>::to(topic)
            .key(&key)
            .payload(&value)
            .timestamp(ts);
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(5));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(300))?;
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "records": records, "keys": keys, "value_bytes": value_bytes, "codec": codec,
        "seconds": secs, "records_per_s": records as f64 / secs,
    })
    .to_string())
}

/// Sends `rate` messages a second for `seconds`, one at a time, and reports the time from
/// send to acknowledgement; `dump` gets one `send_unix_ms latency_us` line per message.
pub fn trickle(
    bootstrap: &str,
    topic: &str,
    (rate, seconds): (u64, u64),
    dump: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let p = producer(bootstrap, &[("linger.ms", "0")])?;
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let payload = vec![b'x'; 100];
    let mut micros = Vec::with_capacity((rate * seconds) as usize);
    let mut lines = String::new();
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let sent = Instant::now();
        if p.send(BaseRecord::<(), [u8]>::to(topic).payload(&payload))
            .is_err()
        {
            bail!("queue full");
        }
        while p.in_flight_count() > 0 {
            p.poll(Duration::from_micros(200));
        }
        let us = sent.elapsed().as_micros() as u64;
        micros.push(us);
        if dump.is_some() {
            let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            lines.push_str(&format!("{at} {us}\n"));
        }
    }
    if let Some(path) = dump {
        std::fs::write(path, lines)?;
    }
    micros.sort_unstable();
    Ok(serde_json::json!({
        "messages": micros.len(), "rate": rate,
        "p50_us": percentile(&micros, 0.50), "p99_us": percentile(&micros, 0.99),
        "max_us": micros.last().copied().unwrap_or(0),
    })
    .to_string())
}
