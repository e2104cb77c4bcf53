//! Whether a stored position still belongs to the log it was taken from, decided without
//! I/O.
//!
//! `finstream_offsets` keeps, per partition, the next offset to load and the id of the topic
//! it was loaded from. A stored position no longer fits the log when:
//! * the topic was deleted and created again under the same name (its id changed): the new
//!   log is loaded from its start, whatever the old position was;
//! * it lies past the log's end (the log was truncated or replaced by one without topic
//!   ids): the rows it claims do not exist;
//! * it lies below the log's start (retention or DeleteRecords removed offsets before they
//!   were loaded): those offsets can never be loaded.
//!
//! Each case is a [`Gap`]: the consumer logs it, counts it, records it in
//! `finstream_gaps` and, by the `--on-gap` policy, resumes at the log start or stops.

/// What PostgreSQL holds for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Next offset to load.
    pub next: i64,
    /// The topic id it was loaded from; `None` for rows written before ids were recorded, or
    /// from a cluster that has no topic ids.
    pub topic_id: Option<String>,
}

/// What the cluster says of the partition now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The topic's id (`None` when the cluster has no topic ids, before Kafka 2.8).
    pub topic_id: Option<String>,
    /// First offset in the log.
    pub log_start: i64,
    /// High watermark: one past the last offset a consumer can read.
    pub high_watermark: i64,
}

/// How a stored position fails to fit the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapKind {
    /// The topic's id changed.
    TopicRecreated {
        /// Id the position was taken from.
        old: String,
        /// Id of the topic now.
        new: String,
    },
    /// The stored position is beyond the high watermark.
    PastEnd,
    /// The stored position is below the log start: offsets `stored..log_start` are gone.
    BelowStart,
}

impl GapKind {
    /// The name stored in `finstream_gaps.kind` and used as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            GapKind::TopicRecreated { .. } => "topic_recreated",
            GapKind::PastEnd => "past_end",
            GapKind::BelowStart => "below_start",
        }
    }
}

/// A stored position that does not fit its log, and where loading resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// What is wrong.
    pub kind: GapKind,
    /// The stored next offset.
    pub stored: i64,
    /// The log as it is now.
    pub live: Live,
}

impl Gap {
    /// Where loading resumes: the start of the log as it is now.
    pub fn resume_at(&self) -> i64 {
        self.live.log_start
    }

    /// One sentence for logs, errors and the audit table.
    pub fn describe(&self, topic: &str, partition: i32) -> String {
        let Live {
            log_start,
            high_watermark,
            ..
        } = self.live;
        let at = format!("{topic}/{partition}");
        match &self.kind {
            GapKind::TopicRecreated { old, new } => format!(
                "{at}: the topic was recreated (id {old} -> {new}); the stored position {} \
                 belongs to the old log; loading the new log from offset {log_start}",
                self.stored
            ),
            GapKind::PastEnd => format!(
                "{at}: the stored position {} is past the end of the log (high watermark \
                 {high_watermark}): the log was truncated or replaced",
                self.stored
            ),
            GapKind::BelowStart => format!(
                "{at}: offsets {}..{} were removed from the log (log start {log_start}) before \
                 they were loaded",
                self.stored,
                log_start - 1
            ),
        }
    }
}

/// What to do with one partition's stored position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It fits: continue from it.
    Keep,
    /// It fits, but the row has no topic id yet: record the live one.
    AdoptId(String),
    /// It does not fit.
    Gap(Gap),
}

/// Decides whether `stored` fits the log described by `live`.
pub fn check(stored: &Stored, live: &Live) -> Verdict {
    if let (Some(old), Some(new)) = (&stored.topic_id, &live.topic_id) {
        if old != new {
            return Verdict::Gap(Gap {
                kind: GapKind::TopicRecreated {
                    old: old.clone(),
                    new: new.clone(),
                },
                stored: stored.next,
                live: live.clone(),
            });
        }
    }
    let kind = if stored.next > live.high_watermark {
        Some(GapKind::PastEnd)
    } else if stored.next < live.log_start {
        Some(GapKind::BelowStart)
    } else {
        None
    };
    match (kind, &stored.topic_id, &live.topic_id) {
        (Some(kind), _, _) => Verdict::Gap(Gap {
            kind,
            stored: stored.next,
            live: live.clone(),
        }),
        (None, None, Some(new)) => Verdict::AdoptId(new.clone()),
        (None, _, _) => Verdict::Keep,
    }
}

/// What the consumer does on a gap in the log (`--on-gap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnGap {
    /// Record the gap and load from the log start.
    #[default]
    Earliest,
    /// Record nothing and stop with an error naming the partition and the offsets.
    Fail,
}

impl std::str::FromStr for OnGap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(OnGap::Earliest),
            "fail" => Ok(OnGap::Fail),
            other => Err(format!("--on-gap must be earliest or fail, not '{other}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(next: i64, id: Option<&str>) -> Stored {
        Stored {
            next,
            topic_id: id.map(str::to_string),
        }
    }

    fn live(id: Option<&str>, log_start: i64, high_watermark: i64) -> Live {
        Live {
            topic_id: id.map(str::to_string),
            log_start,
            high_watermark,
        }
    }

    fn kind(v: Verdict) -> Option<&'static str> {
        match v {
            Verdict::Gap(g) => Some(g.kind.name()),
            _ => None,
        }
    }

    #[test]
    fn positions_inside_the_log_are_kept() {
        for next in [0, 5, 10] {
            assert_eq!(
                check(&stored(next, Some("A")), &live(Some("A"), 0, 10)),
                Verdict::Keep
            );
        }
        // A cluster without topic ids: only the offsets are checked.
        assert_eq!(
            check(&stored(3, Some("A")), &live(None, 0, 10)),
            Verdict::Keep
        );
        assert_eq!(check(&stored(3, None), &live(None, 0, 10)), Verdict::Keep);
    }

    #[test]
    fn rows_from_before_ids_adopt_the_live_id_without_a_reset() {
        assert_eq!(
            check(&stored(3, None), &live(Some("A"), 0, 10)),
            Verdict::AdoptId("A".into())
        );
    }

    #[test]
    fn a_recreated_topic_is_loaded_from_its_start_even_when_the_offsets_fit() {
        // The case: 5 rows loaded from the old log, 8 in the new one.
        let v = check(&stored(5, Some("A")), &live(Some("B"), 0, 8));
        let Verdict::Gap(g) = v else { panic!("{v:?}") };
        assert_eq!(g.resume_at(), 0);
        assert_eq!(g.kind.name(), "topic_recreated");
        assert!(
            g.describe("t", 0).contains("A -> B"),
            "{}",
            g.describe("t", 0)
        );
    }

    #[test]
    fn past_the_end_and_below_the_start_are_gaps() {
        assert_eq!(
            kind(check(&stored(11, Some("A")), &live(Some("A"), 0, 10))),
            Some("past_end")
        );
        let v = check(&stored(2, None), &live(None, 7, 10));
        let Verdict::Gap(g) = v else { panic!("{v:?}") };
        assert_eq!((g.kind.name(), g.resume_at()), ("below_start", 7));
        assert!(
            g.describe("t", 1).contains("offsets 2..6"),
            "{}",
            g.describe("t", 1)
        );
        // An empty log whose start moved (everything deleted) with the position at the end.
        assert_eq!(check(&stored(10, None), &live(None, 10, 10)), Verdict::Keep);
    }

    #[test]
    fn every_verdict_resumes_inside_the_log() {
        // Exhaustive over small logs: a gap always resumes at an offset the log has (or its
        // end when empty), and a kept position is always inside the log.
        for start in 0..4 {
            for hw in start..6 {
                for next in 0..8 {
                    for (a, b) in [(None, None), (Some("A"), Some("A")), (Some("A"), Some("B"))] {
                        let l = live(b, start, hw);
                        match check(&stored(next, a), &l) {
                            Verdict::Gap(g) => {
                                assert!((start..=hw).contains(&g.resume_at()));
                            }
                            Verdict::Keep | Verdict::AdoptId(_) => {
                                assert!((start..=hw).contains(&next));
                                assert_eq!(a, b.filter(|_| a.is_some()));
                            }
                        }
                    }
                }
            }
        }
    }
}
