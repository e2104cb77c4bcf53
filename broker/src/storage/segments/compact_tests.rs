//! Compaction of segment logs: what a reader sees, reopen, and the swap's crash recovery.

use std::collections::BTreeMap;

use super::*;
use crate::batch;
use crate::cleaner::records::keyed_batch;
use crate::cleaner::Policy;
use crate::storage::{CompactJob, Log, Store, TopicMeta};

fn open_store(dir: &Path, segment_bytes: u64) -> SegmentStore {
    SegmentStore::open(SledMeta::open(dir, 8 << 20).unwrap(), dir, segment_bytes).unwrap()
}

fn log_of(store: &SegmentStore) -> Arc<dyn Log> {
    store
        .create_topic(&TopicMeta {
            name: "kv".into(),
            id: [7; 16],
            partitions: 1,
        })
        .unwrap();
    store.open_log("kv", 0).unwrap()
}

/// Appends one batch per (key, value) (None: tombstone), codecs taking turns.
fn fill(log: &dyn Log, pairs: &[(u8, Option<&str>)]) {
    for (i, (k, v)) in pairs.iter().enumerate() {
        let b = keyed_batch(
            0,
            &[(Some(&[*k][..]), v.map(str::as_bytes))],
            1,
            (i % 5) as u8,
            batch::NO_PRODUCER,
        );
        let info = batch::validate(&b, 1 << 20).unwrap();
        log.append(&b, &info).unwrap();
    }
}

/// Every record: offset -> (key, value), read from `from` in small fetches.
fn read_all(log: &dyn Log, from: i64) -> BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)> {
    let mut records = Vec::new();
    let mut at = from;
    let end = log.log_end_offset();
    while at < end {
        let chunks = log.read(at, end, 1).unwrap();
        let Some(first) = chunks.first() else { break };
        at = crate::browse::decode_into(first, at, &mut records).unwrap();
    }
    records
        .into_iter()
        .map(|r| (r.offset, (r.key.unwrap(), r.value)))
        .collect()
}

fn job(now_ms: i64, hw: i64) -> CompactJob {
    CompactJob {
        policy: Policy {
            min_dirty_ratio: 0.0,
            min_lag_ms: 0,
            delete_retention_ms: 1_000,
        },
        now_ms,
        high_watermark: hw,
        map_budget: 1 << 16,
        decode_limit: 1 << 20,
    }
}

#[test]
fn compaction_keeps_offsets_and_the_latest_values_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<(u8, Option<&str>)> = (0..60u8)
        .map(|i| {
            (
                i % 7,
                if i == 50 {
                    None
                } else {
                    Some(["a", "bb", "ccc"][usize::from(i % 3)])
                },
            )
        })
        .collect();
    let (before, after) = {
        let store = open_store(dir.path(), 400);
        let log = log_of(&store);
        fill(&*log, &pairs);
        let before = read_all(&*log, 0);
        let end = log.log_end_offset();
        let report = log.compact(&job(10, end)).unwrap().expect("dirty enough");
        assert!(
            report.segments > 1 && report.stats.records_removed > 0,
            "{report:?}"
        );
        assert_eq!(log.log_end_offset(), end);
        let after = read_all(&*log, 0);
        // a read from inside a removed range starts at the next record kept
        let gap = (0..end).find(|o| !after.contains_key(o)).unwrap();
        let next = *after.range(gap..).next().unwrap().0;
        assert_eq!(read_all(&*log, gap).keys().next(), Some(&next));
        (before, after)
    };
    // every kept record is the one that was at its offset; the latest of each key is kept
    for (o, r) in &after {
        assert_eq!(before.get(o), Some(r), "offset {o}");
    }
    let active = after.keys().next_back().copied();
    for (o, (k, _)) in &before {
        let latest = !before.range(o + 1..).any(|(_, (k2, _))| k2 == k);
        let in_active = Some(*o) >= active;
        assert!(
            !latest || after.contains_key(o) || in_active,
            "latest of {k:?} at {o} lost"
        );
    }
    assert!(after.len() < before.len());
    let store = open_store(dir.path(), 400);
    let log = store.open_log("kv", 0).unwrap();
    assert_eq!(read_all(&*log, 0), after, "the same after reopen");
    let files: Vec<String> = fs::read_dir(dir.path().join(LOGS_DIR).join("kv-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.ends_with(".swap") && !f.ends_with(".cleaned")),
        "{files:?}"
    );
}

#[test]
fn a_swap_a_crash_interrupted_is_finished_and_a_half_written_output_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join(LOGS_DIR).join("kv-0");
    let (before, first, second, third) = {
        let store = open_store(dir.path(), 300);
        let log = log_of(&store);
        fill(
            &*log,
            &(0..40u8).map(|i| (i, Some("v"))).collect::<Vec<_>>(),
        );
        store.sync().unwrap();
        let segs = log.segments();
        assert!(segs.len() >= 3, "{segs:?}");
        (read_all(&*log, 0), segs[0], segs[1], segs[2])
    };
    // a crash after step 2: the swap holds the first two segments' batches, merged
    let mut merged = fs::read(log_dir.join(segment_name(first.base))).unwrap();
    merged.extend(fs::read(log_dir.join(segment_name(second.base))).unwrap());
    let swap = format!("{:020}.{:020}.swap", first.base, third.base);
    fs::write(log_dir.join(&swap), &merged).unwrap();
    fs::write(log_dir.join(format!("{:020}.cleaned", third.base)), b"half").unwrap();
    let store = open_store(dir.path(), 300);
    let log = store.open_log("kv", 0).unwrap();
    assert_eq!(read_all(&*log, 0), before);
    let mut names: Vec<String> = fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") || n.ends_with(".swap") || n.ends_with(".cleaned"))
        .collect();
    names.sort();
    assert_eq!(names[0], segment_name(first.base));
    assert!(!names.contains(&segment_name(second.base)), "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".log")), "{names:?}");
    assert_eq!(log.segments()[0].bytes, merged.len() as u64);
}

#[test]
fn tombstones_stay_until_a_pass_after_their_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), 200);
    let log = log_of(&store);
    let mut pairs: Vec<(u8, Option<&str>)> = vec![(1, Some("x")), (1, None)];
    pairs.extend((10..30u8).map(|k| (k, Some("filler"))));
    fill(&*log, &pairs);
    let end = log.log_end_offset();
    log.compact(&job(10, end)).unwrap().expect("first pass");
    let after = read_all(&*log, 0);
    assert!(!after.contains_key(&0), "the overwritten value goes");
    assert_eq!(
        after.get(&1),
        Some(&(vec![1], None)),
        "the tombstone stays for now"
    );
    // before its horizon (10 + 1000) nothing is due; after it, a pass removes it
    assert!(log.compact(&job(500, end)).unwrap().is_none());
    log.compact(&job(1_010, end))
        .unwrap()
        .expect("the horizon brings a pass");
    assert!(!read_all(&*log, 0).contains_key(&1), "the tombstone went");
}
