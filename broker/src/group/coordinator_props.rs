//! Property test: random sequences of joins, syncs, heartbeats, leaves, static members'
//! restarts and time passing, driven by three model clients (one dynamic, two static), keep
//! the coordinator's invariants: one leader per generation, member lists only for the
//! leader, assignments only to their member, silent members expire after their session
//! unless parked. A static member's incarnations are one identity: a restart in a stable
//! group keeps the assignment addressed to the previous one.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Ev {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    /// A static client restarts: a new incarnation, with no member id, joins.
    Restart(usize),
    Advance(u64),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        (0..3usize).prop_map(Ev::Join),
        (0..3usize).prop_map(Ev::Sync),
        (0..3usize).prop_map(Ev::Heartbeat),
        (0..3usize).prop_map(Ev::Leave),
        (1..3usize).prop_map(Ev::Restart),
        (1..15_000u64).prop_map(Ev::Advance),
    ]
}

#[derive(Default, Clone)]
struct Client {
    instance: Option<String>,
    member_id: String,
    generation: i32,
    leader_members: Vec<String>,
}

/// What the clients know, and what the test remembers to check the coordinator against.
struct Model {
    clients: Vec<Client>,
    now: Millis,
    next_reply: ReplyId,
    /// reply -> (client, is_join)
    parked: HashMap<ReplyId, (usize, bool)>,
    leader_of_generation: HashMap<i32, String>,
    /// member id -> last time the coordinator heard from or answered it
    last_seen: HashMap<String, Millis>,
}

impl Model {
    fn new() -> Self {
        Model {
            clients: (0..3)
                .map(|i| Client {
                    instance: (i > 0).then(|| format!("s{i}")),
                    ..Client::default()
                })
                .collect(),
            now: 0,
            next_reply: 0,
            parked: HashMap::new(),
            leader_of_generation: HashMap::new(),
            last_seen: HashMap::new(),
        }
    }

    /// Sends one event's request to the coordinator; returns its actions.
    fn send(&mut self, c: &mut Coordinator, e: &Ev) -> Vec<Action> {
        let now = self.now;
        match *e {
            Ev::Join(i) | Ev::Restart(i) => {
                if matches!(e, Ev::Restart(_)) {
                    let instance = self.clients[i].instance.take();
                    self.clients[i] = Client {
                        instance,
                        ..Client::default()
                    };
                }
                let id = self.park(i, true);
                if !id.is_empty() {
                    self.last_seen.insert(id.clone(), now);
                }
                let instance = self.clients[i].instance.clone();
                c.join(now, self.next_reply, join_req(&id, instance.as_deref()))
            }
            Ev::Sync(i) => {
                self.park(i, false);
                self.heard_from(c, i);
                let cl = &self.clients[i];
                let assignments = cl
                    .leader_members
                    .iter()
                    .map(|m| (m.clone(), Bytes::from(m.clone())))
                    .collect();
                let mut req = sync_req(&cl.member_id, cl.generation, assignments);
                req.group_instance_id.clone_from(&cl.instance);
                c.sync(now, self.next_reply, req)
            }
            Ev::Heartbeat(i) => {
                self.heard_from(c, i);
                let cl = &self.clients[i];
                let instance = cl.instance.as_deref();
                let _ = c.heartbeat(now, "g", cl.generation, &cl.member_id, instance);
                Vec::new()
            }
            Ev::Leave(i) => {
                let cl = &self.clients[i];
                c.leave(now, "g", &[(cl.member_id.clone(), cl.instance.clone())])
                    .1
            }
            Ev::Advance(dt) => {
                self.now += dt;
                c.tick(self.now)
            }
        }
    }

    /// Parks a new request of client `i`; returns its member id.
    fn park(&mut self, i: usize, is_join: bool) -> String {
        self.next_reply += 1;
        self.parked.insert(self.next_reply, (i, is_join));
        self.clients[i].member_id.clone()
    }

    fn heard_from(&mut self, c: &Coordinator, i: usize) {
        let id = &self.clients[i].member_id;
        if c.members("g").contains(id) {
            self.last_seen.insert(id.clone(), self.now);
        }
    }

    fn on_join(
        &mut self,
        r: ReplyId,
        res: &JoinResult,
        members: &[String],
    ) -> Result<(), TestCaseError> {
        let (i, is_join) = self.parked.remove(&r).expect("answer to a parked request");
        prop_assert!(is_join);
        if res.error == Some(E::MemberIdRequired) || res.error.is_none() {
            self.clients[i].member_id = res.member_id.clone();
        }
        if res.error.is_some() {
            return Ok(());
        }
        self.clients[i].generation = res.generation_id;
        self.last_seen.insert(res.member_id.clone(), self.now);
        // one leader per generation, and a member (static incarnations count as one)
        let leader = identity(&res.leader);
        let l = self
            .leader_of_generation
            .entry(res.generation_id)
            .or_insert_with(|| leader.clone());
        prop_assert_eq!(&*l, &leader);
        prop_assert!(members.iter().any(|m| identity(m) == leader));
        // only the leader sees the member list, and it lists members only
        if res.member_id == res.leader {
            prop_assert!(!res.members.is_empty());
            for m in &res.members {
                prop_assert!(members.contains(&m.member_id));
            }
        } else {
            prop_assert!(res.members.is_empty());
        }
        self.clients[i].leader_members = res.members.iter().map(|m| m.member_id.clone()).collect();
        Ok(())
    }

    fn on_sync(
        &mut self,
        r: ReplyId,
        res: &SyncResult,
        members: &[String],
    ) -> Result<(), TestCaseError> {
        let (i, is_join) = self.parked.remove(&r).expect("answer to a parked request");
        prop_assert!(!is_join);
        let id = &self.clients[i].member_id;
        // answering a parked SyncGroup restarts the member's session
        if members.contains(id) {
            self.last_seen.insert(id.clone(), self.now);
        }
        if res.error.is_none() {
            // assignments go only to current members, and to the right one
            prop_assert!(members.contains(id));
            // the leader assigns to every member it was shown: none is left without one
            // (a static restart must not take an assignment addressed to the old id away)
            let addressed = String::from_utf8_lossy(&res.assignment);
            prop_assert_eq!(identity(&addressed), identity(id));
        }
        Ok(())
    }

    /// A member that stopped talking is gone after its session timeout, unless parked in
    /// JoinGroup or SyncGroup (kept alive, as in Kafka). Waiting is derived from the parked
    /// requests: a flag per member goes stale when an older JoinGroup of the same member is
    /// answered after a newer one was parked.
    fn check_sessions(&self, members: &[String]) -> Result<(), TestCaseError> {
        for m in members {
            // (a static member is parked in its first JoinGroup before it knows its id)
            let waiting = self.parked.values().any(|(i, _)| {
                let cl = &self.clients[*i];
                cl.member_id == *m
                    || cl.member_id.is_empty() && cl.instance.as_deref() == Some(&identity(m))
            });
            let seen = self.last_seen.get(m).copied().unwrap_or(0);
            prop_assert!(
                waiting || self.now < seen + SESSION as Millis,
                "member {} silent since {} still present at {}",
                m,
                seen,
                self.now
            );
        }
        Ok(())
    }
}

/// Who a member id stands for: a static member's ids start with its instance id
/// (`s1-…`, `s2-…`), and all its incarnations are one; a dynamic member is its id.
fn identity(member_id: &str) -> String {
    match member_id.split_once('-') {
        Some((instance, _)) if instance.starts_with('s') => instance.to_string(),
        _ => member_id.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn invariants_hold_for_random_event_sequences(
        events in proptest::collection::vec(ev(), 1..120),
        initial_rebalance_delay in prop_oneof![Just(0u64), Just(3_000u64)],
    ) {
        let mut c = Coordinator::new(
            CoordinatorConfig {
                initial_rebalance_delay,
                ..CoordinatorConfig::default()
            },
            "n",
        );
        let mut model = Model::new();
        for e in events {
            let actions = model.send(&mut c, &e);
            let members = c.members("g");
            for a in actions {
                match a {
                    Action::Join(r, res) => model.on_join(r, &res, &members)?,
                    Action::Sync(r, res) => model.on_sync(r, &res, &members)?,
                }
            }
            if matches!(e, Ev::Advance(_)) {
                model.check_sessions(&members)?;
            }
        }
    }
}
