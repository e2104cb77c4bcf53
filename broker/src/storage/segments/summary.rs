//! Segment summaries: `<base>.headers` beside a closed segment holds what recovery needs
//! from it (every batch's header and, for a transaction marker, which one), so opening a
//! log reads one small sequential file per closed segment instead of seeking to every
//! batch header of every segment.
//!
//! Format: entries of [`ENTRY`] bytes (the batch's 61-byte header exactly as stored, then
//! the marker: 0 none, 1 abort, 2 commit), then a trailer of [`TRAILER`] bytes: magic
//! `FSHDRS01`, the segment length it covers (u64), the entry count (u64), the CRC32C of the
//! entries (u32), four zero bytes. Big-endian, like the batches.
//!
//! A summary is a cache, never the truth. It is written without fsync: at segment roll for
//! the closed segment (entries are appended as batches are, 16 KiB at a time), and at open
//! for any closed segment that had to be scanned. It stands for its segment only when its
//! trailer, CRC and entries add up to exactly the segment's length, and the last entry's
//! header is byte for byte the one at the end of the segment; otherwise the segment is
//! scanned as before. Whatever removes or replaces a segment (trim, compaction) removes its
//! summary first. The last segment is always scanned (its tail may be torn).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::file::{parse_header, Header};
use super::scan::check;
use crate::batch::HEADER_LEN;
use crate::control::Marker;
use crate::error::StorageError;

/// Bytes per entry: a batch header and its marker byte.
pub(super) const ENTRY: usize = HEADER_LEN + 1;
/// Bytes of the trailer.
pub(super) const TRAILER: usize = 32;
const MAGIC: &[u8; 8] = b"FSHDRS01";
const SUFFIX: &str = ".headers";
/// Entries are written to the file once this many bytes (about 260 entries) are buffered.
const FLUSH_AT: usize = 16 * 1024;
/// Entries read per `read` while replaying.
const READ_CHUNK: usize = ENTRY * 16 * 1024;

/// The summary file of the segment at `base` in `dir`.
pub(super) fn path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}{SUFFIX}"))
}

/// Removes the summary of the segment at `base`, if there is one.
pub(super) fn remove(dir: &Path, base: i64) -> Result<(), StorageError> {
    let path = path(dir, base);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(super::io_err(&path)(e)),
        _ => Ok(()),
    }
}

fn marker_byte(marker: Option<Marker>) -> u8 {
    match marker {
        None => 0,
        Some(Marker::Abort) => 1,
        Some(Marker::Commit) => 2,
    }
}

/// The marker of an entry; `Err` for a byte no writer produces.
fn marker_of(byte: u8) -> Result<Option<Marker>, String> {
    match byte {
        0 => Ok(None),
        1 => Ok(Some(Marker::Abort)),
        2 => Ok(Some(Marker::Commit)),
        b => Err(format!("unknown marker byte {b}")),
    }
}

/// Writes the summary of one segment as its batches come, [`FLUSH_AT`] bytes at a time,
/// opening the file only to write (a log holds no descriptor for it). It never fails its
/// caller: after an I/O error it logs a warning, removes its file and writes nothing more,
/// so the segment is scanned at the next open.
pub(super) struct SummaryWriter {
    path: PathBuf,
    /// False once the summary is given up.
    ok: bool,
    buf: Vec<u8>,
    written: u64,
    crc: u32,
    count: u64,
}

impl SummaryWriter {
    /// Starts the summary of the segment at `base` in `dir`, replacing any old one.
    pub(super) fn create(dir: &Path, base: i64) -> Self {
        let mut w = SummaryWriter {
            path: path(dir, base),
            ok: true,
            buf: Vec::new(),
            written: 0,
            crc: 0,
            count: 0,
        };
        if let Err(e) = w.open(true) {
            w.give_up(&e);
        }
        w
    }

    fn open(&self, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(&self.path)
    }

    /// Adds a batch: `header` is its first [`HEADER_LEN`] bytes as stored.
    pub(super) fn push(&mut self, header: &[u8], marker: Option<Marker>) {
        let Some(header) = header.get(..HEADER_LEN) else {
            return self.give_up(&io::Error::other("batch header cut short"));
        };
        if !self.ok {
            return;
        }
        self.buf.extend_from_slice(header);
        self.buf.push(marker_byte(marker));
        self.count += 1;
        if self.buf.len() >= FLUSH_AT {
            self.crc = crc32c::crc32c_append(self.crc, &self.buf);
            self.write_buf();
        }
    }

    /// Writes out what is buffered (its CRC already counted).
    fn write_buf(&mut self) {
        if !self.ok {
            return;
        }
        let written = self
            .open(false)
            .and_then(|f| f.write_all_at(&self.buf, self.written));
        match written {
            Ok(()) => self.written += self.buf.len() as u64,
            Err(e) => self.give_up(&e),
        }
        self.buf.clear();
    }

    /// Completes the summary of a segment of `segment_len` bytes (not fsynced: see the
    /// module docs).
    pub(super) fn finish(mut self, segment_len: u64) {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.buf.extend_from_slice(MAGIC);
        self.buf.extend_from_slice(&segment_len.to_be_bytes());
        self.buf.extend_from_slice(&self.count.to_be_bytes());
        self.buf.extend_from_slice(&self.crc.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.write_buf();
    }

    /// Removes the summary (its segment turned out damaged).
    pub(super) fn discard(mut self) {
        self.ok = false;
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::debug!(file = %self.path.display(), "cannot remove a discarded segment summary: {e}");
        }
    }

    fn give_up(&mut self, e: &io::Error) {
        if std::mem::replace(&mut self.ok, false) {
            tracing::warn!(file = %self.path.display(), "cannot write a segment summary, the segment will be scanned at open: {e}");
        }
        self.buf = Vec::new();
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), "cannot remove a broken segment summary: {e}");
            }
        }
    }
}

/// A summary that checked out against its segment; [`Summary::replay`] hands its entries
/// out.
pub(super) struct Summary {
    file: File,
    count: u64,
}

impl Summary {
    /// Opens the summary of the segment at `base` in `dir` (`segment`, `segment_len` bytes;
    /// the log before it ends at `next`) and checks it whole: the module docs' checks, and
    /// every entry as [`scan::check`] checks a batch. `Ok(None)`: there is none; `Err`: it
    /// does not stand for the segment, and says why.
    pub(super) fn open(
        dir: &Path,
        base: i64,
        segment: &File,
        (segment_len, next): (u64, i64),
    ) -> Result<Option<Self>, String> {
        let file = match File::open(path(dir, base)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let trailer_at = len
            .checked_sub(TRAILER as u64)
            .ok_or("shorter than its trailer")?;
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, trailer_at)
            .map_err(|e| e.to_string())?;
        if &trailer[..8] != MAGIC {
            return Err("no trailer".into());
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&trailer[at..at + 8]);
            u64::from_be_bytes(w)
        };
        let (covered, count) = (word(8), word(16));
        if covered != segment_len {
            return Err(format!(
                "covers {covered} bytes, the segment has {segment_len}"
            ));
        }
        if count.checked_mul(ENTRY as u64) != Some(trailer_at) {
            return Err(format!("{count} entries do not fill {trailer_at} bytes"));
        }
        let mut walk = Walk {
            crc: 0,
            pos: 0,
            next,
            segment_len,
            last: None,
        };
        let summary = Summary { file, count };
        summary
            .chunks(|chunk| walk.check(chunk))
            .map_err(|e| e.to_string())??;
        if walk.crc.to_be_bytes() != trailer[24..28] {
            return Err("CRC mismatch".into());
        }
        if walk.pos != segment_len {
            return Err(format!(
                "its batches end at byte {}, the segment at {segment_len}",
                walk.pos
            ));
        }
        if let Some((at, last)) = walk.last {
            let mut stored = [0u8; HEADER_LEN];
            segment
                .read_exact_at(&mut stored, at)
                .map_err(|e| format!("reading the segment's last header: {e}"))?;
            if stored != last {
                return Err("its last header is not the segment's".into());
            }
        }
        Ok(Some(summary))
    }

    /// Calls `f` with each entry's header and marker, in order.
    pub(super) fn replay(self, mut f: impl FnMut(Header, Option<Marker>)) -> io::Result<()> {
        self.chunks(|chunk| {
            for entry in chunk.chunks_exact(ENTRY) {
                // Both were checked by `open`.
                if let (Some(h), Ok(m)) = (parse_header(entry), marker_of(entry[HEADER_LEN])) {
                    f(h, m);
                }
            }
            Ok(())
        })?
        .map_err(io::Error::other)
    }

    /// Calls `f` on the entries a chunk at a time, until it fails.
    fn chunks(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> io::Result<Result<(), String>> {
        let len = self.count * ENTRY as u64;
        let mut buf = vec![0u8; READ_CHUNK.min(len as usize)];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(READ_CHUNK as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], at)?;
            if let Err(e) = f(&buf[..n]) {
                return Ok(Err(e));
            }
            at += n as u64;
        }
        Ok(Ok(()))
    }
}

/// The running checks of [`Summary::open`].
struct Walk {
    crc: u32,
    /// Where the next entry's batch starts in the segment.
    pos: u64,
    /// The offset the next batch may start at, at the earliest.
    next: i64,
    segment_len: u64,
    /// Position and header of the last entry so far.
    last: Option<(u64, [u8; HEADER_LEN])>,
}

impl Walk {
    fn check(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        for entry in chunk.chunks_exact(ENTRY) {
            let h = parse_header(entry).ok_or("an entry is not a batch header")?;
            marker_of(entry[HEADER_LEN])?;
            if let Some(problem) = check(&h, self.pos, self.segment_len, self.next) {
                return Err(format!("at byte {}: {problem}", self.pos));
            }
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&entry[..HEADER_LEN]);
            self.last = Some((self.pos, header));
            self.next = h
                .base
                .saturating_add(i64::from(h.info.last_offset_delta) + 1);
            self.pos += h.len;
        }
        Ok(())
    }
}
