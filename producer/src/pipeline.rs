//! The produce run: a reader thread parses the CSV in chunks, worker threads clean them,
//! and the calling thread puts the results back in file order and hands them to
//! librdkafka (idempotent, acks=all by default), whose own threads batch and send.
//! Memory is bounded by the channels (a few chunks in flight) and librdkafka's queue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csv::ByteRecord;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message};

use crate::clean::StopWords;
use crate::scaler::Scaler;
use crate::source::{self, Outcome, SourceError};
use crate::stats::Stats;

/// Everything a produce run needs.
#[derive(Debug, Clone)]
pub struct ProduceConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Topic for cleaned messages.
    pub topic: String,
    /// Topic for bad rows; default `<topic>.dlq`.
    pub dlq_topic: String,
    /// Input file.
    pub csv: PathBuf,
    /// Fitted scaler.
    pub scaler: Scaler,
    /// librdkafka properties, applied after our defaults (so they win).
    pub kafka_properties: Vec<(String, String)>,
    /// Cleaning threads.
    pub workers: usize,
    /// Rows per chunk handed to a worker.
    pub chunk_rows: usize,
    /// Abort once more than this many rows were dead-lettered.
    pub max_errors: Option<u64>,
    /// Rows larger than this are dead-lettered (and truncated to it in the DLQ).
    pub max_row_bytes: usize,
    /// Parse and clean only: nothing is sent (counts what would be sent / dead-lettered).
    pub dry_run: bool,
    /// Live counters, shared with metrics endpoints.
    pub stats: Arc<Stats>,
}

impl ProduceConfig {
    /// Defaults for everything but the essentials.
    pub fn new(bootstrap_servers: &str, topic: &str, csv: &Path, scaler: Scaler) -> Self {
        ProduceConfig {
            bootstrap_servers: bootstrap_servers.to_string(),
            topic: topic.to_string(),
            dlq_topic: format!("{topic}.dlq"),
            csv: csv.to_path_buf(),
            scaler,
            kafka_properties: Vec::new(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_rows: 2048,
            max_errors: None,
            max_row_bytes: 512 * 1024,
            dry_run: false,
            stats: Arc::default(),
        }
    }
}

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The input cannot be used (missing column, unreadable file): nothing was sent.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The Kafka client could not be created (bad `-X` property...).
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// A pipeline thread died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Data rows read from the CSV.
    pub rows_read: u64,
    /// Messages acknowledged by Kafka.
    pub sent: u64,
    /// Bad rows acknowledged on the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages (good or dead letters) Kafka did not acknowledge.
    pub failed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Stopped early by the stop flag (SIGINT).
    pub interrupted: bool,
    /// Why the run gave up early, if it did (e.g. `--max-errors` exceeded).
    pub aborted: Option<String>,
}

impl Summary {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows_read as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Whether every row read ended up acknowledged somewhere.
    pub fn complete(&self) -> bool {
        self.failed == 0
            && self.aborted.is_none()
            && self.sent + self.dead_lettered == self.rows_read
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows read {}, sent {}, dead-lettered {}, failed {}, {:.2} s, {:.0} rows/s",
            self.rows_read,
            self.sent,
            self.dead_lettered,
            self.failed,
            self.seconds,
            self.rows_per_sec()
        )
    }
}

/// Progress reports while running: bytes of the file consumed and rows read so far.
pub trait Progress: Send {
    /// Called after each chunk is handed to Kafka.
    fn update(&mut self, bytes_read: u64, rows_read: u64);
}

impl Progress for () {
    fn update(&mut self, _: u64, _: u64) {}
}

impl<P: Progress + ?Sized> Progress for &mut P {
    fn update(&mut self, bytes_read: u64, rows_read: u64) {
        (**self).update(bytes_read, rows_read)
    }
}

/// Delivery bookkeeping shared with librdkafka's callback thread.
struct Deliveries {
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

struct Chunk {
    seq: u64,
    rows: Vec<(u64, ByteRecord)>,
    bytes_read: u64,
}

struct Cleaned {
    seq: u64,
    rows: Vec<(u64, Outcome)>,
    bytes_read: u64,
}

fn client(cfg: &ProduceConfig, file: &str) -> Result<ThreadedProducer<Deliveries>, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        // 50k queued messages (~5 MB of payload) keep 1 MB batches flowing with the
        // idempotent producer's 5 requests in flight; 200k made no difference in speed but
        // let all-in-one's peak RSS wander 180-310 MiB with how full the queue got.
        .set("queue.buffering.max.messages", "50000");
    for (k, v) in &cfg.kafka_properties {
        c.set(k, v);
    }
    c.create_with_context(Deliveries {
        file: file.to_string(),
        stats: cfg.stats.clone(),
        first_errors: Mutex::default(),
    })
}

/// Hands one message to librdkafka, waiting while its queue is full.
fn enqueue(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    payload: &[u8],
    headers: OwnedHeaders,
    opaque: usize,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, opaque)
        .payload(payload)
        .headers(headers);
    loop {
        match producer.send::<[u8], [u8]>(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Runs the whole CSV through. Stops reading when `stop` becomes true, but always waits
/// for every message already handed to Kafka to be acknowledged or to fail.
pub fn run(
    cfg: &ProduceConfig,
    stop: Arc<AtomicBool>,
    mut progress: impl Progress,
) -> Result<Summary, ProduceError> {
    let started = Instant::now();
    cfg.stats.reset();
    let (mut reader, columns) = source::open(&cfg.csv)?;
    let file = cfg.csv.display().to_string();
    let file_name = cfg
        .csv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let producer = if cfg.dry_run {
        None
    } else {
        Some(client(cfg, &file)?)
    };
    let (mut dry_sent, mut dry_dead) = (0u64, 0u64);
    let workers = cfg.workers.max(1);
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(workers * 2);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Cleaned>(workers * 2);
    // Parsed records go back to the reader once cleaned, so their buffers are reused
    // rather than allocated (and freed on another thread) for every row.
    let (recycle_tx, recycle_rx) =
        crossbeam_channel::bounded::<Vec<(u64, ByteRecord)>>(workers * 2 + 2);

    let summary = std::thread::scope(|scope| -> Result<Summary, ProduceError> {
        // Reader: parses records in file order, in chunks.
        let reader_stop = stop.clone();
        let chunk_rows = cfg.chunk_rows.max(1);
        let reader_file = file.clone();
        let reader_thread = scope.spawn(move || -> Result<(), SourceError> {
            let mut seq = 0;
            loop {
                if reader_stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let mut rows = Vec::with_capacity(chunk_rows);
                let mut spare = recycle_rx.try_recv().unwrap_or_default();
                while rows.len() < chunk_rows {
                    let mut record = spare.pop().map(|(_, r)| r).unwrap_or_default();
                    match reader.read_byte_record(&mut record) {
                        Ok(true) => {
                            source::strip_cr(&mut record);
                            let line = record.position().map_or(0, |p| p.line());
                            rows.push((line, record));
                        }
                        Ok(false) => break,
                        Err(e) => {
                            return Err(SourceError::Csv {
                                path: reader_file,
                                line: e.position().map_or(0, |p| p.line()),
                                detail: e.to_string(),
                            })
                        }
                    }
                }
                let last = rows.is_empty();
                if !last {
                    let bytes_read = reader.position().byte();
                    if chunk_tx
                        .send(Chunk {
                            seq,
                            rows,
                            bytes_read,
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                    seq += 1;
                }
                if last || reader.is_done() {
                    return Ok(());
                }
            }
        });
        // Workers: clean chunks in parallel.
        for _ in 0..workers {
            let rx = chunk_rx.clone();
            let tx = done_tx.clone();
            let recycle = recycle_tx.clone();
            let scaler = cfg.scaler.clone();
            let max_row_bytes = cfg.max_row_bytes;
            scope.spawn(move || {
                let stop_words = StopWords::nltk_english();
                let mut scratch = String::new();
                for chunk in rx {
                    let rows = chunk
                        .rows
                        .iter()
                        .map(|(line, r)| {
                            let outcome = source::process(
                                r,
                                columns,
                                &scaler,
                                &stop_words,
                                max_row_bytes,
                                &mut scratch,
                            );
                            (*line, outcome)
                        })
                        .collect();
                    // Full (the reader is ahead): let this one go.
                    let _ = recycle.try_send(chunk.rows);
                    if tx
                        .send(Cleaned {
                            seq: chunk.seq,
                            rows,
                            bytes_read: chunk.bytes_read,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(chunk_rx);
        drop(done_tx);
        drop(recycle_tx);

        // This thread: restore file order and enqueue.
        let mut pending: BTreeMap<u64, Cleaned> = BTreeMap::new();
        let mut next = 0u64;
        let mut rows_read = 0u64;
        let mut bad = 0u64;
        let mut local_failed = 0u64;
        let mut aborted = None;
        let headers_for = |line: u64| {
            OwnedHeaders::new()
                .insert(Header {
                    key: "source_file",
                    value: Some(file_name.as_str()),
                })
                .insert(Header {
                    key: "source_line",
                    value: Some(line.to_string().as_str()),
                })
        };
        'outer: for cleaned in &done_rx {
            pending.insert(cleaned.seq, cleaned);
            while let Some(chunk) = pending.remove(&next) {
                next += 1;
                for (line, outcome) in chunk.rows {
                    rows_read += 1;
                    let opaque = (line as usize) << 1;
                    let result = match (outcome, &producer) {
                        (Outcome::Message(_), None) => {
                            dry_sent += 1;
                            Ok(())
                        }
                        (Outcome::DeadLetter { .. }, None) => {
                            dry_dead += 1;
                            bad += 1;
                            Ok(())
                        }
                        (Outcome::Message(json), Some(producer)) => enqueue(
                            producer,
                            &cfg.topic,
                            json.as_bytes(),
                            headers_for(line),
                            opaque,
                        ),
                        (Outcome::DeadLetter { mut raw, error }, Some(producer)) => {
                            bad += 1;
                            tracing::warn!(
                                "{file}:{line}: bad row sent to {}: {error}",
                                cfg.dlq_topic
                            );
                            let original_size = raw.len();
                            raw.truncate(cfg.max_row_bytes);
                            let headers = headers_for(line)
                                .insert(Header {
                                    key: "error",
                                    value: Some(error.as_str()),
                                })
                                .insert(Header {
                                    key: "original_size",
                                    value: Some(original_size.to_string().as_str()),
                                });
                            enqueue(producer, &cfg.dlq_topic, &raw, headers, opaque | 1)
                        }
                    };
                    if let Err(e) = result {
                        local_failed += 1;
                        tracing::error!("{file}:{line}: cannot be sent: {e}");
                    }
                    if let Some(max) = cfg.max_errors {
                        if bad > max {
                            aborted = Some(format!(
                                "more than {max} bad rows (--max-errors); stopped at {file}:{line}"
                            ));
                            stop.store(true, Ordering::Relaxed);
                            break 'outer;
                        }
                    }
                }
                let stats = &cfg.stats;
                stats.rows_read.store(rows_read, Ordering::Relaxed);
                stats.bytes_read.store(chunk.bytes_read, Ordering::Relaxed);
                if producer.is_none() {
                    stats.sent.store(dry_sent, Ordering::Relaxed);
                    stats.dead_lettered.store(dry_dead, Ordering::Relaxed);
                }
                progress.update(chunk.bytes_read, rows_read);
            }
        }
        // Unblock the reader and workers if we stopped early, then wait for them.
        drop(done_rx);
        let read_result = reader_thread
            .join()
            .map_err(|_| ProduceError::Internal("CSV reader thread panicked".into()))?;
        read_result?;

        let Some(producer) = producer else {
            return Ok(Summary {
                rows_read,
                sent: dry_sent,
                dead_lettered: dry_dead,
                failed: 0,
                seconds: started.elapsed().as_secs_f64(),
                interrupted: stop.load(Ordering::Relaxed) && aborted.is_none(),
                aborted,
            });
        };
        // Every enqueued message gets a delivery report before flush returns.
        producer.flush(Timeout::Never)?;
        let stats = &producer.context().stats;
        stats.failed.fetch_add(local_failed, Ordering::Relaxed);
        Ok(Summary {
            rows_read,
            sent: stats.sent.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            interrupted: stop.load(Ordering::Relaxed) && aborted.is_none(),
            aborted,
        })
    })?;
    Ok(summary)
}

/// Headers of a produced message, for tests and tools: `(key, value)` pairs.
pub fn header_pairs<H: Headers>(headers: &H) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                h.value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}
