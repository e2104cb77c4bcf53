//! Transaction markers: the control batches the broker writes into every partition of a
//! transaction when it ends, sans-io.
//!
//! A marker is a RecordBatch v2 with the transactional and control attribute bits, the
//! producer's id and epoch, sequence -1, and one record whose key is
//! `version int16 (0) | type int16 (0 abort, 1 commit)` and whose value is Kafka's
//! `EndTransactionMarker`: `version int16 (0) | coordinatorEpoch int32`. Clients never
//! deliver control records; read_committed clients use abort markers to drop the aborted
//! records listed in a fetch's `aborted_transactions`.

use crate::batch::{self, CONTROL, HEADER_LEN, TRANSACTIONAL};

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// Its records are dropped by read_committed readers.
    Abort,
    /// Its records become visible to read_committed readers.
    Commit,
}

impl Marker {
    fn code(self) -> i16 {
        match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        }
    }
}

/// Encodes the marker batch ending producer `(id, epoch)`'s transaction, stamped `timestamp`.
pub fn marker_batch(producer_id: i64, epoch: i16, marker: Marker, timestamp: i64) -> Vec<u8> {
    let mut record = vec![0u8]; // attributes
    batch::write_varint(&mut record, 0); // timestamp delta
    batch::write_varint(&mut record, 0); // offset delta
    batch::write_varint(&mut record, 4);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&marker.code().to_be_bytes());
    batch::write_varint(&mut record, 6);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&0i32.to_be_bytes()); // coordinator epoch: one coordinator
    batch::write_varint(&mut record, 0); // headers
    let mut records = Vec::with_capacity(record.len() + 1);
    batch::write_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);
    batch::batch_of_records(
        &records,
        1,
        TRANSACTIONAL | CONTROL,
        (timestamp, timestamp),
        (producer_id, epoch, -1),
    )
}

/// The marker a stored control batch holds; `None` for any other batch or a malformed one.
pub fn marker_of(b: &[u8]) -> Option<Marker> {
    let info = batch::info(b)?;
    if !info.control || info.codec != 0 {
        return None;
    }
    let mut rest = b.get(HEADER_LEN..)?;
    let len = batch::read_varint(&mut rest)?;
    let mut record = rest.get(..usize::try_from(len).ok()?)?;
    record = record.get(1..)?; // attributes
    batch::read_varint(&mut record)?; // timestamp delta
    batch::read_varint(&mut record)?; // offset delta
    if batch::read_varint(&mut record)? < 4 {
        return None;
    }
    match i16::from_be_bytes([*record.get(2)?, *record.get(3)?]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_are_valid_control_batches() {
        for marker in [Marker::Abort, Marker::Commit] {
            let b = marker_batch(42, 3, marker, 1_700_000_000_000);
            let info = batch::info(&b).unwrap();
            assert!(info.control && info.transactional);
            assert_eq!((info.producer_id, info.producer_epoch), (42, 3));
            assert_eq!((info.base_sequence, info.record_count), (-1, 1));
            let (stored, actual) = batch::crcs(&b);
            assert_eq!(stored, actual);
            assert_eq!(marker_of(&b), Some(marker));
        }
        // clients may not send control batches
        let b = marker_batch(1, 0, Marker::Commit, 0);
        assert!(batch::validate(&b, 1 << 20).is_err());
    }

    #[test]
    fn other_batches_are_not_markers() {
        let plain = batch::uncompressed_batch(&[b"x"], 0, 0, (5, 0, 0));
        assert_eq!(marker_of(&plain), None);
        let mut b = marker_batch(1, 0, Marker::Abort, 0);
        b.truncate(HEADER_LEN + 3);
        assert_eq!(marker_of(&b), None);
    }
}
