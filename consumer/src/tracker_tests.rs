use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

#[test]
fn a_partition_is_checked_before_its_first_message_and_redeliveries_are_skipped() {
    let mut t = Tracker::new(false);
    t.assigned(&[0]);
    assert_eq!(t.offer(0, 5), Take::Check);
    t.checked(0, Some(5));
    assert_eq!(t.offer(0, 5), Take::Yes);
    t.taken(0, 5, true);
    assert_eq!(t.offer(0, 5), Take::Skip, "the same offset again");
    assert_eq!(t.offer(0, 6), Take::Yes);
    t.taken(0, 6, false);
    let advances = t.hand_over().unwrap();
    assert_eq!(
        advances[&0],
        Advance {
            expected: Some(5),
            next: 7
        }
    );
    // Kafka restarts the partition far behind: check it again rather than skip silently.
    assert_eq!(t.offer(0, 2), Take::Check);
    assert_eq!(t.offer(0, 6), Take::Skip, "just behind: a redelivery");
    assert!(t.commit_ended(Outcome::Committed { refused: 0 }, 0));
    assert_eq!(
        (t.counts().rows, t.counts().dead_letters, t.counts().batches),
        (1, 1, 1)
    );
    assert_eq!(t.durable()[&0], 7);
}

#[test]
fn rows_postgres_refuses_are_counted_as_dead_letters() {
    let mut t = Tracker::new(false);
    t.assigned(&[0]);
    t.checked(0, None);
    for o in 0..10 {
        assert_eq!(t.offer(0, o), Take::Yes);
        t.taken(0, o, true);
    }
    t.hand_over();
    t.commit_ended(Outcome::Committed { refused: 3 }, 0);
    assert_eq!((t.counts().rows, t.counts().dead_letters), (7, 3));
}

#[test]
fn a_failed_commit_drops_what_was_built_on_it_and_asks_for_repositioning() {
    let mut t = Tracker::new(false);
    t.assigned(&[0, 1]);
    t.checked(0, Some(10));
    t.checked(1, None);
    t.taken(0, 10, true);
    t.hand_over();
    t.taken(0, 11, true);
    t.taken(1, 0, true);
    assert!(t.hand_over().is_none(), "one commit at a time");
    assert!(!t.commit_ended(Outcome::Failed, 0));
    assert_eq!(t.building(), 0);
    assert_eq!(t.unchecked(), vec![0, 1]);
    let seeks = t.repositioned(&HashMap::from([(0, 10)]));
    assert_eq!(seeks, vec![(0, Some(10)), (1, None)]);
    assert_eq!(t.offer(0, 10), Take::Yes);
    assert_eq!(t.counts().retries, 1);
}

#[test]
fn an_asynchronous_commit_postgres_lost_is_counted_lost_until_it_is_old() {
    let mut t = Tracker::new(true);
    t.assigned(&[0]);
    t.checked(0, None);
    t.taken(0, 0, true);
    t.taken(0, 1, true);
    t.hand_over();
    t.commit_ended(Outcome::Committed { refused: 0 }, 1_000);
    t.taken(0, 2, true);
    t.hand_over();
    t.commit_ended(Outcome::Committed { refused: 0 }, 2_000);
    // PostgreSQL crashed and kept only the first batch.
    t.repositioned(&HashMap::from([(0, 2)]));
    let c = t.counts();
    assert_eq!(
        (c.rows, c.rows_lost, c.rows_net(), c.batches_net()),
        (3, 1, 2, 1)
    );
    // Old enough commits are safe: a later crash cannot take them back.
    t.taken(0, 2, true);
    t.hand_over();
    t.commit_ended(Outcome::Committed { refused: 0 }, 3_000);
    t.tick(3_000 + UNCONFIRMED_FOR + 1);
    t.repositioned(&HashMap::from([(0, 3)]));
    assert_eq!(t.counts().rows_lost, 1);
}

/// A partition's log, a Kafka fetch position, PostgreSQL with compare-and-set, and the
/// tracker driven by random events. Offsets `o % 5 == 3` are poison (dead letters).
#[derive(Debug, Clone)]
enum Ev {
    Deliver(usize),
    Rewind(usize, u8),
    HandOver,
    Commit(u8),
    CrashLosingAsync,
    Rebalance,
    Advance(u16),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (0..2usize).prop_map(Ev::Deliver),
        1 => (0..2usize, 1..8u8).prop_map(|(p, k)| Ev::Rewind(p, k)),
        2 => Just(Ev::HandOver),
        2 => (0..10u8).prop_map(Ev::Commit),
        1 => Just(Ev::CrashLosingAsync),
        1 => Just(Ev::Rebalance),
        1 => (1..40_000u16).prop_map(Ev::Advance),
    ]
}

const LOG: i64 = 30;

fn poison(o: i64) -> bool {
    o % 5 == 3
}

/// (partition, offset, is_row): one message in the table.
type Loaded = (i32, i64, bool);

#[derive(Default)]
struct Pg {
    stored: HashMap<i32, i64>,
    /// (partition, offset, is_row) of every message in the table.
    table: Vec<Loaded>,
    /// Committed asynchronously, not yet on disk: (time, rows, previous positions).
    volatile: Vec<(u64, Vec<Loaded>, HashMap<i32, i64>)>,
}

struct World {
    t: Tracker,
    pg: Pg,
    fetch: [i64; 2],
    building: Vec<Loaded>,
    handed: Option<(HashMap<i32, Advance>, Vec<Loaded>)>,
    now: u64,
}

impl World {
    fn seek(&mut self, p: usize, to: Option<i64>) {
        self.fetch[p] = to.unwrap_or(0);
    }

    fn reposition(&mut self) {
        let stored = self.pg.stored.clone();
        for (p, next) in self.t.repositioned(&stored) {
            self.seek(p as usize, next);
        }
        self.building.clear();
    }

    fn deliver(&mut self, p: usize) {
        let o = self.fetch[p];
        if o >= LOG {
            return;
        }
        self.fetch[p] += 1;
        let part = p as i32;
        let mut take = self.t.offer(part, o);
        if take == Take::Check {
            let stored = self.pg.stored.get(&part).copied();
            self.t.checked(part, stored);
            take = self.t.offer(part, o);
            if stored.is_some_and(|s| s != o) || (stored.is_none() && o != 0) {
                // Sought to the stored position: this message comes again later.
                self.seek(p, stored);
                return;
            }
        }
        match take {
            Take::Yes => {
                self.t.taken(part, o, !poison(o));
                self.building.push((part, o, !poison(o)));
            }
            Take::Skip => {}
            Take::Check => unreachable!("checked just before"),
        }
    }

    fn commit(&mut self, kind: u8) {
        let Some((advances, rows)) = self.handed.take() else {
            return;
        };
        let cas = advances
            .iter()
            .all(|(p, a)| self.pg.stored.get(p).copied() == a.expected);
        // 0..=6: commit; 7: fails without committing; 8: commits, but the connection is
        // lost before the client hears it; 9: PostgreSQL refuses two rows for their content.
        let applies = cas && kind != 7;
        if applies {
            let before = self.pg.stored.clone();
            let mut rows = rows;
            if kind == 9 {
                let mut n = 0;
                for r in rows.iter_mut().filter(|r| r.2) {
                    if n < 2 {
                        r.2 = false;
                        n += 1;
                    }
                }
            }
            for (p, a) in &advances {
                self.pg.stored.insert(*p, a.next);
            }
            self.pg.table.extend(rows.iter().copied());
            self.pg.volatile.push((self.now, rows.clone(), before));
            // An ambiguous COMMIT (kind 8) is settled by the driver with txid_status after
            // reconnecting: committed, and the positions are read again.
            let outcome = match kind {
                9 => Outcome::Committed {
                    refused: rows.len()
                        - rows.iter().filter(|r| r.2).count()
                        - rows.iter().filter(|r| poison(r.1)).count(),
                },
                _ => Outcome::Committed { refused: 0 },
            };
            if !self.t.commit_ended(outcome, self.now) || kind == 8 {
                self.reposition();
            }
        } else {
            let outcome = if cas {
                Outcome::Failed
            } else {
                Outcome::Conflict
            };
            assert!(!self.t.commit_ended(outcome, self.now));
            self.reposition();
        }
    }

    /// PostgreSQL crashes: asynchronous commits not yet on disk are lost.
    fn crash(&mut self) {
        if self.handed.take().is_some() {
            self.t.commit_ended(Outcome::Failed, self.now);
        }
        let now = self.now;
        while let Some((at, rows, before)) = self.pg.volatile.pop() {
            if now.saturating_sub(at) > 600 {
                self.pg.volatile.push((at, rows, before));
                break;
            }
            self.pg.stored = before;
            for r in &rows {
                let i = self.pg.table.iter().rposition(|x| x == r).unwrap();
                self.pg.table.remove(i);
            }
        }
        self.pg.volatile.clear();
        self.reposition();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Nothing is loaded twice, nothing is skipped once everything is delivered, and the
    /// counts equal what the table holds, whatever the order of deliveries, rewinds,
    /// rebalances, conflicts, failures and crashes.
    #[test]
    fn exactly_once_against_a_model_of_postgres(events in proptest::collection::vec(ev(), 1..200)) {
        let mut w = World {
            t: Tracker::new(true),
            pg: Pg::default(),
            fetch: [0, 0],
            building: Vec::new(),
            handed: None,
            now: 0,
        };
        w.t.assigned(&[0, 1]);
        for e in events {
            match e {
                Ev::Deliver(p) => w.deliver(p),
                Ev::Rewind(p, k) => w.fetch[p] = (w.fetch[p] - i64::from(k)).max(0),
                Ev::HandOver => {
                    if let Some(adv) = w.t.hand_over() {
                        w.handed = Some((adv, std::mem::take(&mut w.building)));
                    }
                }
                Ev::Commit(kind) => w.commit(kind),
                Ev::CrashLosingAsync => w.crash(),
                Ev::Rebalance => {
                    w.t.revoked(&[0, 1]);
                    w.t.assigned(&[0, 1]);
                    let durable = w.t.durable().clone();
                    for p in 0..2 {
                        let at = durable.get(&(p as i32)).copied();
                        w.seek(p, at);
                    }
                }
                Ev::Advance(dt) => {
                    w.now += u64::from(dt);
                    w.t.tick(w.now);
                    w.pg.volatile.retain(|(at, _, _)| w.now.saturating_sub(*at) <= 600);
                }
            }
            let mut seen = BTreeSet::new();
            for (p, o, _) in &w.pg.table {
                prop_assert!(seen.insert((*p, *o)), "{}/{} loaded twice", p, o);
            }
        }
        // Drain: deliver everything, commit successfully, until both logs are loaded.
        for _ in 0..10 * LOG {
            w.deliver(0);
            w.deliver(1);
            w.commit(0);
            if let Some(adv) = w.t.hand_over() {
                w.handed = Some((adv, std::mem::take(&mut w.building)));
                w.commit(0);
            }
        }
        let mut loaded: Vec<(i32, i64)> = w.pg.table.iter().map(|(p, o, _)| (*p, *o)).collect();
        loaded.sort_unstable();
        let want: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..LOG).map(move |o| (p, o))).collect();
        prop_assert_eq!(loaded, want, "every offset exactly once");
        let rows = w.pg.table.iter().filter(|r| r.2).count() as u64;
        let dead = w.pg.table.len() as u64 - rows;
        let c = w.t.counts();
        prop_assert_eq!((c.rows_net(), c.dead_letters_net()), (rows, dead));
    }
}
