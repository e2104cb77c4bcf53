//! A small writer for the Prometheus text exposition format (version 0.0.4), shared by the
//! broker, the producer, the consumer and the binary's `/metrics` endpoint.
//!
//! Each metric family is written once with its `# HELP` and `# TYPE` lines, then its samples.
//! Label values and help texts are escaped as the format requires (backslash, double quote
//! and line feed in label values; backslash and line feed in help), so a consumer group or
//! any other user-chosen name cannot break the exposition.
//!
//! ```
//! use finstream_promtext::{Kind, Text};
//! let mut text = Text::default();
//! text.scalar(Kind::Counter, "jobs_total", "Jobs done.", 3);
//! let mut lag = text.family(Kind::Gauge, "lag", "Messages behind.");
//! lag.sample(&[("topic", "tx"), ("partition", "0")], 12);
//! let expected = [
//!     "# HELP jobs_total Jobs done.",
//!     "# TYPE jobs_total counter",
//!     "jobs_total 3",
//!     "# HELP lag Messages behind.",
//!     "# TYPE lag gauge",
//!     "lag{topic=\"tx\",partition=\"0\"} 12",
//! ];
//! assert_eq!(text.finish(), expected.join("\n") + "\n");
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A metric family's type, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that only goes up (restarts at zero with the process).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Starts a family: writes its `# HELP` and `# TYPE` lines; add samples to what it returns.
    pub fn family<'a>(&'a mut self, kind: Kind, name: &'a str, help: &str) -> Family<'a> {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(&mut self.out, help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A family with one unlabelled sample.
    pub fn scalar(&mut self, kind: Kind, name: &str, help: &str, value: impl Display) {
        self.family(kind, name, help).sample(&[], value);
    }

    /// A histogram family with one unlabelled histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(Kind::Histogram, name, help).histogram(&[], h);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// One family's samples; see [`Text::family`].
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.line("", labels, None, value);
    }

    /// One histogram's series: its cumulative buckets, `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for (bound, c) in BUCKETS.iter().zip(&h.counts) {
            cumulative += c.load(Ordering::Relaxed);
            self.line("_bucket", labels, Some(&bound.to_string()), cumulative);
        }
        let count = h.count();
        self.line("_bucket", labels, Some("+Inf"), count);
        self.line("_sum", labels, None, h.sum_seconds());
        self.line("_count", labels, None, count);
    }

    fn line(&mut self, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, v: impl Display) {
        let out = &mut *self.out;
        out.push_str(self.name);
        out.push_str(suffix);
        let le = le.map(|b| ("le", b));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            out.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_into(out, v, true);
                out.push('"');
            }
            out.push('}');
        }
        let _ = writeln!(out, " {v}");
    }
}

/// Escapes `s` for a label value (`quote`) or a help text.
fn escape_into(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Latency buckets in seconds (upper bounds), from half a millisecond to five seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram over [`BUCKETS`], updated with relaxed atomics.
#[derive(Debug, Default)]
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
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::default();
        t.family(Kind::Gauge, "g", "back\\slash\nnew \"q\"")
            .sample(&[("group", "a\"b\\c\nd")], 1);
        assert_eq!(
            t.finish(),
            "# HELP g back\\\\slash\\nnew \"q\"\n# TYPE g gauge\ng{group=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(9));
        let mut t = Text::default();
        t.family(Kind::Histogram, "lat", "Latency.")
            .histogram(&[("api", "Produce")], &h);
        let out = t.finish();
        assert!(
            out.contains("lat_bucket{api=\"Produce\",le=\"0.0005\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{api=\"Produce\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{api=\"Produce\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{api=\"Produce\",le=\"5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{api=\"Produce\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("lat_sum{api=\"Produce\"} 9.0307\n"), "{out}");
        assert!(out.contains("lat_count{api=\"Produce\"} 3\n"), "{out}");
    }

    #[test]
    fn unlabelled_histogram_has_only_le() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(2));
        let mut t = Text::default();
        t.histogram("flush", "Flush.", &h);
        let out = t.finish();
        assert!(out.contains("flush_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("flush_sum 0.002\nflush_count 1\n"), "{out}");
    }
}
