//! Bounded reads of a partition's records, decoded, for consoles and tests: from an
//! offset, a timestamp or the tail, at most [`MAX_LIMIT`] records and about
//! [`READ_BUDGET`] bytes of stored batches per call, so no call scans a whole topic.
//! Control records of transactions are left out and aborted ones kept (read_uncommitted,
//! as `kcat` shows them).

use crate::batch;
use crate::cleaner::records;
use crate::error::StorageError;
use crate::view::BrokerView;

/// Most records one call returns.
pub const MAX_LIMIT: usize = 1000;
/// Stored bytes one call reads at most (at least one batch).
pub const READ_BUDGET: usize = 4 << 20;
/// Largest inflated size of one compressed batch.
const INFLATE_LIMIT: usize = 64 << 20;

/// One record as a consumer would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (milliseconds since the epoch).
    pub timestamp: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers in order: key and value (`None`: null).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset (the log start if it is older).
    Offset(i64),
    /// At the first record with a timestamp at or after this one (ms since the epoch).
    Timestamp(i64),
    /// This many offsets before the high watermark.
    Tail(i64),
}

/// What one read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The offset the read started at (after resolving a timestamp or the tail).
    pub from: i64,
    /// The records, in offset order.
    pub records: Vec<Record>,
    /// Where the next read continues.
    pub next_offset: i64,
    /// The partition's first offset.
    pub log_start: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The log could not be read, or the partition does not exist.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored batch does not decode.
    #[error("{topic}/{partition} offset {offset}: {detail}")]
    Records {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The batch's base offset.
        offset: i64,
        /// What is wrong.
        detail: String,
    },
}

impl BrokerView {
    /// Up to `limit` (at most [`MAX_LIMIT`]) records of `topic`'s `partition` from `start`,
    /// reading about [`READ_BUDGET`] bytes at most.
    pub fn browse(
        &self,
        topic: &str,
        partition: i32,
        start: Start,
        limit: usize,
    ) -> Result<Page, BrowseError> {
        let p = self.partition(topic, partition)?;
        let (log_start, hw) = (p.log.log_start_offset(), p.high_watermark());
        let from = match start {
            Start::Offset(o) => o.max(log_start),
            Start::Tail(n) => (hw - n.max(0)).max(log_start),
            Start::Timestamp(ts) => p.log.offset_for_timestamp(ts)?.map_or(hw, |(o, _)| o),
        };
        let limit = limit.min(MAX_LIMIT);
        let mut page = Page {
            from,
            records: Vec::new(),
            next_offset: from,
            log_start,
            high_watermark: hw,
        };
        let mut read = 0;
        while page.records.len() < limit && page.next_offset < hw && read < READ_BUDGET {
            let chunks = p.log.read(page.next_offset, hw, READ_BUDGET - read)?;
            if chunks.is_empty() {
                break;
            }
            for chunk in &chunks {
                read += chunk.len();
                page.next_offset = decode_into(chunk, page.next_offset, &mut page.records)
                    .map_err(|(offset, detail)| BrowseError::Records {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        detail,
                    })?;
            }
        }
        if page.records.len() > limit {
            page.records.truncate(limit);
            page.next_offset = page.records.last().map_or(from, |r| r.offset + 1);
        }
        Ok(page)
    }
}

/// Appends the records of the batches in `chunk` at or above `from` to `out`; returns
/// the offset after the last batch, or the failing batch's base offset and the reason.
pub(crate) fn decode_into(
    chunk: &[u8],
    from: i64,
    out: &mut Vec<Record>,
) -> Result<i64, (i64, String)> {
    let mut rest = chunk;
    let mut next = from;
    while rest.len() >= batch::HEADER_LEN {
        let len = 12 + batch::be_i32(rest, 8).max(0) as usize;
        let (b, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let base = batch::base_offset(b).unwrap_or(next);
        let info = batch::info(b).ok_or((base, "a batch too short".to_string()))?;
        next = next.max(base + i64::from(info.last_offset_delta) + 1);
        if info.control {
            continue;
        }
        let recs = records::decode(b, INFLATE_LIMIT).map_err(|e| (base, e.to_string()))?;
        for r in &recs.recs {
            let offset = base + r.offset_delta;
            if offset < from {
                continue;
            }
            let headers = recs.headers(r).map_err(|e| (base, e.to_string()))?;
            out.push(Record {
                offset,
                timestamp: if info.log_append_time {
                    info.max_timestamp
                } else {
                    info.base_timestamp + r.timestamp_delta
                },
                key: recs.key(r).map(<[u8]>::to_vec),
                value: recs.value(r).map(<[u8]>::to_vec),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.map(<[u8]>::to_vec),
                        )
                    })
                    .collect(),
            });
        }
    }
    Ok(next)
}
