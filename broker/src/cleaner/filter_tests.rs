use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::batch::{set_transactional, NO_PRODUCER};
use crate::cleaner::records::{keyed_batch, KeyValue};

type OwnedKeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);
use crate::control::{marker_batch, Marker};

/// A log in memory: (base offset, batch bytes), in offset order.
type MemLog = Vec<(i64, Vec<u8>)>;

/// One record as a reader sees it: offset, key, value (None: tombstone).
type Seen = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn records_of(log: &MemLog, aborted: &HashSet<i64>) -> Vec<Seen> {
    let mut out = Vec::new();
    for (base, b) in log {
        let info = batch::info(b).unwrap();
        if info.control || aborted.contains(base) {
            continue;
        }
        let recs = records::decode(b, 1 << 20).unwrap();
        for r in &recs.recs {
            let key = recs.key(r).map(<[u8]>::to_vec);
            let value = recs.value(r).map(<[u8]>::to_vec);
            out.push((base + r.offset_delta, key, value));
        }
    }
    out
}

/// Last value per key, as a reader of the whole log ends up with (tombstone: absent).
fn final_state(seen: &[Seen]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (_, k, v) in seen {
        if let Some(k) = k {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
    }
    m
}

/// One pass over the whole log (no segments: everything is cleanable).
fn pass(
    log: &MemLog,
    aborted: &HashSet<i64>,
    dirty_from: i64,
    budget: usize,
    settings: Settings,
) -> (MemLog, i64, Stats) {
    let mut builder = MapBuilder::new(OffsetMap::with_budget(budget));
    for (base, b) in log.iter().filter(|(base, b)| {
        *base + i64::from(batch::info(b).unwrap().last_offset_delta) >= dirty_from
    }) {
        if !builder
            .add(b, *base, dirty_from, (aborted.contains(base), 1 << 20))
            .unwrap()
        {
            break;
        }
    }
    let end = log.last().map_or(0, |(base, b)| {
        base + i64::from(batch::info(b).unwrap().last_offset_delta) + 1
    });
    // a cleaned log may end below where an earlier pass mapped to (its last batch went)
    let mapped_to = builder.full_at.unwrap_or(end.max(dirty_from));
    let mut last_data: HashMap<i64, i64> = HashMap::new();
    for (base, b) in log {
        let info = batch::info(b).unwrap();
        if info.producer_id >= 0 && !info.control {
            last_data.insert(info.producer_id, *base);
        }
    }
    let mut filter = Filter::new(&builder.map, mapped_to, settings);
    let mut out = Vec::new();
    for (base, b) in log {
        let info = batch::info(b).unwrap();
        let last = last_data.get(&info.producer_id) == Some(base);
        match filter.batch(b, *base, aborted.contains(base), last) {
            Verdict::Keep => out.push((*base, b.clone())),
            Verdict::Drop => {}
            Verdict::Rewrite(nb) => out.push((*base, nb)),
        }
    }
    (out, mapped_to, filter.stats)
}

const SETTINGS: Settings = Settings {
    now_ms: 1_000,
    delete_retention_ms: 500,
    decode_limit: 1 << 20,
};

#[test]
fn keeps_the_latest_of_each_key_and_tombstones_until_a_later_pass() {
    let b0 = keyed_batch(
        0,
        &[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"1"))],
        0,
        0,
        NO_PRODUCER,
    );
    let b1 = keyed_batch(
        2,
        &[(Some(b"a"), Some(b"2")), (Some(b"b"), None)],
        0,
        1,
        NO_PRODUCER,
    );
    let log = vec![(0, b0), (2, b1)];
    let none = HashSet::new();
    let (once, mapped, stats) = pass(&log, &none, 0, 1024, SETTINGS);
    assert_eq!(mapped, 4);
    assert_eq!(stats.records_removed, 2);
    let seen = records_of(&once, &none);
    assert_eq!(
        seen,
        vec![
            (2, Some(b"a".to_vec()), Some(b"2".to_vec())),
            (3, Some(b"b".to_vec()), None)
        ]
    );
    assert_eq!(
        records::delete_horizon(&once[0].1),
        Some(1_500),
        "the tombstone's batch"
    );
    // a pass before the horizon keeps it, one after removes it
    let (twice, _, _) = pass(&once, &none, 4, 1024, SETTINGS);
    assert_eq!(records_of(&twice, &none).len(), 2);
    let later = Settings {
        now_ms: 1_500,
        ..SETTINGS
    };
    let (thrice, _, stats) = pass(&twice, &none, 4, 1024, later);
    assert_eq!(
        records_of(&thrice, &none),
        vec![(2, Some(b"a".to_vec()), Some(b"2".to_vec()))]
    );
    assert_eq!(stats.tombstones_removed, 1);
    let info = batch::info(&thrice[0].1).unwrap();
    assert_eq!(
        (info.last_offset_delta, info.codec),
        (1, 1),
        "offsets and codec kept"
    );
}

#[test]
fn aborted_records_go_and_markers_follow_once_their_transaction_is_gone() {
    let mut data = keyed_batch(0, &[(Some(b"a"), Some(b"x"))], 0, 0, (5, 0, 0));
    set_transactional(&mut data);
    let mut marker = marker_batch(5, 0, Marker::Abort, 0);
    marker[..8].copy_from_slice(&1i64.to_be_bytes());
    let tail = keyed_batch(2, &[(Some(b"b"), Some(b"y"))], 0, 0, NO_PRODUCER);
    let log = vec![(0, data), (1, marker), (2, tail)];
    let aborted: HashSet<i64> = [0].into();
    let (once, _, _) = pass(&log, &aborted, 0, 1024, SETTINGS);
    // the aborted batch is the producer's last data batch: it stays, empty
    let empty = batch::info(&once[0].1).unwrap();
    assert_eq!(
        (once[0].0, empty.record_count, empty.producer_id),
        (0, 0, 5)
    );
    assert_eq!(
        records::delete_horizon(&once[1].1),
        Some(1_500),
        "the marker waits"
    );
    let later = Settings {
        now_ms: 2_000,
        ..SETTINGS
    };
    let (twice, _, _) = pass(&once, &aborted, 3, 1024, later);
    let bases: Vec<i64> = twice.iter().map(|(b, _)| *b).collect();
    assert_eq!(
        bases,
        [0, 2],
        "the marker went, the empty batch and the rest stay"
    );
}

/// A generated log: batches of keyed records, some in transactions that commit or abort.
#[derive(Debug, Clone)]
enum Gen {
    Plain(Vec<(Option<u8>, bool)>, u8),
    Txn(i64, Vec<Vec<(Option<u8>, bool)>>, bool),
}

fn gen_records() -> impl Strategy<Value = Vec<(Option<u8>, bool)>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.95, 0u8..12),
            prop::bool::weighted(0.2),
        ),
        1..5,
    )
}

fn gen() -> impl Strategy<Value = Vec<Gen>> {
    let plain = (gen_records(), 0u8..5).prop_map(|(r, c)| Gen::Plain(r, c));
    let txn = (
        1i64..3,
        prop::collection::vec(gen_records(), 1..3),
        any::<bool>(),
    )
        .prop_map(|(p, b, commit)| Gen::Txn(p, b, commit));
    prop::collection::vec(prop_oneof![3 => plain, 1 => txn], 1..25)
}

fn pairs(recs: &[(Option<u8>, bool)], base: i64) -> Vec<OwnedKeyValue> {
    recs.iter()
        .enumerate()
        .map(|(i, (k, tomb))| {
            let v = (!tomb).then(|| format!("v{}", base + i as i64).into_bytes());
            (k.map(|k| vec![k]), v)
        })
        .collect()
}

fn push(
    log: &mut MemLog,
    next: &mut i64,
    recs: &[(Option<u8>, bool)],
    codec: u8,
    producer: (i64, i16, i32),
) -> i64 {
    let base = *next;
    let p = pairs(recs, base);
    let refs: Vec<KeyValue> = p
        .iter()
        .map(|(k, v)| (k.as_deref(), v.as_deref()))
        .collect();
    let mut b = keyed_batch(base, &refs, base, codec, producer);
    if producer.0 >= 0 {
        set_transactional(&mut b);
    }
    log.push((base, b));
    *next += recs.len() as i64;
    base
}

fn build(gens: &[Gen]) -> (MemLog, HashSet<i64>) {
    let (mut log, mut aborted, mut next) = (Vec::new(), HashSet::new(), 0i64);
    let mut seqs: HashMap<i64, i32> = HashMap::new();
    for g in gens {
        match g {
            Gen::Plain(recs, codec) => {
                push(&mut log, &mut next, recs, *codec, NO_PRODUCER);
            }
            Gen::Txn(pid, batches, commit) => {
                for recs in batches {
                    let seq = seqs.entry(*pid).or_insert(0);
                    let base = push(&mut log, &mut next, recs, 0, (*pid, 0, *seq));
                    *seq += recs.len() as i32;
                    if !commit {
                        aborted.insert(base);
                    }
                }
                let m = if *commit {
                    Marker::Commit
                } else {
                    Marker::Abort
                };
                let mut mb = marker_batch(*pid, 0, m, next);
                mb[..8].copy_from_slice(&next.to_be_bytes());
                log.push((next, mb));
                next += 1;
            }
        }
    }
    (log, aborted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn cleaning_never_changes_what_a_reader_ends_up_with(
        gens in gen(), budget_slots in 8usize..64, passes in 1usize..4,
    ) {
        let (log, aborted) = build(&gens);
        let before = records_of(&log, &aborted);
        let want = final_state(&before);
        let by_offset: HashMap<i64, &Seen> = before.iter().map(|s| (s.0, s)).collect();
        let mut cur = log.clone();
        let mut dirty = 0;
        for i in 0..passes {
            let settings = Settings { now_ms: 1_000 * (i as i64 + 1), ..SETTINGS };
            let (next, mapped, _) = pass(&cur, &aborted, dirty, budget_slots * 25, settings);
            let seen = records_of(&next, &aborted);
            // same final state, same records at the same offsets, in order
            prop_assert_eq!(final_state(&seen), want.clone());
            for s in &seen {
                prop_assert_eq!(Some(&s), by_offset.get(&s.0), "record at {} changed", s.0);
            }
            prop_assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
            // every producer's last data batch is still there
            for (base, b) in &log {
                let info = batch::info(b).unwrap();
                let later = log.iter().any(|(nb, x)| nb > base && {
                    let i = batch::info(x).unwrap();
                    !i.control && i.producer_id == info.producer_id
                });
                if info.producer_id >= 0 && !info.control && !later {
                    prop_assert!(next.iter().any(|(nb, _)| nb == base), "last batch of {}", info.producer_id);
                }
            }
            // a key's latest record, above what the map covered, is never removed
            for s in &before {
                let newer = before.iter().any(|o| o.0 > s.0 && o.1 == s.1);
                if !newer && s.1.is_some() && s.2.is_some() {
                    prop_assert!(seen.contains(s), "latest {:?} lost", s);
                }
            }
            prop_assert!(mapped >= dirty);
            cur = next;
            dirty = mapped;
        }
    }
}
