use super::*;

const SESSION: i32 = 10_000;

fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![
            ("cooperative-sticky".into(), Bytes::from_static(b"meta-cs")),
            ("range".into(), Bytes::from_static(b"meta-range")),
        ],
        require_known_member_id: true,
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member_id.into(),
        assignments,
        ..Default::default()
    }
}

fn only_join(actions: Vec<Action>, reply: ReplyId) -> JoinResult {
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::Join(r, res) if r == reply => Some(res),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join answer for reply {reply}"))
}

fn sync_answer(actions: &[Action], reply: ReplyId) -> Option<SyncResult> {
    actions.iter().find_map(|a| match a {
        Action::Sync(r, res) if *r == reply => Some(res.clone()),
        _ => None,
    })
}

fn coordinator() -> Coordinator {
    Coordinator::new(CoordinatorConfig::default(), "n")
}

/// Joins one new member through the MEMBER_ID_REQUIRED round trip; returns its id and the
/// (possibly parked) actions of the second join.
fn join_new(c: &mut Coordinator, now: Millis, reply: ReplyId) -> (String, Vec<Action>) {
    let first = only_join(c.join(now, reply, join_req("", None)), reply);
    assert_eq!(first.error, Some(E::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    let actions = c.join(now, reply + 1000, join_req(&first.member_id, None));
    (first.member_id, actions)
}

#[test]
fn first_member_gets_an_id_then_leads_generation_one() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    let res = only_join(actions, 1001);
    assert_eq!(res.error, None);
    assert_eq!(res.generation_id, 1);
    assert_eq!(res.leader, a);
    assert_eq!(res.protocol_name.as_deref(), Some("cooperative-sticky"));
    assert_eq!(res.members.len(), 1);
    assert_eq!(res.members[0].metadata, Bytes::from_static(b"meta-cs"));
    assert_eq!(
        c.generation("g"),
        Some((1, GroupState::CompletingRebalance))
    );

    let actions = c.sync(
        0,
        2,
        sync_req(&a, 1, vec![(a.clone(), Bytes::from_static(b"p0"))]),
    );
    let s = sync_answer(&actions, 2).unwrap();
    assert_eq!((s.error, s.assignment), (None, Bytes::from_static(b"p0")));
    assert_eq!(c.generation("g"), Some((1, GroupState::Stable)));
}

#[test]
fn second_member_triggers_a_rebalance_with_one_leader() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));

    let (b, actions) = join_new(&mut c, 10, 3);
    assert!(actions.is_empty(), "b waits for a to rejoin");
    assert_eq!(c.generation("g"), Some((1, GroupState::PreparingRebalance)));
    assert_eq!(
        c.heartbeat(20, "g", 1, &a, None),
        Err(E::RebalanceInProgress)
    );

    let actions = c.join(30, 4, join_req(&a, None));
    let ra = only_join(actions.clone(), 4);
    let rb = only_join(actions, 1003);
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a);
    assert_eq!(rb.leader, a);
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "followers get no member list");

    // follower syncs first: parked until the leader assigns
    assert!(c.sync(40, 5, sync_req(&b, 2, vec![])).is_empty());
    let actions = c.sync(
        50,
        6,
        sync_req(
            &a,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
        ),
    );
    assert_eq!(
        sync_answer(&actions, 5).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(
        sync_answer(&actions, 6).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(c.heartbeat(60, "g", 2, &b, None), Ok(()));
}

#[test]
fn heartbeat_and_sync_fencing_errors() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    assert_eq!(c.heartbeat(1, "g", 0, &a, None), Err(E::IllegalGeneration));
    assert_eq!(
        c.heartbeat(1, "g", 1, "ghost", None),
        Err(E::UnknownMemberId)
    );
    assert_eq!(c.heartbeat(1, "nope", 1, &a, None), Err(E::UnknownMemberId));
    let s = c.sync(1, 3, sync_req(&a, 7, vec![]));
    assert_eq!(
        sync_answer(&s, 3).unwrap().error,
        Some(E::IllegalGeneration)
    );
    let s = c.sync(1, 4, sync_req("ghost", 1, vec![]));
    assert_eq!(sync_answer(&s, 4).unwrap().error, Some(E::UnknownMemberId));
    // unknown member id on join
    let r = only_join(c.join(1, 5, join_req("ghost", None)), 5);
    assert_eq!(r.error, Some(E::UnknownMemberId));
}

#[test]
fn leaving_rebalances_and_the_last_leaver_empties_the_group() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    let (b, _) = join_new(&mut c, 0, 2);
    let actions = c.join(0, 3, join_req(&a, None));
    only_join(actions, 3);
    let (codes, _) = c.leave(5, "g", &[(b.clone(), None)]);
    assert_eq!(codes, vec![Ok(())]);
    assert_eq!(c.generation("g").unwrap().1, GroupState::PreparingRebalance);
    let r = only_join(c.join(6, 4, join_req(&a, None)), 4);
    assert_eq!((r.error, r.generation_id, r.members.len()), (None, 3, 1));
    let (codes, _) = c.leave(7, "g", &[(a.clone(), None), ("ghost".into(), None)]);
    assert_eq!(codes, vec![Ok(()), Err(E::UnknownMemberId)]);
    assert_eq!(c.generation("g").unwrap().1, GroupState::Empty);
    assert!(c.members("g").is_empty());
}

#[test]
fn silent_members_expire_after_their_session_timeout() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    assert!(c.tick(SESSION as Millis - 1).is_empty());
    assert_eq!(c.members("g"), vec![a.clone()]);
    c.tick(SESSION as Millis);
    assert!(c.members("g").is_empty());
    assert_eq!(c.generation("g").unwrap().1, GroupState::Empty);
}

#[test]
fn heartbeats_keep_a_member_alive() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    for t in (1_000..50_000).step_by(3_000) {
        assert_eq!(c.heartbeat(t, "g", 1, &a, None), Ok(()));
        c.tick(t);
    }
    assert_eq!(c.members("g"), vec![a]);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    let (b, actions) = join_new(&mut c, 100, 3);
    assert!(actions.is_empty());
    // a keeps heartbeating but never rejoins; b is parked
    for t in (1_000..30_000).step_by(2_000) {
        let _ = c.heartbeat(t, "g", 1, &a, None);
        assert!(c.tick(t).is_empty());
    }
    let actions = c.tick(30_100);
    let rb = only_join(actions, 1003);
    assert_eq!(
        (rb.error, rb.generation_id, rb.leader.clone()),
        (None, 2, b.clone())
    );
    assert_eq!(c.members("g"), vec![b]);
}

/// Two static members in a stable generation 2, assigned `A` and `B`; returns their ids.
fn stable_static_pair(c: &mut Coordinator) -> (String, String) {
    let s1 = only_join(c.join(0, 1, join_req("", Some("i1"))), 1);
    assert_eq!(s1.error, None, "static members skip MEMBER_ID_REQUIRED");
    let s1 = s1.member_id;
    c.sync(0, 2, sync_req(&s1, 1, vec![]));
    let parked = c.join(10, 3, join_req("", Some("i2")));
    assert!(parked.is_empty());
    let actions = c.join(20, 4, join_req(&s1, Some("i1")));
    let s2 = only_join(actions, 3).member_id;
    assert!(c.sync(30, 5, sync_req(&s2, 2, vec![])).is_empty());
    let assignments = vec![
        (s1.clone(), Bytes::from_static(b"A")),
        (s2.clone(), Bytes::from_static(b"B")),
    ];
    c.sync(40, 6, sync_req(&s1, 2, assignments));
    assert_eq!(c.generation("g"), Some((2, GroupState::Stable)));
    (s1, s2)
}

/// Kafka's static membership: a restarted member (new incarnation, same
/// `group.instance.id`) in a stable group gets the current generation and its previous
/// assignment, and nobody else rebalances; the old incarnation is fenced.
#[test]
fn static_follower_restart_keeps_its_assignment_without_a_rebalance() {
    let mut c = coordinator();
    let (s1, s2) = stable_static_pair(&mut c);
    let actions = c.join(100, 10, join_req("", Some("i2")));
    assert_eq!(actions.len(), 1, "only the restarted member is answered");
    let r = only_join(actions, 10);
    assert_eq!(r.error, None);
    assert_ne!(r.member_id, s2);
    assert_eq!((r.generation_id, r.leader.as_str()), (2, s1.as_str()));
    assert!(r.members.is_empty());
    assert_eq!(c.generation("g"), Some((2, GroupState::Stable)));
    assert_eq!(c.heartbeat(110, "g", 2, &s1, Some("i1")), Ok(()));
    let sync = c.sync(120, 11, sync_req(&r.member_id, 2, vec![]));
    assert_eq!(
        sync_answer(&sync, 11).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(
        c.heartbeat(130, "g", 2, &s2, Some("i2")),
        Err(E::FencedInstanceId)
    );
    let (codes, _) = c.leave(140, "g", &[(s2, Some("i2".into()))]);
    assert_eq!(codes, vec![Err(E::FencedInstanceId)]);
}

/// A restarted leader is told the leader id it replaced (JoinGroup v8 and older have no
/// `skip_assignment`), so it does not assign again; it leads the next rebalance.
#[test]
fn static_leader_restart_is_not_told_to_assign_but_leads_the_next_generation() {
    let mut c = coordinator();
    let (s1, s2) = stable_static_pair(&mut c);
    let r = only_join(c.join(100, 10, join_req("", Some("i1"))), 10);
    assert_eq!((r.generation_id, r.leader.as_str()), (2, s1.as_str()));
    assert!(r.members.is_empty());
    let sync = c.sync(110, 11, sync_req(&r.member_id, 2, vec![]));
    assert_eq!(
        sync_answer(&sync, 11).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    c.leave(120, "g", &[(s2, None)]);
    let next = only_join(c.join(130, 12, join_req(&r.member_id, Some("i1"))), 12);
    assert_eq!(next.generation_id, 3);
    assert_eq!(next.leader, r.member_id);
    assert_eq!(next.members.len(), 1);
}

/// A restart that would change the group's protocol, or one during the sync phase, rebalances.
#[test]
fn static_restart_rebalances_when_the_protocol_changes_or_during_sync() {
    let mut c = coordinator();
    stable_static_pair(&mut c);
    let mut range_only = join_req("", Some("i1"));
    range_only.protocols = vec![("range".into(), Bytes::from_static(b"meta-range"))];
    assert!(
        c.join(100, 10, range_only).is_empty(),
        "parked for the rebalance"
    );
    assert_eq!(c.generation("g"), Some((2, GroupState::PreparingRebalance)));

    let mut c = coordinator();
    let s1 = only_join(c.join(0, 1, join_req("", Some("i1"))), 1).member_id;
    c.sync(0, 2, sync_req(&s1, 1, vec![]));
    c.join(10, 3, join_req("", Some("i2")));
    let s2 = only_join(c.join(20, 4, join_req(&s1, Some("i1"))), 3).member_id;
    assert!(c.sync(30, 5, sync_req(&s2, 2, vec![])).is_empty());
    let actions = c.join(40, 6, join_req("", Some("i2")));
    assert_eq!(
        sync_answer(&actions, 5).map(|r| r.error),
        Some(Some(E::FencedInstanceId)),
        "the old incarnation's parked SyncGroup is fenced"
    );
    assert_eq!(c.generation("g"), Some((2, GroupState::PreparingRebalance)));
}

#[test]
fn protocol_mismatch_and_bad_timeouts_are_refused() {
    let mut c = coordinator();
    let (_, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    let mut other = join_req("", None);
    other.protocol_type = "connect".into();
    assert_eq!(
        only_join(c.join(0, 2, other), 2).error,
        Some(E::InconsistentGroupProtocol)
    );
    let mut no_common = join_req("", None);
    no_common.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        only_join(c.join(0, 3, no_common), 3).error,
        Some(E::InconsistentGroupProtocol)
    );
    let mut short = join_req("", None);
    short.session_timeout_ms = 10;
    assert_eq!(
        only_join(c.join(0, 4, short), 4).error,
        Some(E::InvalidSessionTimeout)
    );
}

#[test]
fn commits_are_checked_against_membership() {
    let mut c = coordinator();
    assert_eq!(
        c.check_commit("g", -1, "", None),
        Ok(()),
        "simple commit to an unknown group"
    );
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    assert_eq!(
        c.check_commit("g", 1, &a, None),
        Err(E::RebalanceInProgress)
    );
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    assert_eq!(c.check_commit("g", 1, &a, None), Ok(()));
    assert_eq!(c.check_commit("g", 0, &a, None), Err(E::IllegalGeneration));
    assert_eq!(
        c.check_commit("g", 1, "ghost", None),
        Err(E::UnknownMemberId)
    );
    // a commit from outside group management while the group has members (Kafka's answer)
    assert_eq!(c.check_commit("g", -1, "", None), Err(E::UnknownMemberId));
    assert_eq!(c.delete("g"), Err(E::NonEmptyGroup));
    c.leave(1, "g", &[(a, None)]);
    assert_eq!(c.delete("g"), Ok(true));
    assert_eq!(c.delete("g"), Ok(false));
}

#[test]
fn describe_and_list_report_members_and_state() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(
        0,
        2,
        sync_req(&a, 1, vec![(a.clone(), Bytes::from_static(b"x"))]),
    );
    assert_eq!(
        c.list(),
        vec![("g".to_string(), "consumer".to_string(), GroupState::Stable)]
    );
    let d = c.describe("g").unwrap();
    assert_eq!(d.state.name(), "Stable");
    assert_eq!(d.protocol, "cooperative-sticky");
    assert_eq!(d.members[0].member_id, a);
    assert_eq!(d.members[0].assignment, Bytes::from_static(b"x"));
    assert_eq!(d.members[0].metadata, Bytes::from_static(b"meta-cs"));
}

#[path = "coordinator_props.rs"]
mod properties;

/// A follower parked in SyncGroup cannot heartbeat; a leader slower than the session
/// timeout to send its assignment must not get the follower expired (found with
/// kafka-python, whose two members share one Python process). A leader that dies instead is
/// expired and releases the follower.
#[test]
fn followers_waiting_for_a_slow_leader_are_kept_alive() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    c.sync(0, 2, sync_req(&a, 1, vec![]));
    let (b, _) = join_new(&mut c, 10, 3);
    let actions = c.join(30, 4, join_req(&a, None));
    only_join(actions.clone(), 4);
    only_join(actions, 1003);
    assert!(
        c.sync(40, 5, sync_req(&b, 2, vec![])).is_empty(),
        "b parked"
    );
    // The leader keeps heartbeating but takes 2.5 sessions to assign.
    let mut now = 40;
    while now < 40 + 2 * SESSION as Millis + SESSION as Millis / 2 {
        now += 1000;
        assert_eq!(c.heartbeat(now, "g", 2, &a, None), Ok(()));
        c.tick(now);
    }
    let actions = c.sync(
        now,
        6,
        sync_req(&a, 2, vec![(b.clone(), Bytes::from_static(b"B"))]),
    );
    let s = sync_answer(&actions, 5).expect("the parked follower is answered");
    assert_eq!((s.error, s.assignment), (None, Bytes::from_static(b"B")));
    // Its session restarts at the answer.
    c.tick(now + SESSION as Millis - 1);
    assert_eq!(
        c.heartbeat(now + SESSION as Millis - 1, "g", 2, &b, None),
        Ok(())
    );

    // Generation 3: the leader rejoins (a rebalance), then b; b syncs and waits, and the
    // leader dies silently: it expires (it is not parked) and the rebalance releases b.
    let t = now + 100;
    assert!(c.join(t, 8, join_req(&a, None)).is_empty(), "a waits for b");
    let actions = c.join(t, 7, join_req(&b, None));
    assert_eq!(only_join(actions, 8).generation_id, 3);
    let parked = c.sync(t + 10, 9, sync_req(&b, 3, vec![]));
    assert!(parked.is_empty(), "b parked until the leader assigns");
    let later = c.tick(t + 10 + SESSION as Millis + 1000);
    let released = sync_answer(&later, 9).expect("b is answered once the leader expires");
    assert_eq!(released.error, Some(E::RebalanceInProgress));
}

/// A member that sends JoinGroup again with unchanged protocols while the group completes a
/// rebalance, or as a follower of a stable group, gets the current generation back, as from
/// Kafka: a new rebalance would fail everyone's SyncGroup, and on a busy machine, where
/// clients time out and resend, could repeat without end. A stable group's leader rejoining,
/// or a member with new protocols, still rebalances.
#[test]
fn rejoining_with_unchanged_protocols_does_not_restart_the_rebalance() {
    let mut c = coordinator();
    let (a, actions) = join_new(&mut c, 0, 1);
    only_join(actions, 1001);
    let (b, _) = join_new(&mut c, 5, 3);
    let actions = c.join(10, 4, join_req(&a, None));
    only_join(actions.clone(), 4);
    only_join(actions, 1003);
    assert_eq!(
        c.generation("g"),
        Some((2, GroupState::CompletingRebalance))
    );
    // b missed its answer and joins again: generation 2 once more, no rebalance.
    let again = only_join(c.join(20, 5, join_req(&b, None)), 5);
    assert_eq!((again.generation_id, again.leader.clone()), (2, a.clone()));
    assert!(
        again.members.is_empty(),
        "only the leader gets the member list"
    );
    // The leader too, with the members it needs to assign.
    let again = only_join(c.join(25, 6, join_req(&a, None)), 6);
    assert_eq!((again.generation_id, again.members.len()), (2, 2));
    assert_eq!(
        c.generation("g"),
        Some((2, GroupState::CompletingRebalance))
    );
    c.sync(
        30,
        7,
        sync_req(&a, 2, vec![(b.clone(), Bytes::from_static(b"B"))]),
    );
    assert_eq!(c.generation("g"), Some((2, GroupState::Stable)));
    // A stable follower rejoining: still generation 2.
    assert_eq!(
        only_join(c.join(40, 8, join_req(&b, None)), 8).generation_id,
        2
    );
    assert_eq!(c.generation("g"), Some((2, GroupState::Stable)));
    // New protocols rebalance.
    let mut changed = join_req(&b, None);
    changed.protocols = vec![("range".into(), Bytes::from_static(b"new-subscription"))];
    assert!(c.join(50, 9, changed).is_empty());
    assert_eq!(
        c.generation("g").map(|g| g.1),
        Some(GroupState::PreparingRebalance)
    );
}

/// Kafka's initial delayed join: an empty group waits the delay for more members, and again
/// after each new member (within the rebalance timeout), so members starting together share
/// one generation; a group that is not empty rebalances without the delay.
#[test]
fn an_empty_group_waits_for_more_members_before_its_first_generation() {
    let mut c = Coordinator::new(
        CoordinatorConfig {
            initial_rebalance_delay: 3_000,
            ..CoordinatorConfig::default()
        },
        "n",
    );
    let (a, _) = join_new(&mut c, 0, 1);
    assert!(c.tick(2_999).is_empty(), "a waits out the delay");
    // b arrives during the first wait: one more wait from when the first one ends.
    let (b, _) = join_new(&mut c, 2_000, 3);
    assert!(c.tick(3_000).is_empty());
    assert!(c.tick(5_999).is_empty());
    let actions = c.tick(6_000);
    let ra = only_join(actions.clone(), 1001);
    let rb = only_join(actions, 1003);
    assert_eq!(
        (ra.generation_id, rb.generation_id),
        (1, 1),
        "one generation for both"
    );
    assert_eq!(ra.members.len(), 2);
    c.sync(
        6_010,
        5,
        sync_req(&a, 1, vec![(b.clone(), Bytes::from_static(b"B"))]),
    );
    c.sync(6_020, 6, sync_req(&b, 1, vec![]));
    assert_eq!(c.generation("g"), Some((1, GroupState::Stable)));
    // A member leaving a non-empty group: the rebalance completes without waiting.
    let (_, actions) = c.leave(7_000, "g", &[(b.clone(), None)]);
    assert!(actions.is_empty());
    let again = only_join(c.join(7_010, 7, join_req(&a, None)), 7);
    assert_eq!(again.generation_id, 2);
    // The waits never exceed the rebalance timeout (30 s here), however many join.
    let mut c = Coordinator::new(
        CoordinatorConfig {
            initial_rebalance_delay: 20_000,
            ..CoordinatorConfig::default()
        },
        "n",
    );
    join_new(&mut c, 0, 1);
    join_new(&mut c, 10_000, 3);
    join_new(&mut c, 25_000, 5);
    assert!(c.tick(29_999).is_empty());
    assert_eq!(
        c.tick(30_000).len(),
        3,
        "completed at the rebalance timeout"
    );
}
