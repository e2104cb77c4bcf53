//! The Kafka side of the consumer: the librdkafka group consumer, its rebalance callback
//! (which starts newly assigned partitions where PostgreSQL says they are) and its
//! statistics (lag per partition).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::{ConsumeConfig, Targets};
use crate::copy::Origin;
use crate::stats::{PartitionLag, Stats};

/// A change of assignment, reported by the rebalance callback for the loop to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// These partitions were assigned.
    Assigned(Vec<i32>),
    /// These partitions were revoked (or lost).
    Revoked(Vec<i32>),
}

/// The consumer's librdkafka context.
pub(crate) struct Ctx {
    stats: Arc<Stats>,
    /// What PostgreSQL holds per partition, as the loop last knew it: where newly assigned
    /// partitions start (the beginning when unknown), whatever the group's committed Kafka
    /// offsets say (they may be ahead, e.g. for a fresh database), and the lag's position.
    durable: Mutex<BTreeMap<i32, i64>>,
    /// Assignment changes not yet applied by the loop.
    changes: Mutex<Vec<Change>>,
}

impl Ctx {
    /// Replaces the positions newly assigned partitions start from.
    pub(crate) fn set_durable(&self, durable: &BTreeMap<i32, i64>) {
        if let Ok(mut d) = self.durable.lock() {
            d.clone_from(durable);
        }
    }

    /// The assignment changes since the last call.
    pub(crate) fn take_changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    fn durable(&self) -> BTreeMap<i32, i64> {
        self.durable.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn changed(&self, change: Change) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
    }
}

impl ClientContext for Ctx {
    /// librdkafka's statistics report (every `statistics.interval.ms`): the high watermark
    /// of each partition we hold, against what PostgreSQL holds, is the lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let known = self.durable();
        let mut lag = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || !part.desired || part.hi_offset < 0 {
                    continue;
                }
                let position = known.get(p).copied().unwrap_or(part.lo_offset.max(0));
                lag.insert(
                    (topic.clone(), *p),
                    PartitionLag {
                        position,
                        high_watermark: part.hi_offset,
                    },
                );
            }
        }
        self.stats.set_lag(lag);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
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
                let known = self.durable();
                let elements: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, p) in &elements {
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
                let all = consumer
                    .assignment()
                    .map(|a| partitions(&a))
                    .unwrap_or_default();
                self.changed(Change::Revoked(all));
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
                let parts = partitions(tpl);
                self.stats.set_assigned(!parts.is_empty());
                tracing::info!(?parts, "partitions assigned");
                self.changed(Change::Assigned(parts));
            }
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                self.stats.set_assigned(false);
                tracing::info!(?parts, "partitions revoked");
                self.changed(Change::Revoked(parts));
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }
}

/// The group consumer. librdkafka's close (on drop) and unsubscribe wait for the group
/// coordinator to answer: they run off the async workers ([`off_the_workers`]), since a
/// worker blocked on them may hold the very task that would answer (all-in-one's embedded
/// broker shares the runtime), which left the group only when LeaveGroup timed out.
pub(crate) struct KafkaConsumer(Option<StreamConsumer<Ctx>>);

impl std::ops::Deref for KafkaConsumer {
    type Target = StreamConsumer<Ctx>;

    fn deref(&self) -> &StreamConsumer<Ctx> {
        match &self.0 {
            Some(c) => c,
            // `None` only inside `drop`.
            None => unreachable!("consumer used after close"),
        }
    }
}

impl KafkaConsumer {
    /// Leaves the group: unsubscribes and waits for the coordinator's answer.
    pub(crate) fn unsubscribe(&self) {
        off_the_workers(|| StreamConsumer::unsubscribe(self));
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            off_the_workers(move || drop(c));
        }
    }
}

/// Runs `f`, which blocks on librdkafka, so that the async worker it is called on hands its
/// other tasks to another thread first (a multi-thread runtime's `block_in_place`).
pub(crate) fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The group consumer, not subscribed yet (positions are checked first).
pub(crate) fn consumer(cfg: &ConsumeConfig) -> Result<KafkaConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Rows of a producer's transaction only once it commits; never those of an
        // aborted one (librdkafka's default, stated because exactly-once depends on it).
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        // librdkafka prefetches up to 64 MiB per consumer by default; a few batches suffice.
        .set("queued.max.messages.kbytes", "16384")
        // librdkafka's default 1 MiB per partition, at most 2 MiB per fetch: as fast as
        // 8/16 MiB fetches with half the memory (docs/BENCHMARKS.md, 2026-11-30).
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.max.bytes", "2097152")
        // Once its queue holds more than queued.min.messages (100k), librdkafka stops
        // fetching and looks again after fetch.queue.backoff.ms (1 s by default, which left
        // the loader idle); 10 ms keeps the queue fed.
        .set("fetch.queue.backoff.ms", "10")
        // Feeds the lag metrics (Ctx::stats).
        .set("statistics.interval.ms", "2000");
    for (k, v) in &cfg.kafka_properties {
        c.set(k, v);
    }
    c.create_with_context(Ctx {
        stats: cfg.stats.clone(),
        durable: Mutex::default(),
        changes: Mutex::default(),
    })
    .map(|c| KafkaConsumer(Some(c)))
}

/// High watermarks of every partition of the topic, now (0 for an empty log: nothing to
/// wait for there).
pub(crate) fn high_watermarks(
    consumer: &KafkaConsumer,
    topic: &str,
) -> Result<Targets, KafkaError> {
    off_the_workers(|| {
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

/// librdkafka's fetch position of each assigned partition of `topic`: past every record
/// it delivered and every one it skipped (transaction markers, aborted transactions).
pub(crate) fn fetch_positions(consumer: &KafkaConsumer, topic: &str) -> HashMap<i32, i64> {
    let Ok(tpl) = consumer.position() else {
        return HashMap::new();
    };
    tpl.elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The partitions assigned to this consumer now.
pub(crate) fn assignment(consumer: &KafkaConsumer) -> Vec<i32> {
    consumer
        .assignment()
        .map(|a| partitions(&a))
        .unwrap_or_default()
}

/// Kafka's group commit of `next` offsets, for lag tools only: PostgreSQL is the truth.
pub(crate) fn commit_for_lag_tools(
    consumer: &KafkaConsumer,
    topic: &str,
    next: &HashMap<i32, i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for (p, n) in next {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*n));
    }
    if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
        tracing::debug!("kafka offset commit failed (harmless): {e}");
    }
}

/// Where a message came from, borrowed from it.
pub(crate) fn origin(m: &impl Message) -> Origin<'_> {
    Origin {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        value: m.payload(),
    }
}
