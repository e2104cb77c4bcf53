//! A stored batch's records as the cleaner sees them, and the batch rewritten with a
//! subset of them. A rewritten batch keeps its base offset, `lastOffsetDelta`, producer
//! fields, base sequence and codec (as Kafka's cleaner does), so offsets and the
//! idempotent producers' sequence ranges stay as they were. A record's bytes are copied as
//! they are, except its timestamp delta when the batch gets a delete horizon (KIP-534: the
//! base timestamp then holds the horizon, and attribute bit 6 says so).

use std::ops::Range;

use super::codec::{self, CodecError};
use crate::batch::{be_i32, be_i64, read_varint, write_varint, HEADER_LEN, LOG_APPEND_TIME};

/// Attribute bit: the base timestamp is the batch's delete horizon (KIP-534).
pub const DELETE_HORIZON: i16 = 0x40;

/// Why a batch's records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The codec failed or the records inflate too far.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The records do not parse.
    #[error("malformed records: {0}")]
    Malformed(&'static str),
}

/// One record: where it lies in [`Records::data`] and what the cleaner decides on.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i64,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Its key, if any.
    pub key: Option<Range<usize>>,
    /// A null value: a tombstone.
    pub tombstone: bool,
    /// Its value, if not null.
    value: Option<Range<usize>>,
    /// The headers section (count and headers).
    headers: Range<usize>,
    attributes: u8,
    /// The record from its offset delta to its end.
    tail: Range<usize>,
}

/// A batch's records, decompressed.
pub struct Records {
    /// The uncompressed records section.
    pub data: Vec<u8>,
    /// The records in order.
    pub recs: Vec<Rec>,
}

impl Records {
    /// The key bytes of `r`.
    pub fn key(&self, r: &Rec) -> Option<&[u8]> {
        r.key.clone().map(|k| &self.data[k])
    }

    /// The value bytes of `r` (`None`: a tombstone).
    pub fn value(&self, r: &Rec) -> Option<&[u8]> {
        r.value.clone().map(|v| &self.data[v])
    }

    /// The headers of `r`, in order: key and value (`None`: a null value).
    pub fn headers(&self, r: &Rec) -> Result<Vec<Header<'_>>, RecordsError> {
        let mut rest = &self.data[r.headers.clone()];
        let count = varint(&mut rest, "header count")?;
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(rest.len()));
        for _ in 0..count.max(0) {
            let key = bytes(&mut rest, "header key")?
                .ok_or(RecordsError::Malformed("null header key"))?;
            let value = bytes(&mut rest, "header value")?;
            out.push((key, value));
        }
        Ok(out)
    }
}

/// A record header: its key and its value (`None`: null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// A varint-length-prefixed byte string (`None`: length -1).
fn bytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<Option<&'a [u8]>, RecordsError> {
    let len = varint(buf, what)?;
    let Ok(n) = usize::try_from(len) else {
        return Ok(None);
    };
    if n > buf.len() {
        return Err(RecordsError::Malformed(what));
    }
    let (b, rest) = buf.split_at(n);
    *buf = rest;
    Ok(Some(b))
}

fn varint(buf: &mut &[u8], what: &'static str) -> Result<i64, RecordsError> {
    read_varint(buf).ok_or(RecordsError::Malformed(what))
}

fn parse_record(data: &[u8], at: usize, len: usize) -> Result<Rec, RecordsError> {
    let body = data
        .get(at..at + len)
        .ok_or(RecordsError::Malformed("record runs past the batch"))?;
    let (&attributes, mut rest) = body
        .split_first()
        .ok_or(RecordsError::Malformed("empty record"))?;
    let timestamp_delta = varint(&mut rest, "timestamp delta")?;
    let tail_at = at + len - rest.len();
    let offset_delta = varint(&mut rest, "offset delta")?;
    let key_len = varint(&mut rest, "key length")?;
    let key = if key_len < 0 {
        None
    } else {
        let n = usize::try_from(key_len).map_err(|_| RecordsError::Malformed("key length"))?;
        if n > rest.len() {
            return Err(RecordsError::Malformed("key runs past the record"));
        }
        let k = at + len - rest.len();
        rest = &rest[n..];
        Some(k..k + n)
    };
    let value_len = varint(&mut rest, "value length")?;
    let value = match usize::try_from(value_len) {
        Ok(n) if n <= rest.len() => {
            let v = at + len - rest.len();
            rest = &rest[n..];
            Some(v..v + n)
        }
        Ok(_) => return Err(RecordsError::Malformed("value runs past the record")),
        Err(_) => None,
    };
    Ok(Rec {
        offset_delta,
        timestamp_delta,
        key,
        tombstone: value_len < 0,
        value,
        headers: at + len - rest.len()..at + len,
        attributes,
        tail: tail_at..at + len,
    })
}

/// The records of stored batch `batch`, inflated to at most `limit` bytes.
pub fn decode(batch: &[u8], limit: usize) -> Result<Records, RecordsError> {
    if batch.len() < HEADER_LEN {
        return Err(RecordsError::Malformed("shorter than a batch header"));
    }
    let codec = batch[22] & 0x07;
    let count = be_i32(batch, 57);
    let data = codec::decompress(codec, &batch[HEADER_LEN..], limit)?;
    let mut recs = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(data.len()));
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let len = varint(&mut rest, "record length")?;
        let len = usize::try_from(len).map_err(|_| RecordsError::Malformed("record length"))?;
        let at = data.len() - rest.len();
        recs.push(parse_record(&data, at, len)?);
        rest = &rest[len.min(rest.len())..];
    }
    if recs.len() != usize::try_from(count).unwrap_or(usize::MAX) {
        return Err(RecordsError::Malformed(
            "record count differs from the header",
        ));
    }
    Ok(Records { data, recs })
}

/// The batch's delete horizon, if it has one (its base timestamp, when bit 6 is set).
pub fn delete_horizon(batch: &[u8]) -> Option<i64> {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    (attributes & DELETE_HORIZON != 0).then(|| be_i64(batch, 27))
}

/// `batch` holding only the records of `records` that `keep` selects (by index), with
/// delete horizon `horizon` when given (else the batch's own, if any). Everything else in
/// the header stays, but the record count, length and CRC, and the max timestamp of a
/// CreateTime batch, which is that of the records kept (the original one when none is).
pub fn rewrite(
    batch: &[u8],
    records: &Records,
    keep: &[bool],
    horizon: Option<i64>,
) -> Result<Vec<u8>, RecordsError> {
    let mut attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let old_base_ts = be_i64(batch, 27);
    let new_base_ts = horizon.unwrap_or(old_base_ts);
    if horizon.is_some() {
        attributes |= DELETE_HORIZON;
    }
    let mut data = Vec::with_capacity(records.data.len());
    let mut max_ts: Option<i64> = None;
    let mut count = 0i32;
    let mut body = Vec::new();
    for (r, _) in records.recs.iter().zip(keep).filter(|(_, k)| **k) {
        let ts = old_base_ts.wrapping_add(r.timestamp_delta);
        max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
        body.clear();
        body.push(r.attributes);
        write_varint(&mut body, ts.wrapping_sub(new_base_ts));
        body.extend_from_slice(&records.data[r.tail.clone()]);
        write_varint(&mut data, body.len() as i64);
        data.extend_from_slice(&body);
        count += 1;
    }
    let codec = (attributes & 0x07) as u8;
    let section = codec::compress(codec, &data)?;
    let max_ts = match max_ts {
        Some(ts) if attributes & LOG_APPEND_TIME == 0 => ts,
        _ => be_i64(batch, 35),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + section.len());
    out.extend_from_slice(&batch[..8]);
    out.extend_from_slice(&((HEADER_LEN - 12 + section.len()) as i32).to_be_bytes());
    out.extend_from_slice(&batch[12..17]);
    out.extend_from_slice(&[0; 4]); // CRC, below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&batch[23..27]);
    out.extend_from_slice(&new_base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&batch[43..57]);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&section);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// A test record: key and value (`None`: a tombstone).
#[cfg(test)]
pub(crate) type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds a batch of keyed records for tests: `(key, value)` pairs (value `None`: a
/// tombstone), offsets `base..`, timestamps `ts0 + i`, compressed with `codec`.
#[cfg(test)]
pub(crate) fn keyed_batch(
    base: i64,
    pairs: &[KeyValue],
    ts0: i64,
    codec: u8,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let mut data = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let mut r = vec![0u8];
        write_varint(&mut r, i as i64);
        write_varint(&mut r, i as i64);
        for part in [k, v] {
            match part {
                Some(b) => {
                    write_varint(&mut r, b.len() as i64);
                    r.extend_from_slice(b);
                }
                None => write_varint(&mut r, -1),
            }
        }
        write_varint(&mut r, 0);
        write_varint(&mut data, r.len() as i64);
        data.extend_from_slice(&r);
    }
    let section = codec::compress(codec, &data).unwrap_or_default();
    let n = pairs.len() as i32;
    let mut b = crate::batch::batch_of_records(
        &section,
        n,
        i16::from(codec),
        (ts0, ts0 + i64::from(n - 1).max(0)),
        producer,
    );
    b[..8].copy_from_slice(&base.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{self, NO_PRODUCER};

    #[test]
    fn a_rewritten_batch_keeps_offsets_sequences_and_timestamps() {
        for codec in 0..=4u8 {
            let pairs: [KeyValue; 3] = [
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (Some(b"a"), Some(b"3")),
            ];
            let b = keyed_batch(100, &pairs, 5_000, codec, (7, 2, 40));
            let recs = decode(&b, 1 << 20).unwrap();
            assert_eq!(recs.recs.len(), 3);
            assert_eq!(recs.key(&recs.recs[1]), Some(&b"b"[..]));
            assert!(recs.recs[1].tombstone && !recs.recs[0].tombstone);
            let out = rewrite(&b, &recs, &[false, true, true], Some(90_000)).unwrap();
            let info = batch::info(&out).unwrap();
            let (stored, actual) = batch::crcs(&out);
            assert_eq!(stored, actual);
            assert_eq!(batch::base_offset(&out), Some(100));
            assert_eq!((info.last_offset_delta, info.record_count), (2, 2));
            assert_eq!(
                (info.producer_id, info.producer_epoch, info.base_sequence),
                (7, 2, 40)
            );
            assert_eq!((info.codec, info.max_timestamp), (codec, 5_002));
            assert_eq!(delete_horizon(&out), Some(90_000));
            let again = decode(&out, 1 << 20).unwrap();
            let got: Vec<(i64, i64)> = again
                .recs
                .iter()
                .map(|r| (r.offset_delta, 90_000 + r.timestamp_delta))
                .collect();
            assert_eq!(got, [(1, 5_001), (2, 5_002)]);
            assert_eq!(again.key(&again.recs[1]), Some(&b"a"[..]));
        }
    }

    #[test]
    fn an_empty_rewrite_keeps_the_header_and_bad_records_are_refused() {
        let b = keyed_batch(0, &[(Some(b"k"), Some(b"v"))], 10, 0, NO_PRODUCER);
        let recs = decode(&b, 1 << 20).unwrap();
        let empty = rewrite(&b, &recs, &[false], None).unwrap();
        let info = batch::info(&empty).unwrap();
        assert_eq!(
            (
                info.record_count,
                info.last_offset_delta,
                info.max_timestamp
            ),
            (0, 0, 10)
        );
        assert_eq!(delete_horizon(&empty), None);
        let mut cut = b.clone();
        cut.truncate(cut.len() - 2);
        assert!(decode(&cut, 1 << 20).is_err());
        assert!(matches!(
            decode(&b, 3),
            Err(RecordsError::Codec(CodecError::TooLarge(3)))
        ));
    }
}
