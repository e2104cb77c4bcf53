//! The transaction coordinator as a state machine, sans-io (KIP-98, with KIP-360's epoch
//! bump and KIP-447's group fencing left to the group coordinator).
//!
//! Events go in (`init`, `add_partitions`, `add_offsets`, `commit_offsets`, `end`,
//! `completed`, `expire`), with the current time; answers and [`Completion`]s come out.
//! A completion is the work of ending a transaction (markers, offsets), which the caller
//! does after storing the `Prepare*` state, then reports with `completed`. After any call
//! that answers a change, the caller stores [`TxnCoordinator::get`] of that id. No I/O, no
//! clock: the caller passes the time and a producer id allocator.
//!
//! States, as in Kafka: `Empty` -> `Ongoing` (partitions or groups added) ->
//! `PrepareCommit`/`PrepareAbort` (EndTxn, a timeout, or a new producer fencing the old one)
//! -> `CompleteCommit`/`CompleteAbort` (markers written) -> `Ongoing` again with the next
//! AddPartitionsToTxn. A producer's epoch fences every older one: requests with an older
//! epoch get PRODUCER_FENCED; a timeout or a fencing init bumps the epoch before aborting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::ResponseError as E;

use super::types::*;
use crate::control::Marker;
use crate::group::service::Committed;

/// Limits of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// Largest `transaction.timeout.ms` accepted (Kafka: transaction.max.timeout.ms).
    pub max_timeout_ms: u32,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
        }
    }
}

/// What InitProducerId gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// The producer id and epoch to use.
    Ready(i64, i16),
    /// An open transaction of the previous producer must be aborted first (its epoch is
    /// bumped already, fencing it); call `init` again once it has completed.
    MustAbort(Completion),
}

/// What EndTxn gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A retry of a transaction that already ended this way: answer success.
    Done,
    /// Store the prepared state, then carry this out and report `completed`.
    Complete(Completion),
}

/// The coordinator: every transactional id's state.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    config: TxnConfig,
    txns: BTreeMap<String, TxnMeta>,
    by_producer: HashMap<i64, String>,
}

impl TxnCoordinator {
    /// A coordinator holding `recovered` states.
    pub fn new(config: TxnConfig, recovered: Vec<(String, TxnMeta)>) -> Self {
        let by_producer = recovered
            .iter()
            .map(|(id, m)| (m.producer_id, id.clone()))
            .collect();
        TxnCoordinator {
            config,
            txns: recovered.into_iter().collect(),
            by_producer,
        }
    }

    /// The state of `id`, to store after a change.
    pub fn get(&self, id: &str) -> Option<&TxnMeta> {
        self.txns.get(id)
    }

    /// Every transactional id and its state.
    pub fn all(&self) -> impl Iterator<Item = (&String, &TxnMeta)> {
        self.txns.iter()
    }

    /// InitProducerId for transactional id `id`. `expected` is the producer id and epoch a
    /// producer that already had one sends (KIP-360); `alloc` hands out a new producer id.
    pub fn init(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: Millis,
        alloc: &mut dyn FnMut() -> Option<i64>,
    ) -> Result<Init, E> {
        let timeout_ms = u32::try_from(timeout_ms)
            .ok()
            .filter(|t| (1..=self.config.max_timeout_ms).contains(t))
            .ok_or(E::InvalidTransactionTimeout)?;
        let Some(meta) = self.txns.get_mut(id) else {
            let producer_id = alloc().ok_or(E::KafkaStorageError)?;
            let meta = TxnMeta {
                producer_id,
                epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                started: now,
            };
            self.by_producer.insert(producer_id, id.to_string());
            self.txns.insert(id.to_string(), meta);
            return Ok(Init::Ready(producer_id, 0));
        };
        if let Some(pair) = expected {
            if pair != (meta.producer_id, meta.epoch) {
                return Err(E::ProducerFenced);
            }
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(E::ConcurrentTransactions),
            TxnState::Ongoing => {
                meta.epoch = meta.epoch.saturating_add(1);
                Ok(Init::MustAbort(prepare(id, meta, Marker::Abort)))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if meta.epoch >= i16::MAX - 1 {
                    let producer_id = alloc().ok_or(E::KafkaStorageError)?;
                    self.by_producer.remove(&meta.producer_id);
                    self.by_producer.insert(producer_id, id.to_string());
                    meta.producer_id = producer_id;
                    meta.epoch = 0;
                } else {
                    meta.epoch += 1;
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                Ok(Init::Ready(meta.producer_id, meta.epoch))
            }
        }
    }

    /// The state of `id` for a request of producer `(pid, epoch)` that may open or extend
    /// a transaction, and whether this request opened it.
    fn open(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        now: Millis,
    ) -> Result<(&mut TxnMeta, bool), E> {
        let meta = self.txns.get_mut(id).ok_or(E::InvalidProducerIdMapping)?;
        check_producer(meta, pid, epoch)?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(E::ConcurrentTransactions),
            TxnState::Ongoing => Ok((meta, false)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                meta.state = TxnState::Ongoing;
                meta.started = now;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
                Ok((meta, true))
            }
        }
    }

    /// AddPartitionsToTxn. `Ok(true)` when the state changed and must be stored.
    pub fn add_partitions(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[TopicPartition],
        now: Millis,
    ) -> Result<bool, E> {
        let (meta, mut changed) = self.open(id, pid, epoch, now)?;
        for tp in partitions {
            changed |= meta.partitions.insert(tp.clone());
        }
        Ok(changed)
    }

    /// AddOffsetsToTxn. `Ok(true)` when the state changed and must be stored.
    pub fn add_offsets(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        now: Millis,
    ) -> Result<bool, E> {
        let (meta, opened) = self.open(id, pid, epoch, now)?;
        Ok(meta.groups.insert(group.to_string()) || opened)
    }

    /// TxnOffsetCommit: offsets for `group`, applied when the transaction commits. The group
    /// must have been added with AddOffsetsToTxn.
    pub fn commit_offsets(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), E> {
        let meta = self.txns.get_mut(id).ok_or(E::InvalidProducerIdMapping)?;
        check_producer(meta, pid, epoch)?;
        match meta.state {
            TxnState::Ongoing if meta.groups.contains(group) => {}
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(E::ConcurrentTransactions)
            }
            _ => return Err(E::InvalidTxnState),
        }
        for (topic, partition, c) in offsets {
            meta.offsets
                .insert((group.to_string(), topic, partition), c);
        }
        Ok(())
    }

    /// EndTxn.
    pub fn end(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> Result<End, E> {
        let meta = self.txns.get_mut(id).ok_or(E::InvalidProducerIdMapping)?;
        check_producer(meta, pid, epoch)?;
        let marker = if commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        match (meta.state, marker) {
            (TxnState::Ongoing, _) => Ok(End::Complete(prepare(id, meta, marker))),
            (TxnState::CompleteCommit, Marker::Commit)
            | (TxnState::CompleteAbort, Marker::Abort) => Ok(End::Done),
            (TxnState::PrepareCommit, Marker::Commit) | (TxnState::PrepareAbort, Marker::Abort) => {
                Err(E::ConcurrentTransactions)
            }
            _ => Err(E::InvalidTxnState),
        }
    }

    /// The completion of `id` (markers written, offsets applied): `Prepare*` becomes
    /// `Complete*`. `true` when the state changed and must be stored.
    pub fn completed(&mut self, id: &str) -> bool {
        let Some(meta) = self.txns.get_mut(id) else {
            return false;
        };
        meta.state = match meta.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return false,
        };
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        true
    }

    /// Aborts every transaction open longer than its timeout, bumping its epoch so the
    /// producer that abandoned it is fenced.
    pub fn expire(&mut self, now: Millis) -> Vec<Completion> {
        let mut out = Vec::new();
        for (id, meta) in &mut self.txns {
            if meta.state == TxnState::Ongoing
                && now >= meta.started.saturating_add(u64::from(meta.timeout_ms))
            {
                meta.epoch = meta.epoch.saturating_add(1);
                out.push(prepare(id, meta, Marker::Abort));
            }
        }
        out
    }

    /// Completions interrupted by a restart: every transaction in a `Prepare*` state.
    pub fn interrupted(&self) -> Vec<Completion> {
        self.txns
            .iter()
            .filter_map(|(id, meta)| {
                let marker = meta.state.preparing()?;
                Some(completion(id, meta, marker))
            })
            .collect()
    }

    /// Whether an open or committing transaction holds an offset of `group` for
    /// `topic`/`partition` (OffsetFetch with `require_stable` must wait for it).
    pub fn holds_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.txns.values().any(|m| {
            matches!(m.state, TxnState::Ongoing | TxnState::PrepareCommit)
                && m.offsets
                    .keys()
                    .any(|(g, t, p)| g == group && t == topic && *p == partition)
        })
    }

    /// Whether producer `(pid, epoch)` may write a transactional batch to `tp`: its
    /// transaction is open and holds the partition.
    pub fn check_produce(&self, pid: i64, epoch: i16, tp: (&str, i32)) -> Result<(), E> {
        let meta = self
            .by_producer
            .get(&pid)
            .and_then(|id| self.txns.get(id))
            .ok_or(E::InvalidProducerIdMapping)?;
        if epoch != meta.epoch || pid != meta.producer_id {
            return Err(E::InvalidProducerEpoch);
        }
        let holds = meta.partitions.iter().any(|(t, p)| t == tp.0 && *p == tp.1);
        if meta.state != TxnState::Ongoing || !holds {
            return Err(E::InvalidTxnState);
        }
        Ok(())
    }
}

fn check_producer(meta: &TxnMeta, pid: i64, epoch: i16) -> Result<(), E> {
    if pid != meta.producer_id {
        return Err(E::InvalidProducerIdMapping);
    }
    if epoch != meta.epoch {
        return Err(E::ProducerFenced);
    }
    Ok(())
}

fn completion(id: &str, meta: &TxnMeta, marker: Marker) -> Completion {
    Completion {
        transactional_id: id.to_string(),
        producer_id: meta.producer_id,
        epoch: meta.epoch,
        marker,
        partitions: meta.partitions.iter().cloned().collect(),
        offsets: if marker == Marker::Commit {
            meta.offsets.clone()
        } else {
            BTreeMap::new()
        },
    }
}

/// Moves an open transaction to `Prepare*` and says what completing it takes.
fn prepare(id: &str, meta: &mut TxnMeta, marker: Marker) -> Completion {
    meta.state = match marker {
        Marker::Commit => TxnState::PrepareCommit,
        Marker::Abort => TxnState::PrepareAbort,
    };
    completion(id, meta, marker)
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
