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

use crate::config::{ConsumeConfig, ConsumeError, Summary, Targets};
use crate::copy::Origin;
use crate::db::{self, Advance, BatchData, DbError, DeadLetter, Sink, TableName, Written};
use crate::message;
use crate::stats::Stats;

pub(crate) struct Ctx {
    rebalanced: AtomicBool,
    stats: Arc<Stats>,
    /// PostgreSQL's next offset per partition as last read or committed by this process:
    /// where newly assigned partitions start (the beginning when unknown), whatever the
    /// group's committed Kafka offsets say (they may be ahead, e.g. for a fresh database).
    /// A stale entry behind the table is harmless (the compare-and-set refuses the batch);
    /// one ahead (asynchronous commits lost in a PostgreSQL crash) is replaced by what the
    /// table holds whenever the consumer repositions after a PostgreSQL failure.
    pub(crate) pg_positions: std::sync::Mutex<HashMap<i32, i64>>,
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

pub(crate) type KafkaConsumer = StreamConsumer<Ctx>;

#[derive(Default)]
struct Batch {
    data: BatchData,
    started: Option<Instant>,
}

impl Batch {
    fn len(&self) -> usize {
        self.data.rows.len() + self.data.dead.len()
    }
}

/// What [`Loader::add`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// In the batch (as a row or a dead letter).
    Taken,
    /// Already loaded (a redelivery): dropped.
    Skipped,
    /// Kafka restarted the partition well behind PostgreSQL's position: the position must
    /// be checked against the log (a recreated topic, a reset) before going on.
    Behind,
}

pub(crate) struct Loader {
    pub(crate) cfg: ConsumeConfig,
    pub(crate) consumer: KafkaConsumer,
    /// The connection; lent to the task committing a batch while one is [`InFlight`].
    pub(crate) client: Option<Client>,
    pub(crate) sink: Arc<Sink>,
    /// The batch being committed while the next one is built.
    in_flight: Option<InFlight>,
    /// PostgreSQL's next offset per partition, as last read or written by us, for the
    /// partitions checked against their log since they were assigned.
    pub(crate) positions: HashMap<i32, Option<i64>>,
    /// The topic's id as last asked of the cluster (`None`: unknown or no ids).
    pub(crate) topic_id: Option<String>,
    /// When the topic's id was last asked.
    pub(crate) topic_checked: Instant,
    /// A failure to learn the topic id was logged at warn level already.
    pub(crate) topic_id_warned: bool,
    pub(crate) summary: Summary,
    /// Batches committed asynchronously that a PostgreSQL crash could still take back:
    /// (when, next offset per partition, rows, dead letters). Only for the counts reported.
    pub(crate) unconfirmed: std::collections::VecDeque<Unconfirmed>,
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
pub(crate) struct Unconfirmed {
    at: Instant,
    pub(crate) next: HashMap<i32, i64>,
    pub(crate) rows: u64,
    pub(crate) dead: u64,
}

/// How long a batch stays [`Unconfirmed`].
const UNCONFIRMED_FOR: Duration = Duration::from_secs(30);

/// The group consumer, not subscribed yet (positions are checked first).
fn consumer(cfg: &ConsumeConfig) -> Result<KafkaConsumer, KafkaError> {
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
        pg_positions: std::sync::Mutex::new(HashMap::new()),
    })?;
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
    pub(crate) fn client(&self) -> Result<&Client, DbError> {
        self.client.as_ref().ok_or(DbError::Internal(
            "PostgreSQL connection used while lent to a commit",
        ))
    }

    /// Adds one message to the batch (or skips it if PostgreSQL already has it); `stored`
    /// is PostgreSQL's position of the partition (see [`Loader::reconcile`]). The message
    /// is borrowed: a good row is encoded straight into the batch, only a dead letter is
    /// copied.
    fn add(&self, batch: &mut Batch, stored: Option<i64>, m: Origin<'_>) -> Added {
        let data = &mut batch.data;
        let adv = data.advances.get(&m.partition).copied();
        let already = adv.map(|a| a.next).or(stored);
        if let Some(next) = already {
            if m.offset < next {
                return if adv.is_none() && next - m.offset > 1 {
                    Added::Behind
                } else {
                    Added::Skipped
                };
            }
        }
        if let Err(error) = message::parse_into(m, &mut data.rows) {
            tracing::warn!(
                topic = %self.cfg.topic, partition = m.partition, offset = m.offset,
                "poison message to the dead-letter table: {error}"
            );
            data.dead.push(DeadLetter {
                topic: self.cfg.topic.clone(),
                partition: m.partition,
                offset: m.offset,
                key: m.key.map(<[u8]>::to_vec),
                value: m.value.map(<[u8]>::to_vec),
                error,
            });
        }
        let expected = adv.map_or(stored, |a| a.expected);
        data.advances.insert(
            m.partition,
            Advance {
                expected,
                next: m.offset + 1,
            },
        );
        batch.started.get_or_insert_with(Instant::now);
        Added::Taken
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
        let mut data = std::mem::take(batch).data;
        data.topic_id.clone_from(&self.topic_id);
        let mut client = self.client.take().ok_or(DbError::Internal(
            "no PostgreSQL connection to commit a batch with",
        ))?;
        // The next batch continues where this one ends (its compare-and-set expects it).
        for (p, adv) in &data.advances {
            self.positions.insert(*p, Some(adv.next));
        }
        let (rows_n, dead_n) = (data.rows.len(), data.dead.len());
        let advances = data.advances.clone();
        let (sink, group, topic) = (
            self.sink.clone(),
            self.cfg.group.clone(),
            self.cfg.topic.clone(),
        );
        let task = tokio::spawn(async move {
            let r = sink.write(&mut client, &group, &topic, data).await;
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
            Ok(Written::Committed { refused }) => {
                let (rows, dead) = (rows - refused, dead + refused);
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
}

/// Where a message came from, borrowed from it.
fn origin(m: &impl Message) -> Origin<'_> {
    Origin {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        value: m.payload(),
    }
}

/// High watermarks of every partition of the topic, now (0 for an empty log: nothing to
/// wait for there).
fn high_watermarks(consumer: &KafkaConsumer, topic: &str) -> Result<Targets, KafkaError> {
    tokio::task::block_in_place(|| {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let mut targets = Targets::new();
        for t in md.topics() {
            for p in t.partitions() {
                let (lo, hw) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(30))?;
                targets.insert(p.id(), if lo == hw { 0 } else { hw });
            }
        }
        Ok(targets)
    })
}

impl Loader {
    /// Connects, prepares the tables, checks the stored positions against the log, and
    /// joins the group (`None` if shut down while waiting for PostgreSQL).
    async fn start(
        cfg: ConsumeConfig,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Loader>, ConsumeError> {
        let table = TableName::parse(&cfg.table)?;
        let Some(mut client) = connect_with_retry(&cfg, shutdown).await? else {
            return Ok(None);
        };
        let sink = Sink::prepare(&mut client, table).await?;
        cfg.stats.postgres(true);
        let stored = sink.positions(&client, &cfg.group, &cfg.topic).await?;
        let mut loader = Loader {
            consumer: consumer(&cfg)?,
            cfg,
            client: Some(client),
            sink: Arc::new(sink),
            in_flight: None,
            positions: HashMap::new(),
            topic_id: None,
            topic_checked: Instant::now(),
            topic_id_warned: false,
            summary: Summary::default(),
            unconfirmed: std::collections::VecDeque::new(),
        };
        // Before joining, so that partitions are assigned where loading really resumes.
        let mut stored: Vec<i32> = stored.into_keys().collect();
        stored.sort_unstable();
        if stored.is_empty() {
            loader.ask_topic_id();
        }
        loader.reconcile(&stored).await?;
        loader.positions.clear(); // checked again when assigned
        loader.consumer.subscribe(&[&loader.cfg.topic])?;
        Ok(Some(loader))
    }

    /// Checks `partitions` against the log after settling the batch in flight, and seeks
    /// those whose position moved. `None` when the batch being built must be dropped (the
    /// partitions were sought back after a failed commit or PostgreSQL outage).
    async fn check(
        &mut self,
        partitions: &[i32],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<i32>>, ConsumeError> {
        if !self.settle(shutdown).await? {
            return Ok(None);
        }
        match self.reconcile(partitions).await {
            Ok(moved) => Ok(Some(
                moved
                    .into_iter()
                    .map(|(p, next)| {
                        // Not patiently: waiting would consume (and lose) other messages.
                        // A partition whose seek fails is checked again at its next message.
                        if !self.seek(p, Offset::Offset(next)) {
                            self.positions.remove(&p);
                        }
                        p
                    })
                    .collect(),
            )),
            Err(ConsumeError::Db(e)) if e.is_transient() => {
                tracing::warn!("{e}");
                self.summary.retries += 1;
                self.recover(shutdown).await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds a message of a partition whose position may not be known or may not fit the
    /// log: checks it first (see [`Loader::check`]). False if the batch must be dropped.
    async fn add_checked(
        &mut self,
        batch: &mut Batch,
        m: &rdkafka::message::OwnedMessage,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, ConsumeError> {
        let p = m.partition();
        let mut partitions = self.unchecked();
        if !partitions.contains(&p) {
            partitions.push(p);
        }
        let Some(moved) = self.check(&partitions, shutdown).await? else {
            return Ok(false);
        };
        let Some(stored) = self.positions.get(&p).copied() else {
            return Ok(true); // another consumer moved it; looked at again next message
        };
        if moved.contains(&p) {
            return Ok(true); // sought to where loading resumes; this message comes again
        }
        if self.add(batch, stored, origin(m)) == Added::Behind {
            // The position fits the log: Kafka restarted this partition behind it.
            let next = stored.unwrap_or(0);
            tracing::info!(
                partition = p,
                from = m.offset(),
                to = next,
                "skipping offsets already loaded"
            );
            if !self.seek(p, Offset::Offset(next)) {
                self.positions.remove(&p);
            }
        }
        Ok(true)
    }

    /// Every `--topic-check-interval`: if the topic's id changed (deleted and created
    /// again while running), loads what is batched, then checks every assigned partition.
    async fn watch_topic(
        &mut self,
        batch: &mut Batch,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConsumeError> {
        if self.topic_checked.elapsed() < self.cfg.topic_check_interval {
            return Ok(());
        }
        let before = self.topic_id.clone();
        let now = self.ask_topic_id();
        if before.is_none() || now.is_none() || now == before {
            return Ok(());
        }
        tracing::warn!(
            "topic {} was deleted and created again (id {} -> {}); checking every partition",
            self.cfg.topic,
            before.as_deref().unwrap_or_default(),
            now.as_deref().unwrap_or_default()
        );
        self.topic_id = before; // the stored rows are compared with the new id below
        self.flush(batch, shutdown).await?;
        let assigned = self.assigned();
        self.positions.clear();
        if self.check(&assigned, shutdown).await?.is_none() {
            *batch = Batch::default();
        }
        Ok(())
    }

    /// Leaves the group after making every commit durable.
    async fn finish(
        mut self,
        shutdown: &mut watch::Receiver<bool>,
        started: Instant,
    ) -> Result<Summary, ConsumeError> {
        if !self.cfg.synchronous_commit && self.summary.batches > 0 {
            // Batches were committed without waiting for the disk: one durable commit now
            // flushes them all before we report them loaded.
            self.settle(shutdown).await?;
            if let Some(client) = self.client.as_mut() {
                self.sink
                    .make_durable(client, &self.cfg.group, &self.cfg.topic)
                    .await?;
            }
        }
        // Leave the group cleanly; the final Kafka commit is best effort.
        let _ =
            tokio::task::block_in_place(|| self.consumer.commit_consumer_state(CommitMode::Sync));
        self.consumer.unsubscribe();
        self.summary.seconds = started.elapsed().as_secs_f64();
        Ok(self.summary)
    }
}

/// Runs until shutdown, until `--stop-at-end` is satisfied, or until `targets` (set from
/// outside, e.g. by all-in-one once the producer is done) are reached.
pub async fn run(
    cfg: ConsumeConfig,
    mut shutdown: watch::Receiver<bool>,
    mut targets: watch::Receiver<Option<Targets>>,
) -> Result<Summary, ConsumeError> {
    let started = Instant::now();
    let Some(mut loader) = Loader::start(cfg, &mut shutdown).await? else {
        return Ok(Summary::default());
    };
    let mut goal: Option<Targets> = None;
    if loader.cfg.stop_at_end {
        let hw = high_watermarks(&loader.consumer, &loader.cfg.topic)?;
        tracing::info!(?hw, "will stop once these offsets are loaded");
        goal = Some(hw);
    }
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
        loader.watch_topic(&mut batch, &mut shutdown).await?;
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
                let added = match loader.positions.get(&m.partition()).copied() {
                    Some(stored) => loader.add(&mut batch, stored, origin(&m)),
                    None => Added::Behind,
                };
                if added == Added::Behind {
                    // First message since (re)assignment, or Kafka restarted the partition
                    // behind PostgreSQL: check the position against the log first (after
                    // the batch in flight); the message must outlive the queries.
                    let owned = m.detach();
                    loader.positions.remove(&owned.partition());
                    if !loader
                        .add_checked(&mut batch, &owned, &mut shutdown)
                        .await?
                    {
                        batch = Batch::default();
                        continue;
                    }
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
    loader.finish(&mut shutdown, started).await
}
