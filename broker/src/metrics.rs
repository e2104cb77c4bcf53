//! Broker metrics, rendered in the Prometheus text format: requests and their latency by API,
//! produce errors by code, bytes in and out, connections, flush latency, and per-partition
//! offsets. Counters are atomics updated on the request path; rendering reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use finstream_promtext::{Histogram, Kind, Text};
use kafka_protocol::messages::ApiKey;

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

    /// Produce requests answered so far and their summed latency in seconds.
    pub fn produce_latency(&self) -> (u64, f64) {
        self.latency
            .get(ApiKey::Produce as usize)
            .map_or((0, 0.0), |h| (h.count(), h.sum_seconds()))
    }

    /// Requests answered for `api` so far.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.latency.get(api as usize).map_or(0, Histogram::count)
    }

    /// Renders everything but the partition gauges (see `State::render_metrics`).
    pub fn render(&self, t: &mut Text) {
        let mut requests = t.family(
            Kind::Counter,
            "finstream_broker_requests_total",
            "Requests answered, by API.",
        );
        for key in ApiKey::iter() {
            let n = self.requests(key);
            if n > 0 {
                requests.sample(&[("api", &format!("{key:?}"))], n);
            }
        }
        let mut latency = t.family(
            Kind::Histogram,
            "finstream_broker_request_seconds",
            "Time from decoding a request to writing its response.",
        );
        for key in ApiKey::iter() {
            if let Some(h) = self.latency.get(key as usize).filter(|h| h.count() > 0) {
                latency.histogram(&[("api", &format!("{key:?}"))], h);
            }
        }
        self.render_produce_errors(t);
        for (name, help, v) in [
            (
                "finstream_broker_bytes_in_total",
                "Request bytes received.",
                &self.bytes_in,
            ),
            (
                "finstream_broker_bytes_out_total",
                "Response bytes sent.",
                &self.bytes_out,
            ),
            (
                "finstream_broker_connections_accepted_total",
                "Connections accepted.",
                &self.connections_total,
            ),
            (
                "finstream_broker_connections_rejected_total",
                "Connections closed for bad input.",
                &self.connections_rejected,
            ),
        ] {
            t.scalar(Kind::Counter, name, help, v.load(Ordering::Relaxed));
        }
        t.scalar(
            Kind::Gauge,
            "finstream_broker_connections",
            "Open client connections.",
            self.connections.load(Ordering::Relaxed),
        );
        t.histogram(
            "finstream_broker_flush_seconds",
            "Group-commit flush (fsync) duration.",
            &self.flush,
        );
    }

    fn render_produce_errors(&self, t: &mut Text) {
        let mut errors = t.family(
            Kind::Counter,
            "finstream_broker_produce_errors_total",
            "Produce partition responses with an error, by Kafka error code.",
        );
        let counts = self
            .produce_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (code, n) in counts.iter() {
            let name = kafka_protocol::ResponseError::try_from_code(*code)
                .map(|e| format!("{e:?}"))
                .unwrap_or_default();
            errors.sample(&[("code", &code.to_string()), ("error", &name)], n);
        }
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
        let mut t = Text::default();
        m.render(&mut t);
        let out = t.finish();
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
