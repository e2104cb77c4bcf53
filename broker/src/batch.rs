//! RecordBatch v2 ("magic 2") header handling, sans-io.
//!
//! The broker never decodes individual records on the hot path: it checks the batch
//! header and CRC32C, then stores the bytes as received, only rewriting `baseOffset`
//! (which the CRC does not cover). Layout (all big-endian):
//!
//! ```text
//! 0  baseOffset int64        | 8  batchLength int32   | 12 partitionLeaderEpoch int32
//! 16 magic int8              | 17 crc uint32 (CRC32C of bytes 21..end)
//! 21 attributes int16        | 23 lastOffsetDelta int32 | 27 baseTimestamp int64
//! 35 maxTimestamp int64      | 43 producerId int64    | 51 producerEpoch int16
//! 53 baseSequence int32      | 57 recordCount int32   | 61 records...
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Offset of the `magic` byte; the same in every message format, so old formats are detected.
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
/// Attribute bit of a transactional batch.
pub(crate) const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch.
pub(crate) const CONTROL: i16 = 0x20;
/// Attribute bit: timestamps are LogAppendTime.
pub(crate) const LOG_APPEND_TIME: i16 = 0x08;
/// Smallest possible encoded record (length, attributes, 2 deltas, key/value lengths, header count).
const MIN_RECORD_LEN: usize = 7;

/// Why a batch was refused. Each maps to the Kafka error code a client understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a header, or `batchLength` disagrees with the bytes present.
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    /// The CRC32C does not match.
    #[error("CRC mismatch: batch says {expected:#010x}, bytes give {actual:#010x}")]
    Crc {
        /// CRC in the header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// Message format v0/v1 (or something else entirely).
    #[error("unsupported message format (magic {0}); only RecordBatch v2 is accepted")]
    Magic(i8),
    /// The batch is bigger than `--max-message-bytes`.
    #[error("batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge {
        /// Batch size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Structurally fine but not acceptable (counts, control/transactional bits, codec).
    #[error("invalid batch: {0}")]
    Invalid(String),
}

impl BatchError {
    /// The Kafka error code for this failure.
    pub fn code(&self) -> i16 {
        use kafka_protocol::ResponseError as E;
        match self {
            BatchError::Corrupt(_) | BatchError::Crc { .. } => E::CorruptMessage.code(),
            BatchError::Magic(_) => E::UnsupportedVersion.code(),
            BatchError::TooLarge { .. } => E::MessageTooLarge.code(),
            BatchError::Invalid(_) => E::InvalidRecord.code(),
        }
    }
}

/// The header fields the broker needs, read from a validated batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Total size of the batch in bytes.
    pub size: usize,
    /// Compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub codec: u8,
    /// `lastOffsetDelta`: the batch covers offsets `base ..= base + last_offset_delta`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (CreateTime).
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when not idempotent.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when not idempotent.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
    /// Part of a transaction (attribute bit 4).
    pub transactional: bool,
    /// A control batch: a transaction marker written by the broker (attribute bit 5).
    pub control: bool,
    /// LogAppendTime (attribute bit 3): every record's timestamp is `max_timestamp`.
    pub log_append_time: bool,
}

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut s = &b[at..at + 8];
    s.get_i64()
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut s = &b[at..at + 4];
    s.get_i32()
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    let mut s = &b[at..at + 2];
    s.get_i16()
}

/// Reads the header of a stored (already validated) batch. `None` if `b` is too short.
pub fn info(b: &[u8]) -> Option<BatchInfo> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let attributes = be_i16(b, ATTRIBUTES_AT);
    Some(BatchInfo {
        size: b.len(),
        codec: (attributes & 0x07) as u8,
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        record_count: be_i32(b, 57),
        transactional: attributes & TRANSACTIONAL != 0,
        control: attributes & CONTROL != 0,
        log_append_time: attributes & LOG_APPEND_TIME != 0,
    })
}

/// The CRC a whole batch (at least [`HEADER_LEN`] bytes) carries, and the one its bytes have.
pub(crate) fn crcs(b: &[u8]) -> (u32, u32) {
    (
        be_i32(b, CRC_AT) as u32,
        crc32c::crc32c(&b[ATTRIBUTES_AT..]),
    )
}

/// Whether `b` (at least [`HEADER_LEN`] bytes) says it is a RecordBatch v2.
pub(crate) fn is_v2(b: &[u8]) -> bool {
    b[MAGIC_AT] == 2
}

/// Base offset of a stored batch. Panics never: `None` if too short.
pub fn base_offset(b: &[u8]) -> Option<i64> {
    (b.len() >= 8).then(|| be_i64(b, 0))
}

/// Validates the `records` field of one produce partition: exactly one RecordBatch v2,
/// consistent lengths, a matching CRC32C, sane counts, no control batches, transactional
/// ones only from a producer id, a known codec, and at most `max_bytes` bytes. Whether a
/// transactional batch belongs to an open transaction is for the transaction coordinator.
pub fn validate(records: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    if records.len() > MAGIC_AT {
        let magic = records[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
    }
    if records.len() < HEADER_LEN {
        return Err(BatchError::Corrupt(format!(
            "{} bytes, a RecordBatch header alone is {HEADER_LEN}",
            records.len()
        )));
    }
    let batch_length = be_i32(records, 8);
    let declared = (batch_length as i64) + 12;
    if batch_length < 0 || declared != records.len() as i64 {
        return Err(BatchError::Corrupt(format!(
            "batchLength {batch_length} does not match the {} bytes sent (exactly one batch per partition is accepted)",
            records.len()
        )));
    }
    if records.len() > max_bytes {
        return Err(BatchError::TooLarge {
            size: records.len(),
            limit: max_bytes,
        });
    }
    let (expected, actual) = crcs(records);
    if expected != actual {
        return Err(BatchError::Crc { expected, actual });
    }
    let info = info(records).ok_or_else(|| BatchError::Corrupt("short header".into()))?;
    if info.codec > 4 {
        return Err(BatchError::Invalid(format!(
            "unknown compression codec {}",
            info.codec
        )));
    }
    if info.transactional && info.producer_id < 0 {
        return Err(BatchError::Invalid(
            "a transactional batch without a producer id".into(),
        ));
    }
    if info.control {
        return Err(BatchError::Invalid(
            "control batches may not be produced by clients".into(),
        ));
    }
    if info.record_count < 1 || info.last_offset_delta != info.record_count - 1 {
        return Err(BatchError::Invalid(format!(
            "record count {} and lastOffsetDelta {} disagree",
            info.record_count, info.last_offset_delta
        )));
    }
    // A record takes at least MIN_RECORD_LEN bytes uncompressed; compressed payloads can
    // be smaller than their records, so only uncompressed counts are bounded here.
    let payload = records.len() - HEADER_LEN;
    if info.codec == 0 && (info.record_count as usize).saturating_mul(MIN_RECORD_LEN) > payload {
        return Err(BatchError::Invalid(format!(
            "{} records cannot fit in {payload} bytes",
            info.record_count
        )));
    }
    if info.codec == 0 {
        check_record_lengths(&records[HEADER_LEN..], info.record_count)?;
    }
    Ok(info)
}

/// An uncompressed batch holds exactly `count` length-prefixed records, each inside the
/// bytes sent, and nothing after them (what a consumer will walk must be walkable).
fn check_record_lengths(payload: &[u8], count: i32) -> Result<(), BatchError> {
    let mut rest = payload;
    for i in 0..count {
        let len = read_varint(&mut rest)
            .ok_or_else(|| BatchError::Corrupt(format!("record {i}: bad length varint")))?;
        if len < MIN_RECORD_LEN as i64 - 1 || len as u64 > rest.len() as u64 {
            return Err(BatchError::Corrupt(format!(
                "record {i}: length {len} with {} bytes left",
                rest.len()
            )));
        }
        rest = &rest[len as usize..];
    }
    if !rest.is_empty() {
        return Err(BatchError::Corrupt(format!(
            "{} bytes after the last of {count} records",
            rest.len()
        )));
    }
    Ok(())
}

/// Copies a validated batch into a buffer that storage can own, with `baseOffset`
/// set to `base` and `partitionLeaderEpoch` to 0. The CRC stays valid: it covers
/// neither field.
pub fn with_base_offset(batch: &[u8], base: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(batch.len());
    out.put_i64(base);
    out.put_slice(&batch[8..12]);
    out.put_i32(0);
    out.put_slice(&batch[16..]);
    out.freeze()
}

/// Walks the records of an uncompressed batch and returns `(offset, timestamp)` of the
/// first record whose timestamp is `>= target`. `None` if no record qualifies or the
/// records cannot be walked (compressed or malformed).
pub fn first_record_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let info = info(batch)?;
    if info.codec != 0 {
        return None;
    }
    let base = base_offset(batch)?;
    let mut rest = &batch[HEADER_LEN..];
    for _ in 0..info.record_count {
        let len = read_varint(&mut rest)?;
        if len < 0 || len as usize > rest.len() {
            return None;
        }
        let (mut record, tail) = rest.split_at(len as usize);
        rest = tail;
        if record.is_empty() {
            return None;
        }
        record = &record[1..]; // attributes
        let ts_delta = read_varint(&mut record)?;
        let offset_delta = read_varint(&mut record)?;
        let ts = info.base_timestamp.saturating_add(ts_delta);
        if ts >= target {
            return Some((base + offset_delta, ts));
        }
    }
    None
}

/// Zig-zag varint (Kafka `varint`/`varlong`), at most 10 bytes.
pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// No idempotent producer: producer id -1, epoch -1, sequence -1.
pub const NO_PRODUCER: (i64, i16, i32) = (-1, -1, -1);

pub(crate) fn write_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// Encodes an uncompressed RecordBatch v2 of `values` (null keys, no headers) with record
/// timestamps `base_timestamp + i * timestamp_step`, from `producer` = (id, epoch, base
/// sequence), for tools and tests that speak the protocol directly.
pub fn uncompressed_batch(
    values: &[&[u8]],
    base_timestamp: i64,
    timestamp_step: i64,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        write_varint(&mut r, i as i64 * timestamp_step);
        write_varint(&mut r, i as i64);
        write_varint(&mut r, -1); // null key
        write_varint(&mut r, v.len() as i64);
        r.extend_from_slice(v);
        write_varint(&mut r, 0); // headers
        write_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let n = values.len() as i32;
    let max_timestamp = base_timestamp + (i64::from(n) - 1).max(0) * timestamp_step;
    let timestamps = (base_timestamp, max_timestamp);
    batch_of_records(&records, n, 0, timestamps, producer)
}

/// Wraps an already encoded records section (compressed with `codec` 1-4, or plain with
/// 0) holding `count` records in a RecordBatch v2 header with a correct CRC.
pub fn batch_of_records(
    records: &[u8],
    count: i32,
    codec: i16,
    (base_timestamp, max_timestamp): (i64, i64),
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(HEADER_LEN + records.len());
    b.put_i64(0);
    b.put_i32((HEADER_LEN - 12 + records.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(codec);
    b.put_i32(count - 1);
    b.put_i64(base_timestamp);
    b.put_i64(max_timestamp);
    b.put_i64(producer.0);
    b.put_i16(producer.1);
    b.put_i32(producer.2);
    b.put_i32(count);
    b.put_slice(records);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b.to_vec()
}

/// Marks an encoded batch (at least [`HEADER_LEN`] bytes) as transactional and fixes its
/// CRC, for tools and tests that speak the protocol directly.
pub fn set_transactional(b: &mut [u8]) {
    let attributes = be_i16(b, ATTRIBUTES_AT) | TRANSACTIONAL;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid uncompressed batch of `values` with timestamps `ts0 + i * step`.
    pub(crate) fn make_batch(values: &[&[u8]], ts0: i64, step: i64) -> Vec<u8> {
        super::uncompressed_batch(values, ts0, step, NO_PRODUCER)
    }

    #[test]
    fn accepts_a_valid_batch_and_reads_its_header() {
        let b = make_batch(&[b"a", b"bb", b"ccc"], 1000, 10);
        let info = validate(&b, 1 << 20).expect("valid");
        assert_eq!(info.record_count, 3);
        assert_eq!(info.last_offset_delta, 2);
        assert_eq!(info.max_timestamp, 1020);
        assert_eq!(info.producer_id, -1);
    }

    #[test]
    fn rejects_bad_crc_magic_length_and_size() {
        let good = make_batch(&[b"hello"], 0, 0);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert!(matches!(
            validate(&bad_crc, 1 << 20),
            Err(BatchError::Crc { .. })
        ));

        let mut v1 = good.clone();
        v1[MAGIC_AT] = 1;
        assert_eq!(validate(&v1, 1 << 20), Err(BatchError::Magic(1)));

        assert!(matches!(
            validate(&good[..40], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert!(matches!(
            validate(&two, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));

        assert!(matches!(
            validate(&good, 10),
            Err(BatchError::TooLarge { .. })
        ));
        assert_eq!(validate(&good, 10).unwrap_err().code(), 10);
    }

    #[test]
    fn rejects_counts_larger_than_the_bytes() {
        let mut b = make_batch(&[b"x"], 0, 0);
        // claim a million records, keep lastOffsetDelta consistent, fix the CRC
        b[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
        b[23..27].copy_from_slice(&999_999i32.to_be_bytes());
        fix_crc(&mut b);
        assert!(matches!(validate(&b, 1 << 20), Err(BatchError::Invalid(_))));
    }

    fn fix_crc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn rejects_records_that_do_not_add_up_to_the_payload() {
        // Three records of which the second claims to be longer than what follows.
        let mut b = make_batch(&[b"aaaaaaaaaa", b"bbbbbbbbbb", b"cc"], 0, 0);
        let second = HEADER_LEN + 1 + (b[HEADER_LEN] as usize >> 1);
        b[second] = 60 << 1; // 60 bytes, more than the two records left
        fix_crc(&mut b);
        let e = validate(&b, 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::Corrupt(_)), "{e}");
        // Two honest records declared as one: bytes left over.
        let mut b = make_batch(&[b"aaaaaaaaaa", b"bbbbbbbbbb"], 0, 0);
        b[57..61].copy_from_slice(&1i32.to_be_bytes());
        b[23..27].copy_from_slice(&0i32.to_be_bytes());
        fix_crc(&mut b);
        let e = validate(&b, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("after the last of 1 records"), "{e}");
    }

    #[test]
    fn rewrites_base_offset_keeping_crc_valid() {
        let b = make_batch(&[b"a", b"b"], 5, 1);
        let stored = with_base_offset(&b, 42);
        assert_eq!(base_offset(&stored), Some(42));
        assert!(validate(&stored, 1 << 20).is_ok());
    }

    #[test]
    fn finds_first_record_by_timestamp() {
        let mut b = make_batch(&[b"a", b"b", b"c"], 100, 100);
        b[0..8].copy_from_slice(&10i64.to_be_bytes());
        assert_eq!(first_record_at_or_after(&b, 0), Some((10, 100)));
        assert_eq!(first_record_at_or_after(&b, 150), Some((11, 200)));
        assert_eq!(first_record_at_or_after(&b, 300), Some((12, 300)));
        assert_eq!(first_record_at_or_after(&b, 301), None);
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = validate(&bytes, 1 << 20);
            let _ = first_record_at_or_after(&bytes, 0);
            let _ = info(&bytes);
        }
    }
}
