//! Runs the [`Coordinator`] for the broker: parks JoinGroup/SyncGroup requests until the
//! state machine answers them, drives its clock, and keeps committed offsets (in memory,
//! written through to the store; the caller flushes before acknowledging a commit).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::coordinator::{
    Action, Coordinator, CoordinatorConfig, GroupDescription, GroupState, JoinRequest, JoinResult,
    Millis, SyncRequest, SyncResult,
};
use kafka_protocol::ResponseError;

use crate::error::StorageError;
use crate::storage::Store;

const OFFSET_PREFIX: &[u8] = b"offset/";

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch the client saw (-1 unknown).
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: Option<String>,
}

fn offset_key_prefix(group: &str) -> Vec<u8> {
    let mut k = OFFSET_PREFIX.to_vec();
    k.extend_from_slice(&(group.len() as u32).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = offset_key_prefix(group);
    k.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn encode_committed(c: &Committed) -> Vec<u8> {
    let mut v = Vec::with_capacity(13 + c.metadata.as_ref().map_or(0, String::len));
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    match &c.metadata {
        None => v.push(0),
        Some(m) => {
            v.push(1);
            v.extend_from_slice(m.as_bytes());
        }
    }
    v
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

fn decode_offset_record(key: &[u8], value: &[u8]) -> Option<(String, String, i32, Committed)> {
    let mut k = key.strip_prefix(OFFSET_PREFIX)?;
    let glen = u32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?) as usize;
    let group = String::from_utf8(take(&mut k, glen)?.to_vec()).ok()?;
    let tlen = u32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?) as usize;
    let topic = String::from_utf8(take(&mut k, tlen)?.to_vec()).ok()?;
    let partition = i32::from_be_bytes(take(&mut k, 4)?.try_into().ok()?);
    let mut v = value;
    let offset = i64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
    let leader_epoch = i32::from_be_bytes(take(&mut v, 4)?.try_into().ok()?);
    let metadata = match take(&mut v, 1)?[0] {
        0 => None,
        _ => Some(String::from_utf8(v.to_vec()).ok()?),
    };
    Some((
        group,
        topic,
        partition,
        Committed {
            offset,
            leader_epoch,
            metadata,
        },
    ))
}

/// The answer to a parked JoinGroup or SyncGroup.
#[derive(Debug)]
pub enum Answer {
    /// JoinGroup answer.
    Join(JoinResult),
    /// SyncGroup answer.
    Sync(SyncResult),
}

/// Committed offsets per topic: `(topic, [(partition, offset if any)])`.
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

type Offsets = HashMap<String, BTreeMap<(String, i32), Committed>>;

/// The group coordinator of one broker.
pub struct GroupService {
    coordinator: Mutex<Coordinator>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_reply: AtomicU64,
    clock: Instant,
    offsets: Mutex<Offsets>,
    store: Arc<dyn Store>,
}

impl GroupService {
    /// Loads committed offsets from the store.
    pub fn recover(store: Arc<dyn Store>, config: CoordinatorConfig) -> Result<Self, StorageError> {
        let mut offsets: Offsets = HashMap::new();
        for (k, v) in store.meta_scan(OFFSET_PREFIX)? {
            let (group, topic, partition, c) =
                decode_offset_record(&k, &v).ok_or_else(|| StorageError::Corrupt {
                    what: "committed offsets".into(),
                    detail: format!("record of {} bytes", v.len()),
                })?;
            offsets
                .entry(group)
                .or_default()
                .insert((topic, partition), c);
        }
        if !offsets.is_empty() {
            tracing::info!(groups = offsets.len(), "recovered committed offsets");
        }
        Ok(GroupService {
            coordinator: Mutex::new(Coordinator::new(config, crate::ids::new_cluster_id())),
            waiters: Mutex::default(),
            next_reply: AtomicU64::new(1),
            clock: Instant::now(),
            offsets: Mutex::new(offsets),
            store,
        })
    }

    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn park(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        (id, rx)
    }

    fn deliver(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for a in actions {
            match &a {
                Action::Join(id, r) => tracing::debug!(
                    reply = id, member = %r.member_id, generation = r.generation_id,
                    error = ?r.error, leader = %r.leader, "JoinGroup answered"
                ),
                Action::Sync(id, r) => {
                    tracing::debug!(reply = id, error = ?r.error, "SyncGroup answered")
                }
            }
            let (id, answer) = match a {
                Action::Join(id, r) => (id, Answer::Join(r)),
                Action::Sync(id, r) => (id, Answer::Sync(r)),
            };
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(answer);
            }
        }
    }

    /// Handles a JoinGroup; the receiver yields the answer (maybe after a rebalance).
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<Answer> {
        let (id, rx) = self.park();
        tracing::debug!(group = %req.group_id, member = %req.member_id, reply = id, "JoinGroup");
        let actions = self.coordinator().join(self.now(), id, req);
        self.deliver(actions);
        rx
    }

    /// Handles a SyncGroup; the receiver yields the answer (maybe after the leader's).
    pub fn sync(&self, req: SyncRequest) -> oneshot::Receiver<Answer> {
        let (id, rx) = self.park();
        tracing::debug!(
            group = %req.group_id, member = %req.member_id, generation = req.generation_id,
            leader = !req.assignments.is_empty(), reply = id, "SyncGroup"
        );
        let actions = self.coordinator().sync(self.now(), id, req);
        self.deliver(actions);
        rx
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        let outcome = self
            .coordinator()
            .heartbeat(self.now(), group, generation, member, instance);
        tracing::debug!(group, member, generation, ?outcome, "Heartbeat");
        outcome
    }

    /// Handles a LeaveGroup.
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), ResponseError>> {
        tracing::debug!(group, ?members, "LeaveGroup");
        let (codes, actions) = self.coordinator().leave(self.now(), group, members);
        self.deliver(actions);
        codes
    }

    /// Advances the coordinator's clock.
    pub fn tick(&self) {
        let actions = self.coordinator().tick(self.now());
        self.deliver(actions);
    }

    /// Ticks every 100 ms until shutdown.
    pub fn spawn_ticker(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                match service.upgrade() {
                    Some(s) => s.tick(),
                    None => return,
                }
            }
        });
    }

    /// Checks membership, then stores the offsets (not yet flushed). The error, if any,
    /// applies to every partition.
    pub fn commit(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<Result<(), ResponseError>, StorageError> {
        if let Err(e) = self.check_commit(group, generation, member, instance) {
            return Ok(Err(e));
        }
        let offsets = offsets.into_iter().map(|(t, p, c)| ((group, t, p), c));
        self.store_offsets(offsets)?;
        Ok(Ok(()))
    }

    /// Stores the offsets a committed transaction sent with TxnOffsetCommit (not yet
    /// flushed). Membership was checked when they were sent.
    pub fn apply_transaction_offsets(
        &self,
        offsets: &crate::txn::types::PendingOffsets,
    ) -> Result<(), StorageError> {
        let offsets = offsets
            .iter()
            .map(|((g, t, p), c)| ((g.as_str(), t.clone(), *p), c.clone()));
        self.store_offsets(offsets)
    }

    fn store_offsets<'a>(
        &self,
        offsets: impl Iterator<Item = ((&'a str, String, i32), Committed)>,
    ) -> Result<(), StorageError> {
        let mut all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for ((group, topic, partition), c) in offsets {
            self.store
                .meta_put(&offset_key(group, &topic, partition), &encode_committed(&c))?;
            let entry = all.entry(group.to_string()).or_default();
            entry.insert((topic, partition), c);
        }
        Ok(())
    }

    /// Checks that `member` of `generation` may commit offsets for `group` (TxnOffsetCommit
    /// v3+ carries the consumer's group metadata, KIP-447).
    pub fn check_commit(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        self.coordinator()
            .check_commit(group, generation, member, instance)
    }

    /// Committed offsets of `group`: for the given topics/partitions, or all when `None`.
    pub fn committed(&self, group: &str, wanted: Option<&[(String, Vec<i32>)]>) -> TopicOffsets {
        let all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let empty = BTreeMap::new();
        let offsets = all.get(group).unwrap_or(&empty);
        match wanted {
            Some(topics) => topics
                .iter()
                .map(|(t, ps)| {
                    let parts = ps
                        .iter()
                        .map(|&p| (p, offsets.get(&(t.clone(), p)).cloned()))
                        .collect();
                    (t.clone(), parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                for ((t, p), c) in offsets {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(c.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    /// Every group the broker knows (with members or with committed offsets).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut groups = self.coordinator().list();
        let offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for g in offsets.keys() {
            if !groups.iter().any(|(id, _, _)| id == g) {
                groups.push((g.clone(), "consumer".into(), GroupState::Empty));
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    /// Describes a group; `None` if it is unknown.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        if let Some(d) = self.coordinator().describe(group) {
            return Some(d);
        }
        let offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets.contains_key(group).then(|| GroupDescription {
            state: GroupState::Empty,
            protocol_type: "consumer".into(),
            protocol: String::new(),
            members: Vec::new(),
        })
    }

    /// Deletes an empty group and its committed offsets.
    /// OffsetDelete: removes `group`'s committed offsets of `partitions` (flushed by the
    /// caller). A group with members keeps them (GROUP_SUBSCRIBED_TO_TOPIC: members'
    /// subscriptions are not decoded, so every member counts as subscribed to every topic);
    /// a group without offsets gets GROUP_ID_NOT_FOUND.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Result<(), ResponseError>, StorageError> {
        let active = self.coordinator().has_members(group);
        let mut all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(offsets) = all.get_mut(group) else {
            return Ok(Err(if active {
                ResponseError::GroupSubscribedToTopic
            } else {
                ResponseError::GroupIdNotFound
            }));
        };
        if active {
            return Ok(Err(ResponseError::GroupSubscribedToTopic));
        }
        for (t, p) in partitions {
            if offsets.remove(&(t.clone(), *p)).is_some() {
                self.store.meta_remove(&offset_key(group, t, *p))?;
            }
        }
        Ok(Ok(()))
    }

    /// DeleteGroups for one group.
    pub fn delete(&self, group: &str) -> Result<Result<(), ResponseError>, StorageError> {
        let known = match self.coordinator().delete(group) {
            Err(e) => return Ok(Err(e)),
            Ok(known) => known,
        };
        let removed = self
            .offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        if let Some(offsets) = &removed {
            for (t, p) in offsets.keys() {
                self.store.meta_remove(&offset_key(group, t, *p))?;
            }
        }
        Ok(if known || removed.is_some() {
            Ok(())
        } else {
            Err(ResponseError::GroupIdNotFound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[test]
    fn offset_records_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: -1,
            metadata: Some("meta".into()),
        };
        let k = offset_key("group-ü", "topic.1", 7);
        assert_eq!(
            decode_offset_record(&k, &encode_committed(&c)),
            Some(("group-ü".into(), "topic.1".into(), 7, c))
        );
        assert_eq!(decode_offset_record(&k[..10], b"x"), None);
    }

    #[test]
    fn commits_survive_recovery_and_delete_removes_them() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new("c"));
        let svc = GroupService::recover(store.clone(), CoordinatorConfig::default()).unwrap();
        let c = Committed {
            offset: 10,
            leader_epoch: 0,
            metadata: None,
        };
        assert_eq!(
            svc.commit("g", -1, "", None, vec![("t".into(), 0, c.clone())])
                .unwrap(),
            Ok(())
        );
        let again = GroupService::recover(store.clone(), CoordinatorConfig::default()).unwrap();
        assert_eq!(
            again.committed("g", None),
            vec![("t".to_string(), vec![(0, Some(c))])]
        );
        assert_eq!(again.list()[0].0, "g");
        assert_eq!(again.delete("g").unwrap(), Ok(()));
        assert_eq!(
            again.delete("g").unwrap(),
            Err(ResponseError::GroupIdNotFound)
        );
        assert!(store.meta_scan(OFFSET_PREFIX).unwrap().is_empty());
    }
}
