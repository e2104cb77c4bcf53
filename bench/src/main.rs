//! Benchmark drivers. Each subcommand prints one JSON object with its measurements; the
//! scripts in `bench/` run them against finstream and its peers and build the tables in
//! docs/BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

mod compaction;
mod e2e;
mod fixture;
mod load;
mod requests;
mod txn;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce N messages of S bytes with one librdkafka producer, then read them all back.
    Kafka {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// 1 or all
        #[arg(long, default_value = "all")]
        acks: String,
        #[arg(long)]
        idempotent: bool,
    },
    /// A well-behaved producer alone, then beside idle connections, a slowloris sender and
    /// other producers (docs/RELIABILITY.md).
    Load {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "load")]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        #[arg(long, default_value_t = 50)]
        producers: usize,
        /// Messages per second of each of the other producers.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The broker's pid, to report its RSS.
        #[arg(long)]
        broker_pid: Option<u32>,
    },
    /// finstream's broker on its in-memory store (no disk, nothing durable): the ceiling of
    /// our protocol and server code, to tell their cost from the durable store's. Runs until SIGTERM/Ctrl-C.
    MemoryBroker {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// `EmbeddedKafka` as a test fixture: start, one message round trip, drop; REPS times.
    Fixture {
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Start and drop only (no client).
        #[arg(long)]
        broker_only: bool,
    },
    /// A fixed sequence of Produce then Fetch requests, for instruction counts.
    Requests {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "instructions")]
        topic: String,
        #[arg(long)]
        produce: usize,
        #[arg(long, default_value_t = 0)]
        fetch: usize,
    },
    /// Create a topic (some brokers, like Tansu, do not auto-create).
    CreateTopic {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// The same producer idempotent, then in transactions of TXN_MESSAGES; commit latency;
    /// the transactional topic read read_uncommitted and read_committed.
    Txn {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "bench")]
        topic: String,
        #[arg(long, default_value_t = 500_000)]
        messages: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        txn_messages: u64,
    },
    /// Fill a topic with keyed records: BYTES in total, a DISTINCT share of distinct keys.
    CompactFill {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000_000)]
        bytes: u64,
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        #[arg(long, default_value_t = 0.1)]
        distinct: f64,
        #[arg(long, default_value = "none")]
        codec: String,
        /// Record timestamps this far in the past (ms), for retention.
        #[arg(long, default_value_t = 0)]
        age_ms: i64,
    },
    /// RATE messages a second, one at a time (acks=all): send-to-acknowledgement latency.
    Trickle {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Write `send_unix_ms latency_us` per message here.
        #[arg(long)]
        dump: Option<std::path::PathBuf>,
    },
    /// RATE messages a second (acks=all, linger 0): time from send until a librdkafka
    /// consumer receives each, optionally beside LOAD_RATE messages a second of other load.
    E2e {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "e2e")]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        load_rate: u64,
    },
    /// A trickle of messages; time from send to the row committed in PostgreSQL.
    Latency {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value = "transactions")]
        table: String,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

struct Latencies {
    sent_at: Mutex<Vec<Option<Instant>>>,
    micros: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

impl ClientContext for Latencies {}

impl ProducerContext for Latencies {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, i: usize) {
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = self
            .sent_at
            .lock()
            .map(|v| v.get(i).copied().flatten())
            .ok()
            .flatten();
        if let (Some(t), Ok(mut m)) = (sent, self.micros.lock()) {
            m.push(t.elapsed().as_micros() as u64);
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn kafka(
    bootstrap: &str,
    topic: &str,
    n: u64,
    size: usize,
    acks: &str,
    idempotent: bool,
) -> anyhow::Result<serde_json::Value> {
    let (produce_secs, failed, lat) = produce_phase(bootstrap, topic, n, size, acks, idempotent)?;
    let (consume_secs, bytes) = consume_phase(bootstrap, topic, n)?;
    let mb = (n as f64 * size as f64) / 1e6;
    Ok(serde_json::json!({
        "messages": n, "size": size, "acks": acks, "idempotent": idempotent, "failed": failed,
        "produce_msgs_per_s": n as f64 / produce_secs, "produce_mb_per_s": mb / produce_secs,
        "produce_p50_ms": percentile(&lat, 0.50) as f64 / 1000.0,
        "produce_p99_ms": percentile(&lat, 0.99) as f64 / 1000.0,
        "consume_msgs_per_s": n as f64 / consume_secs, "consume_mb_per_s": bytes as f64 / 1e6 / consume_secs,
    }))
}

/// Produces `n` messages of `size` bytes: seconds taken, deliveries failed, and the sorted
/// per-message latencies in microseconds.
fn produce_phase(
    bootstrap: &str,
    topic: &str,
    n: u64,
    size: usize,
    acks: &str,
    idempotent: bool,
) -> anyhow::Result<(f64, u64, Vec<u64>)> {
    let ctx = Latencies {
        sent_at: Mutex::new(vec![None; n as usize]),
        micros: Mutex::new(Vec::with_capacity(n as usize)),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<Latencies> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("enable.idempotence", idempotent.to_string())
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(ctx)?;
    let payload = vec![b'x'; size];
    let start = Instant::now();
    for i in 0..n as usize {
        if let Ok(mut s) = producer.context().sent_at.lock() {
            s[i] = Some(Instant::now());
        }
        let mut rec = BaseRecord::with_opaque_to(topic, i)
            .payload(&payload[..])
            .key("");
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(600))?;
    let produce_secs = start.elapsed().as_secs_f64();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    let mut lat = producer
        .context()
        .micros
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    Ok((produce_secs, failed, lat))
}

/// Reads the `n` messages back from the beginning: seconds taken and payload bytes.
fn consume_phase(bootstrap: &str, topic: &str, n: u64) -> anyhow::Result<(f64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // librdkafka stops fetching a partition for fetch.queue.backoff.ms (1 s by default)
        // whenever its local queue holds more than queued.min.messages (100k): with 100 B
        // messages one 10 MiB fetch does that, and the 1 s pauses, 0 to 4 of them per run,
        // made consume rates vary 10x whatever the broker. The same for every broker.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let mut got = 0u64;
    let mut bytes = 0u64;
    while got < n {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => {
                got += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => bail!("consume: {e}"),
            None => bail!("consume stalled at {got} of {n}"),
        }
    }
    Ok((start.elapsed().as_secs_f64(), bytes))
}

async fn latency(
    bootstrap: &str,
    topic: &str,
    url: &str,
    table: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect")?;
    tokio::spawn(conn);
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()?;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let total = rate * seconds;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start_id: i64 = client
        .query_one(
            &format!("SELECT COALESCE(max(id), 0)::bigint FROM {table}"),
            &[],
        )
        .await?
        .get(0);
    let sender = spawn_sender(producer, topic, sent.clone(), run_id, rate, total);
    let (seen, found) =
        poll_arrivals(&client, table, start_id, &sent, run_id, total, seconds).await?;
    sender.await??;
    let mut ms: Vec<u64> = seen
        .iter()
        .flatten()
        .map(|d| d.as_micros() as u64)
        .collect();
    ms.sort_unstable();
    Ok(serde_json::json!({
        "rate": rate, "seconds": seconds, "sent": total, "arrived": found,
        "p50_ms": percentile(&ms, 0.50) as f64 / 1000.0,
        "p99_ms": percentile(&ms, 0.99) as f64 / 1000.0,
        "max_ms": ms.last().copied().unwrap_or(0) as f64 / 1000.0,
    }))
}

/// Sends `total` messages at `rate` per second, recording when each was sent.
fn spawn_sender(
    producer: rdkafka::producer::FutureProducer,
    topic: &str,
    sent: Arc<Mutex<Vec<Instant>>>,
    run_id: u128,
    rate: u64,
    total: u64,
) -> tokio::task::JoinHandle<rdkafka::error::KafkaResult<()>> {
    let topic = topic.to_string();
    tokio::spawn(async move {
        let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
        let mut tick = tokio::time::interval(interval);
        for i in 0..total {
            tick.tick().await;
            let payload = format!("{{\"description\": \"lat {run_id} {i}\", \"amount\": 0.5}}");
            if let Ok(mut s) = sent.lock() {
                s.push(Instant::now());
            }
            let _ = producer.send_result(
                rdkafka::producer::FutureRecord::<(), _>::to(&topic).payload(&payload),
            );
        }
        producer.flush(Duration::from_secs(30))
    })
}

/// Polls the table every millisecond until all `total` rows arrived or the deadline: each
/// row's latency is when it is first seen committed. Returns the latencies and the count.
async fn poll_arrivals(
    client: &tokio_postgres::Client,
    table: &str,
    start_id: i64,
    sent: &Mutex<Vec<Instant>>,
    run_id: u128,
    total: u64,
    seconds: u64,
) -> anyhow::Result<(Vec<Option<Duration>>, u64)> {
    let mut seen = vec![None::<Duration>; total as usize];
    let mut last_id = start_id;
    let mut found = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    let prefix = format!("lat {run_id} ");
    while found < total && Instant::now() < deadline {
        let rows = client
            .query(
                &format!(
                    // `id > $1::bigint` can use the primary key (a cast of the column
                    // cannot): polling must not slow down as the table grows.
                    "SELECT id::bigint, description FROM {table} WHERE id > $1::bigint ORDER BY id"
                ),
                &[&last_id],
            )
            .await?;
        let now = Instant::now();
        for r in rows {
            last_id = r.get(0);
            let d: String = r.get(1);
            if let Some(i) = d
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<usize>().ok())
            {
                let sent_at = sent.lock().ok().and_then(|s| s.get(i).copied());
                if let (Some(t), Some(slot)) = (sent_at, seen.get_mut(i)) {
                    if slot.is_none() {
                        *slot = Some(now.duration_since(t));
                        found += 1;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((seen, found))
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        if let Err((t, e)) = r {
            bail!("create topic {t}: {e}");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Fixture { reps, broker_only } => fixture::run(reps, broker_only)?,
        Cmd::Requests {
            bootstrap,
            topic,
            produce,
            fetch,
        } => requests::run(&bootstrap, &topic, produce, fetch)?,
        Cmd::Load {
            bootstrap,
            topic,
            idle,
            producers,
            rate,
            seconds,
            broker_pid,
        } => {
            println!(
                "{}",
                load::run(&bootstrap, &topic, idle, producers, rate, seconds, broker_pid)?
            );
        }
        Cmd::MemoryBroker { listen } => {
            tokio::runtime::Runtime::new()?.block_on(async {
                let broker = finstream_broker::start(finstream_broker::BrokerConfig {
                    listen,
                    data_dir: None,
                    ..Default::default()
                })
                .await?;
                println!("{}", broker.bootstrap_servers());
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                broker.shutdown().await?;
                anyhow::Ok(())
            })?;
        }
        Cmd::CreateTopic {
            bootstrap,
            topic,
            partitions,
        } => {
            tokio::runtime::Runtime::new()?
                .block_on(create_topic(&bootstrap, &topic, partitions))?;
        }
        Cmd::Kafka {
            bootstrap,
            topic,
            messages,
            size,
            acks,
            idempotent,
        } => {
            println!(
                "{}",
                kafka(&bootstrap, &topic, messages, size, &acks, idempotent)?
            );
        }
        Cmd::CompactFill {
            bootstrap,
            topic,
            bytes,
            value_bytes,
            distinct,
            codec,
            age_ms,
        } => {
            let shape = (bytes, value_bytes, distinct);
            let res = compaction::fill(&bootstrap, &topic, shape, (&codec, age_ms))?;
            println!("{res}");
        }
        Cmd::Trickle {
            bootstrap,
            topic,
            rate,
            seconds,
            dump,
        } => {
            let res = compaction::trickle(&bootstrap, &topic, (rate, seconds), dump.as_deref())?;
            println!("{res}");
        }
        Cmd::Txn {
            bootstrap,
            topic,
            messages,
            size,
            txn_messages,
        } => {
            println!(
                "{}",
                txn::run(&bootstrap, &topic, messages, size, txn_messages)?
            );
        }
        Cmd::E2e {
            bootstrap,
            topic,
            rate,
            seconds,
            size,
            load_rate,
        } => {
            let shape = e2e::Shape {
                rate,
                seconds,
                size,
                load_rate,
            };
            println!("{}", e2e::run(&bootstrap, &topic, &shape)?);
        }
        Cmd::Latency {
            bootstrap,
            topic,
            database_url,
            table,
            rate,
            seconds,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            println!(
                "{}",
                rt.block_on(latency(
                    &bootstrap,
                    &topic,
                    &database_url,
                    &table,
                    rate,
                    seconds
                ))?
            );
        }
    }
    Ok(())
}
