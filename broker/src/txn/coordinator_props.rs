//! Property test: three model producers (two sharing one transactional id, so they fence
//! each other) send random sequences of inits, partition and offset additions, produces,
//! commits and aborts (retried at will), while time passes, completions run late or are
//! lost in a restart that recovers the coordinator from what was stored. The model checks:
//! - a fenced or stale producer never succeeds at anything;
//! - every partition that took a transactional batch gets a marker;
//! - a restart finds every interrupted completion again, unchanged;
//! - a commit applies exactly the offsets its transaction sent; an abort applies none;
//! - no transaction stays open past its timeout once `expire` runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::coordinator::*;
use super::types::*;
use crate::control::Marker;
use crate::group::service::Committed;
use kafka_protocol::ResponseError as E;

#[derive(Debug, Clone)]
enum Ev {
    Init(usize),
    Add(usize, i32),
    AddOffsets(usize),
    CommitOffsets(usize, i64),
    Produce(usize, i32),
    End(usize, bool),
    /// Run the oldest pending completion.
    Complete,
    Advance(u64),
    Expire,
    Restart,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        2 => (0..3usize).prop_map(Ev::Init),
        3 => (0..3usize, 0..3i32).prop_map(|(c, p)| Ev::Add(c, p)),
        1 => (0..3usize).prop_map(Ev::AddOffsets),
        1 => (0..3usize, 0..100i64).prop_map(|(c, o)| Ev::CommitOffsets(c, o)),
        3 => (0..3usize, 0..3i32).prop_map(|(c, p)| Ev::Produce(c, p)),
        2 => (0..3usize, any::<bool>()).prop_map(|(c, b)| Ev::End(c, b)),
        3 => Just(Ev::Complete),
        1 => (1..4_000u64).prop_map(Ev::Advance),
        1 => Just(Ev::Expire),
        1 => Just(Ev::Restart),
    ]
}

const TIMEOUT: i32 = 5_000;

#[derive(Default)]
struct Client {
    /// The producer id and epoch it was given, if any.
    ids: Option<(i64, i16)>,
    /// Offsets it sent in its current transaction.
    sent: BTreeMap<(String, String, i32), Committed>,
}

struct Model {
    c: TxnCoordinator,
    now: Millis,
    next_pid: i64,
    clients: Vec<Client>,
    /// What the service would have stored: the state after every change.
    stored: HashMap<String, TxnMeta>,
    pending: Vec<Completion>,
    /// The pair each id last handed out and that nothing has fenced since.
    live: HashMap<String, (i64, i16)>,
    /// Partitions holding transactional data without a marker yet, by producer.
    unmarked: HashMap<i64, BTreeSet<TopicPartition>>,
    /// Offsets the groups hold.
    applied: BTreeMap<(String, String, i32), Committed>,
    /// Offsets each completion from EndTxn(commit) must apply.
    expected_offsets: HashMap<(i64, i16), PendingOffsets>,
}

fn id_of(client: usize) -> &'static str {
    if client < 2 {
        "shared"
    } else {
        "solo"
    }
}

impl Model {
    fn new() -> Self {
        Model {
            c: TxnCoordinator::default(),
            now: 0,
            next_pid: 0,
            clients: (0..3).map(|_| Client::default()).collect(),
            stored: HashMap::new(),
            pending: Vec::new(),
            live: HashMap::new(),
            unmarked: HashMap::new(),
            applied: BTreeMap::new(),
            expected_offsets: HashMap::new(),
        }
    }

    fn store(&mut self, id: &str) {
        if let Some(meta) = self.c.get(id) {
            self.stored.insert(id.to_string(), meta.clone());
        }
    }

    /// A request of `client` succeeded: it must hold the live pair of its id.
    fn assert_live(&self, client: usize, what: &str) {
        let ids = self.clients[client].ids;
        assert!(
            ids.is_some() && self.live.get(id_of(client)) == ids.as_ref(),
            "{what} succeeded for client {client} holding {ids:?}, live is {:?}",
            self.live.get(id_of(client))
        );
    }

    fn prepared(&mut self, done: Completion) {
        self.live.remove(&done.transactional_id);
        self.store(&done.transactional_id.clone());
        self.pending.push(done);
    }

    fn init(&mut self, client: usize) {
        let id = id_of(client);
        let next = &mut self.next_pid;
        let mut alloc = || {
            *next += 1;
            Some(*next)
        };
        match self.c.init(id, TIMEOUT, None, self.now, &mut alloc) {
            Ok(Init::Ready(pid, epoch)) => {
                self.live.insert(id.to_string(), (pid, epoch));
                self.clients[client].ids = Some((pid, epoch));
                self.clients[client].sent.clear();
                self.store(id);
            }
            Ok(Init::MustAbort(done)) => {
                assert_eq!(done.marker, Marker::Abort);
                self.prepared(done);
            }
            Err(e) => assert_eq!(e, E::ConcurrentTransactions),
        }
    }

    fn run_completion(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let done = self.pending.remove(0);
        let pid = done.producer_id;
        if let Some(open) = self.unmarked.get(&pid) {
            for tp in open {
                assert!(
                    done.partitions.contains(tp),
                    "{tp:?} has data of producer {pid} but is not in its completion {done:?}"
                );
            }
        }
        for tp in &done.partitions {
            if let Some(open) = self.unmarked.get_mut(&pid) {
                open.remove(tp);
            }
        }
        if done.marker == Marker::Commit {
            if let Some(want) = self.expected_offsets.get(&(pid, done.epoch)) {
                assert_eq!(&done.offsets, want);
            }
        } else {
            assert!(done.offsets.is_empty());
        }
        self.applied.extend(done.offsets.clone());
        if self.c.completed(&done.transactional_id) {
            self.store(&done.transactional_id);
        }
    }

    /// The broker restarts: pending completions are lost and must be found again, the
    /// same (partitions, marker, offsets) as before.
    fn restart(&mut self) {
        let lost = std::mem::take(&mut self.pending);
        let stored: Vec<_> = self
            .stored
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.c = TxnCoordinator::new(TxnConfig::default(), stored);
        self.pending = self.c.interrupted();
        for done in &lost {
            assert!(self.pending.contains(done), "{done:?} lost in a restart");
        }
    }

    fn step(&mut self, e: &Ev) {
        let ids = |m: &Model, c: usize| m.clients[c].ids.unwrap_or((-1, -1));
        match *e {
            Ev::Init(c) => self.init(c),
            Ev::Add(c, p) => {
                let (pid, epoch) = ids(self, c);
                let tp = ("t".to_string(), p);
                if let Ok(changed) = self.c.add_partitions(id_of(c), pid, epoch, &[tp], self.now) {
                    self.assert_live(c, "AddPartitionsToTxn");
                    if changed {
                        self.store(id_of(c));
                    }
                }
            }
            Ev::AddOffsets(c) => {
                let (pid, epoch) = ids(self, c);
                if let Ok(changed) = self.c.add_offsets(id_of(c), pid, epoch, "g", self.now) {
                    self.assert_live(c, "AddOffsetsToTxn");
                    if changed {
                        self.store(id_of(c));
                    }
                }
            }
            Ev::CommitOffsets(c, offset) => {
                let (pid, epoch) = ids(self, c);
                let committed = Committed {
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                };
                let offsets = vec![("in".to_string(), 0, committed.clone())];
                if self
                    .c
                    .commit_offsets(id_of(c), pid, epoch, "g", offsets)
                    .is_ok()
                {
                    self.assert_live(c, "TxnOffsetCommit");
                    let key = ("g".to_string(), "in".to_string(), 0);
                    self.clients[c].sent.insert(key, committed);
                    self.store(id_of(c));
                }
            }
            Ev::Produce(c, p) => {
                let (pid, epoch) = ids(self, c);
                if self.c.check_produce(pid, epoch, ("t", p)).is_ok() {
                    self.assert_live(c, "a transactional produce");
                    let tp = ("t".to_string(), p);
                    self.unmarked.entry(pid).or_default().insert(tp);
                }
            }
            Ev::End(c, commit) => {
                let (pid, epoch) = ids(self, c);
                match self.c.end(id_of(c), pid, epoch, commit) {
                    Ok(End::Complete(done)) => {
                        self.assert_live(c, "EndTxn");
                        let sent = std::mem::take(&mut self.clients[c].sent);
                        self.expected_offsets.insert((pid, epoch), sent);
                        self.prepared(done);
                        // the same producer goes on with its next transaction
                        self.live.insert(id_of(c).to_string(), (pid, epoch));
                    }
                    Ok(End::Done) => self.assert_live(c, "a retried EndTxn"),
                    Err(_) => {}
                }
            }
            Ev::Complete => self.run_completion(),
            Ev::Advance(ms) => self.now += ms,
            Ev::Expire => {
                for done in self.c.expire(self.now) {
                    self.prepared(done);
                }
                for (_, meta) in self.c.all() {
                    assert!(
                        meta.state != TxnState::Ongoing
                            || self.now < meta.started + u64::from(meta.timeout_ms)
                    );
                }
            }
            Ev::Restart => self.restart(),
        }
    }

    /// Time passes, every completion runs: no partition is left without its marker.
    fn settle(&mut self) {
        self.now += u64::from(TIMEOUT as u32) + 1;
        for done in self.c.expire(self.now) {
            self.prepared(done);
        }
        while !self.pending.is_empty() {
            self.run_completion();
        }
        for (pid, open) in &self.unmarked {
            assert!(
                open.is_empty(),
                "producer {pid} left {open:?} without a marker"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn transactions_keep_their_invariants(events in prop::collection::vec(ev(), 1..120)) {
        let mut m = Model::new();
        for e in &events {
            m.step(e);
        }
        m.settle();
    }
}
