//! Where each partition is loaded from: PostgreSQL's stored positions, checked against the
//! log as it is now (see [`crate::gap`]), the seeks that put the Kafka consumer there, and
//! the way back after PostgreSQL failed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use tokio::sync::watch;

use crate::config::{ConsumeError, Targets};
use crate::db::{self, DbError};
use crate::gap::{self, Live, OnGap, Verdict};
use crate::run::{Building, Loader};
use crate::sink::{Unsettled, Written};
use crate::topic_id;
use crate::tracker::Outcome;

/// How long a question to the cluster (topic id, watermarks) may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

impl Loader {
    /// Asks the cluster for the topic's id (`None` when it has no ids, or on failure, which
    /// is logged: the offsets are still checked).
    pub(crate) fn ask_topic_id(&mut self) -> Option<String> {
        self.topic_checked = Instant::now();
        let asked = crate::kafka::off_the_workers(|| {
            topic_id::topic_id(&*self.consumer, &self.cfg.topic, ASK_TIMEOUT)
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

    /// Checks the stored positions of `partitions` against the log and tells the tracker
    /// where each is loaded from (the caller settles any batch in flight first). A position
    /// that does not fit is handled by the `--on-gap` policy: recorded in `finstream_gaps`
    /// and moved to the log start, or the run stops. Returns the partitions whose position
    /// moved, to seek.
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
                self.tracker.checked(p, None);
                continue;
            };
            let verdict = self.live(p, live_id.clone()).map(|l| gap::check(st, &l));
            match verdict {
                None | Some(Verdict::Keep) | Some(Verdict::AdoptId(_)) => {
                    self.tracker.checked(p, Some(st.next));
                }
                Some(Verdict::Gap(g)) => {
                    if self.on_gap(p, &g).await? {
                        moved.push((p, g.resume_at()));
                    }
                    // Otherwise another consumer moved it: looked at again next message.
                }
            }
        }
        Ok(moved)
    }

    /// The partition's log as it is now, or `None` (logged) when the cluster cannot say.
    fn live(&self, partition: i32, topic_id: Option<String>) -> Option<Live> {
        let asked = crate::kafka::off_the_workers(|| {
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

    /// Applies the `--on-gap` policy to a position that does not fit its log. True if the
    /// gap was recorded and the position moved to the log start; false if another
    /// consumer moved the position first.
    async fn on_gap(&mut self, partition: i32, g: &gap::Gap) -> Result<bool, ConsumeError> {
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
                self.tracker.gap(partition, g.resume_at());
                Ok(true)
            }
            Written::Conflict => Ok(false),
        }
    }

    /// Seeks one partition; returns whether librdkafka accepted it.
    pub(crate) fn seek(&self, partition: i32, offset: Offset) -> bool {
        let r = crate::kafka::off_the_workers(|| {
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
    /// Only when every partition is being sought (messages received meanwhile are dropped).
    async fn seek_patiently(&self, partition: i32, target: Offset) {
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

    /// PostgreSQL went away: pauses fetching, reconnects, settles the batch that was being
    /// committed (`unsettled`: did it commit after all?), re-reads the stored offsets and
    /// seeks back to them.
    pub(crate) async fn recover(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        unsettled: Option<Unsettled>,
    ) -> Result<(), ConsumeError> {
        self.cfg.stats.postgres(false);
        let assignment = self.consumer.assignment()?;
        let _ = self.consumer.pause(&assignment);
        let client = {
            // Keep serving the consumer (rebalances, poll interval) while waiting; messages
            // received now are dropped, the partitions are sought back below.
            let connect = db::connect_with_retry(
                &self.cfg.pg,
                self.cfg.synchronous_commit,
                self.cfg.max_backoff,
                shutdown,
            );
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => break r?,
                    _ = self.consumer.recv() => {}
                }
            }
        };
        let Some(client) = client else {
            return Ok(()); // shutting down; nothing more is written
        };
        tracing::info!("PostgreSQL is back");
        self.cfg.stats.postgres(true);
        if let Some(u) = unsettled {
            let committed = match u.xid {
                Some(xid) => self.sink.committed(&client, xid).await?,
                None => false,
            };
            let outcome = if committed {
                tracing::info!("the batch in flight did commit");
                Outcome::Committed { refused: u.refused }
            } else {
                Outcome::Failed
            };
            self.tracker.commit_ended(outcome, self.now());
        }
        self.client = Some(client);
        self.reposition().await?;
        let assignment = self.consumer.assignment()?;
        let _ = self.consumer.resume(&assignment);
        Ok(())
    }

    /// Seeks every assigned partition to PostgreSQL's stored offset (asynchronously
    /// committed batches it no longer has are counted lost and load again).
    pub(crate) async fn reposition(&mut self) -> Result<(), DbError> {
        let stored: HashMap<i32, i64> = self
            .sink
            .positions(self.client()?, &self.cfg.group, &self.cfg.topic)
            .await?
            .into_iter()
            .map(|(p, s)| (p, s.next))
            .collect();
        let lost_before = self.tracker.counts().batches_lost;
        self.building = Building::default();
        let seeks = self.tracker.repositioned(&stored);
        if self.tracker.counts().batches_lost > lost_before {
            tracing::warn!("PostgreSQL lost batches committed asynchronously; loading them again");
        }
        self.published();
        for (p, next) in seeks {
            self.seek_patiently(p, next.map_or(Offset::Beginning, Offset::Offset))
                .await;
        }
        Ok(())
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
