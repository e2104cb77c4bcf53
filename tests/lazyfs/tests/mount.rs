//! The filesystem mounted for real: what fsync covers survives a power cut, what it does
//! not (plain writes, `sync_file_range`, a file size change) is lost. Needs root.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use finstream_lazyfs::{Cut, LazyFs};

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let (backing, mnt) = (root.path().join("backing"), root.path().join("mnt"));
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    (root, backing, mnt)
}

#[test]
fn only_what_fsync_covers_survives_a_power_cut() {
    let (_root, backing, mnt) = dirs();
    let lazy = LazyFs::mount(&backing, &mnt).expect("mount (as root, /dev/fuse present)");
    fs::create_dir(mnt.join("d")).unwrap();
    let mut synced = File::create(mnt.join("d/synced")).unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b" and then lost").unwrap();
    let mut plain = File::create(mnt.join("d/plain")).unwrap();
    plain.write_all(b"never synced").unwrap();
    let ranged = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(mnt.join("d/ranged"))
        .unwrap();
    ranged.write_all_at(b"sync_file_range only", 0).unwrap();
    // What sled 0.34 calls to make its log "stable".
    #[allow(unsafe_code)]
    // SAFETY: a valid open file descriptor and a range inside the file.
    let r = unsafe {
        libc::sync_file_range(
            ranged.as_raw_fd(),
            0,
            20,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(r, 0);
    // Before the cut, every process sees everything.
    assert_eq!(
        fs::read(mnt.join("d/synced")).unwrap(),
        b"durable and then lost"
    );
    assert_eq!(
        fs::read(mnt.join("d/ranged")).unwrap(),
        b"sync_file_range only"
    );
    drop((synced, plain, ranged));
    let report = lazy.power_cut(Cut::drop_all()).unwrap();
    assert!(report.lost_bytes > 0 && report.syncs == 1, "{report:?}");
    assert_eq!(fs::read(backing.join("d/synced")).unwrap(), b"durable");
    assert_eq!(
        fs::read(backing.join("d/plain")).unwrap(),
        b"",
        "created, never synced"
    );
    assert_eq!(fs::read(backing.join("d/ranged")).unwrap(), b"");

    // Remounted: the durable state, and a clean unmount keeps everything.
    let lazy = LazyFs::mount(&backing, &mnt).unwrap();
    assert_eq!(fs::read(mnt.join("d/synced")).unwrap(), b"durable");
    fs::write(mnt.join("d/plain"), b"kept by a clean unmount").unwrap();
    fs::rename(mnt.join("d/plain"), mnt.join("d/renamed")).unwrap();
    drop(lazy);
    assert_eq!(
        fs::read(backing.join("d/renamed")).unwrap(),
        b"kept by a clean unmount"
    );
}

#[test]
fn a_truncation_not_synced_is_undone_by_a_power_cut() {
    let (_root, backing, mnt) = dirs();
    fs::write(backing.join("f"), vec![7u8; 10_000]).unwrap();
    let lazy = LazyFs::mount(&backing, &mnt).unwrap();
    let f = OpenOptions::new().write(true).open(mnt.join("f")).unwrap();
    f.set_len(100).unwrap();
    f.write_all_at(&[1u8; 50], 5000).unwrap();
    drop(f);
    let seen = fs::read(mnt.join("f")).unwrap();
    assert_eq!(seen.len(), 5050);
    assert!(
        seen[100..5000].iter().all(|b| *b == 0),
        "truncated bytes read as zeros"
    );
    lazy.power_cut(Cut::drop_all()).unwrap();
    assert_eq!(fs::read(backing.join("f")).unwrap(), vec![7u8; 10_000]);
}
