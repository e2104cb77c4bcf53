//! The broker as a test fixture (`finstream_broker::testing::EmbeddedKafka`), as another
//! project's test suite uses it: start, create a topic, produce one message with
//! librdkafka and read it back, drop. Times each step and the process's RSS.

use std::time::{Duration, Instant};

use anyhow::Context;
use finstream_broker::testing::EmbeddedKafka;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// This process's resident memory, in KiB.
fn rss_kb() -> u64 {
    crate::load::rss_mib(Some(std::process::id())).map_or(0, |mib| (mib * 1024.0) as u64)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// One start → topic → one message round trip → drop; a JSON line per repetition.
pub fn run(reps: usize, broker_only: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for _ in 0..reps {
        let rss_before = rss_kb();
        let t0 = Instant::now();
        let kafka = EmbeddedKafka::start().context("start")?;
        let started = t0.elapsed();
        kafka
            .create_topic("fixture", 1)
            .map_err(anyhow::Error::msg)?;
        if broker_only {
            drop(kafka);
            let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            println!(
                "{}",
                json!({ "start_ms": ms(started), "rss_kb": rss_kb(), "threads": threads, "fds": fds })
            );
            continue;
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            .set("linger.ms", "0")
            .create()?;
        // Waits for the delivery report itself (a flush() would poll in 100 ms rounds).
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to("fixture").payload("hello"),
            Duration::from_secs(10),
        ))
        .map_err(|(e, _)| e)?;
        let records = kafka.records("fixture", 0).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(records.len() == 1, "read back {} records", records.len());
        let round_trip = t0.elapsed();
        let rss_running = rss_kb();
        drop(producer);
        let t1 = Instant::now();
        drop(kafka);
        let dropped = t1.elapsed();
        println!(
            "{}",
            json!({
                "start_ms": ms(started),
                "first_message_ms": ms(round_trip),
                "drop_ms": ms(dropped),
                "rss_growth_kb": rss_running.saturating_sub(rss_before),
                "rss_kb": rss_running,
            })
        );
    }
    Ok(())
}
