use super::*;

fn tp(t: &str, p: i32) -> TopicPartition {
    (t.to_string(), p)
}

fn ready(c: &mut TxnCoordinator, id: &str, now: Millis, next_pid: &mut i64) -> (i64, i16) {
    let mut alloc = || {
        *next_pid += 1;
        Some(*next_pid)
    };
    match c.init(id, 60_000, None, now, &mut alloc) {
        Ok(Init::Ready(pid, epoch)) => (pid, epoch),
        other => panic!("init: {other:?}"),
    }
}

fn complete(c: &mut TxnCoordinator, end: End) -> Completion {
    let End::Complete(done) = end else {
        panic!("expected a completion")
    };
    assert!(c.completed(&done.transactional_id));
    done
}

#[test]
fn commit_writes_markers_to_every_partition_and_applies_offsets() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, epoch) = ready(&mut c, "t", 0, &mut pids);
    assert_eq!((pid, epoch), (1, 0));
    assert!(c
        .add_partitions("t", pid, epoch, &[tp("a", 0), tp("b", 1)], 1)
        .unwrap());
    assert!(!c.add_partitions("t", pid, epoch, &[tp("a", 0)], 2).unwrap());
    assert_eq!(c.check_produce(pid, epoch, ("a", 0)), Ok(()));
    assert_eq!(
        c.check_produce(pid, epoch, ("c", 0)),
        Err(E::InvalidTxnState)
    );
    assert!(c.add_offsets("t", pid, epoch, "g", 3).unwrap());
    let offset = Committed {
        offset: 7,
        leader_epoch: -1,
        metadata: None,
    };
    c.commit_offsets("t", pid, epoch, "g", vec![("in".into(), 0, offset.clone())])
        .unwrap();
    let end = c.end("t", pid, epoch, true).unwrap();
    assert_eq!(c.get("t").unwrap().state, TxnState::PrepareCommit);
    // no data may join a transaction that is ending
    assert_eq!(
        c.check_produce(pid, epoch, ("a", 0)),
        Err(E::InvalidTxnState)
    );
    let done = complete(&mut c, end);
    assert_eq!(done.marker, Marker::Commit);
    assert_eq!(done.partitions, vec![tp("a", 0), tp("b", 1)]);
    assert_eq!(
        done.offsets.get(&("g".into(), "in".into(), 0)),
        Some(&offset)
    );
    assert_eq!(c.get("t").unwrap().state, TxnState::CompleteCommit);
    // a retried EndTxn is answered as before; the other outcome is refused
    assert_eq!(c.end("t", pid, epoch, true), Ok(End::Done));
    assert_eq!(c.end("t", pid, epoch, false), Err(E::InvalidTxnState));
}

#[test]
fn abort_drops_the_offsets() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, epoch) = ready(&mut c, "t", 0, &mut pids);
    c.add_offsets("t", pid, epoch, "g", 1).unwrap();
    let offset = Committed {
        offset: 1,
        leader_epoch: -1,
        metadata: None,
    };
    c.commit_offsets("t", pid, epoch, "g", vec![("in".into(), 0, offset)])
        .unwrap();
    let end = c.end("t", pid, epoch, false).unwrap();
    let done = complete(&mut c, end);
    assert_eq!(done.marker, Marker::Abort);
    assert!(done.offsets.is_empty());
    // offsets for a group not added to the transaction are refused
    c.add_partitions("t", pid, epoch, &[tp("a", 0)], 3).unwrap();
    assert_eq!(
        c.commit_offsets("t", pid, epoch, "other", Vec::new()),
        Err(E::InvalidTxnState)
    );
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, old) = ready(&mut c, "t", 0, &mut pids);
    c.add_partitions("t", pid, old, &[tp("a", 0)], 1).unwrap();
    let mut alloc = || None;
    let Ok(Init::MustAbort(abort)) = c.init("t", 60_000, None, 2, &mut alloc) else {
        panic!("expected an abort first")
    };
    assert_eq!((abort.marker, abort.epoch), (Marker::Abort, old + 1));
    // while the abort is under way, everyone waits
    assert_eq!(
        c.init("t", 60_000, None, 2, &mut alloc),
        Err(E::ConcurrentTransactions)
    );
    assert!(c.completed("t"));
    let (pid2, new) = ready(&mut c, "t", 4, &mut pids);
    assert_eq!((pid2, new), (pid, old + 2));
    // the zombie is fenced everywhere
    assert_eq!(
        c.add_partitions("t", pid, old, &[tp("a", 0)], 5),
        Err(E::ProducerFenced)
    );
    assert_eq!(c.end("t", pid, old, true), Err(E::ProducerFenced));
    assert_eq!(
        c.check_produce(pid, old, ("a", 0)),
        Err(E::InvalidProducerEpoch)
    );
    // KIP-360: a producer that names an epoch that is not current is fenced too
    assert_eq!(
        c.init("t", 60_000, Some((pid, old)), 6, &mut alloc),
        Err(E::ProducerFenced)
    );
}

#[test]
fn timeouts_abort_and_fence_abandoned_transactions() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, epoch) = ready(&mut c, "t", 0, &mut pids);
    c.add_partitions("t", pid, epoch, &[tp("a", 0)], 1_000)
        .unwrap();
    assert!(c.expire(60_999).is_empty());
    let expired = c.expire(61_000);
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].marker, expired[0].epoch), (Marker::Abort, 1));
    assert!(c.completed("t"));
    assert_eq!(c.end("t", pid, epoch, true), Err(E::ProducerFenced));
}

#[test]
fn limits_and_unknown_ids() {
    let mut c = TxnCoordinator::default();
    let mut alloc = || Some(1);
    assert_eq!(
        c.init("t", 900_001, None, 0, &mut alloc),
        Err(E::InvalidTransactionTimeout)
    );
    assert_eq!(
        c.init("t", 0, None, 0, &mut alloc),
        Err(E::InvalidTransactionTimeout)
    );
    assert_eq!(
        c.add_partitions("nope", 1, 0, &[tp("a", 0)], 0),
        Err(E::InvalidProducerIdMapping)
    );
    assert_eq!(
        c.check_produce(1, 0, ("a", 0)),
        Err(E::InvalidProducerIdMapping)
    );
    let mut fail = || None;
    assert_eq!(
        c.init("t", 1000, None, 0, &mut fail),
        Err(E::KafkaStorageError)
    );
}

#[test]
fn epoch_exhaustion_takes_a_new_producer_id() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    ready(&mut c, "t", 0, &mut pids);
    for _ in 0..i16::MAX {
        ready(&mut c, "t", 0, &mut pids);
    }
    let meta = c.get("t").unwrap();
    assert_eq!((meta.producer_id, meta.epoch), (2, 0));
}

#[test]
fn interrupted_completions_are_found_after_recovery() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, epoch) = ready(&mut c, "t", 0, &mut pids);
    c.add_partitions("t", pid, epoch, &[tp("a", 0)], 1).unwrap();
    let End::Complete(want) = c.end("t", pid, epoch, true).unwrap() else {
        panic!()
    };
    let stored = vec![("t".to_string(), c.get("t").unwrap().clone())];
    let recovered = TxnCoordinator::new(TxnConfig::default(), stored);
    assert_eq!(recovered.interrupted(), vec![want]);
}

#[test]
fn offsets_held_by_a_transaction_are_unstable_until_it_ends() {
    let mut c = TxnCoordinator::default();
    let mut pids = 0;
    let (pid, epoch) = ready(&mut c, "t", 0, &mut pids);
    c.add_offsets("t", pid, epoch, "g", 1).unwrap();
    assert!(!c.holds_offset("g", "in", 0));
    let offset = Committed {
        offset: 5,
        leader_epoch: -1,
        metadata: None,
    };
    c.commit_offsets("t", pid, epoch, "g", vec![("in".into(), 0, offset)])
        .unwrap();
    assert!(c.holds_offset("g", "in", 0));
    assert!(!c.holds_offset("g", "in", 1));
    assert!(!c.holds_offset("other", "in", 0));
    let end = c.end("t", pid, epoch, true).unwrap();
    assert!(c.holds_offset("g", "in", 0), "still committing");
    complete(&mut c, end);
    assert!(!c.holds_offset("g", "in", 0));
}
