//! Live counters of a running consumer, for metrics, status pages and readiness checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use finstream_promtext::{Kind, Text};

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
    /// Rows and dead letters counted as committed that PostgreSQL then lost in a crash
    /// (asynchronous commit) and that are loaded again: counters only grow, so the loss is
    /// counted here rather than subtracted.
    rows_lost: AtomicU64,
    dead_letters_lost: AtomicU64,
    /// Stored positions that did not fit their log, by kind (see `crate::gap`).
    gaps: [AtomicU64; 3],
    assigned: AtomicBool,
    postgres_ok: AtomicBool,
    /// Per assigned (topic, partition): PostgreSQL's next offset and the broker's high
    /// watermark, as of librdkafka's last statistics report.
    lag: Mutex<BTreeMap<(String, i32), PartitionLag>>,
}

/// The kinds of gap counted, as in `finstream_gaps.kind`.
const GAP_KINDS: [&str; 3] = ["topic_recreated", "past_end", "below_start"];

/// A per-partition gauge: name, help, value.
type Gauge = (&'static str, &'static str, fn(&PartitionLag) -> i64);

/// How far one partition's loading is behind its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// Next offset to load (what PostgreSQL holds, or the log start when nothing is loaded).
    pub position: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
}

impl PartitionLag {
    /// Messages in the log not yet loaded.
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.position).max(0)
    }
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
            rows_lost: AtomicU64::new(0),
            dead_letters_lost: AtomicU64::new(0),
            gaps: Default::default(),
            assigned: AtomicBool::new(false),
            postgres_ok: AtomicBool::new(false),
            lag: Mutex::new(BTreeMap::new()),
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
    /// Copies the run's counts (they only grow, so the counters never decrease).
    pub(crate) fn publish(&self, c: &crate::tracker::Counts) {
        self.rows_loaded.store(c.rows, Ordering::Relaxed);
        self.dead_letters.store(c.dead_letters, Ordering::Relaxed);
        self.batches.store(c.batches, Ordering::Relaxed);
        self.retries.store(c.retries, Ordering::Relaxed);
        self.rows_lost.store(c.rows_lost, Ordering::Relaxed);
        self.dead_letters_lost
            .store(c.dead_letters_lost, Ordering::Relaxed);
    }

    /// A batch's transaction took `took`.
    pub(crate) fn batch_took(&self, took: Duration) {
        self.batch_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.postgres_ok.store(true, Ordering::Relaxed);
    }

    /// A stored position that did not fit its log (`kind` as in `finstream_gaps.kind`).
    pub(crate) fn gap(&self, kind: &str) {
        if let Some(i) = GAP_KINDS.iter().position(|k| *k == kind) {
            self.gaps[i].fetch_add(1, Ordering::Relaxed);
        }
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

    /// Replaces the per-partition lag table (the partitions this consumer holds now).
    pub(crate) fn set_lag(&self, lag: BTreeMap<(String, i32), PartitionLag>) {
        if let Ok(mut l) = self.lag.lock() {
            *l = lag;
        }
    }

    /// Lag per assigned (topic, partition), as of the last statistics report.
    pub fn lag(&self) -> BTreeMap<(String, i32), PartitionLag> {
        self.lag.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the consumer holds at least one partition.
    pub fn assigned(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Whether the last contact with PostgreSQL succeeded.
    pub fn postgres_ok(&self) -> bool {
        self.postgres_ok.load(Ordering::Relaxed)
    }

    /// Current values (rows and dead letters net of those PostgreSQL lost).
    pub fn snapshot(&self) -> Snapshot {
        let net = |total: &AtomicU64, lost: &AtomicU64| {
            total
                .load(Ordering::Relaxed)
                .saturating_sub(lost.load(Ordering::Relaxed))
        };
        let rows = net(&self.rows_loaded, &self.rows_lost);
        Snapshot {
            rows_loaded: rows,
            dead_letters: net(&self.dead_letters, &self.dead_letters_lost),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rows_per_sec: rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
        }
    }

    /// Prometheus text format.
    pub fn render(&self, t: &mut Text) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "finstream_consumer_rows_loaded_total",
                "Rows committed to the table (including rows PostgreSQL later lost).",
                &self.rows_loaded,
            ),
            (
                "finstream_consumer_dead_letters_total",
                "Poison messages committed to the dead-letter table.",
                &self.dead_letters,
            ),
            (
                "finstream_consumer_rows_lost_total",
                "Committed rows PostgreSQL lost in a crash (asynchronous commit), loaded again.",
                &self.rows_lost,
            ),
            (
                "finstream_consumer_dead_letters_lost_total",
                "Committed dead letters PostgreSQL lost in a crash, written again.",
                &self.dead_letters_lost,
            ),
            (
                "finstream_consumer_batches_total",
                "Transactions committed.",
                &self.batches,
            ),
            (
                "finstream_consumer_retries_total",
                "Batches rolled back and retried.",
                &self.retries,
            ),
            (
                "finstream_consumer_postgres_errors_total",
                "PostgreSQL failures (connection lost, server down).",
                &self.postgres_errors,
            ),
        ];
        for (name, help, v) in counters {
            t.scalar(Kind::Counter, name, help, load(v));
        }
        let mut gaps = t.family(
            Kind::Counter,
            "finstream_consumer_gaps_total",
            "Stored positions that did not fit their log (finstream_gaps).",
        );
        for (kind, n) in GAP_KINDS.iter().zip(&self.gaps) {
            gaps.sample(&[("kind", kind)], load(n));
        }
        t.scalar(
            Kind::Counter,
            "finstream_consumer_batch_seconds_total",
            "Time spent committing batches.",
            load(&self.batch_micros) as f64 / 1e6,
        );
        t.scalar(
            Kind::Gauge,
            "finstream_consumer_postgres_up",
            "Whether the last PostgreSQL contact succeeded.",
            u8::from(self.postgres_ok()),
        );
        self.render_lag(t);
    }

    fn render_lag(&self, t: &mut Text) {
        let lag = self.lag();
        let gauges: [Gauge; 3] = [
            (
                "finstream_consumer_lag",
                "Messages in the partition not yet loaded into PostgreSQL.",
                PartitionLag::lag,
            ),
            (
                "finstream_consumer_position",
                "Next offset to load (what PostgreSQL holds).",
                |l| l.position,
            ),
            (
                "finstream_consumer_high_watermark",
                "The partition's high watermark as last reported by the broker.",
                |l| l.high_watermark,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = t.family(Kind::Gauge, name, help);
            for ((topic, p), l) in &lag {
                family.sample(&[("topic", topic), ("partition", &p.to_string())], value(l));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_rendered_per_partition_and_never_negative() {
        let stats = Stats::default();
        let mut lag = BTreeMap::new();
        lag.insert(
            ("tx".to_string(), 0),
            PartitionLag {
                position: 40,
                high_watermark: 100,
            },
        );
        lag.insert(
            ("tx".to_string(), 1),
            PartitionLag {
                position: 7,
                high_watermark: 5,
            },
        );
        stats.set_lag(lag);
        let mut t = Text::default();
        stats.render(&mut t);
        let out = t.finish();
        assert!(
            out.contains("finstream_consumer_lag{topic=\"tx\",partition=\"0\"} 60\n"),
            "{out}"
        );
        assert!(
            out.contains("finstream_consumer_lag{topic=\"tx\",partition=\"1\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("finstream_consumer_position{topic=\"tx\",partition=\"0\"} 40\n"));
        assert!(
            out.contains("finstream_consumer_high_watermark{topic=\"tx\",partition=\"0\"} 100\n")
        );
    }

    /// Prometheus reads a counter that goes down as a reset: a loss is its own counter.
    #[test]
    fn counters_never_decrease_when_postgres_loses_a_batch() {
        let stats = Stats::default();
        stats.publish(&crate::tracker::Counts {
            rows: 100,
            dead_letters: 2,
            batches: 1,
            rows_lost: 40,
            dead_letters_lost: 1,
            ..Default::default()
        });
        stats.gap("past_end");
        let mut t = Text::default();
        stats.render(&mut t);
        let out = t.finish();
        for line in [
            "finstream_consumer_rows_loaded_total 100\n",
            "finstream_consumer_dead_letters_total 2\n",
            "finstream_consumer_rows_lost_total 40\n",
            "finstream_consumer_dead_letters_lost_total 1\n",
            "finstream_consumer_gaps_total{kind=\"past_end\"} 1\n",
            "finstream_consumer_gaps_total{kind=\"topic_recreated\"} 0\n",
        ] {
            assert!(out.contains(line), "{line}: {out}");
        }
        assert_eq!(stats.snapshot().rows_loaded, 60);
    }
}
