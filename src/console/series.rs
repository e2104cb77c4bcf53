//! The console's live charts: counters sampled about once a second turned into rates and
//! kept for the last [`WINDOW_MS`], in memory. Sans-io: samples in, points out; the
//! sampler task (`sampler.rs`) does the reading and the clock.

use std::collections::VecDeque;

/// How far back the charts reach.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;

/// Counters read at one instant. `None`: this process has nothing to read it from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Records produced so far.
    pub produced: Option<u64>,
    /// Rows loaded (or offsets committed) so far.
    pub loaded: Option<u64>,
    /// Messages not yet loaded, now.
    pub lag: Option<i64>,
    /// Produce requests answered so far, and their summed latency in seconds.
    pub produce: Option<(u64, f64)>,
}

/// One point of the charts: what happened between the previous sample and this one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When (ms since the epoch).
    pub t_ms: i64,
    /// Records produced per second.
    pub produced_per_s: Option<f64>,
    /// Rows loaded per second.
    pub loaded_per_s: Option<f64>,
    /// Lag at the sample.
    pub lag: Option<i64>,
    /// Mean produce latency in the interval, in ms (`None`: no produce requests).
    pub produce_latency_ms: Option<f64>,
}

/// The last [`WINDOW_MS`] of points.
#[derive(Debug, Default)]
pub struct Series {
    points: VecDeque<Point>,
    last: Option<(i64, Totals)>,
}

/// `(now - before) / dt`, or `None` when either is unknown or the counter went back
/// (a topic deleted, a process restarted).
fn rate(now: Option<u64>, before: Option<u64>, dt_s: f64) -> Option<f64> {
    let (now, before) = (now?, before?);
    (now >= before).then(|| (now - before) as f64 / dt_s)
}

impl Series {
    /// Takes the counters read at `now_ms`. The first sample, and one not after the
    /// previous sample or the newest point (the clock went back), only sets the baseline,
    /// so the points stay in time order.
    pub fn record(&mut self, now_ms: i64, totals: Totals) {
        let prev = self.last.replace((now_ms, totals));
        let newest = self.points.back().map_or(i64::MIN, |p| p.t_ms);
        let Some((then, before)) = prev.filter(|(then, _)| *then < now_ms && newest < now_ms)
        else {
            return;
        };
        let dt_s = (now_ms - then) as f64 / 1000.0;
        let produce_latency_ms = match (totals.produce, before.produce) {
            (Some((n, sum)), Some((n0, sum0))) if n > n0 => {
                Some(((sum - sum0).max(0.0) / (n - n0) as f64) * 1000.0)
            }
            _ => None,
        };
        self.points.push_back(Point {
            t_ms: now_ms,
            produced_per_s: rate(totals.produced, before.produced, dt_s),
            loaded_per_s: rate(totals.loaded, before.loaded, dt_s),
            lag: totals.lag,
            produce_latency_ms,
        });
        while self
            .points
            .front()
            .is_some_and(|p| p.t_ms <= now_ms - WINDOW_MS)
        {
            self.points.pop_front();
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn totals(produced: u64, loaded: u64, lag: i64, produce: (u64, f64)) -> Totals {
        Totals {
            produced: Some(produced),
            loaded: Some(loaded),
            lag: Some(lag),
            produce: Some(produce),
        }
    }

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let mut s = Series::default();
        s.record(10_000, totals(100, 0, 0, (10, 0.1)));
        assert_eq!(s.points().count(), 0, "the first sample is the baseline");
        s.record(12_000, totals(300, 50, 250, (14, 0.14)));
        let p = *s.points().next().unwrap();
        assert_eq!(p.t_ms, 12_000);
        assert_eq!(p.produced_per_s, Some(100.0));
        assert_eq!(p.loaded_per_s, Some(25.0));
        assert_eq!(p.lag, Some(250));
        let latency = p.produce_latency_ms.unwrap();
        assert!((latency - 10.0).abs() < 1e-9, "{latency}");
    }

    #[test]
    fn no_requests_no_latency_and_counters_going_back_give_no_rate() {
        let mut s = Series::default();
        s.record(0, totals(100, 10, 0, (5, 1.0)));
        s.record(1000, totals(40, 10, 0, (5, 1.0)));
        let p = *s.points().next().unwrap();
        assert_eq!(p.produced_per_s, None);
        assert_eq!(p.loaded_per_s, Some(0.0));
        assert_eq!(p.produce_latency_ms, None);
    }

    #[test]
    fn a_process_without_a_counter_charts_nothing_for_it() {
        let mut s = Series::default();
        let only_lag = Totals {
            lag: Some(7),
            ..Totals::default()
        };
        s.record(0, only_lag);
        s.record(1000, only_lag);
        let p = *s.points().next().unwrap();
        assert_eq!(
            (p.produced_per_s, p.loaded_per_s, p.lag),
            (None, None, Some(7))
        );
    }

    proptest! {
        /// Against a model: the window holds exactly the samples of the last 15 minutes
        /// that followed an earlier one, in time order, and the rates integrate back to
        /// the counters' growth.
        #[test]
        fn window_and_rates_match_the_model(
            steps in prop::collection::vec((-2_000i64..120_000, 0u64..10_000), 1..300)
        ) {
            let mut s = Series::default();
            let (mut now, mut produced) = (1_000_000i64, 0u64);
            let mut model: Vec<(i64, f64)> = Vec::new();
            let mut last: Option<(i64, u64)> = None;
            for (dt, grow) in steps {
                now += dt;
                produced += grow;
                s.record(now, Totals { produced: Some(produced), ..Totals::default() });
                let newest = model.last().map_or(i64::MIN, |(t, _)| *t);
                if let Some((then, before)) = last {
                    if then < now && newest < now {
                        let r = (produced - before) as f64 / ((now - then) as f64 / 1000.0);
                        model.push((now, r));
                    }
                }
                last = Some((now, produced));
                model.retain(|(t, _)| *t > now - WINDOW_MS);
                let got: Vec<(i64, f64)> =
                    s.points().map(|p| (p.t_ms, p.produced_per_s.unwrap())).collect();
                prop_assert_eq!(got.len(), model.len());
                for ((t, r), (mt, mr)) in got.iter().zip(&model) {
                    prop_assert_eq!(t, mt);
                    prop_assert!((r - mr).abs() <= 1e-6 * mr.max(1.0));
                    prop_assert!(*r >= 0.0);
                }
            }
        }
    }
}
