//! The FUSE side: a passthrough to a backing directory in which file contents go through
//! an [`Overlay`] until fsync. Directory operations (create, mkdir, rename, unlink) reach
//! the backing directory at once, as in LazyFS: only data and file sizes are lazy.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::overlay::{Overlay, Writeback};

const TTL: Duration = Duration::from_secs(1);

/// Everything the filesystem knows, behind one lock (requests are served one at a time).
#[derive(Default)]
pub(crate) struct State {
    backing: PathBuf,
    /// Inode -> path relative to the backing directory ("" is the root).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Files with writes not yet fsynced.
    dirty: HashMap<u64, Overlay>,
    /// Open backing files, by inode.
    files: HashMap<u64, File>,
    /// Bytes made durable by fsync, and fsync calls, since mounting.
    pub(crate) synced_bytes: u64,
    pub(crate) syncs: u64,
}

/// The filesystem handed to fuser; the state is shared with [`crate::LazyFs`].
pub(crate) struct LazyFsImpl(pub(crate) Arc<Mutex<State>>);

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl State {
    pub(crate) fn new(backing: &Path) -> State {
        let mut s = State {
            backing: backing.to_path_buf(),
            next_ino: 2,
            ..State::default()
        };
        s.paths.insert(1, PathBuf::new());
        s.inodes.insert(PathBuf::new(), 1);
        s
    }

    fn real(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.paths
            .get(&ino)
            .map(|p| self.backing.join(p))
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        self.paths
            .get(&parent)
            .map(|p| p.join(name))
            .ok_or(Errno::ENOENT)
    }

    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.inodes.get(rel) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.to_path_buf());
        self.inodes.insert(rel.to_path_buf(), ino);
        ino
    }

    fn file(&mut self, ino: u64) -> Result<&File, Errno> {
        if !self.files.contains_key(&ino) {
            let path = self.real(ino)?;
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(errno)?;
            self.files.insert(ino, f);
        }
        self.files.get(&ino).ok_or(Errno::EIO)
    }

    fn attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        let md = fs::symlink_metadata(self.real(ino)?).map_err(errno)?;
        let size = self.dirty.get(&ino).map_or(md.len(), Overlay::size);
        let time = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(md.atime()),
            mtime: time(md.mtime()),
            ctime: time(md.ctime()),
            crtime: time(md.ctime()),
            kind: if md.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (md.permissions().mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Runs `f` on the file's overlay (created over its durable contents if need be), with
    /// a reader of the durable bytes.
    fn with_overlay<T>(
        &mut self,
        ino: u64,
        f: impl FnOnce(
            &mut Overlay,
            &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<usize>,
        ) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let file = self.file(ino)?.try_clone().map_err(errno)?;
        let overlay = match self.dirty.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Overlay::new(file.metadata().map_err(errno)?.len()))
            }
        };
        let mut durable = |at: u64, buf: &mut [u8]| file.read_at(buf, at);
        f(overlay, &mut durable).map_err(errno)
    }

    /// Applies a writeback to the durable file.
    fn apply(&mut self, ino: u64, w: &Writeback) -> Result<(), Errno> {
        let file = self.file(ino)?;
        if let Some(t) = w.truncate_to {
            if file.metadata().map_err(errno)?.len() > t {
                file.set_len(t).map_err(errno)?;
            }
        }
        let mut written = 0;
        for (at, bytes) in &w.pages {
            file.write_all_at(bytes, *at).map_err(errno)?;
            written += bytes.len() as u64;
        }
        if let Some(s) = w.size {
            file.set_len(s).map_err(errno)?;
        }
        self.synced_bytes += written;
        Ok(())
    }

    /// fsync/fdatasync: the file's overlay becomes its durable contents.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        self.syncs += 1;
        if let Some(ov) = self.dirty.remove(&ino) {
            let w = ov.writeback(&mut |_| true, true);
            self.apply(ino, &w)?;
        }
        Ok(())
    }

    /// Every overlay becomes durable (a clean unmount: the kernel writes everything back).
    pub(crate) fn sync_all(&mut self) -> Result<(), Errno> {
        let inos: Vec<u64> = self.dirty.keys().copied().collect();
        for ino in inos {
            self.sync(ino)?;
        }
        Ok(())
    }

    /// The power cut: what was not fsynced is lost, except the pages `keep` picks (written
    /// back by the kernel before the cut, in no particular order). Returns the bytes lost.
    pub(crate) fn cut(&mut self, keep: &mut dyn FnMut(u64) -> bool) -> u64 {
        let dirty = std::mem::take(&mut self.dirty);
        let mut lost = 0;
        for (ino, ov) in dirty {
            lost += ov.dirty_bytes();
            let w = ov.writeback(keep, false);
            // A file deleted meanwhile has nothing to write back to.
            let _ = self.apply(ino, &w);
        }
        self.files.clear();
        lost
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
            self.dirty.remove(&ino);
            self.files.remove(&ino);
        }
    }

    /// After a rename, every inode under `from` lives under `to`.
    fn move_paths(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(PathBuf, u64)> = self
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (old, ino) in moved {
            let new = to.join(old.strip_prefix(from).unwrap_or(Path::new("")));
            self.inodes.remove(&old);
            self.inodes.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
    }
}

impl LazyFsImpl {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, rel: PathBuf, reply: ReplyEntry) {
        let mut s = self.lock();
        let ino = s.ino_of(&rel);
        match s.attr(ino) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => {
                s.forget_path(&rel);
                reply.error(e)
            }
        }
    }
}

impl LazyFsImpl {
    /// unlink or rmdir: at once on the backing directory.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        op: fn(&Path) -> std::io::Result<()>,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = s.child(parent.0, name).and_then(|rel| {
            op(&s.backing.join(&rel)).map_err(errno)?;
            s.forget_path(&rel);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for LazyFsImpl {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let rel = match self.lock().child(parent.0, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        self.entry(rel, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let r = (|| {
            if let Some(mode) = mode {
                let path = s.real(ino.0)?;
                fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(errno)?;
            }
            if let Some(size) = size {
                s.with_overlay(ino.0, |ov, durable| ov.set_size(size, durable))?;
            }
            s.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = match self.lock().child(parent.0, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let real = self.lock().backing.join(&rel);
        if let Err(e) = fs::create_dir(&real)
            .and_then(|()| fs::set_permissions(&real, fs::Permissions::from_mode(mode & 0o7777)))
        {
            return reply.error(errno(e));
        }
        self.entry(rel, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| fs::remove_file(p), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| fs::remove_dir(p), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let from = s.child(parent.0, name)?;
            let to = s.child(newparent.0, newname)?;
            fs::rename(s.backing.join(&from), s.backing.join(&to)).map_err(errno)?;
            s.move_paths(&from, &to);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        if flags.0 & libc::O_TRUNC != 0 {
            if let Err(e) = s.with_overlay(ino.0, |ov, durable| ov.set_size(0, durable)) {
                return reply.error(e);
            }
        }
        match s.file(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            // Directories and read-only files: nothing to keep open.
            Err(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.lock();
        let mut buf = vec![0u8; size as usize];
        let r = if s.dirty.contains_key(&ino.0) {
            s.with_overlay(ino.0, |ov, durable| ov.read(offset, &mut buf, durable))
        } else {
            s.file(ino.0)
                .and_then(|f| read_full(f, offset, &mut buf).map_err(errno))
        };
        match r {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .lock()
            .with_overlay(ino.0, |ov, durable| ov.write(offset, data, durable));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // close(2) makes nothing durable
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let rel = s.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (1, FileType::Directory, "..".into()),
            ];
            let mut listed: Vec<_> = fs::read_dir(s.backing.join(&rel))
                .map_err(errno)?
                .filter_map(Result::ok)
                .collect();
            listed.sort_by_key(fs::DirEntry::file_name);
            for e in listed {
                let kind = match e.file_type() {
                    Ok(t) if t.is_dir() => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                let child = s.ino_of(&rel.join(e.file_name()));
                entries.push((child, kind, e.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // directory operations are durable at once
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = self.lock().backing.clone();
        match statvfs(&backing) {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                255,
                v.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let r = (|| {
            let rel = s.child(parent.0, name)?;
            let mut opts = fs::OpenOptions::new();
            opts.read(true).write(true).create(true).mode(mode & 0o7777);
            if flags & libc::O_EXCL != 0 {
                opts.create_new(true);
            }
            let file = opts.open(s.backing.join(&rel)).map_err(errno)?;
            let ino = s.ino_of(&rel);
            s.files.insert(ino, file);
            if flags & libc::O_TRUNC != 0 {
                s.with_overlay(ino, |ov, durable| ov.set_size(0, durable))?;
            }
            s.attr(ino)
        })();
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = f.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

#[allow(unsafe_code)] // statvfs(3)
fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with NUL"))?;
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `v` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut v) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}
