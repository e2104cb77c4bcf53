//! Shared broker state: the topic registry, partitions and their high watermarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::ResponseError;
use tokio::sync::watch;

use crate::config::{BrokerConfig, MAX_PARTITIONS};
use crate::error::StorageError;
use crate::flush::{Flusher, HighWatermark};
use crate::group::coordinator::CoordinatorConfig;
use crate::group::service::GroupService;
use crate::metrics::BrokerMetrics;
use crate::storage::{Log, Store, TopicMeta};
pub use crate::topic_name::validate_topic_name;
use crate::txn::coordinator::TxnConfig;
use crate::txn::service::TxnService;
use finstream_promtext::{Kind, Text};

const PRODUCER_ID_KEY: &[u8] = b"producer_id/last";

/// One partition: its log and the high watermark consumers may read up to.
pub struct Partition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub index: i32,
    /// The log.
    pub log: Arc<dyn Log>,
    /// Offsets below this are durable and visible to consumers.
    hw: HighWatermark,
}

impl Partition {
    /// The high watermark: everything below it has been flushed to disk.
    pub fn high_watermark(&self) -> i64 {
        self.hw.get()
    }

    /// The last stable offset: the high watermark, or the first offset of the earliest
    /// transaction still open in the partition if that is lower. read_committed readers
    /// see only what is below it.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log
            .txn_index()
            .first_unstable()
            .map_or(hw, |first| first.min(hw))
    }

    /// The handle the flusher advances.
    pub(crate) fn watermark(&self) -> HighWatermark {
        self.hw.clone()
    }
}

/// A topic and its partitions.
pub struct Topic {
    /// Name.
    pub name: Arc<str>,
    /// Topic id.
    pub id: uuid::Uuid,
    /// Partitions, index = partition number.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Partition `p`, if it exists.
    pub fn partition(&self, p: i32) -> Option<&Arc<Partition>> {
        usize::try_from(p).ok().and_then(|i| self.partitions.get(i))
    }
}

/// Why a topic operation failed, with the Kafka error code to send.
#[derive(Debug)]
pub struct TopicError {
    /// Kafka error code.
    pub code: ResponseError,
    /// Message for the client and the log.
    pub message: String,
}

impl TopicError {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

impl From<StorageError> for TopicError {
    fn from(e: StorageError) -> Self {
        tracing::error!("storage error: {e}");
        TopicError::new(ResponseError::KafkaStorageError, e.to_string())
    }
}

/// The broker's shared state; one per running broker, shared by all connections.
pub struct State {
    /// Configuration.
    pub config: BrokerConfig,
    /// Cluster id from the store.
    pub cluster_id: String,
    /// Host and port announced in Metadata.
    pub advertised: (String, i32),
    store: Arc<dyn Store>,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises topic creation and deletion.
    admin: Mutex<()>,
    /// Group-commit flusher.
    pub flusher: Flusher,
    /// Bumped whenever high watermarks advance; long-polling fetches wait on it.
    pub hw_changed: watch::Receiver<u64>,
    /// Becomes `true` when the broker shuts down; long polls end early.
    pub shutting_down: watch::Receiver<bool>,
    /// Consumer group coordinator and committed offsets.
    pub groups: Arc<GroupService>,
    /// Transaction coordinator.
    pub txns: TxnService,
    /// Topic config overrides.
    pub topic_configs: crate::topic_config_store::TopicConfigStore,
    /// Request, connection and flush metrics.
    pub metrics: Arc<BrokerMetrics>,
    /// Serialises producer id allocation.
    producer_ids: Mutex<()>,
    /// Refuses produce while the data directory's disk is (nearly) full.
    pub disk: crate::disk::DiskGuard,
    /// Memory for requests being read and decoded, shared by every connection.
    pub budget: Arc<crate::budget::MemoryBudget>,
}

/// A per-partition gauge: name, help, value.
type PartitionGauge = (&'static str, &'static str, fn(&Partition) -> i64);

impl State {
    /// Recovers every topic from `store` and starts the flusher.
    pub fn recover(
        config: BrokerConfig,
        store: Arc<dyn Store>,
        advertised: (String, i32),
        shutting_down: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, StorageError> {
        let (hw_tx, hw_rx) = watch::channel(0u64);
        let metrics = Arc::new(BrokerMetrics::default());
        let flusher = Flusher::start(store.clone(), hw_tx, metrics.clone());
        let mut topics = HashMap::new();
        for meta in store.topics()? {
            let topic = Self::open_topic(&*store, &meta)?;
            tracing::info!(
                topic = %meta.name,
                partitions = meta.partitions,
                "recovered topic"
            );
            topics.insert(topic.name.clone(), topic);
        }
        let groups = Arc::new(GroupService::recover(
            store.clone(),
            CoordinatorConfig {
                initial_rebalance_delay: config.group_initial_rebalance_delay.as_millis() as u64,
                ..CoordinatorConfig::default()
            },
        )?);
        groups.spawn_ticker(shutting_down.clone());
        let txns = TxnService::recover(
            store.clone(),
            TxnConfig {
                max_timeout_ms: u32::try_from(config.transaction_max_timeout.as_millis())
                    .unwrap_or(u32::MAX),
            },
        )?;
        let topic_configs = crate::topic_config_store::TopicConfigStore::recover(store.clone())?;
        let state = Arc::new(State {
            txns,
            topic_configs,
            disk: crate::disk::DiskGuard::new(config.data_dir.clone(), config.min_free_bytes),
            budget: crate::budget::MemoryBudget::new(config.request_memory_bytes),
            metrics,
            groups,
            producer_ids: Mutex::new(()),
            cluster_id: store.cluster_id(),
            config,
            advertised,
            store,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            flusher,
            hw_changed: hw_rx,
            shutting_down,
        });
        for topic in state.topics() {
            state.apply_roll_limits(&topic);
        }
        Ok(state)
    }

    /// Tells every partition log of `topic` its `segment.bytes` and `segment.ms`.
    fn apply_roll_limits(&self, topic: &Topic) {
        let (bytes, ms) = self.topic_configs.roll_limits(&topic.name, &self.config);
        for p in &topic.partitions {
            p.log.set_roll_limits(bytes, ms);
        }
    }

    /// Replaces the config overrides of topic `name` (durable with the next flush) and
    /// applies them at once.
    pub fn set_topic_configs(
        &self,
        name: &str,
        overrides: crate::topic_config::Overrides,
    ) -> Result<(), StorageError> {
        self.topic_configs.set(name, overrides)?;
        if let Some(topic) = self.topic(name) {
            self.apply_roll_limits(&topic);
        }
        Ok(())
    }

    fn open_topic(store: &dyn Store, meta: &TopicMeta) -> Result<Arc<Topic>, StorageError> {
        let name: Arc<str> = meta.name.as_str().into();
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            partitions.push(Self::open_partition(store, &name, p)?);
        }
        Ok(Arc::new(Topic {
            name,
            id: uuid::Uuid::from_bytes(meta.id),
            partitions,
        }))
    }

    /// Opens partition `p` of `topic`; everything its log holds counts as durable.
    fn open_partition(
        store: &dyn Store,
        topic: &Arc<str>,
        p: i32,
    ) -> Result<Arc<Partition>, StorageError> {
        let log = store.open_log(topic, p)?;
        let hw = HighWatermark::new(log.log_end_offset());
        Ok(Arc::new(Partition {
            topic: topic.clone(),
            index: p,
            log,
            hw,
        }))
    }

    /// The topic called `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The topic with id `id`, if it exists.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Checks whether a topic could be created, without creating it.
    pub fn check_new_topic(&self, name: &str, partitions: i32) -> Result<(), TopicError> {
        validate_topic_name(name)
            .map_err(|m| TopicError::new(ResponseError::InvalidTopicException, m))?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                format!("{partitions} partitions requested; allowed is 1 to {MAX_PARTITIONS}"),
            ));
        }
        if self.topic(name).is_some() {
            return Err(TopicError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<Arc<Topic>, TopicError> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        self.check_new_topic(name, partitions)?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: crate::ids::new_topic_id(),
            partitions,
        };
        self.store.create_topic(&meta)?;
        let topic = Self::open_topic(&*self.store, &meta)?;
        self.apply_roll_limits(&topic);
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.name.clone(), topic.clone());
        // Durable soon (a topic created by CreateTopics is answered only once it is; one
        // auto-created by Metadata or Produce becomes durable with this flush or the
        // produce's own).
        self.flusher.request(Vec::new(), None);
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// The topic `name`, created with the default partition count when it does not exist
    /// and auto-creation is on (and `allowed` by the request).
    pub fn topic_or_create(&self, name: &str, allowed: bool) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !(allowed && self.config.auto_create_topics) {
            validate_topic_name(name)
                .map_err(|m| TopicError::new(ResponseError::InvalidTopicException, m))?;
            return Err(TopicError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        }
        match self.create_topic(name, self.config.default_partitions) {
            // Lost a race with another creator: fine.
            Err(e) if e.code == ResponseError::TopicAlreadyExists => self.topic(name).ok_or(e),
            other => other,
        }
    }

    /// The topic `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    fn existing_topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.topic(name).ok_or_else(|| {
            TopicError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })
    }

    /// Grows topic `name` to `count` partitions (CreatePartitions: partitions are only ever
    /// added). With `validate_only`, checks without changing anything.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                format!("topic '{name}' has {current} partitions; {count} would not add any (partitions cannot be removed)"),
            ));
        }
        if count > MAX_PARTITIONS {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                format!("{count} partitions requested; at most {MAX_PARTITIONS}"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id: *topic.id.as_bytes(),
            partitions: count,
        };
        self.store.create_topic(&meta)?;
        let mut partitions = topic.partitions.clone();
        for p in current..count {
            partitions.push(Self::open_partition(&*self.store, &topic.name, p)?);
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
        });
        self.apply_roll_limits(&grown);
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(grown.name.clone(), grown);
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.existing_topic(name)?;
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.store.delete_topic(&TopicMeta {
            name: name.to_string(),
            id: *topic.id.as_bytes(),
            partitions: topic.partitions.len() as i32,
        })?;
        self.topic_configs.set(name, Default::default())?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Allocates a new producer id. The caller must flush before handing it out.
    pub fn allocate_producer_id(&self) -> Result<i64, StorageError> {
        let _guard = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.last_producer_id()? + 1;
        self.store.meta_put(PRODUCER_ID_KEY, &next.to_be_bytes())?;
        Ok(next)
    }

    fn last_producer_id(&self) -> Result<i64, StorageError> {
        let stored = self.store.meta_scan(PRODUCER_ID_KEY)?;
        match stored.first() {
            None => Ok(-1),
            Some((_, v)) => v
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    what: "producer id counter".into(),
                    detail: format!("{} bytes", v.len()),
                }),
        }
    }

    /// KIP-360 epoch bump for an idempotent producer that lost track of its sequences.
    /// Returns the (possibly new) id and epoch, or the Kafka error to send.
    pub fn bump_producer_epoch(
        &self,
        id: i64,
        epoch: i16,
    ) -> Result<Result<(i64, i16), ResponseError>, StorageError> {
        if id > self.last_producer_id()? {
            return Ok(Err(ResponseError::InvalidProducerIdMapping));
        }
        if epoch >= i16::MAX - 1 {
            return self.allocate_producer_id().map(|id| Ok((id, 0)));
        }
        Ok(Ok((id, epoch + 1)))
    }

    /// All broker metrics in the Prometheus text format.
    pub fn render_metrics(&self, t: &mut Text) {
        self.metrics.render(t);
        if let Some(free) = self.disk.last_free() {
            t.scalar(
                Kind::Gauge,
                "finstream_broker_disk_free_bytes",
                "Bytes free on the data directory's filesystem at the last produce.",
                free,
            );
        }
        let b = &self.budget;
        t.scalar(
            Kind::Gauge,
            "finstream_broker_request_memory_bytes",
            "Memory taken by requests being read and decoded.",
            b.in_use(),
        );
        t.scalar(
            Kind::Gauge,
            "finstream_broker_request_memory_limit_bytes",
            "The request memory budget.",
            b.total(),
        );
        t.scalar(
            Kind::Counter,
            "finstream_broker_request_memory_waits_total",
            "Requests that waited for memory.",
            b.waits.load(std::sync::atomic::Ordering::Relaxed),
        );
        let topics = self.topics();
        let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
        t.scalar(
            Kind::Gauge,
            "finstream_broker_topics",
            "Topics.",
            topics.len(),
        );
        t.scalar(
            Kind::Gauge,
            "finstream_broker_partitions",
            "Partitions.",
            partitions,
        );
        let gauges: [PartitionGauge; 2] = [
            (
                "finstream_broker_high_watermark",
                "Next offset to be written (durable), by partition.",
                Partition::high_watermark,
            ),
            (
                "finstream_broker_log_start_offset",
                "First stored offset, by partition.",
                |p| p.log.log_start_offset(),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = t.family(Kind::Gauge, name, help);
            for topic in &topics {
                for p in &topic.partitions {
                    let index = p.index.to_string();
                    family.sample(&[("topic", &topic.name), ("partition", &index)], value(p));
                }
            }
        }
    }

    /// Flushes the store (used at shutdown).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.store.sync()
    }
}

#[cfg(test)]
mod tests {
    use crate::topic_name::validate_topic_name;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("financial_transactions").is_ok());
        assert!(validate_topic_name("a.b-c_D9").is_ok());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "zoë", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
