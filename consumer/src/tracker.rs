//! The consumer's exactly-once bookkeeping as a state machine, without I/O.
//!
//! Events go in (a message arrived, partitions were assigned or revoked, a position was
//! read from PostgreSQL, a batch was handed over, its commit came back, time passed);
//! decisions come out (take the message, skip it, check the partition first, seek, how the
//! summary's counts change). The driver (`run.rs`) does the Kafka and PostgreSQL calls.
//!
//! PostgreSQL's `finstream_offsets` is the truth. For every partition the tracker keeps one
//! position, the next offset the next batch continues from, and the offset PostgreSQL is
//! known to hold. A batch's compare-and-set expects the position its batch was built on,
//! so a batch built on a stale position is refused by PostgreSQL, never loaded twice.
//! Batches commit one at a time and in order; when one does not commit, the batch built on
//! it is dropped and every partition goes back to what PostgreSQL holds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::sink::Advance;

/// Milliseconds on a clock of the caller's choosing.
pub type Millis = u64;

/// A batch committed with `synchronous_commit = off` stays uncertain this long: a
/// PostgreSQL crash within it can take it back (WAL is flushed within 3 x
/// `wal_writer_delay`, 600 ms by default).
pub const UNCONFIRMED_FOR: Millis = 30_000;

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Put it in the batch (as a row or a dead letter: call [`Tracker::taken`]).
    Yes,
    /// Already loaded (a redelivery): drop it.
    Skip,
    /// The partition's position is not known, or Kafka delivered it far behind the
    /// position: check the position against the log ([`Tracker::checked`]), then offer the
    /// message again.
    Check,
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; `refused` of its rows went to the dead-letter table instead.
    Committed {
        /// Rows PostgreSQL refused for their content.
        refused: usize,
    },
    /// Another consumer moved a position first: nothing was written.
    Conflict,
    /// PostgreSQL failed (down, restarting, an ambiguous COMMIT): unknown whether it
    /// committed; the positions must be read again.
    Failed,
}

/// Counts of a run; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rows committed to the table.
    pub rows: u64,
    /// Dead letters committed.
    pub dead_letters: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Times the consumer went back to PostgreSQL's positions (an offset conflict, a
    /// PostgreSQL failure) and loaded again from there.
    pub retries: u64,
    /// Rows committed asynchronously that PostgreSQL then lost (and that load again).
    pub rows_lost: u64,
    /// Dead letters likewise lost.
    pub dead_letters_lost: u64,
    /// Batches likewise lost.
    pub batches_lost: u64,
    /// Stored positions that did not fit their log (recorded in `finstream_gaps`).
    pub gaps: u64,
}

impl Counts {
    /// Rows in the table now, by this run's count.
    pub fn rows_net(&self) -> u64 {
        self.rows.saturating_sub(self.rows_lost)
    }
    /// Dead letters in the table now.
    pub fn dead_letters_net(&self) -> u64 {
        self.dead_letters.saturating_sub(self.dead_letters_lost)
    }
    /// Batches still in the table.
    pub fn batches_net(&self) -> u64 {
        self.batches.saturating_sub(self.batches_lost)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Part {
    /// Checked against the log since it was assigned (or repositioned).
    checked: bool,
    /// Where the next batch continues (`None`: nothing loaded yet, from the log start).
    next: Option<i64>,
}

/// A batch being built or committed.
#[derive(Debug, Clone, Default)]
struct Batch {
    advances: BTreeMap<i32, Advance>,
    rows: u64,
    dead: u64,
}

#[derive(Debug, Clone)]
struct Unconfirmed {
    at: Millis,
    next: BTreeMap<i32, i64>,
    rows: u64,
    dead: u64,
}

/// The consumer's positions, batches and counts.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: BTreeMap<i32, Part>,
    /// What PostgreSQL holds, as last read or committed by this process: where newly
    /// assigned partitions start (whatever the group's Kafka offsets say).
    durable: BTreeMap<i32, i64>,
    building: Batch,
    in_flight: Option<Batch>,
    unconfirmed: VecDeque<Unconfirmed>,
    asynchronous: bool,
    counts: Counts,
}

impl Tracker {
    /// A tracker; `asynchronous` when commits do not wait for PostgreSQL's disk.
    pub fn new(asynchronous: bool) -> Tracker {
        Tracker {
            asynchronous,
            ..Tracker::default()
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// What PostgreSQL holds per partition, as far as this process knows.
    pub fn durable(&self) -> &BTreeMap<i32, i64> {
        &self.durable
    }

    /// Messages in the batch being built.
    pub fn building(&self) -> u64 {
        self.building.rows + self.building.dead
    }

    /// Whether a batch has been handed over and its outcome not yet reported.
    pub fn committing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Partitions assigned and not yet checked against the log.
    pub fn unchecked(&self) -> Vec<i32> {
        self.parts
            .iter()
            .filter(|(_, p)| !p.checked)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Partitions were assigned (each is checked at its first message).
    pub fn assigned(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.insert(*p, Part::default());
        }
    }

    /// Partitions were revoked. What is batched for them still commits (its
    /// compare-and-set refuses it if their new owner moved first).
    pub fn revoked(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.parts.remove(p);
        }
    }

    /// Every partition must be checked again (a rebalance whose details are unknown).
    pub fn uncheck_all(&mut self) {
        for part in self.parts.values_mut() {
            part.checked = false;
        }
    }

    /// The partition's position was read from PostgreSQL and checked against the log:
    /// `stored` is where loading continues (`None`: from the log start). Called only when
    /// the batch being built holds nothing of the partition ([`Tracker::offer`] asks for a
    /// check only then).
    pub fn checked(&mut self, partition: i32, stored: Option<i64>) {
        let part = self.parts.entry(partition).or_default();
        part.checked = true;
        part.next = stored;
        // Moved back (a recreated topic or a gap, loaded again from the log start): batches
        // committed before are not comparable with the new position any more.
        if stored < self.durable.get(&partition).copied() {
            self.unconfirmed
                .retain(|u| !u.next.contains_key(&partition));
        }
        match stored {
            Some(s) => {
                self.durable.insert(partition, s);
            }
            None => {
                self.durable.remove(&partition);
            }
        }
    }

    /// A stored position did not fit its log: it was recorded and moved to `resume_at`.
    pub fn gap(&mut self, partition: i32, resume_at: i64) {
        self.counts.gaps += 1;
        self.checked(partition, Some(resume_at));
    }

    /// Where the partition's next batch continues (`None`: from the log start, or not
    /// known).
    pub fn position(&self, partition: i32) -> Option<i64> {
        self.parts.get(&partition).and_then(|p| p.next)
    }

    /// A message at `offset` of `partition` arrived.
    pub fn offer(&self, partition: i32, offset: i64) -> Take {
        let Some(part) = self.parts.get(&partition).filter(|p| p.checked) else {
            return Take::Check;
        };
        let in_batch = self.building.advances.get(&partition);
        let expected = in_batch.map(|a| a.next).or(part.next);
        match expected {
            Some(next) if offset < next => {
                if in_batch.is_none() && next - offset > 1 {
                    Take::Check
                } else {
                    Take::Skip
                }
            }
            _ => Take::Yes,
        }
    }

    /// The message offered last was taken into the batch, as a row or a dead letter.
    pub fn taken(&mut self, partition: i32, offset: i64, row: bool) {
        let expected = self.building.advances.get(&partition).map_or_else(
            || self.parts.get(&partition).and_then(|p| p.next),
            |a| a.expected,
        );
        self.building.advances.insert(
            partition,
            Advance {
                expected,
                next: offset + 1,
            },
        );
        if row {
            self.building.rows += 1;
        } else {
            self.building.dead += 1;
        }
    }

    /// Hands the batch over to be committed: its offset advances, or `None` when there is
    /// nothing to commit or a commit is still under way.
    pub fn hand_over(&mut self) -> Option<HashMap<i32, Advance>> {
        if self.in_flight.is_some() || self.building.advances.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut self.building);
        for (p, adv) in &batch.advances {
            if let Some(part) = self.parts.get_mut(p) {
                part.next = Some(adv.next);
            }
        }
        let advances = batch.advances.iter().map(|(p, a)| (*p, *a)).collect();
        self.in_flight = Some(batch);
        Some(advances)
    }

    /// Drops the batch being built (its messages come again after a seek).
    pub fn drop_building(&mut self) {
        self.building = Batch::default();
    }

    /// The commit handed over last ended. On anything but success the batch being built
    /// is dropped and every partition must be repositioned from PostgreSQL
    /// ([`Tracker::repositioned`]); returns false then.
    pub fn commit_ended(&mut self, outcome: Outcome, now: Millis) -> bool {
        let Some(batch) = self.in_flight.take() else {
            return true;
        };
        match outcome {
            Outcome::Committed { refused } => {
                let refused = (refused as u64).min(batch.rows);
                let (rows, dead) = (batch.rows - refused, batch.dead + refused);
                self.counts.rows += rows;
                self.counts.dead_letters += dead;
                self.counts.batches += 1;
                let next: BTreeMap<i32, i64> =
                    batch.advances.iter().map(|(p, a)| (*p, a.next)).collect();
                self.durable.extend(next.iter().map(|(p, n)| (*p, *n)));
                if self.asynchronous {
                    self.unconfirmed.push_back(Unconfirmed {
                        at: now,
                        next,
                        rows,
                        dead,
                    });
                }
                true
            }
            Outcome::Conflict | Outcome::Failed => {
                self.building = Batch::default();
                self.uncheck_all();
                false
            }
        }
    }

    /// PostgreSQL's positions were read again after a failure (`stored`, per partition).
    /// Batches committed asynchronously that it no longer has were lost: they are counted
    /// as such and load again. Returns where each assigned partition continues.
    pub fn repositioned(&mut self, stored: &HashMap<i32, i64>) -> Vec<(i32, Option<i64>)> {
        self.counts.retries += 1;
        // Those it still has stay uncertain: a later crash may yet take them back.
        let counts = &mut self.counts;
        self.unconfirmed.retain(|u| {
            let lost = u
                .next
                .iter()
                .any(|(p, next)| stored.get(p).is_none_or(|s| s < next));
            if lost {
                counts.rows_lost += u.rows;
                counts.dead_letters_lost += u.dead;
                counts.batches_lost += 1;
            }
            !lost
        });
        self.durable = stored.iter().map(|(p, n)| (*p, *n)).collect();
        self.building = Batch::default();
        let assigned: Vec<i32> = self.parts.keys().copied().collect();
        assigned
            .into_iter()
            .map(|p| {
                let next = stored.get(&p).copied();
                self.checked(p, next);
                (p, next)
            })
            .collect()
    }

    /// Time passed: asynchronous commits older than [`UNCONFIRMED_FOR`] are safe.
    pub fn tick(&mut self, now: Millis) {
        while self
            .unconfirmed
            .front()
            .is_some_and(|u| now.saturating_sub(u.at) > UNCONFIRMED_FOR)
        {
            self.unconfirmed.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
