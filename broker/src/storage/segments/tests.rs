use super::*;
use crate::batch;
use crate::batch::tests::make_batch;
use crate::config::DEFAULT_SEGMENT_BYTES;
use crate::storage::contract::{self, append};
use crate::storage::Appended;
use crate::storage::{Store, TopicMeta};
use bytes::Bytes;
use std::fs::OpenOptions;

fn open_store(dir: &Path, segment_bytes: u64) -> SegmentStore {
    SegmentStore::open(SledMeta::open(dir, 8 << 20).unwrap(), dir, segment_bytes).unwrap()
}

fn topic(store: &dyn Store, name: &str, partitions: i32) {
    store
        .create_topic(&TopicMeta {
            name: name.into(),
            id: [5; 16],
            partitions,
        })
        .unwrap();
}

fn segment_files(dir: &Path, log: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(LOGS_DIR).join(log))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn segment_store_meets_the_contract() {
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 100] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), segment_bytes);
        contract::append_read_and_offsets(&store);
        contract::idempotent_appends(&store);
    }
}

#[test]
fn recovers_topics_offsets_and_cluster_id_after_reopen() {
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 100] {
        let dir = tempfile::tempdir().unwrap();
        contract::survives_reopen(&|| Box::new(open_store(dir.path(), segment_bytes)));
    }
}

#[test]
fn recovers_the_transaction_index_after_reopen() {
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 100] {
        let dir = tempfile::tempdir().unwrap();
        contract::transactions_survive_reopen(&|| Box::new(open_store(dir.path(), segment_bytes)));
    }
}

#[test]
fn reads_match_an_in_memory_log_across_segments_before_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = open_store(dir.path(), 16 * 1024);
        topic(&store, "t", 1);
        let log = store.open_log("t", 0).unwrap();
        contract::reads_like_memory(&*log);
        store.sync().unwrap();
        contract::split(log.read(0, i64::MAX, usize::MAX).unwrap())
    };
    assert!(segment_files(dir.path(), "t-0").len() > 5);
    let store = open_store(dir.path(), 16 * 1024);
    let log = store.open_log("t", 0).unwrap();
    assert_eq!(
        contract::split(log.read(0, i64::MAX, usize::MAX).unwrap()),
        before
    );
    let mem = crate::storage::memory::MemoryLog::default();
    for b in &before {
        append(&mem, b);
    }
    for offset in (0..log.log_end_offset()).step_by(11) {
        assert_eq!(
            contract::split(log.read(offset, i64::MAX, 3000).unwrap()),
            contract::split(mem.read(offset, i64::MAX, 3000).unwrap())
        );
    }
    for ts in (900..4100).step_by(17) {
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            mem.offset_for_timestamp(ts).unwrap()
        );
    }
}

#[test]
fn batches_back_to_back_are_read_as_one_slice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
    topic(&store, "t", 1);
    let log = store.open_log("t", 0).unwrap();
    for i in 0..10 {
        append(&*log, &make_batch(&[b"abc", b"def"], i, 1));
    }
    let chunks = log.read(4, 20, usize::MAX).unwrap();
    assert_eq!(chunks.len(), 1, "one slice, no copy to join them");
    let batches = contract::split(chunks);
    assert_eq!(batches.len(), 8);
    assert_eq!(batch::base_offset(&batches[0]), Some(4));
}

/// Appends 2 + 1 records, syncs, appends 3 more, lets `damage` edit the segment file,
/// reopens and returns the log end and the file's length after recovery.
fn recover_after(damage: impl Fn(&Path, &[Bytes])) -> (i64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let batches = {
        let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
        topic(&store, "t", 1);
        let log = store.open_log("t", 0).unwrap();
        append(&*log, &make_batch(&[b"a", b"b"], 10, 1));
        append(&*log, &make_batch(&[b"c"], 20, 0));
        store.sync().unwrap();
        append(&*log, &make_batch(&[b"d", b"e", b"f"], 30, 1));
        store.sync().unwrap();
        contract::split(log.read(0, i64::MAX, usize::MAX).unwrap())
    };
    let file = segment_files(dir.path(), "t-0").remove(0);
    damage(&file, &batches);
    let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
    let log = store.open_log("t", 0).unwrap();
    let end = log.log_end_offset();
    let len = fs::metadata(&file).unwrap().len();
    // the log goes on from where it was cut
    assert_eq!(
        append(&*log, &make_batch(&[b"z"], 40, 0)),
        Appended::At(end)
    );
    let all = contract::split(log.read(0, i64::MAX, usize::MAX).unwrap());
    assert!(all.iter().all(|b| batch::validate(b, 1 << 20).is_ok()));
    let good: u64 = batches[..2].iter().map(|b| b.len() as u64).sum();
    (end, len, good)
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_batch() {
    // the last batch cut short
    let (end, len, good) = recover_after(|f, _| {
        let file = OpenOptions::new().write(true).open(f).unwrap();
        let n = file.metadata().unwrap().len();
        file.set_len(n - 5).unwrap();
    });
    assert_eq!((end, len), (3, good));
    // a flipped bit inside the last batch's records
    let (end, len, good) = recover_after(|f, _| {
        let mut bytes = fs::read(f).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x10;
        fs::write(f, bytes).unwrap();
    });
    assert_eq!((end, len), (3, good));
    // zeros after the last batch (a file extended but never written)
    let (end, len, good) = recover_after(|f, batches| {
        let mut bytes = fs::read(f).unwrap();
        bytes.extend_from_slice(&[0u8; 100]);
        fs::write(f, bytes).unwrap();
        assert_eq!(
            fs::metadata(f).unwrap().len(),
            batches.iter().map(|b| b.len() as u64).sum::<u64>() + 100
        );
    });
    assert_eq!(end, 6);
    let third = len - good; // the file holds exactly the three batches again
    assert_eq!(third, make_batch(&[b"d", b"e", b"f"], 30, 1).len() as u64);
    // nothing damaged: nothing cut
    let (end, _, _) = recover_after(|_, _| {});
    assert_eq!(end, 6);
}

#[test]
fn damage_in_an_earlier_segment_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_store(dir.path(), 100);
        topic(&store, "t", 1);
        let log = store.open_log("t", 0).unwrap();
        for i in 0..3 {
            append(&*log, &make_batch(&[b"0123456789"], i, 0));
        }
        store.sync().unwrap();
    }
    let files = segment_files(dir.path(), "t-0");
    assert_eq!(files.len(), 3);
    let mut bytes = fs::read(&files[0]).unwrap();
    bytes[16] = 9; // magic
    fs::write(&files[0], bytes).unwrap();
    let store = open_store(dir.path(), 100);
    let err = store.open_log("t", 0).err().unwrap().to_string();
    assert!(
        err.contains("00000000000000000000.log") && err.contains("at byte 0"),
        "{err}"
    );
}

#[test]
fn deleted_topics_and_orphan_logs_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join(LOGS_DIR);
    {
        let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
        topic(&store, "gone", 2);
        topic(&store, "kept", 1);
        for (t, p) in [("gone", 0), ("gone", 1), ("kept", 0)] {
            append(&*store.open_log(t, p).unwrap(), &make_batch(&[b"x"], 1, 0));
        }
        store.sync().unwrap();
        store
            .delete_topic(&TopicMeta {
                name: "gone".into(),
                id: [5; 16],
                partitions: 2,
            })
            .unwrap();
        assert!(!logs.join("gone-0").exists() && !logs.join("gone-1").exists());
        // as if a crash had come between forgetting a topic and removing its files
        fs::create_dir(logs.join("ghost-0")).unwrap();
        fs::write(logs.join("ghost-0").join(segment_name(0)), b"junk").unwrap();
    }
    let store = open_store(dir.path(), DEFAULT_SEGMENT_BYTES);
    assert!(!logs.join("ghost-0").exists());
    assert_eq!(store.open_log("kept", 0).unwrap().log_end_offset(), 1);
}

#[test]
fn data_directories_keep_the_storage_format_they_were_created_with() {
    use crate::storage::{open, StorageFormat};
    // a directory written by the sled store before formats were recorded
    let old = tempfile::tempdir().unwrap();
    {
        let store = crate::storage::sled::SledStore::open(old.path(), 8 << 20).unwrap();
        topic(&store, "t", 1);
        append(
            &*store.open_log("t", 0).unwrap(),
            &make_batch(&[b"x"], 1, 0),
        );
        store.sync().unwrap();
    }
    {
        let store = open(old.path(), 8 << 20, StorageFormat::Segments, 1 << 20).unwrap();
        assert_eq!(store.open_log("t", 0).unwrap().log_end_offset(), 1);
        assert!(!old.path().join(LOGS_DIR).exists());
    }
    // a new directory gets the requested format and keeps it
    let new = tempfile::tempdir().unwrap();
    {
        let store = open(new.path(), 8 << 20, StorageFormat::Segments, 1 << 20).unwrap();
        topic(&*store, "t", 1);
        append(
            &*store.open_log("t", 0).unwrap(),
            &make_batch(&[b"x", b"y"], 1, 0),
        );
        store.sync().unwrap();
    }
    let store = open(new.path(), 8 << 20, StorageFormat::Sled, 1 << 20).unwrap();
    assert_eq!(store.open_log("t", 0).unwrap().log_end_offset(), 2);
    assert_eq!(segment_files(new.path(), "t-0").len(), 1);
}

#[test]
fn deleted_records_stay_deleted_and_whole_segments_go() {
    for segment_bytes in [DEFAULT_SEGMENT_BYTES, 300] {
        let dir = tempfile::tempdir().unwrap();
        contract::records_deleted_survive_reopen(&|| {
            Box::new(open_store(dir.path(), segment_bytes))
        });
        let logs: Vec<PathBuf> = segment_files(dir.path(), "trim-0")
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .collect();
        if segment_bytes == 300 {
            // one batch (2 records) per segment: only the active segment is left
            assert_eq!(logs.len(), 1, "{logs:?}");
        }
    }
}
