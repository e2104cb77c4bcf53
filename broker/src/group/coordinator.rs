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

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

use super::membership::*;
pub use super::types::*;

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

/// Who a JoinGroup speaks for.
enum Joining {
    /// This member, to be (re)added and to rebalance.
    Member(String),
    /// Answered already (MEMBER_ID_REQUIRED, or the current generation).
    Answered(JoinResult),
}

/// Resolves who joins: a new member (with a fresh id, or first told its id), a static
/// member replacing its previous incarnation (whose parked requests are fenced), or a
/// known member (maybe answered with the current generation, see `rejoin_current`).
fn who_joins(
    group: &mut Group,
    new_id: Option<String>,
    req: &JoinRequest,
    now: Millis,
    session: Millis,
    actions: &mut Vec<Action>,
) -> Result<Joining, E> {
    match (new_id, &req.group_instance_id) {
        (Some(id), Some(instance)) => {
            let Some(old) = group.static_members.insert(instance.clone(), id.clone()) else {
                return Ok(Joining::Member(id));
            };
            let leader_before = group.leader.clone().unwrap_or_default();
            if group.replace_static_member(&old, &id, actions) {
                if let Some(answer) =
                    restart_in_place(group, &id, &leader_before, req, session, now)
                {
                    return Ok(Joining::Answered(answer));
                }
            }
            Ok(Joining::Member(id))
        }
        (Some(id), None) if req.require_known_member_id => {
            group.pending_ids.insert(id.clone(), now + session);
            let mut r = JoinResult::error(E::MemberIdRequired, &id);
            r.member_id = id;
            Ok(Joining::Answered(r))
        }
        (Some(id), None) => Ok(Joining::Member(id)),
        (None, _) => {
            let id = req.member_id.clone();
            if group.pending_ids.remove(&id).is_none() {
                group.check_member(&id, req.group_instance_id.as_deref())?;
            }
            Ok(match rejoin_current(group, &id, &req.protocols, now) {
                Some(answer) => Joining::Answered(answer),
                None => Joining::Member(id),
            })
        }
    }
}

/// A static member restarting (a new incarnation replacing `id`'s previous one) in a stable
/// group whose protocol it does not change keeps its assignment without a rebalance, as in
/// Kafka: it gets the current generation, with the leader as it was before the replacement
/// (JoinGroup v8 and older have no `skip_assignment`, so a restarted leader is told the old
/// id and does not assign again) and then its assignment from SyncGroup. `None`: rebalance.
fn restart_in_place(
    group: &mut Group,
    id: &str,
    leader_before: &str,
    req: &JoinRequest,
    session: Millis,
    now: Millis,
) -> Option<JoinResult> {
    if group.state != GroupState::Stable {
        return None;
    }
    let member = group.members.get_mut(id)?;
    member.refresh(req, session, now);
    if group.next_protocol() != group.protocol {
        return None;
    }
    Some(JoinResult {
        error: None,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader: leader_before.to_string(),
        member_id: id.to_string(),
        members: Vec::new(),
    })
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
        let fail = |e: E| vec![Action::Join(reply, JoinResult::error(e, &req.member_id))];
        let session = req.session_timeout_ms.max(0) as Millis;
        if let Err(e) = self.check_join(&req, session) {
            return fail(e);
        }
        let new_id = req.member_id.is_empty().then(|| {
            let prefix = req.group_instance_id.as_ref().unwrap_or(&req.client_id);
            self.new_member_id(&prefix.clone())
        });
        self.seq += 1;
        let seq = self.seq;
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        let mut actions = Vec::new();
        let member_id = match who_joins(group, new_id, &req, now, session, &mut actions) {
            Ok(Joining::Member(id)) => id,
            Ok(Joining::Answered(answer)) => return vec![Action::Join(reply, answer)],
            Err(e) => return fail(e),
        };
        let old = group.upsert_member(&member_id, req, session, now, seq, reply);
        if let Some(old) = old {
            actions.push(Action::Join(
                old,
                JoinResult::error(E::RebalanceInProgress, &member_id),
            ));
        }
        if group.state != GroupState::PreparingRebalance {
            let delay = self.config.initial_rebalance_delay;
            prepare_rebalance(group, now, delay, &mut actions);
        }
        try_complete_join(group, now, &mut actions);
        actions
    }

    /// The request's own checks, and whether its protocols fit the group's members.
    fn check_join(&self, req: &JoinRequest, session: Millis) -> Result<(), E> {
        if session < self.config.min_session_timeout || session > self.config.max_session_timeout {
            return Err(E::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(E::InconsistentGroupProtocol);
        }
        if req.group_id.is_empty() {
            return Err(E::InvalidGroupId);
        }
        let Some(group) = self.groups.get(&req.group_id) else {
            return Ok(());
        };
        if group.members.is_empty() {
            return Ok(());
        }
        if group.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
            return Err(E::InconsistentGroupProtocol);
        }
        let others_ok = req.protocols.iter().any(|(name, _)| {
            group
                .members
                .iter()
                .filter(|(id, _)| **id != req.member_id)
                .all(|(_, m)| m.supports(name))
        });
        if others_ok {
            Ok(())
        } else {
            Err(E::InconsistentGroupProtocol)
        }
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
            error: None,
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

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        now: Millis,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), E> {
        let group = self.groups.get_mut(group_id).ok_or(E::UnknownMemberId)?;
        group.check_member(member_id, instance_id)?;
        let (state, current) = (group.state, group.generation);
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match state {
            GroupState::Empty => Err(E::UnknownMemberId),
            GroupState::PreparingRebalance => Err(E::RebalanceInProgress),
            _ if generation != current => Err(E::IllegalGeneration),
            _ => Ok(()),
        }
    }

    /// Handles a LeaveGroup; returns one outcome per `(member_id, instance_id)`.
    pub fn leave(
        &mut self,
        now: Millis,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (Vec<Result<(), E>>, Vec<Action>) {
        let mut actions = Vec::new();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (vec![Err(E::UnknownMemberId); leaving.len()], actions);
        };
        let mut codes = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance) in leaving {
            let id = match instance {
                Some(instance) => match group.static_members.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                    Some(_) => {
                        codes.push(Err(E::FencedInstanceId));
                        continue;
                    }
                    None => {
                        codes.push(Err(E::UnknownMemberId));
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.members.contains_key(&id) {
                remove_member(group, &id, &mut actions);
                removed = true;
                codes.push(Ok(()));
            } else {
                codes.push(Err(E::UnknownMemberId));
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

    /// May `member_id` commit offsets for `group_id` in `generation`?
    /// Generation -1 with no member id is a "simple" commit by a consumer that uses no
    /// group membership; allowed while the group has no members.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), E> {
        let Some(group) = self.groups.get(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(E::IllegalGeneration)
            };
        };
        // Like Kafka's validateOffsetCommit: a commit from outside group management (no
        // generation, no member) is fine while the group is empty; once it has members only
        // they may commit.
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(E::UnknownMemberId)
            };
        }
        group.check_member(member_id, instance_id)?;
        if generation != group.generation {
            return Err(E::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(E::RebalanceInProgress);
        }
        Ok(())
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

    /// Whether the group has members now.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Current generation and state of a group.
    #[cfg(test)]
    pub fn generation(&self, group_id: &str) -> Option<(i32, GroupState)> {
        self.groups.get(group_id).map(|g| (g.generation, g.state))
    }

    /// Member ids of a group.
    #[cfg(test)]
    pub fn members(&self, group_id: &str) -> Vec<String> {
        self.groups
            .get(group_id)
            .map(|g| g.members.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
