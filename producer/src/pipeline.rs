//! The produce run, in three stages: a reader thread parses the CSV in chunks, worker
//! threads clean them, and the calling thread puts the results back in file order and
//! hands them to a [`Sink`]: librdkafka (idempotent, acks=all by default), whose own
//! threads batch and send, or a dry run that only counts.
//! Memory is bounded by the channels (a few chunks in flight) and librdkafka's queue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use csv::ByteRecord;
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;

use crate::clean::StopWords;
use crate::scaler::Scaler;
use crate::sink::{DryRun, KafkaSink, Sink};
use crate::source::{self, Outcome, SourceError};
use crate::stats::Stats;
use crate::txn_sink::TransactionalSink;

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
    /// Send in Kafka transactions with this `transactional.id`: rows are visible to
    /// read_committed readers only once their transaction commits.
    pub transactional_id: Option<String>,
    /// Rows (good and dead-lettered) per transaction; `None`: the whole file is one.
    pub transaction_rows: Option<u64>,
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
            transactional_id: None,
            transaction_rows: None,
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

/// The reader stage: parses records in file order, in chunks of `chunk_rows`, reusing
/// the records the workers send back.
fn read_chunks<R: std::io::Read>(
    mut reader: csv::Reader<R>,
    file: &str,
    chunk_rows: usize,
    stop: &AtomicBool,
    chunks: &Sender<Chunk>,
    recycled: &Receiver<Vec<(u64, ByteRecord)>>,
) -> Result<(), SourceError> {
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(chunk_rows);
        let mut spare = recycled.try_recv().unwrap_or_default();
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
                        path: file.to_string(),
                        line: e.position().map_or(0, |p| p.line()),
                        detail: e.to_string(),
                    })
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let bytes_read = reader.position().byte();
        if chunks
            .send(Chunk {
                seq,
                rows,
                bytes_read,
            })
            .is_err()
            || reader.is_done()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// A worker stage: cleans chunks, and sends the parsed records back for reuse.
fn clean_chunks(
    cfg: &ProduceConfig,
    columns: source::Columns,
    chunks: &Receiver<Chunk>,
    cleaned: &Sender<Cleaned>,
    recycle: &Sender<Vec<(u64, ByteRecord)>>,
) {
    let stop_words = StopWords::nltk_english();
    let mut scratch = String::new();
    for chunk in chunks {
        let rows = chunk
            .rows
            .iter()
            .map(|(line, r)| {
                let outcome = source::process(
                    r,
                    columns,
                    &cfg.scaler,
                    &stop_words,
                    cfg.max_row_bytes,
                    &mut scratch,
                );
                (*line, outcome)
            })
            .collect();
        // Full (the reader is ahead): let this one go.
        let _ = recycle.try_send(chunk.rows);
        let done = Cleaned {
            seq: chunk.seq,
            rows,
            bytes_read: chunk.bytes_read,
        };
        if cleaned.send(done).is_err() {
            return;
        }
    }
}

/// What the ordering stage saw.
#[derive(Default)]
struct Handed {
    rows_read: u64,
    bad: u64,
    /// Rows the sink refused at once (not even queued).
    failed: u64,
    aborted: Option<String>,
}

/// The ordering stage (the calling thread): puts cleaned chunks back in file order and
/// hands their rows to the sink, until the workers are done or `--max-errors` is passed.
fn hand_in_order(
    cfg: &ProduceConfig,
    file: &str,
    cleaned: &Receiver<Cleaned>,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    progress: &mut dyn Progress,
) -> Handed {
    let mut pending: BTreeMap<u64, Cleaned> = BTreeMap::new();
    let mut next = 0u64;
    let mut h = Handed::default();
    for chunk in cleaned {
        pending.insert(chunk.seq, chunk);
        while let Some(chunk) = pending.remove(&next) {
            next += 1;
            for (line, outcome) in chunk.rows {
                h.rows_read += 1;
                let result = match outcome {
                    Outcome::Message(json) => sink.message(line, &json),
                    Outcome::DeadLetter { raw, error } => {
                        h.bad += 1;
                        sink.dead_letter(line, raw, &error)
                    }
                };
                if let Err(e) = result {
                    h.failed += 1;
                    tracing::error!("{file}:{line}: cannot be sent: {e}");
                }
                if cfg.max_errors.is_some_and(|max| h.bad > max) {
                    h.aborted = Some(format!(
                        "more than {} bad rows (--max-errors); stopped at {file}:{line}",
                        cfg.max_errors.unwrap_or_default()
                    ));
                    stop.store(true, Ordering::Relaxed);
                    return h;
                }
            }
            cfg.stats.rows_read.store(h.rows_read, Ordering::Relaxed);
            cfg.stats
                .bytes_read
                .store(chunk.bytes_read, Ordering::Relaxed);
            sink.publish(&cfg.stats);
            progress.update(chunk.bytes_read, h.rows_read);
        }
    }
    h
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
    let (reader, columns) = source::open(&cfg.csv)?;
    let file = cfg.csv.display().to_string();
    let mut sink: Box<dyn Sink> = if cfg.dry_run {
        Box::new(DryRun::default())
    } else if cfg.transactional_id.is_some() {
        Box::new(TransactionalSink::new(cfg)?)
    } else {
        Box::new(KafkaSink::new(cfg)?)
    };
    let workers = cfg.workers.max(1);
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(workers * 2);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Cleaned>(workers * 2);
    // Parsed records go back to the reader once cleaned, so their buffers are reused
    // rather than allocated (and freed on another thread) for every row.
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded(workers * 2 + 2);
    let handed = std::thread::scope(|scope| -> Result<Handed, ProduceError> {
        let reader = {
            let (file, stop) = (file.as_str(), &*stop);
            let chunk_rows = cfg.chunk_rows.max(1);
            scope.spawn(move || read_chunks(reader, file, chunk_rows, stop, &chunk_tx, &recycle_rx))
        };
        for _ in 0..workers {
            let (rx, tx, recycle) = (chunk_rx.clone(), done_tx.clone(), recycle_tx.clone());
            scope.spawn(move || clean_chunks(cfg, columns, &rx, &tx, &recycle));
        }
        drop((chunk_rx, done_tx, recycle_tx));
        let handed = hand_in_order(cfg, &file, &done_rx, &mut *sink, &stop, &mut progress);
        // Unblock the reader and workers if we stopped early, then wait for them.
        drop(done_rx);
        reader
            .join()
            .map_err(|_| ProduceError::Internal("CSV reader thread panicked".into()))??;
        Ok(handed)
    })?;
    let complete = !stop.load(Ordering::Relaxed) && handed.aborted.is_none() && handed.failed == 0;
    let delivered = sink.finish(complete)?;
    cfg.stats.failed.fetch_add(handed.failed, Ordering::Relaxed);
    Ok(Summary {
        rows_read: handed.rows_read,
        sent: delivered.sent,
        dead_lettered: delivered.dead_lettered,
        failed: delivered.failed + handed.failed,
        seconds: started.elapsed().as_secs_f64(),
        interrupted: stop.load(Ordering::Relaxed) && handed.aborted.is_none(),
        aborted: handed.aborted,
    })
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
