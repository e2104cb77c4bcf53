//! Transactions: the same librdkafka producer idempotent, then transactional with
//! transactions of `--txn-messages` messages (commit latency per transaction); then the
//! transactional topic read back read_uncommitted and read_committed (no aborted
//! transactions: the two should cost the same).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::percentile;

/// `linger.ms` of both producers (env `LINGER_MS`, default 5 as in the broker bench).
fn linger_ms() -> String {
    std::env::var("LINGER_MS").unwrap_or_else(|_| "5".into())
}

/// A `BaseProducer` polled by the sending thread (as confluent-kafka applications do).
fn producer(bootstrap: &str, transactional_id: Option<&str>) -> anyhow::Result<BaseProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    Ok(c.create()?)
}

fn send(p: &BaseProducer, topic: &str, payload: &[u8]) {
    let mut record = BaseRecord::<(), [u8]>::to(topic).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => {
                p.poll(Duration::ZERO);
                return;
            }
            Err((_, back)) => {
                record = back;
                p.poll(Duration::from_millis(1));
            }
        }
    }
}

/// Waits until every message sent is acknowledged, serving delivery reports in 1 ms rounds
/// (the rdkafka crate's flush polls in whole 100 ms rounds).
fn drain(p: &BaseProducer) {
    while p.in_flight_count() > 0 {
        p.poll(Duration::from_millis(1));
    }
}

/// librdkafka's own commit, as confluent-kafka and C applications call it: it flushes with
/// `linger.ms` cut short, then EndTxn. (The rdkafka crate's `commit_transaction` runs its
/// own flush first, which polls in whole 100 ms rounds.) Delivery reports are served
/// meanwhile by polling from a second thread.
#[allow(unsafe_code)] // librdkafka's C API
fn commit(p: &BaseProducer) -> anyhow::Result<()> {
    let native = p.client().native_ptr() as usize;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                p.poll(Duration::from_millis(1));
            }
        });
        // SAFETY: `native` is the live handle of `p`, which outlives this call; librdkafka
        // allows commit_transaction from one thread while another polls.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_commit_transaction(
                native as *mut rdkafka::bindings::rd_kafka_t,
                60_000,
            )
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        if error.is_null() {
            Ok(())
        } else {
            // SAFETY: a non-null result is an error object we own and release once read.
            let msg = unsafe {
                let text =
                    std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_error_string(error))
                        .to_string_lossy()
                        .into_owned();
                rdkafka::bindings::rd_kafka_error_destroy(error);
                text
            };
            bail!("commit_transaction: {msg}")
        }
    })
}

/// Seconds to produce `n` messages idempotently until all are acknowledged.
fn idempotent(bootstrap: &str, topic: &str, n: u64, payload: &[u8]) -> anyhow::Result<f64> {
    let p = producer(bootstrap, None)?;
    let t = Instant::now();
    for _ in 0..n {
        send(&p, topic, payload);
    }
    drain(&p);
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds to produce `n` messages in transactions of `per_txn`, and each commit's
/// latency in microseconds.
fn transactional(
    bootstrap: &str,
    topic: &str,
    n: u64,
    per_txn: u64,
    payload: &[u8],
) -> anyhow::Result<(f64, Vec<u64>)> {
    let p = producer(bootstrap, Some("bench-txn"))?;
    p.init_transactions(Duration::from_secs(30))?;
    let t = Instant::now();
    let mut commits = Vec::new();
    let mut sent = 0;
    while sent < n {
        p.begin_transaction()?;
        let this = per_txn.min(n - sent);
        for _ in 0..this {
            send(&p, topic, payload);
        }
        let c = Instant::now();
        commit(&p)?;
        commits.push(c.elapsed().as_micros() as u64);
        sent += this;
    }
    Ok((t.elapsed().as_secs_f64(), commits))
}

/// Seconds to read `n` records of `topic` from the start at `isolation`.
fn read(bootstrap: &str, topic: &str, n: u64, isolation: &str) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-txn-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => bail!("consume: {e}"),
            None => bail!("consume stalled at {got} of {n}"),
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The whole measurement, as one JSON object.
pub fn run(
    bootstrap: &str,
    topic: &str,
    n: u64,
    size: usize,
    per_txn: u64,
) -> anyhow::Result<serde_json::Value> {
    let payload = vec![b'x'; size];
    let (idem_topic, txn_topic) = (format!("{topic}-idem"), format!("{topic}-txn"));
    let idem_secs = idempotent(bootstrap, &idem_topic, n, &payload).context("idempotent")?;
    let (txn_secs, mut commits) =
        transactional(bootstrap, &txn_topic, n, per_txn, &payload).context("transactional")?;
    commits.sort_unstable();
    let uncommitted = read(bootstrap, &txn_topic, n, "read_uncommitted")?;
    let committed = read(bootstrap, &txn_topic, n, "read_committed")?;
    let rate = |secs: f64| n as f64 / secs;
    Ok(serde_json::json!({
        "messages": n,
        "size": size,
        "txn_messages": per_txn,
        "idempotent_msgs_per_sec": rate(idem_secs),
        "transactional_msgs_per_sec": rate(txn_secs),
        "transactional_vs_idempotent": idem_secs / txn_secs,
        "commits": commits.len(),
        "commit_p50_ms": percentile(&commits, 0.5) as f64 / 1000.0,
        "commit_p99_ms": percentile(&commits, 0.99) as f64 / 1000.0,
        "read_uncommitted_msgs_per_sec": rate(uncommitted),
        "read_committed_msgs_per_sec": rate(committed),
    }))
}
