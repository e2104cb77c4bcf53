//! Reading a segment file: byte ranges a large `pread` at a time, and batch headers.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;

use super::io_err;
use crate::batch::{self, be_i32, be_i64, BatchInfo, HEADER_LEN};
use crate::error::StorageError;

/// Reads byte ranges of one segment file, a large `pread` at a time.
pub(super) struct Cursor<'a> {
    pub(super) file: &'a File,
    pub(super) path: &'a Path,
    /// End of the readable bytes.
    pub(super) end: u64,
    pub(super) buf: Bytes,
    pub(super) at: u64,
    /// How many times `buf` was filled: tells whether two slices share one buffer.
    pub(super) fills: u64,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(file: &'a File, path: &'a Path, end: u64) -> Self {
        Cursor {
            file,
            path,
            end,
            buf: Bytes::new(),
            at: 0,
            fills: 0,
        }
    }

    /// Bytes `[pos, pos + n)`, or `None` past the end; reads `read_ahead` bytes at once
    /// (capped at the end) when they are not buffered.
    pub(super) fn get(
        &mut self,
        pos: u64,
        n: u64,
        read_ahead: usize,
    ) -> Result<Option<Bytes>, StorageError> {
        if pos.checked_add(n).is_none_or(|e| e > self.end) {
            return Ok(None);
        }
        let buffered = self.at + self.buf.len() as u64;
        if pos < self.at || pos + n > buffered {
            let len = (n.max(read_ahead as u64)).min(self.end - pos) as usize;
            self.buf = Bytes::from(read_exact_at(self.file, pos, len).map_err(io_err(self.path))?);
            self.at = pos;
            self.fills += 1;
        }
        let s = (pos - self.at) as usize;
        Ok(Some(self.buf.slice(s..s + n as usize)))
    }
}

/// `len` bytes of `file` from `pos`, read into a fresh buffer without zeroing it first
/// (a fetch reads up to 8 MiB; zeroing it cost as much as the read).
#[allow(unsafe_code)] // pread(2) into uninitialised capacity
pub(super) fn read_exact_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut v: Vec<u8> = Vec::with_capacity(len);
    while v.len() < len {
        let filled = v.len();
        let offset = libc::off_t::try_from(pos + filled as u64)
            .map_err(|_| std::io::Error::other("file position beyond off_t"))?;
        // SAFETY: the destination is the vector's spare capacity, `len - filled` bytes
        // starting right after its `filled` initialised bytes; pread writes at most that.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                v.as_mut_ptr().add(filled).cast(),
                len - filled,
                offset,
            )
        };
        match n {
            n if n > 0 => {
                // SAFETY: pread initialised the next `n` bytes (n <= len - filled).
                unsafe { v.set_len(filled + n as usize) };
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(v)
}

/// A batch header as found at a position of a segment.
pub(super) struct Header {
    pub(super) base: i64,
    /// Whole batch length, header included.
    pub(super) len: u64,
    pub(super) info: BatchInfo,
}

/// Reads and sanity-checks the header at `pos`: `None` if it is cut off or not a batch.
pub(super) fn header(
    cur: &mut Cursor,
    pos: u64,
    read_ahead: usize,
) -> Result<Option<Header>, StorageError> {
    Ok(cur
        .get(pos, HEADER_LEN as u64, read_ahead)?
        .and_then(|h| parse_header(&h)))
}

/// Sanity-checks and reads a batch header (at least [`HEADER_LEN`] bytes): `None` if it is
/// not one.
pub(super) fn parse_header(h: &[u8]) -> Option<Header> {
    let info = batch::info(h.get(..HEADER_LEN)?)?;
    let batch_length = be_i32(h, 8);
    if batch_length < (HEADER_LEN - 12) as i32 || !batch::is_v2(h) {
        return None;
    }
    Some(Header {
        base: be_i64(h, 0),
        len: 12 + batch_length as u64,
        info,
    })
}
