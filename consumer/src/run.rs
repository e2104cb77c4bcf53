//! The consumer loop: Kafka messages -> batches -> one PostgreSQL transaction each.
//!
//! A thin driver: the decisions (take, skip or check a message, what a batch's
//! compare-and-set expects, what a commit's outcome changes, the counts) are the
//! [`Tracker`]'s; this module talks to librdkafka ([`crate::kafka`]) and PostgreSQL
//! ([`crate::sink`]) and feeds the tracker what happened. Each batch is committed in its
//! own task while the next is decoded, one at a time, so batches commit in order. When
//! PostgreSQL fails (down, restarting, an ambiguous COMMIT, settled with `txid_status`),
//! fetching pauses, the connection is retried with capped exponential backoff, and every
//! partition is sought back to the offset PostgreSQL holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Offset;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::{ConsumeConfig, ConsumeError, Summary, Targets};
use crate::copy::{CopyRows, Origin};
use crate::db::{self, DbError, Sink, TableName};
use crate::kafka::{self, Change, KafkaConsumer};
use crate::message;
use crate::sink::{BatchData, DeadLetter, Unsettled, Written};
use crate::tracker::{Outcome, Take, Tracker};

/// The messages of the batch being built: its rows, encoded for COPY, and its dead
/// letters. Its offsets are the tracker's.
#[derive(Default)]
pub(crate) struct Building {
    rows: CopyRows,
    dead: Vec<DeadLetter>,
    started: Option<Instant>,
}

impl Building {
    fn len(&self) -> usize {
        self.rows.len() + self.dead.len()
    }

    /// Puts a message the tracker accepted into the batch: a good row is encoded straight
    /// from the borrowed message, only a dead letter is copied.
    fn take(&mut self, tracker: &mut Tracker, topic: &str, m: Origin<'_>) {
        let row = match message::parse_into(m, &mut self.rows) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(
                    topic,
                    partition = m.partition,
                    offset = m.offset,
                    "poison message to the dead-letter table: {error}"
                );
                self.dead.push(DeadLetter {
                    topic: topic.to_string(),
                    partition: m.partition,
                    offset: m.offset,
                    key: m.key.map(<[u8]>::to_vec),
                    value: m.value.map(<[u8]>::to_vec),
                    error,
                });
                false
            }
        };
        tracker.taken(m.partition, m.offset, row);
        self.started.get_or_insert_with(Instant::now);
    }
}

/// A batch whose transaction runs in its own task.
struct InFlight {
    task: tokio::task::JoinHandle<(Client, Result<Written, Unsettled>)>,
    started: Instant,
    next: HashMap<i32, i64>,
}

pub(crate) struct Loader {
    pub(crate) cfg: ConsumeConfig,
    pub(crate) consumer: KafkaConsumer,
    /// The connection; lent to the task committing a batch while one is [`InFlight`].
    pub(crate) client: Option<Client>,
    pub(crate) sink: Arc<Sink>,
    pub(crate) tracker: Tracker,
    pub(crate) building: Building,
    in_flight: Option<InFlight>,
    /// The topic's id as last asked of the cluster (`None`: unknown or no ids).
    pub(crate) topic_id: Option<String>,
    /// When the topic's id was last asked.
    pub(crate) topic_checked: Instant,
    /// A failure to learn the topic id was logged at warn level already.
    pub(crate) topic_id_warned: bool,
    clock: Instant,
}

impl Loader {
    /// Connects, prepares the tables, checks the stored positions against the log, and
    /// joins the group (`None` if shut down while waiting for PostgreSQL).
    async fn start(
        cfg: ConsumeConfig,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Loader>, ConsumeError> {
        let table = TableName::parse(&cfg.table)?;
        let connected =
            db::connect_with_retry(&cfg.pg, cfg.synchronous_commit, cfg.max_backoff, shutdown);
        let Some(mut client) = connected.await? else {
            return Ok(None);
        };
        let sink = Sink::prepare(&mut client, table).await?;
        cfg.stats.postgres(true);
        let stored = sink.positions(&client, &cfg.group, &cfg.topic).await?;
        let mut loader = Loader {
            consumer: kafka::consumer(&cfg)?,
            tracker: Tracker::new(!cfg.synchronous_commit),
            cfg,
            client: Some(client),
            sink: Arc::new(sink),
            building: Building::default(),
            in_flight: None,
            topic_id: None,
            topic_checked: Instant::now(),
            topic_id_warned: false,
            clock: Instant::now(),
        };
        // Before joining, so that partitions are assigned where loading really resumes.
        let mut stored: Vec<i32> = stored.into_keys().collect();
        stored.sort_unstable();
        if stored.is_empty() {
            loader.ask_topic_id();
        }
        loader.reconcile(&stored).await?;
        loader.published();
        loader.consumer.subscribe(&[&loader.cfg.topic])?;
        Ok(Some(loader))
    }

    /// Milliseconds since start, the tracker's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Shares the tracker's view: counts for the metrics, positions for newly assigned
    /// partitions and the lag.
    pub(crate) fn published(&self) {
        self.cfg.stats.publish(&self.tracker.counts());
        self.consumer.context().set_durable(self.tracker.durable());
    }

    /// Applies the assignment changes the rebalance callback reported.
    fn apply_changes(&mut self) {
        for change in self.consumer.context().take_changes() {
            match change {
                Change::Assigned(p) => self.tracker.assigned(&p),
                Change::Revoked(p) => self.tracker.revoked(&p),
            }
        }
    }

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

    /// A message the tracker asked to check: checks its partition (and any other not
    /// checked yet) against the log, then takes it, skips it, or seeks past it.
    async fn check_and_take(
        &mut self,
        m: &OwnedMessage,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConsumeError> {
        let o = kafka::origin(m);
        let mut partitions = self.tracker.unchecked();
        if !partitions.contains(&o.partition) {
            partitions.push(o.partition);
        }
        let Some(moved) = self.check(&partitions, shutdown).await? else {
            return Ok(()); // sought back after a failed commit: this message comes again
        };
        if moved.contains(&o.partition) {
            return Ok(()); // sought to where loading resumes: it comes again
        }
        match self.tracker.offer(o.partition, o.offset) {
            Take::Yes => self.building.take(&mut self.tracker, &self.cfg.topic, o),
            Take::Skip => {}
            Take::Check => {
                // The position fits the log: Kafka restarted this partition behind it.
                let next = self.tracker.position(o.partition).unwrap_or(0);
                tracing::info!(
                    partition = o.partition,
                    from = o.offset,
                    to = next,
                    "skipping offsets already loaded"
                );
                if !self.seek(o.partition, Offset::Offset(next)) {
                    self.tracker.revoked(&[o.partition]);
                    self.tracker.assigned(&[o.partition]);
                }
            }
        }
        Ok(())
    }

    /// Checks `partitions` against the log after settling the batch in flight, and seeks
    /// those whose position moved. `None` when the partitions were sought back after a
    /// failed commit or a PostgreSQL outage instead.
    async fn check(
        &mut self,
        partitions: &[i32],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<i32>>, ConsumeError> {
        if !self.settle(shutdown).await? {
            return Ok(None);
        }
        match self.reconcile(partitions).await {
            Ok(moved) => {
                let mut sought = Vec::new();
                for (p, next) in moved {
                    // Not patiently: waiting would consume (and lose) other messages. A
                    // partition whose seek fails is checked again at its next message.
                    if !self.seek(p, Offset::Offset(next)) {
                        self.tracker.revoked(&[p]);
                        self.tracker.assigned(&[p]);
                    }
                    sought.push(p);
                }
                self.published();
                Ok(Some(sought))
            }
            Err(ConsumeError::Db(e)) if e.is_transient() => {
                tracing::warn!("{e}");
                self.recover(shutdown, None).await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the batch to a task that commits it, after settling the previous one.
    async fn flush(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConsumeError> {
        if !self.settle(shutdown).await? {
            return Ok(());
        }
        let Some(advances) = self.tracker.hand_over() else {
            return Ok(());
        };
        let building = std::mem::take(&mut self.building);
        let next = advances.iter().map(|(p, a)| (*p, a.next)).collect();
        let data = BatchData {
            rows: building.rows,
            dead: building.dead,
            advances,
            topic_id: self.topic_id.clone(),
        };
        let mut client = self.client.take().ok_or(DbError::Internal(
            "no PostgreSQL connection to commit a batch with",
        ))?;
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
            started: Instant::now(),
            next,
        });
        Ok(())
    }

    /// Waits for the batch in flight, if any, and reports its outcome to the tracker.
    /// Returns false if it did not commit cleanly: the partitions are then back at
    /// PostgreSQL's offsets, and the batch being built is dropped.
    async fn settle(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, ConsumeError> {
        let Some(InFlight {
            task,
            started,
            next,
        }) = self.in_flight.take()
        else {
            return Ok(true);
        };
        let (client, result) = task
            .await
            .map_err(|_| DbError::Internal("the task committing a batch panicked"))?;
        match result {
            Ok(Written::Committed { refused }) => {
                self.client = Some(client);
                self.tracker
                    .commit_ended(Outcome::Committed { refused }, self.now());
                self.cfg.stats.batch_took(started.elapsed());
                self.published();
                kafka::commit_for_lag_tools(&self.consumer, &self.cfg.topic, &next);
                Ok(true)
            }
            Ok(Written::Conflict) => {
                self.client = Some(client);
                self.tracker.commit_ended(Outcome::Conflict, self.now());
                self.reposition().await?;
                Ok(false)
            }
            Err(u) if u.error.is_transient() => {
                drop(client);
                self.cfg.stats.postgres(false);
                tracing::warn!(
                    "{}: batch not confirmed; pausing until PostgreSQL is back",
                    u.error
                );
                self.recover(shutdown, Some(u)).await?;
                Ok(false)
            }
            Err(u) => Err(u.error.into()),
        }
    }

    /// Every `topic_check_interval`: if the topic's id changed (deleted and created again
    /// while running), loads what is batched, then checks every assigned partition.
    async fn watch_topic(
        &mut self,
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
        self.flush(shutdown).await?;
        let assigned = kafka::assignment(&self.consumer);
        self.tracker.uncheck_all();
        self.check(&assigned, shutdown).await?;
        Ok(())
    }

    /// Leaves the group after making every commit durable.
    async fn finish(
        mut self,
        shutdown: &mut watch::Receiver<bool>,
        started: Instant,
    ) -> Result<Summary, ConsumeError> {
        self.flush(shutdown).await?;
        self.settle(shutdown).await?;
        if !self.cfg.synchronous_commit && self.tracker.counts().batches > 0 {
            // Batches were committed without waiting for the disk: one durable commit now
            // flushes them all before they are reported loaded.
            if let Some(client) = self.client.as_mut() {
                self.sink
                    .make_durable(client, &self.cfg.group, &self.cfg.topic)
                    .await?;
            }
        }
        // Leave the group cleanly; the final Kafka commit is best effort.
        let _ = kafka::off_the_workers(|| self.consumer.commit_consumer_state(CommitMode::Sync));
        self.consumer.unsubscribe();
        let c = self.tracker.counts();
        Ok(Summary {
            rows_loaded: c.rows_net(),
            dead_letters: c.dead_letters_net(),
            batches: c.batches_net(),
            retries: c.retries,
            gaps: c.gaps,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// What of `goal` there is to load: a partition whose fetch position is at or past its
    /// goal has delivered every record below it, so what the tracker loaded is all there
    /// is (the rest are transaction markers and aborted records, never delivered).
    fn loadable(&self, goal: &Targets) -> Targets {
        let fetched = kafka::fetch_positions(&self.consumer, &self.cfg.topic);
        goal.iter()
            .map(|(&p, &hw)| {
                let all_seen = fetched.get(&p).is_some_and(|&f| f >= hw);
                let target = match self.tracker.position(p) {
                    Some(next) if all_seen => next.min(hw),
                    None if all_seen => 0,
                    _ => hw,
                };
                (p, target)
            })
            .collect()
    }

    /// Done yet? True once PostgreSQL holds `goal` (asked only between commits: waiting
    /// here for the commit in flight would undo the overlap of committing and decoding).
    async fn done(
        &mut self,
        goal: &Targets,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, ConsumeError> {
        if self.building.len() > 0 || self.committing() || !self.settle(shutdown).await? {
            return Ok(false);
        }
        let goal = self.loadable(goal);
        match self.reached(&goal).await {
            Ok(reached) => Ok(reached),
            Err(e) if e.is_transient() => {
                self.recover(shutdown, None).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How long to wait for the next message: adaptive batching hands a batch over as soon as
/// nothing more is waiting in librdkafka's queue and the previous commit is done, so a
/// trickle is not held for the batch timeout; under load the queue is never empty and
/// batches fill up.
fn wait_for_message(loader: &Loader) -> Duration {
    match loader.building.started {
        Some(_) if !loader.committing() => Duration::ZERO,
        // Look again shortly: the commit in flight may finish before the timeout.
        Some(t) => loader
            .cfg
            .batch_timeout
            .saturating_sub(t.elapsed())
            .min(Duration::from_millis(1)),
        None => Duration::from_millis(200),
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
        let hw = kafka::high_watermarks(&loader.consumer, &loader.cfg.topic)?;
        tracing::info!(?hw, "will stop once these offsets are loaded");
        goal = Some(hw);
    }
    while !*shutdown.borrow() {
        loader.apply_changes();
        // Account for a finished commit promptly (metrics, summary), even when idle.
        if loader.in_flight.is_some() && !loader.committing() {
            loader.settle(&mut shutdown).await?;
        }
        loader.watch_topic(&mut shutdown).await?;
        let wait = wait_for_message(&loader);
        let writer_idle = !loader.committing();
        let msg = tokio::select! {
            _ = shutdown.changed() => continue,
            _ = targets.changed() => {
                goal = targets.borrow().clone().or(goal);
                continue;
            }
            r = tokio::time::timeout(wait, loader.consumer.recv()) => r,
        };
        match msg {
            Ok(Ok(first)) => {
                // Take this message and those already waiting in librdkafka's queue in one
                // go: the select, timer and clock reads of the loop come once per run of
                // messages, not once per message.
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    let o = kafka::origin(&m);
                    match loader.tracker.offer(o.partition, o.offset) {
                        Take::Yes => {
                            loader
                                .building
                                .take(&mut loader.tracker, &loader.cfg.topic, o)
                        }
                        Take::Skip => {}
                        Take::Check => {
                            // The message must outlive the queries.
                            let owned = m.detach();
                            loader.check_and_take(&owned, &mut shutdown).await?;
                            break;
                        }
                    }
                    drop(m);
                    if loader.building.len() >= loader.cfg.batch_size {
                        break;
                    }
                    loader.apply_changes();
                    next = match loader.consumer.recv().now_or_never() {
                        Some(Ok(m)) => Some(m),
                        Some(Err(e)) => {
                            tracing::warn!("kafka: {e}");
                            None
                        }
                        None => None,
                    };
                }
                if loader.building.len() >= loader.cfg.batch_size {
                    loader.flush(&mut shutdown).await?;
                }
            }
            Ok(Err(e)) => tracing::warn!("kafka: {e}"),
            Err(_timeout) if writer_idle && loader.building.len() > 0 => {
                loader.flush(&mut shutdown).await?;
            }
            Err(_timeout) => {}
        }
        if loader
            .building
            .started
            .is_some_and(|t| t.elapsed() >= loader.cfg.batch_timeout)
        {
            loader.flush(&mut shutdown).await?;
        }
        if let Some(g) = goal.clone() {
            if loader.done(&g, &mut shutdown).await? {
                break;
            }
        }
    }
    loader.finish(&mut shutdown, started).await
}
