//! One group's members and the transitions of its rebalance protocol: preparing a
//! rebalance (with Kafka's initial delay for an empty group), completing the join phase,
//! answering a member that joins again unchanged, removing members.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

use super::types::*;

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Millis,
    pub(super) rebalance_timeout: Millis,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_heartbeat: Millis,
    pub(super) pending_join: Option<ReplyId>,
    pub(super) pending_sync: Option<ReplyId>,
    pub(super) joined_seq: u64,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
    pub(super) fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }

    /// Takes what a JoinGroup says about the member, and restarts its session.
    pub(super) fn refresh(&mut self, req: &JoinRequest, session: Millis, now: Millis) {
        self.client_id.clone_from(&req.client_id);
        self.client_host.clone_from(&req.client_host);
        self.session_timeout = session;
        self.rebalance_timeout = (req.rebalance_timeout_ms.max(0) as Millis).max(session.min(1));
        self.protocols.clone_from(&req.protocols);
        self.last_heartbeat = now;
    }
}

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pub(super) pending_ids: HashMap<String, Millis>,
    /// group.instance.id -> member id.
    pub(super) static_members: HashMap<String, String>,
    pub(super) rebalance_deadline: Millis,
    /// The join phase does not complete before this (the initial delay, below).
    pub(super) delay_until: Millis,
    /// The rebalance started from an empty group: as in Kafka's InitialDelayedJoin, it waits
    /// `group.initial.rebalance.delay.ms` for more members, and again each time a new
    /// member joined meanwhile, within the rebalance timeout. Members starting together
    /// then land in one generation, with time to learn the topics' metadata (a leader that
    /// assigns before it has them must rejoin at once, which kafka-python mishandles).
    pub(super) initial: Option<InitialDelay>,
}

/// The state of an initial delayed join.
#[derive(Debug, Clone, Copy)]
pub(super) struct InitialDelay {
    /// Length of each wait.
    pub(super) step: Millis,
    /// What is left of the rebalance timeout for further waits.
    pub(super) remaining: Millis,
    /// A new member joined during the current wait.
    pub(super) new_member_added: bool,
}

impl Group {
    /// Adds the member or updates it from its JoinGroup, parked as `reply`; returns the
    /// member's previous parked JoinGroup, which is superseded.
    pub(super) fn upsert_member(
        &mut self,
        member_id: &str,
        req: JoinRequest,
        session: Millis,
        now: Millis,
        seq: u64,
        reply: ReplyId,
    ) -> Option<ReplyId> {
        if !self.members.contains_key(member_id) {
            if let Some(initial) = self.initial.as_mut() {
                initial.new_member_added = true;
            }
        }
        let member = self
            .members
            .entry(member_id.to_string())
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
        member.refresh(&req, session, now);
        self.protocol_type = Some(req.protocol_type);
        member.pending_join.replace(reply)
    }

    /// Replaces a static member's previous incarnation `old` by `new_id` (Kafka's
    /// `replaceStaticMember`): the member keeps its assignment and place in the joining
    /// order, its parked requests are fenced, and leadership follows it.
    pub(super) fn replace_static_member(
        &mut self,
        old: &str,
        new_id: &str,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(mut m) = self.members.remove(old) else {
            return false;
        };
        if let Some(r) = m.pending_join.take() {
            actions.push(Action::Join(r, JoinResult::error(E::FencedInstanceId, old)));
        }
        if let Some(r) = m.pending_sync.take() {
            actions.push(Action::Sync(r, SyncResult::error(E::FencedInstanceId)));
        }
        self.members.insert(new_id.to_string(), m);
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new_id.to_string());
        }
        true
    }

    /// The protocol the next generation would use: the leader's most preferred one that
    /// every member supports.
    pub(super) fn next_protocol(&self) -> Option<String> {
        let leader = self.members.get(self.leader.as_deref()?)?;
        leader
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.members.values().all(|m| m.supports(n)))
    }

    pub(super) fn new() -> Self {
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
    pub(super) fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), E> {
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

pub(super) fn prepare_rebalance(
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

pub(super) fn try_complete_join(group: &mut Group, now: Millis, actions: &mut Vec<Action>) {
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

pub(super) fn complete_join(group: &mut Group, now: Millis, actions: &mut Vec<Action>) {
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
    let protocol = group.next_protocol();
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
                    error: None,
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
pub(super) fn leader_view(group: &Group, protocol: &str) -> Vec<JoinMember> {
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
pub(super) fn rejoin_current(
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
        error: None,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
    })
}

pub(super) fn remove_member(group: &mut Group, id: &str, actions: &mut Vec<Action>) {
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

pub(super) fn members_left(
    group: &mut Group,
    now: Millis,
    initial_delay: Millis,
    actions: &mut Vec<Action>,
) {
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

pub(super) fn become_empty(group: &mut Group) {
    group.initial = None;
    group.state = GroupState::Empty;
    group.leader = None;
    group.protocol = None;
}
