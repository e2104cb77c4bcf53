//! Live counters of a running producer, for the metrics endpoint and the status page.

use finstream_promtext::{Kind, Text};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Shared between the pipeline, librdkafka's delivery callback and whoever reports on them.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub(crate) rows_read: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            rows_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Data rows read from the CSV.
    pub rows_read: u64,
    /// Bytes of the CSV consumed.
    pub bytes_read: u64,
    /// Messages acknowledged by Kafka.
    pub sent: u64,
    /// Bad rows acknowledged on the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages Kafka did not acknowledge.
    pub failed: u64,
    /// Rows read per second since start.
    pub rows_per_sec: f64,
}

impl Stats {
    /// Zeroes the counters (a new run).
    pub(crate) fn reset(&self) {
        for c in [
            &self.rows_read,
            &self.bytes_read,
            &self.sent,
            &self.dead_lettered,
            &self.failed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Current values.
    pub fn snapshot(&self) -> Snapshot {
        let rows_read = self.rows_read.load(Ordering::Relaxed);
        Snapshot {
            rows_read,
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rows_per_sec: rows_read as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// Prometheus text format.
    pub fn render(&self, t: &mut Text) {
        let s = self.snapshot();
        let counters = [
            (
                "finstream_producer_rows_read_total",
                "Data rows read from the CSV.",
                s.rows_read,
            ),
            (
                "finstream_producer_bytes_read_total",
                "Bytes of the CSV consumed.",
                s.bytes_read,
            ),
            (
                "finstream_producer_rows_sent_total",
                "Cleaned rows acknowledged by Kafka.",
                s.sent,
            ),
            (
                "finstream_producer_rows_dead_lettered_total",
                "Bad rows acknowledged on the dead-letter topic.",
                s.dead_lettered,
            ),
            (
                "finstream_producer_delivery_failures_total",
                "Messages Kafka did not acknowledge.",
                s.failed,
            ),
        ];
        for (name, help, v) in counters {
            t.scalar(Kind::Counter, name, help, v);
        }
    }
}
