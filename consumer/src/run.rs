//! The consumer loop: Kafka messages -> batches -> one PostgreSQL transaction each.
//!
//! Exactly once: PostgreSQL's `finstream_offsets` table is the truth. A batch's rows, its
//! dead letters and the next offset of each of its partitions are committed together, the
//! offsets by compare-and-set so a consumer that lost a partition in a rebalance cannot
//! overwrite its new owner's progress. Messages below the stored offset are skipped (and the
//! partition is sought forward), so wherever Kafka restarts the group, nothing is loaded
//! twice. Kafka's own group commit follows the PostgreSQL commit and only feeds lag tools.
//! When PostgreSQL fails (down, restarting, an ambiguous COMMIT), the batch is dropped, fetching
//! pauses, the connection is retried with capped exponential backoff, and every partition is
//! sought back to the offset PostgreSQL actually holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::db::{self, Advance, CopyRows, DbError, DeadLetter, Sink, TableName, Written};
use crate::message;
use crate::stats::Stats;

/// Everything a consumer run needs.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Topic to load.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// PostgreSQL connection settings.
    pub pg: tokio_postgres::Config,
    /// Target table (`NAME` or `SCHEMA.NAME`).
    pub table: String,
    /// A batch closes at this many messages...
    pub batch_size: usize,
    /// ...or this long after its first message, whichever comes first.
    pub batch_timeout: Duration,
    /// librdkafka properties, applied after our defaults.
    pub kafka_properties: Vec<(String, String)>,
    /// Exit once everything up to the high watermarks seen at start is loaded.
    pub stop_at_end: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Live counters, shared with metrics endpoints.
    pub stats: Arc<Stats>,
    /// Wait for each batch's COMMIT to reach PostgreSQL's disk (`synchronous_commit = on`).
    /// Off by default: rows and offsets still commit atomically, so a PostgreSQL crash can
    /// only lose whole recent batches *and their offsets* together, and they are loaded again
    /// from Kafka; a durable commit is made before the consumer exits.
    pub synchronous_commit: bool,
}

impl ConsumeConfig {
    /// Defaults for everything but the essentials.
    pub fn new(
        bootstrap_servers: &str,
        topic: &str,
        group: &str,
        pg: tokio_postgres::Config,
    ) -> Self {
        ConsumeConfig {
            bootstrap_servers: bootstrap_servers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            pg,
            table: "transactions".into(),
            batch_size: 5000,
            batch_timeout: Duration::from_millis(20),
            kafka_properties: Vec::new(),
            stop_at_end: false,
            max_backoff: Duration::from_secs(5),
            stats: Arc::default(),
            synchronous_commit: false,
        }
    }
}

/// Errors that end a consumer run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// PostgreSQL refused something retrying will not fix (table shape, permissions...).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Rows committed to the table.
    pub rows_loaded: u64,
    /// Poison messages committed to the dead-letter table.
    pub dead_letters: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Batches rolled back and retried (PostgreSQL errors or offset conflicts).
    pub retries: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.rows_loaded as f64 / self.seconds
        } else {
            0.0
        };
        write!(
            f,
            "rows loaded {}, dead letters {}, batches {}, retries {}, {:.2} s, {rate:.0} rows/s",
            self.rows_loaded, self.dead_letters, self.batches, self.retries, self.seconds
        )
    }
}

/// Target offsets: the run ends once PostgreSQL holds at least these for every partition.
pub type Targets = HashMap<i32, i64>;

struct Ctx {
    rebalanced: AtomicBool,
    stats: Arc<Stats>,
    /// PostgreSQL's next offset per partition as last read or committed by this process:
    /// where newly assigned partitions start (the beginning when unknown), whatever the
    /// group's committed Kafka offsets say (they may be ahead, e.g. for a fresh database).
    /// A stale entry behind the table is harmless (the compare-and-set refuses the batch);
    /// one ahead (asynchronous commits lost in a PostgreSQL crash) is replaced by what the
    /// table holds whenever the consumer repositions after a PostgreSQL failure.
    pg_positions: std::sync::Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics report (every `statistics.interval.ms`): the high watermark
    /// of each partition we hold, against what PostgreSQL holds, is the lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let known = self
            .pg_positions
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut lag = std::collections::BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || !part.desired || part.hi_offset < 0 {
                    continue;
                }
                let position = known.get(p).copied().unwrap_or(part.lo_offset.max(0));
                lag.insert(
                    (topic.clone(), *p),
                    crate::stats::PartitionLag {
                        position,
                        high_watermark: part.hi_offset,
                    },
                );
            }
        }
        self.stats.set_lag(lag);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let known = self
                    .pg_positions
                    .lock()
                    .map(|m| m.clone())
                    .unwrap_or_default();
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, p) in &parts {
                    let start = known
                        .get(p)
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    let _ = tpl.set_partition_offset(topic, *p, start);
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                self.post_rebalance(consumer, &Rebalance::Error(KafkaError::Rebalance(code)));
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!("applying the rebalance failed: {e}");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.stats.set_assigned(!parts.is_empty());
                tracing::info!(?parts, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.stats.set_assigned(false);
                tracing::info!(?parts, "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
        self.rebalanced.store(true, Ordering::Release);
    }
}

type KafkaConsumer = StreamConsumer<Ctx>;

#[derive(Default)]
struct Batch {
    rows: CopyRows,
    dead: Vec<DeadLetter>,
    advances: HashMap<i32, Advance>,
    started: Option<Instant>,
}

impl Batch {
    fn len(&self) -> usize {
        self.rows.len() + self.dead.len()
    }
}

struct Loader {
    cfg: ConsumeConfig,
    consumer: KafkaConsumer,
    /// The connection; lent to the task committing a batch while one is [`InFlight`].
    client: Option<Client>,
    sink: Arc<Sink>,
    /// The batch being committed while the next one is built.
    in_flight: Option<InFlight>,
    /// PostgreSQL's next offset per partition, as last read or written by us.
    positions: HashMap<i32, Option<i64>>,
    summary: Summary,
    /// Batches committed asynchronously that a PostgreSQL crash could still take back:
    /// (when, next offset per partition, rows, dead letters). Only for the counts reported.
    unconfirmed: std::collections::VecDeque<Unconfirmed>,
}

/// A batch whose transaction runs in its own task, so PostgreSQL works on batch N while this
/// consumer decodes batch N+1. At most one at a time: batches still commit in order.
struct InFlight {
    task: tokio::task::JoinHandle<(Client, Result<Written, DbError>)>,
    rows: usize,
    dead: usize,
    advances: HashMap<i32, Advance>,
    started: Instant,
}

/// A batch committed with `synchronous_commit = off`, kept for a while (PostgreSQL flushes
/// its WAL within 3 x `wal_writer_delay`, 600 ms by default).
struct Unconfirmed {
    at: Instant,
    next: HashMap<i32, i64>,
    rows: u64,
    dead: u64,
}

/// How long a batch stays [`Unconfirmed`].
const UNCONFIRMED_FOR: Duration = Duration::from_secs(30);

fn consumer(cfg: &ConsumeConfig, known: HashMap<i32, i64>) -> Result<KafkaConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        // librdkafka prefetches up to 64 MiB per consumer by default; a few batches suffice.
        .set("queued.max.messages.kbytes", "16384")
        // librdkafka's default 1 MiB per partition, at most 2 MiB per fetch. 8/16 MiB once
        // looked 38% faster, but that was the fetch pause below; with it fixed, 1 MiB loads
        // 1M rows in 2.4 s against 2.8-3.0 s and holds 69 MiB against 143 MiB
        // (docs/BENCHMARKS.md, 2026-11-30).
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.max.bytes", "2097152")
        // Once its queue holds more than queued.min.messages (100k), librdkafka stops
        // fetching and looks again after fetch.queue.backoff.ms, 1 s by default: the loader
        // drained the queue long before that and sat idle (the consumer used 22% of a core
        // and PostgreSQL waited). 10 ms keeps the queue fed.
        .set("fetch.queue.backoff.ms", "10")
        // Feeds the lag metrics (Ctx::stats).
        .set("statistics.interval.ms", "2000");
    for (k, v) in &cfg.kafka_properties {
        c.set(k, v);
    }
    let consumer: KafkaConsumer = c.create_with_context(Ctx {
        rebalanced: AtomicBool::new(false),
        stats: cfg.stats.clone(),
        pg_positions: std::sync::Mutex::new(known),
    })?;
    consumer.subscribe(&[&cfg.topic])?;
    Ok(consumer)
}

/// Connects to PostgreSQL, retrying with capped exponential backoff while it is unavailable
/// (or until shutdown, then `None`).
async fn connect_with_retry(
    cfg: &ConsumeConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Client>, DbError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = match db::connect(&cfg.pg).await {
            Ok(c) if cfg.synchronous_commit => Ok(c),
            Ok(c) => c
                .batch_execute("SET synchronous_commit = off")
                .await
                .map(|()| c)
                .map_err(DbError::from),
            Err(e) => Err(e),
        };
        match connected {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.is_transient() => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(None),
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
            Err(e) => return Err(e),
        }
    }
}

impl Loader {
    /// Whether a batch is still being committed (in flight and not finished).
    fn committing(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| !f.task.is_finished())
    }

    /// The connection, when no batch has it (call [`Loader::settle`] first).
    fn client(&self) -> Result<&Client, DbError> {
        self.client.as_ref().ok_or(DbError::Internal(
            "PostgreSQL connection used while lent to a commit",
        ))
    }

    /// Where PostgreSQL says `partition` is; loads all positions on a miss (the caller
    /// settles any batch in flight first).
    async fn position(&mut self, partition: i32) -> Result<Option<i64>, DbError> {
        if let Some(p) = self.positions.get(&partition) {
            return Ok(*p);
        }
        let stored = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?;
        let p = stored.get(&partition).copied();
        self.positions.insert(partition, p);
        Ok(p)
    }

    /// Seeks one partition; returns whether librdkafka accepted it.
    fn seek(&self, partition: i32, offset: Offset) -> bool {
        let r = tokio::task::block_in_place(|| {
            self.consumer
                .seek(&self.cfg.topic, partition, offset, Duration::from_secs(5))
        });
        if let Err(e) = &r {
            tracing::debug!(
                partition,
                "seek to {offset:?} failed (partition moved or not fetching yet?): {e}"
            );
        }
        r.is_ok()
    }

    /// Adds one message to the batch (or skips it if PostgreSQL already has it); `stored`
    /// is PostgreSQL's position of the partition (see [`Loader::position`]). The message is
    /// borrowed: a good row is encoded straight into the batch, only a dead letter is copied.
    fn add(&self, batch: &mut Batch, stored: Option<i64>, m: Msg<'_>) {
        let adv = batch.advances.get(&m.partition).copied();
        let already = adv.map(|a| a.next).or(stored);
        if let Some(next) = already {
            if m.offset < next {
                if adv.is_none() && next - m.offset > 1 {
                    // Kafka restarted this partition behind PostgreSQL: jump ahead.
                    tracing::info!(
                        partition = m.partition,
                        from = m.offset,
                        to = next,
                        "skipping offsets already loaded"
                    );
                    self.seek(m.partition, Offset::Offset(next));
                }
                return;
            }
        }
        match message::parse_into(m.value, &mut batch.rows) {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(
                    topic = %self.cfg.topic, partition = m.partition, offset = m.offset,
                    "poison message to the dead-letter table: {error}"
                );
                batch.dead.push(DeadLetter {
                    topic: self.cfg.topic.clone(),
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key.map(<[u8]>::to_vec),
                    value: m.value.map(<[u8]>::to_vec),
                    error,
                });
            }
        }
        let expected = adv.map_or(stored, |a| a.expected);
        batch.advances.insert(
            m.partition,
            Advance {
                expected,
                next: m.offset + 1,
            },
        );
        batch.started.get_or_insert_with(Instant::now);
    }

    /// Hands the batch to a task that commits it, after settling the previous one. If that
    /// previous one failed (conflict, PostgreSQL down), every partition has been sought back
    /// to what PostgreSQL holds and this batch, built on top of it, is dropped.
    async fn flush(
        &mut self,
        batch: &mut Batch,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConsumeError> {
        if !self.settle(shutdown).await? {
            *batch = Batch::default();
            return Ok(());
        }
        if batch.len() == 0 {
            return Ok(());
        }
        let Batch {
            rows,
            dead,
            advances,
            ..
        } = std::mem::take(batch);
        let mut client = self.client.take().ok_or(DbError::Internal(
            "no PostgreSQL connection to commit a batch with",
        ))?;
        // The next batch continues where this one ends (its compare-and-set expects it).
        for (p, adv) in &advances {
            self.positions.insert(*p, Some(adv.next));
        }
        let (rows_n, dead_n) = (rows.len(), dead.len());
        let (sink, group, topic) = (
            self.sink.clone(),
            self.cfg.group.clone(),
            self.cfg.topic.clone(),
        );
        let task_advances = advances.clone();
        let task = tokio::spawn(async move {
            let r = sink
                .write(&mut client, &group, &topic, rows, &dead, &task_advances)
                .await;
            (client, r)
        });
        self.in_flight = Some(InFlight {
            task,
            rows: rows_n,
            dead: dead_n,
            advances,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Waits for the batch in flight, if any, and accounts for it. Returns false if it did
    /// not commit: the partitions are then back at PostgreSQL's offsets, and anything built
    /// since must be dropped.
    async fn settle(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, ConsumeError> {
        let Some(InFlight {
            task,
            rows,
            dead,
            advances,
            started,
        }) = self.in_flight.take()
        else {
            return Ok(true);
        };
        let (client, result) = task
            .await
            .map_err(|_| DbError::Internal("the task committing a batch panicked"))?;
        self.client = Some(client);
        match result {
            Ok(Written::Committed) => {
                self.cfg.stats.committed(rows, dead, started.elapsed());
                self.summary.rows_loaded += rows as u64;
                self.summary.dead_letters += dead as u64;
                self.summary.batches += 1;
                if !self.cfg.synchronous_commit {
                    while self
                        .unconfirmed
                        .front()
                        .is_some_and(|u| u.at.elapsed() > UNCONFIRMED_FOR)
                    {
                        self.unconfirmed.pop_front();
                    }
                    self.unconfirmed.push_back(Unconfirmed {
                        at: Instant::now(),
                        next: advances.iter().map(|(p, a)| (*p, a.next)).collect(),
                        rows: rows as u64,
                        dead: dead as u64,
                    });
                }
                let mut tpl = TopicPartitionList::new();
                if let Ok(mut known) = self.consumer.context().pg_positions.lock() {
                    for (p, adv) in &advances {
                        known.insert(*p, adv.next);
                    }
                }
                for (p, adv) in &advances {
                    let _ = tpl.add_partition_offset(&self.cfg.topic, *p, Offset::Offset(adv.next));
                }
                // For lag tools only: PostgreSQL is the truth.
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!("kafka offset commit failed (harmless): {e}");
                }
                Ok(true)
            }
            Ok(Written::Conflict) => {
                self.summary.retries += 1;
                self.cfg.stats.retried();
                self.reposition().await?;
                Ok(false)
            }
            Err(e) if e.is_transient() => {
                self.summary.retries += 1;
                self.cfg.stats.retried();
                self.cfg.stats.postgres(false);
                tracing::warn!(
                    "{e}: batch of {} messages rolled back; pausing until PostgreSQL is back",
                    rows + dead
                );
                self.recover(shutdown).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// PostgreSQL went away: pause fetching, reconnect, re-read the stored offsets (which
    /// also settles an ambiguous COMMIT) and seek back to them.
    async fn recover(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConsumeError> {
        let assignment = self.consumer.assignment()?;
        let _ = self.consumer.pause(&assignment);
        let client = {
            // Keep serving the consumer (rebalances, poll interval) while waiting; messages
            // received now are dropped, we seek back below.
            let connect = connect_with_retry(&self.cfg, shutdown);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => break r?,
                    _ = self.consumer.recv() => {}
                }
            }
        };
        let Some(client) = client else {
            return Ok(()); // shutting down; nothing more is written
        };
        tracing::info!("PostgreSQL is back");
        self.cfg.stats.postgres(true);
        self.client = Some(client);
        self.reposition().await?;
        let assignment = self.consumer.assignment()?;
        let _ = self.consumer.resume(&assignment);
        Ok(())
    }

    /// Seeks every assigned partition to PostgreSQL's stored offset.
    async fn reposition(&mut self) -> Result<(), DbError> {
        self.positions.clear();
        let stored = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?;
        // After a PostgreSQL crash, asynchronously committed batches may be gone: what this
        // process remembered committing can be *ahead* of the table, so forget it.
        if let Ok(mut known) = self.consumer.context().pg_positions.lock() {
            *known = stored.clone();
        }
        // Batches the table no longer has were not loaded after all: uncount them.
        for u in self.unconfirmed.drain(..) {
            let lost = u
                .next
                .iter()
                .any(|(p, next)| stored.get(p).is_none_or(|s| s < next));
            if lost {
                tracing::warn!(
                    rows = u.rows,
                    "a batch committed asynchronously was lost by PostgreSQL; loading it again"
                );
                self.summary.rows_loaded -= u.rows.min(self.summary.rows_loaded);
                self.summary.dead_letters -= u.dead.min(self.summary.dead_letters);
                self.summary.batches = self.summary.batches.saturating_sub(1);
                self.cfg.stats.lost(u.rows, u.dead);
            }
        }
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .unwrap_or_default()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        for p in assigned {
            let next = stored.get(&p).copied();
            self.positions.insert(p, next);
            let target = next.map_or(Offset::Beginning, Offset::Offset);
            // A partition assigned a moment ago may not be fetching yet: retry briefly.
            for attempt in 0..50 {
                if self.seek(p, target) {
                    break;
                }
                if attempt == 49 {
                    tracing::warn!(partition = p, "could not seek to {target:?}");
                }
                // Serve the consumer (callbacks, fetch start) while waiting.
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
            }
        }
        Ok(())
    }

    /// True once PostgreSQL holds at least `targets` for every partition.
    async fn reached(&self, targets: &Targets) -> Result<bool, DbError> {
        let stored = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?;
        Ok(targets
            .iter()
            .all(|(p, hw)| *hw == 0 || stored.get(p).is_some_and(|s| s >= hw)))
    }
}

struct Msg<'a> {
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

impl<'a> Msg<'a> {
    fn of(m: &'a impl Message) -> Self {
        Msg {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            value: m.payload(),
        }
    }
}

/// High watermarks of every partition of the topic, now.
fn high_watermarks(consumer: &KafkaConsumer, topic: &str) -> Result<Targets, KafkaError> {
    tokio::task::block_in_place(|| {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let mut targets = Targets::new();
        for t in md.topics() {
            for p in t.partitions() {
                let (_, hw) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
                targets.insert(p.id(), hw);
            }
        }
        Ok(targets)
    })
}

/// Runs until shutdown, until `--stop-at-end` is satisfied, or until `targets` (set from
/// outside, e.g. by all-in-one once the producer is done) are reached.
pub async fn run(
    cfg: ConsumeConfig,
    mut shutdown: watch::Receiver<bool>,
    mut targets: watch::Receiver<Option<Targets>>,
) -> Result<Summary, ConsumeError> {
    let started = Instant::now();
    let table = TableName::parse(&cfg.table)?;
    let Some(mut client) = connect_with_retry(&cfg, &mut shutdown).await? else {
        return Ok(Summary::default());
    };
    let sink = Sink::prepare(&mut client, table).await?;
    cfg.stats.postgres(true);
    let known = sink.positions(&client, &cfg.group, &cfg.topic).await?;
    let consumer = consumer(&cfg, known)?;
    let mut goal: Option<Targets> = None;
    if cfg.stop_at_end {
        let hw = high_watermarks(&consumer, &cfg.topic)?;
        tracing::info!(?hw, "will stop once these offsets are loaded");
        goal = Some(hw);
    }
    let mut loader = Loader {
        cfg,
        consumer,
        client: Some(client),
        sink: Arc::new(sink),
        in_flight: None,
        positions: HashMap::new(),
        summary: Summary::default(),
        unconfirmed: std::collections::VecDeque::new(),
    };
    let mut batch = Batch::default();
    let idle = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            loader.flush(&mut batch, &mut shutdown).await?;
            loader.settle(&mut shutdown).await?;
            break;
        }
        if loader
            .consumer
            .context()
            .rebalanced
            .swap(false, Ordering::AcqRel)
        {
            loader.positions.clear();
        }
        // Account for a finished commit promptly (metrics, summary), even when idle.
        if loader.in_flight.is_some()
            && !loader.committing()
            && !loader.settle(&mut shutdown).await?
        {
            batch = Batch::default();
        }
        // Adaptive batching: a batch is handed over as soon as nothing more is waiting in
        // librdkafka's queue and the previous commit is done, so a trickle is not held for
        // the batch timeout; under load the queue is never empty and batches fill up.
        let writer_idle = !loader.committing();
        let wait = match batch.started {
            Some(_) if writer_idle => Duration::ZERO,
            // Look again shortly: the commit in flight may finish before the timeout.
            Some(t) => loader
                .cfg
                .batch_timeout
                .saturating_sub(t.elapsed())
                .min(Duration::from_millis(1)),
            None => idle,
        };
        let msg = tokio::select! {
            _ = shutdown.changed() => continue,
            _ = targets.changed() => {
                goal = targets.borrow().clone().or(goal);
                continue;
            }
            r = tokio::time::timeout(wait, loader.consumer.recv()) => r,
        };
        match msg {
            Ok(Ok(m)) => {
                let known = loader.positions.get(&m.partition()).copied();
                let added = match known {
                    Some(stored) => {
                        loader.add(&mut batch, stored, Msg::of(&m));
                        Ok(())
                    }
                    None => {
                        // First message of a partition since (re)assignment: PostgreSQL's
                        // position is needed (after the batch in flight), and the message
                        // must outlive the query.
                        let owned = m.detach();
                        if !loader.settle(&mut shutdown).await? {
                            // Sought back: this message and the batch come again.
                            batch = Batch::default();
                            continue;
                        }
                        loader
                            .position(owned.partition())
                            .await
                            .map(|stored| loader.add(&mut batch, stored, Msg::of(&owned)))
                    }
                };
                if let Err(e) = added {
                    if !e.is_transient() {
                        return Err(e.into());
                    }
                    tracing::warn!("{e}");
                    batch = Batch::default();
                    loader.summary.retries += 1;
                    loader.recover(&mut shutdown).await?;
                    continue;
                }
                if batch.len() >= loader.cfg.batch_size {
                    loader.flush(&mut batch, &mut shutdown).await?;
                }
            }
            Ok(Err(e)) => tracing::warn!("kafka: {e}"),
            Err(_timeout) if writer_idle && batch.len() > 0 => {
                loader.flush(&mut batch, &mut shutdown).await?;
            }
            Err(_timeout) => {}
        }
        if batch
            .started
            .is_some_and(|t| t.elapsed() >= loader.cfg.batch_timeout)
        {
            loader.flush(&mut batch, &mut shutdown).await?;
        }
        // Done yet? Only asked between commits: waiting here for the commit in flight would
        // undo the overlap of committing and decoding.
        if batch.len() == 0 && !loader.committing() {
            if let Some(g) = &goal {
                if !loader.settle(&mut shutdown).await? {
                    batch = Batch::default();
                    continue;
                }
                match loader.reached(g).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) if e.is_transient() => loader.recover(&mut shutdown).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if !loader.cfg.synchronous_commit && loader.summary.batches > 0 {
        // Batches were committed without waiting for the disk: one durable commit now
        // flushes them all before we report them loaded.
        loader.settle(&mut shutdown).await?;
        if let Some(client) = loader.client.as_mut() {
            loader
                .sink
                .make_durable(client, &loader.cfg.group, &loader.cfg.topic)
                .await?;
        }
    }
    // Leave the group cleanly; the final Kafka commit is best effort.
    let _ = tokio::task::block_in_place(|| loader.consumer.commit_consumer_state(CommitMode::Sync));
    loader.consumer.unsubscribe();
    loader.summary.seconds = started.elapsed().as_secs_f64();
    Ok(loader.summary)
}

/// Resolves the PostgreSQL settings: a URL (flag or `DATABASE_URL`) if given, otherwise the
/// libpq `PG*` variables with libpq's defaults (but TCP to 127.0.0.1 rather than a socket).
pub fn pg_config(url: Option<&str>) -> Result<tokio_postgres::Config, String> {
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        return url
            .parse()
            .map_err(|e| format!("invalid database URL: {e}"));
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut c = tokio_postgres::Config::new();
    c.host(env("PGHOST").unwrap_or_else(|| "127.0.0.1".into()));
    let port = env("PGPORT").unwrap_or_else(|| "5432".into());
    c.port(
        port.parse()
            .map_err(|_| format!("PGPORT '{port}' is not a port"))?,
    );
    let user = env("PGUSER").unwrap_or_else(|| "postgres".into());
    c.user(&user);
    c.dbname(env("PGDATABASE").unwrap_or(user));
    if let Some(p) = env("PGPASSWORD") {
        c.password(p);
    }
    c.application_name("finstream");
    c.connect_timeout(Duration::from_secs(10));
    Ok(c)
}
