//! The free-space guard. Produce is refused with KAFKA_STORAGE_ERROR while the data
//! directory's filesystem has less than `min_free_bytes` (plus the incoming batch)
//! available, so the store never meets ENOSPC halfway through a write: sled cannot take
//! writes again after a failed one without a restart (nor can a segment log after a failed
//! fsync), whereas a refused produce is retried
//! by the client and succeeds as soon as space returns. Reads, metadata and group offsets are
//! unaffected.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One per broker; checks the filesystem on every produce (one `statvfs` call).
#[derive(Debug)]
pub struct DiskGuard {
    dir: Option<PathBuf>,
    min_free: u64,
    last_free: AtomicU64,
    full: AtomicBool,
}

impl DiskGuard {
    /// Guards `dir` (None: an in-memory store, never full).
    pub fn new(dir: Option<PathBuf>, min_free: u64) -> DiskGuard {
        DiskGuard {
            dir,
            min_free,
            last_free: AtomicU64::new(u64::MAX),
            full: AtomicBool::new(false),
        }
    }

    /// `Err(why)` when a write of `incoming` bytes would leave less than the reserve.
    pub fn check(&self, incoming: usize) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let free = match available_bytes(dir) {
            Ok(free) => free,
            Err(e) => {
                // Cannot tell: let the store try (a real failure still gets a storage error).
                tracing::debug!("statvfs {}: {e}", dir.display());
                return Ok(());
            }
        };
        self.last_free.store(free, Ordering::Relaxed);
        let needed = self.min_free.saturating_add(incoming as u64);
        if free < needed {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    free,
                    min_free = self.min_free,
                    "disk full: {} has {free} bytes free, below the --min-free-bytes reserve; produce is refused (KAFKA_STORAGE_ERROR) until space returns",
                    dir.display()
                );
            }
            return Err(format!(
                "disk full: {free} bytes free on the broker's data directory, {} must stay free",
                self.min_free
            ));
        }
        if self.full.swap(false, Ordering::Relaxed) {
            tracing::info!(free, "disk space is back; produce accepted again");
        }
        Ok(())
    }

    /// Bytes available at the last check (`None` before any, or for an in-memory store).
    pub fn last_free(&self) -> Option<u64> {
        match self.last_free.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        }
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `path`.
#[cfg(unix)]
#[allow(unsafe_code)] // statvfs(3)
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn available_bytes(_: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_compared_with_the_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let roomy = DiskGuard::new(Some(dir.path().to_path_buf()), 0);
        assert!(roomy.check(1).is_ok());
        assert!(roomy.last_free().is_some());
        let strict = DiskGuard::new(Some(dir.path().to_path_buf()), u64::MAX / 2);
        let why = strict.check(1).unwrap_err();
        assert!(why.starts_with("disk full"), "{why}");
        assert!(DiskGuard::new(None, u64::MAX).check(usize::MAX).is_ok());
    }
}
