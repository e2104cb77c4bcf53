//! Reads the counters this process has once a second into the live charts' series.
//! Produced: records appended to the broker's user topics (else the in-process producer's
//! sent count); loaded: the in-process consumer's rows (else the offsets the broker's
//! consumer groups committed); lag: the consumer's (else the groups'); produce latency:
//! the broker's mean per interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::series::{Series, Totals};
use crate::http::Observed;

/// How often the counters are read.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Starts sampling into a new series and returns it.
pub fn start(observed: Observed) -> Arc<Mutex<Series>> {
    let series = Arc::new(Mutex::new(Series::default()));
    let out = series.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let totals = totals(&observed);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            series
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(now_ms, totals);
        }
    });
    out
}

fn totals(o: &Observed) -> Totals {
    let mut t = Totals::default();
    if let Some(b) = &o.broker {
        let topics = b.topics();
        let user = topics
            .iter()
            .filter(|t| !t.name.starts_with("__") && !t.name.ends_with(".dlq"));
        t.produced = Some(
            user.flat_map(|t| &t.partitions)
                .map(|p| p.high_watermark.max(0) as u64)
                .sum(),
        );
        let groups = b.groups();
        let committed = groups.iter().flat_map(|g| &g.committed);
        t.loaded = Some(
            committed
                .clone()
                .filter_map(|c| c.offset)
                .map(|o| o.max(0) as u64)
                .sum(),
        );
        t.lag = Some(committed.filter_map(|c| c.lag).sum());
        t.produce = Some(b.produce_latency());
    }
    if let Some(p) = &o.producer {
        if o.broker.is_none() {
            t.produced = Some(p.snapshot().sent);
        }
    }
    if let Some(c) = &o.consumer {
        t.loaded = Some(c.snapshot().rows_loaded);
        t.lag = Some(c.lag().values().map(|l| l.lag()).sum());
    }
    t
}
