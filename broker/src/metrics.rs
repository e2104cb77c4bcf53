//! Broker metrics, rendered in the Prometheus text format: requests and their latency by API,
//! produce errors by code, bytes in and out, connections, flush latency, and per-partition
//! offsets. Counters are atomics updated on the request path; rendering reads them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Latency buckets in seconds (upper bounds).
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

const MAX_API: usize = 100;

/// Everything the broker counts.
pub struct BrokerMetrics {
    latency: Vec<Histogram>,
    produce_errors: Mutex<BTreeMap<i16, u64>>,
    /// Request bytes received (frames, including the length prefix).
    pub bytes_in: AtomicU64,
    /// Response bytes sent.
    pub bytes_out: AtomicU64,
    /// Open client connections.
    pub connections: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed because of bad input (oversized, malformed, unsupported).
    pub connections_rejected: AtomicU64,
    /// Duration of each group-commit flush (fsync).
    pub flush: Histogram,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            latency: (0..MAX_API).map(|_| Histogram::default()).collect(),
            produce_errors: Mutex::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            flush: Histogram::default(),
        }
    }
}

impl BrokerMetrics {
    /// A request of `api` took `d` from decoding to its response being written.
    pub fn request(&self, api: ApiKey, d: Duration) {
        if let Some(h) = self.latency.get(api as usize) {
            h.observe(d);
        }
    }

    /// A produce partition answered with `code` (not 0).
    pub fn produce_error(&self, code: i16) {
        let mut m = self
            .produce_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(code).or_default() += 1;
    }

    /// Requests answered for `api` so far.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.latency.get(api as usize).map_or(0, Histogram::count)
    }

    /// Renders everything but the partition gauges (see `State::render_metrics`).
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP finstream_broker_requests_total Requests answered, by API."
        );
        let _ = writeln!(out, "# TYPE finstream_broker_requests_total counter");
        for key in ApiKey::iter() {
            let n = self.requests(key);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "finstream_broker_requests_total{{api=\"{key:?}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP finstream_broker_request_seconds Time from decoding a request to writing its response.");
        let _ = writeln!(out, "# TYPE finstream_broker_request_seconds histogram");
        for key in ApiKey::iter() {
            if let Some(h) = self.latency.get(key as usize).filter(|h| h.count() > 0) {
                h.render(
                    out,
                    "finstream_broker_request_seconds",
                    &format!("api=\"{key:?}\""),
                );
            }
        }
        let _ = writeln!(out, "# HELP finstream_broker_produce_errors_total Produce partition responses with an error, by Kafka error code.");
        let _ = writeln!(out, "# TYPE finstream_broker_produce_errors_total counter");
        for (code, n) in self
            .produce_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let name = kafka_protocol::ResponseError::try_from_code(*code)
                .map(|e| format!("{e:?}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "finstream_broker_produce_errors_total{{code=\"{code}\",error=\"{name}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "finstream_broker_bytes_in_total",
                "Request bytes received.",
                self.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "finstream_broker_bytes_out_total",
                "Response bytes sent.",
                self.bytes_out.load(Ordering::Relaxed) as i64,
            ),
            (
                "finstream_broker_connections_accepted_total",
                "Connections accepted.",
                self.connections_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "finstream_broker_connections_rejected_total",
                "Connections closed for bad input.",
                self.connections_rejected.load(Ordering::Relaxed) as i64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP finstream_broker_connections Open client connections.\n# TYPE finstream_broker_connections gauge\nfinstream_broker_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP finstream_broker_flush_seconds Group-commit flush (fsync) duration."
        );
        let _ = writeln!(out, "# TYPE finstream_broker_flush_seconds histogram");
        self.flush.render(out, "finstream_broker_flush_seconds", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = BrokerMetrics::default();
        m.request(ApiKey::Produce, Duration::from_micros(700));
        m.request(ApiKey::Produce, Duration::from_millis(30));
        m.produce_error(10);
        m.flush.observe(Duration::from_millis(2));
        m.bytes_in.fetch_add(123, Ordering::Relaxed);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("finstream_broker_requests_total{api=\"Produce\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("finstream_broker_request_seconds_bucket{api=\"Produce\",le=\"0.001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("finstream_broker_request_seconds_bucket{api=\"Produce\",le=\"0.05\"} 2"),
            "{out}"
        );
        assert!(
            out.contains(
                "finstream_broker_produce_errors_total{code=\"10\",error=\"MessageTooLarge\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("finstream_broker_flush_seconds_count 1"),
            "{out}"
        );
        assert!(out.contains("finstream_broker_bytes_in_total 123"), "{out}");
        assert!(
            !out.contains("api=\"Fetch\""),
            "APIs never called are left out"
        );
    }
}
