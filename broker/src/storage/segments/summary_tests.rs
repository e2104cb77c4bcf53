//! Segment summaries: recovery from them equals recovery by scanning, and one that does not
//! match its segment is never used.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::log::SegmentLog;
use super::summary::Summary;
use super::*;
use crate::batch;
use crate::control::{marker_batch, Marker};
use crate::storage::contract::{append, idempotent_batch, split, txn_batch};
use crate::storage::{Appended, Log};

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A batch of `n` records; from producer `pid` (idempotent) when given, in a
    /// transaction when `txn`.
    Data {
        pid: Option<i64>,
        txn: bool,
        n: usize,
    },
    /// A marker ending producer `pid`'s transaction.
    End { pid: i64, commit: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::of(0i64..3), any::<bool>(), 1usize..4)
            .prop_map(|(pid, txn, n)| Op::Data { pid, txn: txn && pid.is_some(), n }),
        1 => (0i64..3, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
    ]
}

/// Runs `ops` against the log in `dir`, each producer keeping its sequence numbers.
fn write(dir: &Path, segment_bytes: u64, ops: &[Op]) {
    let log = SegmentLog::open(dir.to_path_buf(), "t/0".into(), segment_bytes).unwrap();
    let mut seqs = [0i32; 3];
    for (i, op) in ops.iter().enumerate() {
        let value = format!("value {i}");
        let values: Vec<&[u8]> = vec![value.as_bytes(); 1];
        match *op {
            Op::Data { pid: None, n, .. } => {
                let b = batch::tests::make_batch(&vec![value.as_bytes(); n], i as i64, 1);
                append(&log, &b);
            }
            Op::Data {
                pid: Some(p),
                txn,
                n,
            } => {
                let seq = seqs[p as usize];
                let b = if txn {
                    txn_batch(value.as_bytes(), p, 0, seq)
                } else {
                    idempotent_batch(&vec![values[0]; n], p, 0, seq)
                };
                if matches!(append(&log, &b), Appended::At(_)) {
                    seqs[p as usize] += if txn { 1 } else { n as i32 };
                }
            }
            Op::End { pid, commit } => {
                let marker = if commit {
                    Marker::Commit
                } else {
                    Marker::Abort
                };
                let b = marker_batch(pid, 0, marker, i as i64);
                let info = batch::info(&b).unwrap();
                log.append(&b, &info).unwrap();
            }
        }
    }
    log.sync().unwrap();
}

/// Everything recovery rebuilds, as a reader and a producer would see it.
fn recovered(dir: &Path, segment_bytes: u64) -> String {
    let log = SegmentLog::open(dir.to_path_buf(), "t/0".into(), segment_bytes).unwrap();
    let end = log.log_end_offset();
    let mut producers = log.producers();
    producers.sort_by_key(|p| p.0);
    let times: Vec<_> = (-1..40)
        .map(|ts| log.offset_for_timestamp(ts).unwrap())
        .collect();
    let batches = split(log.read(0, end, usize::MAX).unwrap());
    let index = log.txn_index();
    // the next batch of each producer: accepted, duplicate or refused as before
    let next: Vec<_> = (0..3)
        .map(|p| {
            log.append(&idempotent_batch(&[b"z"], p, 0, 1), &info(p))
                .unwrap()
        })
        .collect();
    format!(
        "end {end} start {} segments {:?} producers {producers:?} times {times:?} \
         batches {batches:?} unstable {:?} aborted {:?} next {next:?}",
        log.log_start_offset(),
        log.segments(),
        index.first_unstable(),
        index.aborted(0, end),
    )
}

fn info(pid: i64) -> batch::BatchInfo {
    batch::info(&idempotent_batch(&[b"z"], pid, 0, 1)).unwrap()
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in files(from, "") {
        fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Whether the closed segment `log` has a summary that stands for it.
fn summary_holds(dir: &Path, log: &Path) -> bool {
    let base: i64 = log.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let file = fs::File::open(log).unwrap();
    let len = file.metadata().unwrap().len();
    matches!(Summary::open(dir, base, &file, (len, 0)), Ok(Some(_)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn recovery_from_summaries_equals_recovery_by_scanning(
        ops in proptest::collection::vec(op(), 1..60),
        segment_bytes in 100u64..2000,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
        write(&with, segment_bytes, &ops);
        // every closed segment got its summary when it closed
        let logs = files(&with, SUFFIX);
        for log in &logs[..logs.len() - 1] {
            prop_assert!(summary_holds(&with, log), "{} has no valid summary", log.display());
        }
        copy_dir(&with, &without);
        for s in files(&without, ".headers") {
            fs::remove_file(s).unwrap();
        }
        prop_assert_eq!(recovered(&with, segment_bytes), recovered(&without, segment_bytes));
        // the scan wrote the summaries again
        let logs = files(&without, SUFFIX);
        for log in &logs[..logs.len() - 1] {
            prop_assert!(summary_holds(&without, log));
        }
    }
}

/// Three closed segments of two batches each, and an active one.
fn three_closed_segments(dir: &Path) -> Vec<PathBuf> {
    write(
        dir,
        200,
        &[Op::Data {
            pid: None,
            txn: false,
            n: 1,
        }; 7],
    );
    let logs = files(dir, SUFFIX);
    assert_eq!(logs.len(), 4, "{logs:?}");
    logs
}

#[test]
fn a_summary_that_does_not_match_its_segment_is_not_used() {
    type Damage = fn(&Path, &[PathBuf]);
    let damages: [(&str, Damage); 5] = [
        ("a flipped byte", |_, s| {
            let mut b = fs::read(&s[0]).unwrap();
            b[40] ^= 1;
            fs::write(&s[0], b).unwrap();
        }),
        ("cut short", |_, s| {
            let b = fs::read(&s[0]).unwrap();
            fs::write(&s[0], &b[..b.len() - 5]).unwrap();
        }),
        ("no trailer (written up to a crash)", |_, s| {
            let b = fs::read(&s[1]).unwrap();
            fs::write(&s[1], &b[..b.len() - summary::TRAILER]).unwrap();
        }),
        ("another segment's summary", |_, s| {
            fs::copy(&s[2], &s[1]).unwrap();
        }),
        ("a segment rewritten after its summary", |dir, _| {
            // same length, another last batch: as if replaced by compaction
            let logs = files(dir, SUFFIX);
            let mut b = fs::read(&logs[1]).unwrap();
            let last = b.len() / 2; // two batches of one size
            b[last + 40] ^= 1; // its max timestamp
            fs::write(&logs[1], b).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, clean) = (tmp.path().join("d"), tmp.path().join("clean"));
        three_closed_segments(&dir);
        copy_dir(&dir, &clean);
        for s in files(&clean, ".headers") {
            fs::remove_file(s).unwrap();
        }
        damage(&dir, &files(&dir, ".headers"));
        if what.starts_with("a segment rewritten") {
            // the scan must see the rewritten segment too
            fs::copy(
                files(&dir, SUFFIX)[1].clone(),
                files(&clean, SUFFIX)[1].clone(),
            )
            .unwrap();
        }
        assert_eq!(recovered(&dir, 200), recovered(&clean, 200), "{what}");
        for log in &files(&dir, SUFFIX)[..3] {
            assert!(summary_holds(&dir, log), "{what}: rewritten at open");
        }
    }
}

#[test]
fn closed_segments_are_recovered_from_their_summaries_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let logs = three_closed_segments(&dir);
    // damage the first batch header of a closed segment: only a scan reads it
    let mut b = fs::read(&logs[1]).unwrap();
    b[16] = 9; // magic
    fs::write(&logs[1], b).unwrap();
    let log = SegmentLog::open(dir.clone(), "t/0".into(), 200).unwrap();
    assert_eq!(log.log_end_offset(), 7);
    drop(log);
    fs::remove_file(summary::path(&dir, 2)).unwrap();
    let err = SegmentLog::open(dir.clone(), "t/0".into(), 200)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("00000000000000000002.log") && err.contains("at byte 0"),
        "{err}"
    );
}

#[test]
fn removed_segments_take_their_summaries_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    three_closed_segments(&dir);
    let log = SegmentLog::open(dir.clone(), "t/0".into(), 200).unwrap();
    assert_eq!(log.delete_records(5).unwrap(), 5);
    let bases = |suffix: &str| -> Vec<String> {
        files(&dir, suffix)
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        bases(SUFFIX),
        ["00000000000000000004", "00000000000000000006"]
    );
    assert_eq!(bases(".headers"), bases(SUFFIX));
}

#[test]
fn a_damaged_base_offset_near_the_end_of_the_range_does_not_overflow_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let logs = three_closed_segments(&dir);
    // The batch CRC does not cover the base offset: only the offsets' order can catch it.
    let mut b = fs::read(&logs[3]).unwrap();
    b[..8].copy_from_slice(&i64::MAX.to_be_bytes());
    fs::write(&logs[3], b).unwrap();
    let log = SegmentLog::open(dir.clone(), "t/0".into(), 200).unwrap();
    assert_eq!(log.log_end_offset(), i64::MAX);
}
