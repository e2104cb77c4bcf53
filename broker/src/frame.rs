//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the limit of the request's API *before* anything is
//! allocated, the request's memory is taken from the broker-wide budget
//! ([`crate::budget`]) before its body is read, and the body buffer grows only as bytes
//! actually arrive, so a client announcing 100 MiB and sending nothing costs nothing.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::budget::{self, Grant, MemoryBudget};
use crate::error::ConnectionError;

/// Smallest possible request: api key (2) + api version (2) + correlation id (4).
pub const MIN_REQUEST_LEN: usize = 8;
/// Largest chunk reserved at once while reading a body.
const READ_CHUNK: usize = 64 * 1024;

/// Validates a length prefix against `max` (sans-io).
pub fn check_length(prefix: [u8; 4], max: usize) -> Result<usize, ConnectionError> {
    let length = i32::from_be_bytes(prefix);
    if length < MIN_REQUEST_LEN as i32 || length as i64 > max as i64 {
        return Err(ConnectionError::FrameLength {
            length: i64::from(length),
            limit: max,
        });
    }
    Ok(length as usize)
}

/// How large a request may be, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Produce requests (`--max-request-bytes`).
    pub produce: usize,
    /// Every other request (`--max-other-request-bytes`): no Metadata request is 100 MB.
    pub other: usize,
}

impl Limits {
    /// The same limit for every request.
    pub fn uniform(max: usize) -> Limits {
        Limits {
            produce: max,
            other: max,
        }
    }

    /// The limit for a request with this API key (Produce is key 0).
    pub fn for_api(&self, api_key: i16) -> usize {
        if api_key == 0 {
            self.produce
        } else {
            self.other
        }
    }
}

/// Reads one frame, with no memory budget (tests, fuzzing). `Ok(None)` on a clean end of
/// stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, ConnectionError> {
    let budget = MemoryBudget::new(usize::MAX);
    Ok(read_frame_within(reader, Limits::uniform(max), &budget)
        .await?
        .map(|f| f.bytes))
}

/// A request frame and the memory it holds.
#[derive(Debug)]
pub struct Frame {
    /// The request: header and body.
    pub bytes: Bytes,
    /// How much its decoded structures may take (see [`budget::decode_allowance`]).
    pub allowance: usize,
    /// Its share of the broker's request memory, returned when dropped.
    pub grant: Grant,
}

/// Reads one frame. The length prefix is checked against the larger limit, then, once the
/// API key is in, against that API's limit; only then is the frame's memory (its length
/// plus its decode allowance) taken from `budget`, waiting if need be, and the body read.
/// `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: Limits,
    budget: &Arc<MemoryBudget>,
) -> Result<Option<Frame>, ConnectionError> {
    let mut prefix = [0u8; 4];
    if !read_exact_or_eof(reader, &mut prefix).await? {
        return Ok(None);
    }
    let length = check_length(prefix, limits.produce.max(limits.other))?;
    let mut key = [0u8; 2];
    if !read_exact_or_eof(reader, &mut key).await? {
        return Err(ConnectionError::Truncated {
            expected: length,
            received: 0,
        });
    }
    let api_key = i16::from_be_bytes(key);
    let limit = limits.for_api(api_key);
    if length > limit {
        return Err(ConnectionError::TooLarge {
            api_key,
            length,
            limit,
        });
    }
    let allowance = budget::decode_allowance(length);
    let grant = budget.acquire(length.saturating_add(allowance)).await;
    let mut body = BytesMut::new();
    body.extend_from_slice(&key);
    while body.len() < length {
        let want = (length - body.len()).min(READ_CHUNK);
        body.reserve(want);
        let n = (&mut *reader).take(want as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(ConnectionError::Truncated {
                expected: length,
                received: body.len(),
            });
        }
    }
    Ok(Some(Frame {
        bytes: body.freeze(),
        allowance,
        grant,
    }))
}

/// Fills `buf`; false on EOF before the first byte, an error on EOF after it.
async fn read_exact_or_eof<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<bool, ConnectionError> {
    let mut got = 0;
    while got < buf.len() {
        let n = reader.read(&mut buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(ConnectionError::Truncated {
                expected: buf.len(),
                received: got,
            });
        }
        got += n;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_is_bounded() {
        assert_eq!(check_length(100i32.to_be_bytes(), 1000).unwrap(), 100);
        for bad in [-1i32, 0, 7, 1001, i32::MAX, i32::MIN] {
            assert!(check_length(bad.to_be_bytes(), 1000).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn reads_frames_and_detects_truncation() {
        let mut data = Vec::new();
        data.extend_from_slice(&8i32.to_be_bytes());
        data.extend_from_slice(b"12345678");
        data.extend_from_slice(&10i32.to_be_bytes());
        data.extend_from_slice(b"abc");
        let mut r = &data[..];
        let f = read_frame(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!(&f[..], b"12345678");
        assert!(matches!(
            read_frame(&mut r, 1 << 20).await,
            Err(ConnectionError::Truncated {
                expected: 10,
                received: 3
            })
        ));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn requests_other_than_produce_have_their_own_limit() {
        let limits = Limits {
            produce: 1000,
            other: 100,
        };
        let budget = MemoryBudget::new(1 << 20);
        let frame = |key: i16, len: usize| {
            let mut f = (len as i32).to_be_bytes().to_vec();
            f.extend_from_slice(&key.to_be_bytes());
            f.resize(4 + len, 7);
            f
        };
        let produce = frame(0, 500);
        let f = read_frame_within(&mut &produce[..], limits, &budget)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((f.bytes.len(), &f.bytes[..2]), (500, &[0u8, 0][..]));
        assert_eq!(budget.in_use(), 500 + f.allowance);
        drop(f);
        assert_eq!(budget.in_use(), 0);
        let metadata = frame(3, 500);
        assert!(matches!(
            read_frame_within(&mut &metadata[..], limits, &budget).await,
            Err(ConnectionError::TooLarge {
                api_key: 3,
                length: 500,
                limit: 100
            })
        ));
    }

    #[tokio::test]
    async fn huge_prefix_is_refused_without_allocating() {
        let mut r: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut r, 100 << 20).await,
            Err(ConnectionError::FrameLength { .. })
        ));
    }
}
