//! The record codecs of RecordBatch v2 (attribute bits 0-2): 1 gzip, 2 snappy (Kafka's
//! xerial framing, or raw), 3 lz4 (frame format), 4 zstd. Decompression is bounded: a
//! batch whose records inflate past the limit is an error, never an allocation.

use std::io::{Read, Write};

/// Why a records section could not be (de)compressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Codec number 5-7.
    #[error("unknown compression codec {0}")]
    Unknown(u8),
    /// The records inflate past the limit.
    #[error("records inflate past {0} bytes")]
    TooLarge(usize),
    /// The codec refused the bytes.
    #[error("{codec}: {detail}")]
    Failed {
        /// gzip, snappy, lz4 or zstd.
        codec: &'static str,
        /// What it said.
        detail: String,
    },
}

fn failed(codec: &'static str) -> impl Fn(std::io::Error) -> CodecError {
    move |e| CodecError::Failed {
        codec,
        detail: e.to_string(),
    }
}

/// Reads `r` to the end, refusing more than `limit` bytes.
fn read_bounded(r: impl Read, limit: usize, codec: &'static str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(failed(codec))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge(limit));
    }
    Ok(out)
}

/// Snappy-java's stream header, which Kafka's snappy batches start with.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Snappy-java's block size.
const XERIAL_BLOCK: usize = 32 * 1024;

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let fail = |e: snap::Error| CodecError::Failed {
        codec: "snappy",
        detail: e.to_string(),
    };
    let n = snap::raw::decompress_len(block).map_err(fail)?;
    if out.len().saturating_add(n) > limit {
        return Err(CodecError::TooLarge(limit));
    }
    let at = out.len();
    out.resize(at + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(fail)?;
    Ok(())
}

fn unsnappy(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC.as_slice()) else {
        snappy_block(data, &mut out, limit)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let short = || CodecError::Failed {
            codec: "snappy",
            detail: "a block runs past the end".into(),
        };
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(short)?;
        let block = rest.get(4..4 + len).ok_or_else(short)?;
        snappy_block(block, &mut out, limit)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn snappy(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = XERIAL_MAGIC.to_vec();
    let mut enc = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK) {
        let c = enc.compress_vec(block).map_err(|e| CodecError::Failed {
            codec: "snappy",
            detail: e.to_string(),
        })?;
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// The records section `data` compressed with `codec`, inflated (at most `limit` bytes).
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        0 if data.len() > limit => Err(CodecError::TooLarge(limit)),
        0 => Ok(data.to_vec()),
        1 => read_bounded(flate2::read::MultiGzDecoder::new(data), limit, "gzip"),
        2 => unsnappy(data, limit),
        3 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit, "lz4"),
        4 => {
            let d = zstd::stream::read::Decoder::new(data).map_err(failed("zstd"))?;
            read_bounded(d, limit, "zstd")
        }
        c => Err(CodecError::Unknown(c)),
    }
}

/// `data` compressed with `codec` (0 leaves it as it is).
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data)
                .and_then(|()| e.finish())
                .map_err(failed("gzip"))
        }
        2 => snappy(data),
        3 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).map_err(failed("lz4"))?;
            e.finish().map_err(|e| CodecError::Failed {
                codec: "lz4",
                detail: e.to_string(),
            })
        }
        4 => zstd::bulk::compress(data, 3).map_err(failed("zstd")),
        c => Err(CodecError::Unknown(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_stays_bounded() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in 0..=4 {
            let c = compress(codec, &data).unwrap();
            assert_eq!(
                decompress(codec, &c, data.len()).unwrap(),
                data,
                "codec {codec}"
            );
            assert!(
                matches!(
                    decompress(codec, &c, data.len() - 1),
                    Err(CodecError::TooLarge(_))
                ),
                "codec {codec} must refuse to inflate past its limit"
            );
        }
        assert!(matches!(
            decompress(5, &data, 1 << 30),
            Err(CodecError::Unknown(5))
        ));
        assert!(decompress(1, b"not gzip", 1 << 20).is_err());
    }

    #[test]
    fn reads_raw_snappy_and_kafkas_framing() {
        let data = b"hello hello hello hello".repeat(3000);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(2, &raw, 1 << 20).unwrap(), data);
        let framed = compress(2, &data).unwrap();
        assert!(framed.starts_with(XERIAL_MAGIC));
        assert_eq!(decompress(2, &framed, 1 << 20).unwrap(), data);
    }
}
