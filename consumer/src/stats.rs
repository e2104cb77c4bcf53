//! Live counters of a running consumer, for metrics, status pages and readiness checks.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared between the consumer loop and whoever reports on it.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    rows_loaded: AtomicU64,
    dead_letters: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    postgres_errors: AtomicU64,
    batch_micros: AtomicU64,
    assigned: AtomicBool,
    postgres_ok: AtomicBool,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            rows_loaded: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            postgres_errors: AtomicU64::new(0),
            batch_micros: AtomicU64::new(0),
            assigned: AtomicBool::new(false),
            postgres_ok: AtomicBool::new(false),
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Rows committed.
    pub rows_loaded: u64,
    /// Poison messages committed to the dead-letter table.
    pub dead_letters: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Batches rolled back and retried.
    pub retries: u64,
    /// Rows per second since start.
    pub rows_per_sec: f64,
}

impl Stats {
    pub(crate) fn committed(&self, rows: usize, dead: usize, took: Duration) {
        self.rows_loaded.fetch_add(rows as u64, Ordering::Relaxed);
        self.dead_letters.fetch_add(dead as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.postgres_ok.store(true, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn postgres(&self, ok: bool) {
        if !ok {
            self.postgres_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.postgres_ok.store(ok, Ordering::Relaxed);
    }
    pub(crate) fn set_assigned(&self, assigned: bool) {
        self.assigned.store(assigned, Ordering::Relaxed);
    }

    /// Whether the consumer holds at least one partition.
    pub fn assigned(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Whether the last contact with PostgreSQL succeeded.
    pub fn postgres_ok(&self) -> bool {
        self.postgres_ok.load(Ordering::Relaxed)
    }

    /// Current values.
    pub fn snapshot(&self) -> Snapshot {
        let rows = self.rows_loaded.load(Ordering::Relaxed);
        Snapshot {
            rows_loaded: rows,
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rows_per_sec: rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let s = self.snapshot();
        let counters = [
            (
                "finstream_consumer_rows_loaded_total",
                "Rows committed to the table.",
                s.rows_loaded,
            ),
            (
                "finstream_consumer_dead_letters_total",
                "Poison messages committed to the dead-letter table.",
                s.dead_letters,
            ),
            (
                "finstream_consumer_batches_total",
                "Transactions committed.",
                s.batches,
            ),
            (
                "finstream_consumer_retries_total",
                "Batches rolled back and retried.",
                s.retries,
            ),
            (
                "finstream_consumer_postgres_errors_total",
                "PostgreSQL failures (connection lost, server down).",
                self.postgres_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP finstream_consumer_batch_seconds_total Time spent committing batches.\n# TYPE finstream_consumer_batch_seconds_total counter\nfinstream_consumer_batch_seconds_total {}",
            self.batch_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP finstream_consumer_postgres_up Whether the last PostgreSQL contact succeeded.\n# TYPE finstream_consumer_postgres_up gauge\nfinstream_consumer_postgres_up {}",
            u8::from(self.postgres_ok())
        );
    }
}
