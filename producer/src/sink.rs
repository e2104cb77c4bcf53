//! Where cleaned rows go: to Kafka (librdkafka, idempotent, acks=all by default; bad rows
//! to the dead-letter topic with their reason in headers), or nowhere in a dry run, which
//! only counts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message};

use crate::pipeline::ProduceConfig;
use crate::stats::Stats;

/// What became of the rows handed to a sink, once it is finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Messages acknowledged (or counted, in a dry run).
    pub sent: u64,
    /// Bad rows acknowledged on the dead-letter topic (or counted).
    pub dead_lettered: u64,
    /// Messages not acknowledged.
    pub failed: u64,
}

/// The destination of a run's rows, in file order.
pub trait Sink {
    /// A cleaned row (its JSON) from `line` of the file.
    fn message(&mut self, line: u64, json: &str) -> Result<(), KafkaError>;
    /// A bad row from `line`, with the reason.
    fn dead_letter(&mut self, line: u64, raw: Vec<u8>, error: &str) -> Result<(), KafkaError>;
    /// Counts so far, for the live metrics (a Kafka sink counts in its delivery reports).
    fn publish(&self, stats: &Stats);
    /// Waits until every row handed over is acknowledged or failed. `complete` says the
    /// whole file was handed over (not interrupted or given up): a transactional sink
    /// commits its last transaction only then, and aborts it otherwise.
    fn finish(self: Box<Self>, complete: bool) -> Result<Delivered, KafkaError>;
}

/// A dry run: nothing is sent, rows are counted.
#[derive(Debug, Default)]
pub struct DryRun(Delivered);

impl Sink for DryRun {
    fn message(&mut self, _: u64, _: &str) -> Result<(), KafkaError> {
        self.0.sent += 1;
        Ok(())
    }
    fn dead_letter(&mut self, _: u64, _: Vec<u8>, _: &str) -> Result<(), KafkaError> {
        self.0.dead_lettered += 1;
        Ok(())
    }
    fn publish(&self, stats: &Stats) {
        stats.sent.store(self.0.sent, Ordering::Relaxed);
        stats
            .dead_lettered
            .store(self.0.dead_lettered, Ordering::Relaxed);
    }
    fn finish(self: Box<Self>, _: bool) -> Result<Delivered, KafkaError> {
        Ok(self.0)
    }
}

/// Delivery bookkeeping shared with librdkafka's callback thread.
pub(crate) struct Deliveries {
    file: String,
    stats: Arc<Stats>,
    first_errors: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

/// The opaque carries the source line, shifted left, and a dead-letter bit.
impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let dlq = opaque & 1 == 1;
        match result {
            Ok(_) if dlq => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            // An aborted transaction purges what was still queued: not a delivery failure.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue), _))
            | Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeInflight), _)) => {}
            Err((e, m)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let line = opaque >> 1;
                let msg = format!(
                    "{}:{line}: delivery to {} failed: {e}",
                    self.file,
                    m.topic()
                );
                tracing::error!("{msg}");
                let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
                if first.len() < 20 {
                    first.push(msg);
                }
            }
        }
    }
}

/// Sends to Kafka.
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    dlq_topic: String,
    file: String,
    file_name: String,
    max_row_bytes: usize,
}

impl KafkaSink {
    /// A librdkafka producer with our defaults, then `cfg`'s properties.
    pub fn new(cfg: &ProduceConfig) -> Result<KafkaSink, KafkaError> {
        let file = cfg.csv.display().to_string();
        let file_name = cfg
            .csv
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            // 50k queued messages (~5 MB of payload) keep 1 MB batches flowing with the
            // idempotent producer's 5 requests in flight, and all-in-one's memory steady.
            .set("queue.buffering.max.messages", "50000");
        if let Some(id) = &cfg.transactional_id {
            // Kafka's largest transaction timeout by default: a whole file is one
            // transaction unless --transaction-rows splits it.
            c.set("transactional.id", id)
                .set("transaction.timeout.ms", "900000");
        }
        for (k, v) in &cfg.kafka_properties {
            c.set(k, v);
        }
        let producer = c.create_with_context(Deliveries {
            file: file.clone(),
            stats: cfg.stats.clone(),
            first_errors: Mutex::default(),
        })?;
        Ok(KafkaSink {
            producer,
            topic: cfg.topic.clone(),
            dlq_topic: cfg.dlq_topic.clone(),
            file,
            file_name,
            max_row_bytes: cfg.max_row_bytes,
        })
    }

    fn headers(&self, line: u64) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header {
                key: "source_file",
                value: Some(self.file_name.as_str()),
            })
            .insert(Header {
                key: "source_line",
                value: Some(line.to_string().as_str()),
            })
    }

    /// What the delivery reports counted so far.
    pub(crate) fn delivered(&self) -> Delivered {
        let stats = &self.producer.context().stats;
        Delivered {
            sent: stats.sent.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
        }
    }

    /// The librdkafka producer.
    pub(crate) fn producer(&self) -> &ThreadedProducer<Deliveries> {
        &self.producer
    }

    /// Hands one message to librdkafka, waiting while its queue is full.
    fn enqueue(
        &self,
        topic: &str,
        payload: &[u8],
        headers: OwnedHeaders,
        opaque: usize,
    ) -> Result<(), KafkaError> {
        let mut record = BaseRecord::with_opaque_to(topic, opaque)
            .payload(payload)
            .headers(headers);
        loop {
            match self.producer.send::<[u8], [u8]>(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

impl Sink for KafkaSink {
    fn message(&mut self, line: u64, json: &str) -> Result<(), KafkaError> {
        let headers = self.headers(line);
        self.enqueue(&self.topic, json.as_bytes(), headers, (line as usize) << 1)
    }

    fn dead_letter(&mut self, line: u64, mut raw: Vec<u8>, error: &str) -> Result<(), KafkaError> {
        tracing::warn!(
            "{}:{line}: bad row sent to {}: {error}",
            self.file,
            self.dlq_topic
        );
        let original_size = raw.len();
        raw.truncate(self.max_row_bytes);
        let headers = self
            .headers(line)
            .insert(Header {
                key: "error",
                value: Some(error),
            })
            .insert(Header {
                key: "original_size",
                value: Some(original_size.to_string().as_str()),
            });
        self.enqueue(&self.dlq_topic, &raw, headers, ((line as usize) << 1) | 1)
    }

    fn publish(&self, _: &Stats) {}

    fn finish(self: Box<Self>, _: bool) -> Result<Delivered, KafkaError> {
        // Every enqueued message gets a delivery report before flush returns.
        self.producer.flush(Timeout::Never)?;
        Ok(self.delivered())
    }
}
