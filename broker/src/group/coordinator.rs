//! The classic consumer-group protocol as a state machine, sans-io.
//!
//! Events go in (`join`, `sync`, `heartbeat`, `leave`, `tick`), with the current time in
//! milliseconds; answers come out, either at once or as [`Action`]s addressed to requests
//! that were parked earlier (a JoinGroup waits for the whole group to rejoin, a follower's
//! SyncGroup waits for the leader's). No sockets, no clocks, no randomness inside: the
//! caller supplies time and a nonce for member ids, so every transition is unit-testable.
//!
//! States, as in Kafka: `Empty` -> `PreparingRebalance` (members (re)join) ->
//! `CompletingRebalance` (the leader computes assignments) -> `Stable`. Any join, leave or
//! session expiry moves a non-empty group back to `PreparingRebalance`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

/// Identifies a parked request; the caller maps it back to the waiting connection.
pub type ReplyId = u64;
/// Milliseconds on a monotonic clock chosen by the caller.
pub type Millis = u64;

/// Group states (the names Kafka's DescribeGroups uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Group id.
    pub group_id: String,
    /// Member id; empty on first join.
    pub member_id: String,
    /// Static membership id (`group.instance.id`).
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// Protocol type, "consumer" for consumers.
    pub protocol_type: String,
    /// Supported protocols (assignors) in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED with its new id.
    pub require_known_member_id: bool,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// Static id.
    pub group_instance_id: Option<String>,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResult {
    /// Error code (0 = none).
    pub error: i16,
    /// Generation.
    pub generation_id: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// The receiving member's id.
    pub member_id: String,
    /// All members, for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    fn error(e: E, member_id: &str) -> Self {
        JoinResult {
            error: e.code(),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// Group id.
    pub group_id: String,
    /// Generation the member thinks it is in.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static id.
    pub group_instance_id: Option<String>,
    /// v5: protocol type, checked when present.
    pub protocol_type: Option<String>,
    /// v5: protocol name, checked when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id (empty for followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResult {
    /// Error code.
    pub error: i16,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Protocol name.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(e: E) -> Self {
        SyncResult {
            error: e.code(),
            ..Default::default()
        }
    }
}

/// An answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer a JoinGroup.
    Join(ReplyId, JoinResult),
    /// Answer a SyncGroup.
    Sync(ReplyId, SyncResult),
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// State.
    pub state: GroupState,
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// Chosen protocol ("" when none).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Millis,
    rebalance_timeout: Millis,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Millis,
    pending_join: Option<ReplyId>,
    pending_sync: Option<ReplyId>,
    joined_seq: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending_ids: HashMap<String, Millis>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    rebalance_deadline: Millis,
    /// The join phase does not complete before this (the initial delay, below).
    delay_until: Millis,
    /// The rebalance started from an empty group: as in Kafka's InitialDelayedJoin, it waits
    /// `group.initial.rebalance.delay.ms` for more members, and again each time a new
    /// member joined meanwhile, within the rebalance timeout. Members starting together
    /// then land in one generation, with time to learn the topics' metadata (a leader that
    /// assigns before it has them must rejoin at once, which kafka-python mishandles).
    initial: Option<InitialDelay>,
}

/// The state of an initial delayed join.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    /// Length of each wait.
    step: Millis,
    /// What is left of the rebalance timeout for further waits.
    remaining: Millis,
    /// A new member joined during the current wait.
    new_member_added: bool,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: 0,
            delay_until: 0,
            initial: None,
        }
    }

    /// Resolves the member a request speaks for, with Kafka's fencing errors.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), E> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(id) if id == member_id => {}
                Some(_) => return Err(E::FencedInstanceId),
                None => return Err(E::UnknownMemberId),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(E::UnknownMemberId)
        }
    }
}

/// Limits and delays of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// Smallest accepted session timeout (Kafka: group.min.session.timeout.ms).
    pub min_session_timeout: Millis,
    /// Largest accepted session timeout (Kafka: group.max.session.timeout.ms).
    pub max_session_timeout: Millis,
    /// Wait for more members when an empty group starts rebalancing, and again after each
    /// new member, within the rebalance timeout (Kafka: group.initial.rebalance.delay.ms).
    pub initial_rebalance_delay: Millis,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            min_session_timeout: 1_000,
            max_session_timeout: 1_800_000,
            initial_rebalance_delay: 0,
        }
    }
}

/// All groups of the broker.
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: HashMap<String, Group>,
    nonce: String,
    seq: u64,
}

impl Coordinator {
    /// A coordinator whose member ids contain `nonce` (make it unique per broker run).
    pub fn new(config: CoordinatorConfig, nonce: impl Into<String>) -> Self {
        Coordinator {
            config,
            groups: HashMap::new(),
            nonce: nonce.into(),
            seq: 0,
        }
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}-{}", self.nonce, self.seq)
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, now: Millis, reply: ReplyId, req: JoinRequest) -> Vec<Action> {
        let requested_id = req.member_id.clone();
        let fail = |e: E| vec![Action::Join(reply, JoinResult::error(e, &requested_id))];
        let session = req.session_timeout_ms.max(0) as Millis;
        if session < self.config.min_session_timeout || session > self.config.max_session_timeout {
            return fail(E::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(E::InconsistentGroupProtocol);
        }
        if req.group_id.is_empty() {
            return fail(E::InvalidGroupId);
        }
        let new_id = if req.member_id.is_empty() {
            let prefix = req
                .group_instance_id
                .clone()
                .unwrap_or_else(|| req.client_id.clone());
            Some(self.new_member_id(&prefix))
        } else {
            None
        };
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if !group.members.is_empty() {
            if group.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return fail(E::InconsistentGroupProtocol);
            }
            let others_ok = req.protocols.iter().any(|(name, _)| {
                group
                    .members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.supports(name))
            });
            if !others_ok {
                return fail(E::InconsistentGroupProtocol);
            }
        }
        let mut actions = Vec::new();
        let member_id = match (new_id, &req.group_instance_id) {
            (Some(id), Some(instance)) => {
                // A static member (re)starting: it replaces its previous incarnation,
                // whose outstanding requests are fenced.
                if let Some(old) = group.static_members.insert(instance.clone(), id.clone()) {
                    if let Some(m) = group.members.remove(&old) {
                        if let Some(r) = m.pending_join {
                            actions.push(Action::Join(
                                r,
                                JoinResult::error(E::FencedInstanceId, &old),
                            ));
                        }
                        if let Some(r) = m.pending_sync {
                            actions.push(Action::Sync(r, SyncResult::error(E::FencedInstanceId)));
                        }
                    }
                    if group.leader.as_deref() == Some(old.as_str()) {
                        group.leader = Some(id.clone());
                    }
                }
                id
            }
            (Some(id), None) if req.require_known_member_id => {
                group.pending_ids.insert(id.clone(), now + session);
                let mut r = JoinResult::error(E::MemberIdRequired, &id);
                r.member_id = id;
                return vec![Action::Join(reply, r)];
            }
            (Some(id), None) => id,
            (None, _) => {
                let id = req.member_id.clone();
                if group.pending_ids.remove(&id).is_none() {
                    if let Err(e) = group.check_member(&id, req.group_instance_id.as_deref()) {
                        return fail(e);
                    }
                }
                if let Some(answer) = rejoin_current(group, &id, &req.protocols, now) {
                    return vec![Action::Join(reply, answer)];
                }
                id
            }
        };
        self.seq += 1;
        let seq = self.seq;
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return fail(E::UnknownServerError);
        };
        if !group.members.contains_key(&member_id) {
            if let Some(initial) = group.initial.as_mut() {
                initial.new_member_added = true;
            }
        }
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.group_instance_id.clone(),
                client_id: String::new(),
                client_host: String::new(),
                session_timeout: session,
                rebalance_timeout: session,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                pending_join: None,
                pending_sync: None,
                joined_seq: seq,
            });
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout = session;
        member.rebalance_timeout = (req.rebalance_timeout_ms.max(0) as Millis).max(session.min(1));
        member.protocols = req.protocols;
        member.last_heartbeat = now;
        if let Some(old) = member.pending_join.replace(reply) {
            actions.push(Action::Join(
                old,
                JoinResult::error(E::RebalanceInProgress, &member_id),
            ));
        }
        group.protocol_type = Some(req.protocol_type);
        if group.state != GroupState::PreparingRebalance {
            prepare_rebalance(
                group,
                now,
                self.config.initial_rebalance_delay,
                &mut actions,
            );
        }
        try_complete_join(group, now, &mut actions);
        actions
    }

    /// Handles a SyncGroup.
    pub fn sync(&mut self, now: Millis, reply: ReplyId, req: SyncRequest) -> Vec<Action> {
        let fail = |e: E| vec![Action::Sync(reply, SyncResult::error(e))];
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return fail(E::UnknownMemberId);
        };
        if let Err(e) = group.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return fail(e);
        }
        if req.generation_id != group.generation {
            return fail(E::IllegalGeneration);
        }
        if req.protocol_type.is_some() && req.protocol_type != group.protocol_type
            || req.protocol_name.is_some() && req.protocol_name != group.protocol
        {
            return fail(E::InconsistentGroupProtocol);
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        let mut actions = Vec::new();
        match group.state {
            GroupState::PreparingRebalance => return fail(E::RebalanceInProgress),
            GroupState::Empty => return fail(E::UnknownMemberId),
            GroupState::Stable => {
                let assignment = match group.members.get_mut(&req.member_id) {
                    Some(m) => {
                        m.last_heartbeat = now;
                        m.assignment.clone()
                    }
                    None => return fail(E::UnknownMemberId),
                };
                actions.push(Action::Sync(reply, ok(group, assignment)));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat = now;
                    if let Some(old) = m.pending_sync.replace(reply) {
                        actions.push(Action::Sync(old, SyncResult::error(E::RebalanceInProgress)));
                    }
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    for (id, assignment) in req.assignments {
                        if let Some(m) = group.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    group.state = GroupState::Stable;
                    // Answered members start a fresh session now (they could not heartbeat
                    // while parked).
                    let answers: Vec<_> = group
                        .members
                        .values_mut()
                        .filter_map(|m| {
                            let r = m.pending_sync.take()?;
                            m.last_heartbeat = now;
                            Some((r, m.assignment.clone()))
                        })
                        .collect();
                    for (r, assignment) in answers {
                        actions.push(Action::Sync(r, ok(group, assignment)));
                    }
                }
            }
        }
        actions
    }

    /// Handles a Heartbeat; returns the error code.
    pub fn heartbeat(
        &mut self,
        now: Millis,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return E::UnknownMemberId.code();
        };
        if let Err(e) = group.check_member(member_id, instance_id) {
            return e.code();
        }
        let state = group.state;
        let current = group.generation;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match state {
            GroupState::Empty => E::UnknownMemberId.code(),
            GroupState::PreparingRebalance => E::RebalanceInProgress.code(),
            _ if generation != current => E::IllegalGeneration.code(),
            _ => 0,
        }
    }

    /// Handles a LeaveGroup; returns one error code per `(member_id, instance_id)`.
    pub fn leave(
        &mut self,
        now: Millis,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (Vec<i16>, Vec<Action>) {
        let mut actions = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (vec![E::UnknownMemberId.code(); leaving.len()], actions);
        };
        let mut codes = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance) in leaving {
            let id = match instance {
                Some(instance) => match group.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                    Some(_) => {
                        codes.push(E::FencedInstanceId.code());
                        continue;
                    }
                    None => {
                        codes.push(E::UnknownMemberId.code());
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.members.contains_key(&id) {
                remove_member(group, &id, &mut actions);
                removed = true;
                codes.push(0);
            } else {
                codes.push(E::UnknownMemberId.code());
            }
        }
        if removed {
            members_left(
                group,
                now,
                self.config.initial_rebalance_delay,
                &mut actions,
            );
        }
        (codes, actions)
    }

    /// Advances time: expires members whose session ran out and rebalances whose
    /// deadline passed.
    pub fn tick(&mut self, now: Millis) -> Vec<Action> {
        let mut actions = Vec::new();
        for group in self.groups.values_mut() {
            group.pending_ids.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                // Like Kafka, a member parked in JoinGroup or SyncGroup is kept alive: it
                // cannot heartbeat while it waits (a slow leader would otherwise expire its
                // followers). A dead leader still expires and releases them.
                .filter(|(_, m)| {
                    m.pending_join.is_none()
                        && m.pending_sync.is_none()
                        && m.last_heartbeat + m.session_timeout <= now
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(member = %id, "member session expired");
                    remove_member(group, id, &mut actions);
                }
                members_left(
                    group,
                    now,
                    self.config.initial_rebalance_delay,
                    &mut actions,
                );
            }
            if group.state == GroupState::PreparingRebalance && now >= group.rebalance_deadline {
                complete_join(group, now, &mut actions);
            } else {
                try_complete_join(group, now, &mut actions);
            }
        }
        actions
    }

    /// May `member_id` commit offsets for `group_id` in `generation`? (0 = yes)
    /// Generation -1 with no member id is a "simple" commit by a consumer that uses no
    /// group membership; allowed while the group has no members.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let Some(group) = self.groups.get(group_id) else {
            return if generation < 0 {
                0
            } else {
                E::IllegalGeneration.code()
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                0
            } else {
                E::IllegalGeneration.code()
            };
        }
        if let Err(e) = group.check_member(member_id, instance_id) {
            return e.code();
        }
        if generation != group.generation {
            return E::IllegalGeneration.code();
        }
        if group.state == GroupState::CompletingRebalance {
            return E::RebalanceInProgress.code();
        }
        0
    }

    /// Group ids with their protocol type and state.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Describes one group; `None` if the coordinator has never seen it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let mut members: Vec<_> = g.members.iter().collect();
        members.sort_by_key(|(_, m)| m.joined_seq);
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            members: members
                .into_iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        })
    }

    /// Forgets an empty group. `Err(NonEmptyGroup)` if it has members; `Ok(false)` if unknown.
    pub fn delete(&mut self, group_id: &str) -> Result<bool, E> {
        match self.groups.get(group_id) {
            None => Ok(false),
            Some(g) if !g.members.is_empty() => Err(E::NonEmptyGroup),
            Some(_) => {
                self.groups.remove(group_id);
                Ok(true)
            }
        }
    }

    /// Current generation and state of a group (for tests and status pages).
    pub fn generation(&self, group_id: &str) -> Option<(i32, GroupState)> {
        self.groups.get(group_id).map(|g| (g.generation, g.state))
    }

    /// Member ids of a group.
    pub fn members(&self, group_id: &str) -> Vec<String> {
        self.groups
            .get(group_id)
            .map(|g| g.members.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn prepare_rebalance(
    group: &mut Group,
    now: Millis,
    initial_delay: Millis,
    actions: &mut Vec<Action>,
) {
    for m in group.members.values_mut() {
        if let Some(r) = m.pending_sync.take() {
            // It could not heartbeat while parked: its session restarts now, to rejoin.
            m.last_heartbeat = now;
            actions.push(Action::Sync(r, SyncResult::error(E::RebalanceInProgress)));
        }
    }
    let was_empty = group.state == GroupState::Empty;
    group.state = GroupState::PreparingRebalance;
    let timeout = group
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(0);
    group.rebalance_deadline = now + timeout;
    if was_empty && initial_delay > 0 {
        let step = initial_delay.min(timeout);
        group.delay_until = now + step;
        group.initial = Some(InitialDelay {
            step,
            remaining: timeout.saturating_sub(step),
            new_member_added: false,
        });
    } else {
        group.delay_until = now;
        group.initial = None;
    }
}

fn try_complete_join(group: &mut Group, now: Millis, actions: &mut Vec<Action>) {
    if group.state != GroupState::PreparingRebalance || now < group.delay_until {
        return;
    }
    if let Some(initial) = group.initial.as_mut() {
        if initial.new_member_added && initial.remaining > 0 {
            // Someone joined during the wait: wait once more for others who may follow.
            let step = initial.step.min(initial.remaining);
            initial.remaining -= step;
            initial.new_member_added = false;
            group.delay_until = now + step;
            return;
        }
    }
    if group.members.values().all(|m| m.pending_join.is_some()) {
        complete_join(group, now, actions);
    }
}

fn complete_join(group: &mut Group, now: Millis, actions: &mut Vec<Action>) {
    group.initial = None;
    let missing: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.pending_join.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    for id in &missing {
        tracing::info!(member = %id, "member did not rejoin in time");
        remove_member(group, id, actions);
    }
    group.generation += 1;
    if group.members.is_empty() {
        become_empty(group);
        return;
    }
    if !group
        .leader
        .as_ref()
        .is_some_and(|l| group.members.contains_key(l))
    {
        group.leader = group
            .members
            .iter()
            .min_by_key(|(_, m)| m.joined_seq)
            .map(|(id, _)| id.clone());
    }
    let leader = group.leader.clone().unwrap_or_default();
    // The leader's most preferred protocol that every member supports.
    let protocol = group.members.get(&leader).and_then(|l| {
        l.protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| group.members.values().all(|m| m.supports(n)))
    });
    group.protocol = protocol.clone();
    group.state = GroupState::CompletingRebalance;
    let everyone = leader_view(group, protocol.as_deref().unwrap_or_default());
    for (id, m) in group.members.iter_mut() {
        m.assignment = Bytes::new();
        m.last_heartbeat = now;
        if let Some(r) = m.pending_join.take() {
            actions.push(Action::Join(
                r,
                JoinResult {
                    error: 0,
                    generation_id: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
    }
}

/// Every member with its metadata for `protocol`, in joining order: what the leader needs
/// to compute the assignment.
fn leader_view(group: &Group, protocol: &str) -> Vec<JoinMember> {
    let mut ordered: Vec<(&String, &Member)> = group.members.iter().collect();
    ordered.sort_by_key(|(_, m)| m.joined_seq);
    ordered
        .into_iter()
        .map(|(id, m)| JoinMember {
            member_id: id.clone(),
            group_instance_id: m.instance_id.clone(),
            metadata: m.metadata_for(protocol),
        })
        .collect()
}

/// A member that joins again while its group is completing a rebalance or stable, with the
/// same protocols, and that is not the leader of a stable group, gets the current
/// generation back instead of starting a new rebalance (Kafka does the same: the member
/// most likely missed its JoinGroup response, e.g. after a client-side timeout on a busy
/// machine; rebalancing again would fail everyone's SyncGroup and could repeat forever).
fn rejoin_current(
    group: &mut Group,
    member_id: &str,
    protocols: &[(String, Bytes)],
    now: Millis,
) -> Option<JoinResult> {
    let leader = group.leader.clone().unwrap_or_default();
    let is_leader = leader == member_id;
    let unchanged = match group.state {
        GroupState::CompletingRebalance => true,
        GroupState::Stable => !is_leader,
        GroupState::Empty | GroupState::PreparingRebalance => false,
    };
    let member = group.members.get_mut(member_id)?;
    if !unchanged || member.protocols != protocols || member.pending_join.is_some() {
        return None;
    }
    member.last_heartbeat = now;
    let members = if is_leader {
        leader_view(group, group.protocol.as_deref().unwrap_or_default())
    } else {
        Vec::new()
    };
    Some(JoinResult {
        error: 0,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
    })
}

fn remove_member(group: &mut Group, id: &str, actions: &mut Vec<Action>) {
    if let Some(m) = group.members.remove(id) {
        if let Some(r) = m.pending_join {
            actions.push(Action::Join(r, JoinResult::error(E::UnknownMemberId, id)));
        }
        if let Some(r) = m.pending_sync {
            actions.push(Action::Sync(r, SyncResult::error(E::UnknownMemberId)));
        }
        if let Some(instance) = m.instance_id {
            if group.static_members.get(&instance).map(String::as_str) == Some(id) {
                group.static_members.remove(&instance);
            }
        }
    }
}

fn members_left(group: &mut Group, now: Millis, initial_delay: Millis, actions: &mut Vec<Action>) {
    if group.members.is_empty() {
        if group.state != GroupState::Empty {
            group.generation += 1;
        }
        become_empty(group);
        return;
    }
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now, initial_delay, actions)
        }
        GroupState::PreparingRebalance => try_complete_join(group, now, actions),
        GroupState::Empty => {}
    }
}

fn become_empty(group: &mut Group) {
    group.initial = None;
    group.state = GroupState::Empty;
    group.leader = None;
    group.protocol = None;
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
