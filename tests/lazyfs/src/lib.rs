//! # finstream-lazyfs
//!
//! A FUSE filesystem for power-cut tests, after Jepsen's LazyFS: it passes everything
//! through to a backing directory, except that file contents written since the last
//! `fsync`/`fdatasync` of that file live only in memory. [`LazyFs::power_cut`] throws them
//! away, as a power failure throws away the page cache, so a test sees exactly what a
//! storage engine's durability calls made durable: data written with `write` and flushed
//! with `sync_file_range` or `msync`-less tricks is gone, as on real hardware.
//!
//! * Data and file sizes are lazy; directory operations (create, mkdir, rename, unlink)
//!   reach the backing directory at once, as in LazyFS.
//! * A cut may also keep a random subset of the unsynced pages ([`Cut::writeback_ratio`]),
//!   as the kernel's background writeback might have written them, in any order, before the
//!   power went: recovery code must not assume that what survives is a prefix.
//! * Mounting needs root (the `mount` system call on `/dev/fuse`).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let fs = finstream_lazyfs::LazyFs::mount("/tmp/backing".as_ref(), "/tmp/mnt".as_ref())?;
//! // ... run a process on /tmp/mnt, kill -9 it ...
//! let report = fs.power_cut(finstream_lazyfs::Cut::drop_all())?;
//! println!("lost {} bytes", report.lost_bytes);
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

mod fs;
pub mod overlay;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

/// A mounted lazy filesystem. Dropping it unmounts after writing everything back (a clean
/// shutdown); [`LazyFs::power_cut`] unmounts after losing what was not synced.
pub struct LazyFs {
    state: Arc<Mutex<fs::State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// How a power cut treats the pages written since their file's last sync.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Fraction of those pages that reach the disk anyway (0: none).
    pub writeback_ratio: f64,
    /// Seed for choosing them.
    pub seed: u64,
}

impl Cut {
    /// Every unsynced write is lost.
    pub fn drop_all() -> Cut {
        Cut {
            writeback_ratio: 0.0,
            seed: 0,
        }
    }
}

/// What a power cut did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// Bytes in unsynced pages when the power went (lost unless written back).
    pub lost_bytes: u64,
    /// Bytes made durable by fsync since mounting.
    pub synced_bytes: u64,
    /// fsync and fdatasync calls since mounting.
    pub syncs: u64,
}

impl LazyFs {
    /// Mounts a lazy view of `backing` on `mountpoint` (both directories must exist).
    pub fn mount(backing: &Path, mountpoint: &Path) -> std::io::Result<LazyFs> {
        let state = Arc::new(Mutex::new(fs::State::new(backing)));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("finstream-lazyfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(fs::LazyFsImpl(state.clone()), mountpoint, &config)?;
        Ok(LazyFs {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: writes not covered by an fsync are lost (or some written back, as
    /// `cut` says), then the filesystem is unmounted. Stop every process using it first
    /// (kill -9), so that nothing runs past the cut.
    pub fn power_cut(mut self, cut: Cut) -> std::io::Result<CutReport> {
        let report = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut rng = cut.seed | 1;
            let threshold = (cut.writeback_ratio.clamp(0.0, 1.0) * u32::MAX as f64) as u64;
            let mut keep = |_page: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng & 0xffff_ffff) < threshold
            };
            let lost_bytes = s.cut(&mut keep);
            CutReport {
                lost_bytes,
                synced_bytes: s.synced_bytes,
                syncs: s.syncs,
            }
        };
        self.unmount()?;
        Ok(report)
    }

    fn unmount(&mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync_all();
            let _ = self.unmount();
        }
    }
}
