//! A batch's good rows in PostgreSQL's binary COPY format, and loading them so that a row
//! PostgreSQL refuses for its content goes to the dead-letter table instead of stopping
//! the pipeline.
//!
//! The rows of a batch are one buffer sent as a few large CopyData messages. Each row also
//! remembers where it came from (partition, offset, key and raw value), so that when COPY
//! fails on a row's content (see [`crate::pgerror`]) the batch is loaded again in the same
//! transaction in pieces, each under a savepoint, splitting the piece that fails until the
//! refused rows are single rows: those become dead letters with PostgreSQL's message, every
//! other row loads, and the batch still commits with its offsets.

use std::pin::pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Transaction;

use crate::pgerror::{self, Kind};
use crate::sink::DeadLetter;

/// Binary COPY signature, flags and header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Binary COPY trailer: a tuple with -1 fields.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];
/// CopyData messages of at most this size (PostgreSQL accepts larger ones; this keeps the
/// connection's buffers small).
const COPY_PIECE: usize = 256 * 1024;

/// Where a row came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<&'a [u8]>,
    /// Message value.
    pub value: Option<&'a [u8]>,
}

/// One row's place in the buffers.
#[derive(Debug, Clone, Copy)]
struct RowRef {
    /// Start of the encoded row in `CopyRows::buf`.
    at: usize,
    partition: i32,
    offset: i64,
    /// Start of the key then the value in `CopyRows::raw`.
    raw_at: usize,
    key_len: Option<u32>,
    value_len: Option<u32>,
}

/// Good rows of a batch (`amount float8, description text`), already encoded.
#[derive(Debug, Default)]
pub struct CopyRows {
    buf: Vec<u8>,
    rows: Vec<RowRef>,
    raw: Vec<u8>,
}

impl CopyRows {
    /// Appends one row. A description longer than PostgreSQL's 1 GB field limit cannot come
    /// from a Kafka message, so the length always fits.
    pub fn push(&mut self, amount: f64, description: &str, origin: Origin<'_>) {
        if self.buf.is_empty() {
            self.buf.reserve(64 * 1024);
        }
        let len = i32::try_from(description.len()).unwrap_or(i32::MAX);
        let at = self.buf.len();
        self.buf.extend_from_slice(&2i16.to_be_bytes());
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&amount.to_bits().to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(description.as_bytes());
        let raw_at = self.raw.len();
        let mut keep = |b: Option<&[u8]>| {
            b.map(|b| {
                self.raw.extend_from_slice(b);
                u32::try_from(b.len()).unwrap_or(u32::MAX)
            })
        };
        let key_len = keep(origin.key);
        let value_len = keep(origin.value);
        self.rows.push(RowRef {
            at,
            partition: origin.partition,
            offset: origin.offset,
            raw_at,
            key_len,
            value_len,
        });
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The complete COPY stream (header, rows, trailer), for tests.
    #[cfg(test)]
    fn stream(&self) -> Vec<u8> {
        [COPY_HEADER, &self.buf, COPY_TRAILER].concat()
    }

    /// Makes the rows ready to send: one shared buffer that pieces are cut from.
    pub(crate) fn freeze(self) -> FrozenRows {
        FrozenRows {
            buf: Bytes::from(self.buf),
            rows: self.rows,
            raw: self.raw,
        }
    }
}

/// [`CopyRows`] after encoding, sliced without copying.
pub(crate) struct FrozenRows {
    buf: Bytes,
    rows: Vec<RowRef>,
    raw: Vec<u8>,
}

impl FrozenRows {
    /// Whether no row is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes of rows `lo..hi`.
    fn range(&self, lo: usize, hi: usize) -> Bytes {
        let start = self.rows.get(lo).map_or(self.buf.len(), |r| r.at);
        let end = self.rows.get(hi).map_or(self.buf.len(), |r| r.at);
        self.buf.slice(start..end)
    }

    /// Row `i` as a dead letter refused with `error`.
    fn dead_letter(&self, i: usize, topic: &str, error: String) -> Option<DeadLetter> {
        let r = self.rows.get(i)?;
        let key_end = r.raw_at + r.key_len.unwrap_or(0) as usize;
        let value_end = key_end + r.value_len.unwrap_or(0) as usize;
        Some(DeadLetter {
            topic: topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            key: r
                .key_len
                .and(self.raw.get(r.raw_at..key_end))
                .map(<[u8]>::to_vec),
            value: r
                .value_len
                .and(self.raw.get(key_end..value_end))
                .map(<[u8]>::to_vec),
            error,
        })
    }
}

/// Sends rows `lo..hi` as one COPY.
async fn copy_range(
    tx: &Transaction<'_>,
    sql: &str,
    rows: &FrozenRows,
    lo: usize,
    hi: usize,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    let mut sink = pin!(sink);
    sink.as_mut().send(Bytes::from_static(COPY_HEADER)).await?;
    let mut data = rows.range(lo, hi);
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(COPY_PIECE));
        sink.as_mut().send(piece).await?;
    }
    sink.as_mut().send(Bytes::from_static(COPY_TRAILER)).await?;
    sink.as_mut().finish().await
}

/// `COPY table (amount, description) FROM STDIN BINARY`.
pub(crate) fn copy_sql(quoted_table: &str) -> String {
    format!("COPY {quoted_table} (amount, description) FROM STDIN BINARY")
}

/// Loads every row in one COPY: the fast path. A row error aborts the transaction; the
/// caller then starts a new one and calls [`copy_sorting_out`].
pub(crate) async fn copy_all(
    tx: &Transaction<'_>,
    sql: &str,
    rows: &FrozenRows,
) -> Result<u64, tokio_postgres::Error> {
    copy_range(tx, sql, rows, 0, rows.rows.len()).await
}

/// Loads the rows in pieces under savepoints, splitting a piece whose COPY PostgreSQL
/// refuses for a row's content, down to single rows, which come back as dead letters
/// (in offset order). `hint` is the row the first attempt failed on, if PostgreSQL named
/// it: the split starts there. Errors other than row errors end the attempt.
pub(crate) async fn copy_sorting_out(
    tx: &Transaction<'_>,
    sql: &str,
    rows: &FrozenRows,
    topic: &str,
    hint: Option<usize>,
) -> Result<Vec<DeadLetter>, tokio_postgres::Error> {
    let mut refused = Vec::new();
    // Pieces still to load, the next one on top; processed in row order.
    let mut todo = split(0, rows.rows.len(), hint);
    todo.reverse();
    while let Some((lo, hi)) = todo.pop() {
        tx.batch_execute("SAVEPOINT finstream_rows").await?;
        match copy_range(tx, sql, rows, lo, hi).await {
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT finstream_rows").await?,
            Err(e) if pgerror::kind(&e) == Kind::Row => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT finstream_rows")
                    .await?;
                if hi - lo == 1 {
                    let why = format!("PostgreSQL refused the row: {}", pgerror::describe(&e));
                    refused.extend(rows.dead_letter(lo, topic, why));
                } else {
                    let at = pgerror::copy_line(&e).map(|line| lo + line - 1);
                    let mut pieces = split(lo, hi, at);
                    pieces.reverse();
                    todo.extend(pieces);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

/// Splits `lo..hi` (more than one row) around row `at` when it lies inside, else in halves.
fn split(lo: usize, hi: usize, at: Option<usize>) -> Vec<(usize, usize)> {
    match at {
        Some(at) if (lo..hi).contains(&at) => [(lo, at), (at, at + 1), (at + 1, hi)]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect(),
        _ if hi - lo <= 1 => vec![(lo, hi)],
        _ => {
            let mid = lo + (hi - lo) / 2;
            vec![(lo, mid), (mid, hi)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(offset: i64, value: &[u8]) -> Origin<'_> {
        Origin {
            partition: 3,
            offset,
            key: None,
            value: Some(value),
        }
    }

    #[test]
    fn copy_rows_are_postgres_binary_copy_format() {
        let mut rows = CopyRows::default();
        assert!(rows.is_empty());
        rows.push(0.5, "ab", origin(10, b"v0"));
        rows.push(-1.0, "", origin(11, b"v1"));
        assert_eq!(rows.len(), 2);
        let mut want = b"PGCOPY\n\xff\r\n\0".to_vec();
        want.extend([0, 0, 0, 0, 0, 0, 0, 0]); // flags, header extension length
        want.extend([0, 2, 0, 0, 0, 8]);
        want.extend(0.5f64.to_be_bytes());
        want.extend([0, 0, 0, 2, b'a', b'b']);
        want.extend([0, 2, 0, 0, 0, 8]);
        want.extend((-1.0f64).to_be_bytes());
        want.extend([0, 0, 0, 0]);
        want.extend([0xff, 0xff]); // trailer: -1 fields
        assert_eq!(rows.stream(), want);
    }

    #[test]
    fn ranges_and_dead_letters_come_from_the_right_row() {
        let mut rows = CopyRows::default();
        rows.push(1.0, "a", origin(10, b"first"));
        rows.push(
            2.0,
            "bb",
            Origin {
                partition: 4,
                offset: 20,
                key: Some(b"k"),
                value: None,
            },
        );
        rows.push(3.0, "ccc", origin(30, b"third"));
        let f = rows.freeze();
        assert_eq!(f.range(0, 3).len(), 3 * 18 + 6); // 2 + 4 + 8 + 4 bytes around each
        assert_eq!(f.range(1, 2).len(), 18 + 2);
        assert_eq!(f.range(2, 3).len(), 18 + 3);
        assert!(f.range(3, 3).is_empty());
        let d = f.dead_letter(1, "t", "why".into()).unwrap();
        assert_eq!(
            (d.partition, d.offset, d.key.as_deref(), d.value.as_deref()),
            (4, 20, Some(&b"k"[..]), None)
        );
        let d = f.dead_letter(2, "t", "why".into()).unwrap();
        assert_eq!((d.offset, d.value.as_deref()), (30, Some(&b"third"[..])));
        assert!(f.dead_letter(3, "t", String::new()).is_none());
    }

    #[test]
    fn splits_cover_the_range_in_order_and_always_shrink() {
        for (lo, hi) in [(0, 2), (0, 3), (5, 17), (0, 5000)] {
            for at in [
                None,
                Some(lo),
                Some(hi - 1),
                Some((lo + hi) / 2),
                Some(hi + 3),
            ] {
                let pieces = split(lo, hi, at);
                assert!(pieces.len() >= 2, "{lo}..{hi} at {at:?}: {pieces:?}");
                let mut next = lo;
                for (a, b) in pieces {
                    assert_eq!(a, next);
                    assert!(a < b && b - a < hi - lo);
                    next = b;
                }
                assert_eq!(next, hi);
            }
        }
    }
}
