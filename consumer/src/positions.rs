//! Where each partition is loaded from: PostgreSQL's stored positions, checked against the
//! log as it is now (see [`crate::gap`]), and the seeks that put the Kafka consumer there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::config::{ConsumeError, Targets};
use crate::db::{DbError, Written};
use crate::gap::{self, Live, OnGap, Verdict};
use crate::run::Loader;
use crate::topic_id;

/// How long a question to the cluster (topic id, watermarks) may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

impl Loader {
    /// Asks the cluster for the topic's id (`None` when it has no ids, or on failure, which
    /// is logged: the offsets are still checked).
    pub(crate) fn ask_topic_id(&mut self) -> Option<String> {
        self.topic_checked = Instant::now();
        let asked = tokio::task::block_in_place(|| {
            topic_id::topic_id(&self.consumer, &self.cfg.topic, ASK_TIMEOUT)
        });
        match asked {
            Ok(id) => {
                if id.is_some() {
                    self.topic_id.clone_from(&id);
                }
                id
            }
            Err(e) => {
                // Once per run at warn level: a cluster without topic ids fails every time.
                if std::mem::replace(&mut self.topic_id_warned, true) {
                    tracing::debug!("{e}; checking offsets only");
                } else {
                    tracing::warn!("{e}; checking offsets only (further failures at debug level)");
                }
                None
            }
        }
    }

    /// Checks the stored positions of `partitions` against the log and records where each
    /// is loaded from in `self.positions` (the caller settles any batch in flight first).
    /// A position that does not fit is handled by the `--on-gap` policy: recorded in
    /// `finstream_gaps` and moved to the log start, or the run stops. Returns the
    /// partitions whose position moved, to seek.
    pub(crate) async fn reconcile(
        &mut self,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, ConsumeError> {
        let stored = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?;
        let live_id = if partitions.iter().any(|p| stored.contains_key(p)) {
            self.ask_topic_id()
        } else {
            None
        };
        let mut moved = Vec::new();
        for &p in partitions {
            let Some(st) = stored.get(&p) else {
                self.positions.insert(p, None);
                continue;
            };
            let next = match self.live(p, live_id.clone()).map(|l| gap::check(st, &l)) {
                None | Some(Verdict::Keep) | Some(Verdict::AdoptId(_)) => Some(st.next),
                Some(Verdict::Gap(g)) => self.on_gap(p, &g).await?,
            };
            match next {
                Some(n) => {
                    self.positions.insert(p, Some(n));
                    self.remember(p, n);
                    if n != st.next {
                        moved.push((p, n));
                    }
                }
                // Another consumer moved it: look again at the next message.
                None => {
                    self.positions.remove(&p);
                }
            }
        }
        Ok(moved)
    }

    /// The partition's log as it is now, or `None` (logged) when the cluster cannot say.
    fn live(&self, partition: i32, topic_id: Option<String>) -> Option<Live> {
        let asked = tokio::task::block_in_place(|| {
            self.consumer
                .fetch_watermarks(&self.cfg.topic, partition, ASK_TIMEOUT)
        });
        match asked {
            Ok((log_start, high_watermark)) => Some(Live {
                topic_id,
                log_start,
                high_watermark,
            }),
            Err(e) => {
                tracing::warn!(
                    "cannot read the offsets of {}/{partition}: {e}; its stored position is \
                     not checked now",
                    self.cfg.topic
                );
                None
            }
        }
    }

    /// Applies the `--on-gap` policy to a position that does not fit its log. Returns where
    /// loading resumes, or `None` if another consumer moved the position first.
    async fn on_gap(&mut self, partition: i32, g: &gap::Gap) -> Result<Option<i64>, ConsumeError> {
        let what = g.describe(&self.cfg.topic, partition);
        let recreated = matches!(g.kind, gap::GapKind::TopicRecreated { .. });
        if self.cfg.on_gap == OnGap::Fail && !recreated {
            return Err(ConsumeError::Gap(what));
        }
        tracing::warn!(
            "{what}; recorded in finstream_gaps, resuming at {}",
            g.resume_at()
        );
        let (group, topic) = (self.cfg.group.clone(), self.cfg.topic.clone());
        let client = self.client.as_mut().ok_or(DbError::Internal(
            "PostgreSQL connection used while lent to a commit",
        ))?;
        match self
            .sink
            .record_gap(client, &group, &topic, partition, g)
            .await?
        {
            Written::Committed { .. } => {
                self.cfg.stats.gap(g.kind.name());
                self.summary.gaps += 1;
                Ok(Some(g.resume_at()))
            }
            Written::Conflict => Ok(None),
        }
    }

    /// Where a partition assigned later starts (see `Ctx::pg_positions`).
    fn remember(&self, partition: i32, next: i64) {
        if let Ok(mut known) = self.consumer.context().pg_positions.lock() {
            known.insert(partition, next);
        }
    }

    /// The assigned partitions whose position has not been checked since assignment.
    pub(crate) fn unchecked(&self) -> Vec<i32> {
        self.assigned()
            .into_iter()
            .filter(|p| !self.positions.contains_key(p))
            .collect()
    }

    /// The partitions assigned to this consumer now.
    pub(crate) fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .unwrap_or_default()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// Seeks one partition; returns whether librdkafka accepted it.
    pub(crate) fn seek(&self, partition: i32, offset: Offset) -> bool {
        let r = tokio::task::block_in_place(|| {
            self.consumer
                .seek(&self.cfg.topic, partition, offset, Duration::from_secs(5))
        });
        if let Err(e) = &r {
            tracing::debug!(
                partition,
                "seek to {offset:?} failed (partition moved or not fetching yet?): {e}"
            );
        }
        r.is_ok()
    }

    /// Seeks, retrying briefly: a partition assigned a moment ago may not be fetching yet.
    pub(crate) async fn seek_patiently(&self, partition: i32, target: Offset) {
        for attempt in 0..50 {
            if self.seek(partition, target) {
                return;
            }
            if attempt == 49 {
                tracing::warn!(partition, "could not seek to {target:?}");
            }
            // Serve the consumer (callbacks, fetch start) while waiting.
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
        }
    }

    /// Seeks every assigned partition to PostgreSQL's stored offset.
    pub(crate) async fn reposition(&mut self) -> Result<(), DbError> {
        self.positions.clear();
        let stored: HashMap<i32, i64> = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?
            .into_iter()
            .map(|(p, s)| (p, s.next))
            .collect();
        // After a PostgreSQL crash, asynchronously committed batches may be gone: what this
        // process remembered committing can be *ahead* of the table, so forget it.
        if let Ok(mut known) = self.consumer.context().pg_positions.lock() {
            known.clone_from(&stored);
        }
        self.uncount_lost(&stored);
        for p in self.assigned() {
            let next = stored.get(&p).copied();
            self.positions.insert(p, next);
            self.seek_patiently(p, next.map_or(Offset::Beginning, Offset::Offset))
                .await;
        }
        Ok(())
    }

    /// Batches the table no longer has were not loaded after all: uncounts them.
    fn uncount_lost(&mut self, stored: &HashMap<i32, i64>) {
        for u in self.unconfirmed.drain(..) {
            let lost = u
                .next
                .iter()
                .any(|(p, next)| stored.get(p).is_none_or(|s| s < next));
            if lost {
                tracing::warn!(
                    rows = u.rows,
                    "a batch committed asynchronously was lost by PostgreSQL; loading it again"
                );
                self.summary.rows_loaded -= u.rows.min(self.summary.rows_loaded);
                self.summary.dead_letters -= u.dead.min(self.summary.dead_letters);
                self.summary.batches = self.summary.batches.saturating_sub(1);
                self.cfg.stats.lost(u.rows, u.dead);
            }
        }
    }

    /// True once PostgreSQL holds at least `targets` for every partition.
    pub(crate) async fn reached(&self, targets: &Targets) -> Result<bool, DbError> {
        let stored = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?;
        Ok(targets
            .iter()
            .all(|(p, hw)| *hw == 0 || stored.get(p).is_some_and(|s| s.next >= *hw)))
    }
}
