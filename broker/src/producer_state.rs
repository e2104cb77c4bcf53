//! Idempotent-producer bookkeeping, sans-io: per producer id and partition, the epoch and
//! the last [`MAX_BATCHES`] batches' sequence ranges (as Kafka keeps them). A retried batch
//! is recognised and answered with its original offset instead of being appended twice; a
//! gap in sequence numbers is refused.
//!
//! Logs call [`check`] and [`ProducerEntry::record`] under their append lock and persist the
//! entry atomically with the batch, so the state survives restarts exactly as the log does.

use std::collections::VecDeque;

use kafka_protocol::ResponseError;

/// How many recent batches are remembered per producer and partition.
pub const MAX_BATCHES: usize = 5;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBatch {
    /// First sequence number.
    pub first_seq: i32,
    /// Last sequence number.
    pub last_seq: i32,
    /// Offset it was stored at.
    pub base_offset: i64,
}

/// State of one producer id on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// Most recent batches, oldest first.
    pub batches: VecDeque<SeqBatch>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// In sequence: append it.
    Append,
    /// Already stored at this base offset: acknowledge, do not append.
    Duplicate(i64),
    /// Refuse with this error.
    Reject(ResponseError),
}

/// Last sequence number of a batch of `count` records starting at `first` (wraps like Kafka).
pub fn last_seq(first: i32, count: i32) -> i32 {
    ((i64::from(first) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Decides what to do with a batch of producer `epoch` covering `first_seq..=last_seq`.
pub fn check(entry: Option<&ProducerEntry>, epoch: i16, first_seq: i32, last_seq: i32) -> Check {
    let Some(entry) = entry else {
        return if first_seq == 0 {
            Check::Append
        } else {
            Check::Reject(ResponseError::UnknownProducerId)
        };
    };
    if epoch < entry.epoch {
        return Check::Reject(ResponseError::InvalidProducerEpoch);
    }
    if epoch > entry.epoch {
        return if first_seq == 0 {
            Check::Append
        } else {
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        };
    }
    if let Some(dup) = entry
        .batches
        .iter()
        .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    {
        return Check::Duplicate(dup.base_offset);
    }
    match entry.batches.back() {
        Some(last) if first_seq == next_seq(last.last_seq) => Check::Append,
        None if first_seq == 0 => Check::Append,
        _ => Check::Reject(ResponseError::OutOfOrderSequenceNumber),
    }
}

impl ProducerEntry {
    /// Records an appended batch (after [`check`] said [`Check::Append`]).
    pub fn record(&mut self, epoch: i16, first_seq: i32, last_seq: i32, base_offset: i64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == MAX_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(SeqBatch {
            first_seq,
            last_seq,
            base_offset,
        });
    }

    /// Records a transaction marker of `epoch`: a newer epoch starts with no batches.
    pub fn mark(&mut self, epoch: i16) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    /// Serialises for storage: epoch, count, then (first, last, offset) per batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.batches.len() * 16);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(self.batches.len() as u8);
        for b in &self.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
        }
        out
    }

    /// Parses [`ProducerEntry::encode`]'s output; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<ProducerEntry> {
        let epoch = i16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
        let n = *b.get(2)? as usize;
        if n > MAX_BATCHES || b.len() != 3 + n * 16 {
            return None;
        }
        let batches = (0..n)
            .map(|i| {
                let c = &b[3 + i * 16..3 + (i + 1) * 16];
                SeqBatch {
                    first_seq: i32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    last_seq: i32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                    base_offset: i64::from_be_bytes([
                        c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15],
                    ]),
                }
            })
            .collect();
        Some(ProducerEntry { epoch, batches })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_producer_must_start_at_zero() {
        assert_eq!(check(None, 0, 0, 9), Check::Append);
        assert_eq!(
            check(None, 0, 5, 9),
            Check::Reject(ResponseError::UnknownProducerId)
        );
    }

    #[test]
    fn in_sequence_duplicate_and_gap() {
        let mut e = ProducerEntry::default();
        e.record(0, 0, 9, 100);
        e.record(0, 10, 19, 110);
        assert_eq!(check(Some(&e), 0, 20, 29), Check::Append);
        assert_eq!(check(Some(&e), 0, 0, 9), Check::Duplicate(100));
        assert_eq!(check(Some(&e), 0, 10, 19), Check::Duplicate(110));
        assert_eq!(
            check(Some(&e), 0, 25, 29),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut e = ProducerEntry::default();
        for i in 0..7 {
            e.record(0, i * 10, i * 10 + 9, i64::from(i) * 10);
        }
        assert_eq!(e.batches.len(), MAX_BATCHES);
        assert_eq!(check(Some(&e), 0, 20, 29), Check::Duplicate(20));
        // forgotten: looks like a gap now
        assert!(matches!(check(Some(&e), 0, 0, 9), Check::Reject(_)));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut e = ProducerEntry::default();
        e.record(3, 0, 4, 0);
        assert_eq!(
            check(Some(&e), 2, 5, 9),
            Check::Reject(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(check(Some(&e), 4, 0, 0), Check::Append);
        assert_eq!(
            check(Some(&e), 4, 5, 5),
            Check::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        e.record(4, 0, 0, 5);
        assert_eq!(e.batches.len(), 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert_eq!(last_seq(i32::MAX, 1), i32::MAX);
        assert_eq!(last_seq(i32::MAX, 3), 1);
        let mut e = ProducerEntry::default();
        e.record(0, i32::MAX - 1, i32::MAX, 0);
        assert_eq!(check(Some(&e), 0, 0, 4), Check::Append);
    }

    #[test]
    fn encodes_and_decodes() {
        let mut e = ProducerEntry::default();
        e.record(7, 0, 9, 1234);
        e.record(7, 10, 10, 1244);
        assert_eq!(ProducerEntry::decode(&e.encode()), Some(e));
        assert_eq!(ProducerEntry::decode(&[0, 1, 9]), None);
        assert_eq!(ProducerEntry::decode(&[]), None);
    }
}
