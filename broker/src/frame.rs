//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the limit *before* anything is allocated, and the body
//! buffer grows only as bytes actually arrive, so a client announcing 100 MiB and sending
//! nothing costs nothing.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, ConnectionError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ConnectionError::Truncated {
                expected: 4,
                received: got,
            });
        }
        got += n;
    }
    let length = check_length(prefix, max)?;
    let mut body = BytesMut::new();
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
    Ok(Some(body.freeze()))
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
    async fn huge_prefix_is_refused_without_allocating() {
        let mut r: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut r, 100 << 20).await,
            Err(ConnectionError::FrameLength { .. })
        ));
    }
}
