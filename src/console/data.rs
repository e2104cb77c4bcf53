//! What the pages and the API show, gathered once: a page of a partition's records and
//! the dead letters of both sides, each read bounded.

use std::time::Duration;

use finstream_broker::{BrokerView, BrowseError, Page, Record, Start};

use super::{Console, Query, Refusal};

/// How long a dead-letter query to PostgreSQL may take.
const PG_DEADLINE: Duration = Duration::from_secs(5);
/// Partitions of `.dlq` topics read for one dead-letter request, at most.
const MAX_DLQ_PARTITIONS: usize = 16;

/// The embedded broker, or a refusal saying this process has none.
pub fn broker(console: &Console) -> Result<&BrokerView, Refusal> {
    console.observed.broker.as_ref().ok_or_else(|| {
        Refusal::NotFound(
            "this process runs no embedded broker (finstream broker or all-in-one do)".into(),
        )
    })
}

/// Where a read starts, from `offset=`, `timestamp=` or `tail=` (else `default`).
pub fn start(q: &Query, default: Start) -> Result<Start, Refusal> {
    if let Some(ts) = q.get("timestamp") {
        return super::text::parse_time(ts)
            .map(Start::Timestamp)
            .ok_or_else(|| {
                Refusal::BadRequest(format!(
                "timestamp={ts:?} is neither ms since the epoch nor ISO 8601 (2026-12-02T10:00:00Z)"
            ))
            });
    }
    if let Some(o) = q.number::<i64>("offset")? {
        return Ok(Start::Offset(o));
    }
    if let Some(n) = q.number::<i64>("tail")? {
        return Ok(Start::Tail(n));
    }
    Ok(default)
}

/// A page of `topic`'s `partition` as `q` asks (`partition`, `offset`/`timestamp`/`tail`,
/// `limit`), else from `default_start` with `default_limit`.
pub fn messages(
    console: &Console,
    topic: &str,
    q: &Query,
    (default_start, default_limit): (Start, usize),
) -> Result<(i32, Page), Refusal> {
    let b = broker(console)?;
    let partition = q.number::<i32>("partition")?.unwrap_or(0);
    let limit = q.limit(default_limit)?;
    let start = start(q, default_start)?;
    let page = b
        .browse(topic, partition, start, limit)
        .map_err(|e| match e {
            BrowseError::Storage(finstream_broker::StorageError::UnknownPartition { .. }) => {
                Refusal::NotFound(format!("no partition {topic}/{partition}"))
            }
            e => Refusal::Unavailable(e.to_string()),
        })?;
    Ok((partition, page))
}

/// One dead letter, from either side.
pub struct DeadLetter {
    /// `producer` (a bad CSV row) or `consumer` (a poison message).
    pub source: &'static str,
    /// Why it was set aside.
    pub reason: String,
    /// `file:line` of the row, or `topic/partition/offset` of the message.
    pub location: String,
    /// The row or message as it was.
    pub raw: Vec<u8>,
    /// When (ms since the epoch).
    pub timestamp: i64,
    /// Where it is kept: the `.dlq` topic, or the consumer's dead-letter table.
    pub kept_in: String,
}

/// The dead letters, newest first, and what became of the consumer side.
pub struct DeadLetters {
    pub items: Vec<DeadLetter>,
    /// `None` when the consumer's table was read; else why not.
    pub consumer_note: Option<String>,
}

/// The newest `limit` dead letters of both sides.
pub async fn dead_letters(console: &Console, limit: usize) -> DeadLetters {
    let mut items = console
        .observed
        .broker
        .as_ref()
        .map(|b| producer_dead_letters(b, limit))
        .unwrap_or_default();
    let consumer_note = match &console.observed.dead_letters {
        None => Some("no consumer in this process: its dead-letter table is not shown".into()),
        Some(t) => {
            let read = finstream_consumer::dead_letters::recent(&t.target, &t.table, limit as i64);
            match tokio::time::timeout(PG_DEADLINE, read).await {
                Ok(Ok(rows)) => {
                    items.extend(rows.into_iter().map(consumer_dead_letter));
                    None
                }
                Ok(Err(e)) => Some(format!("the dead-letter table could not be read: {e}")),
                Err(_) => Some(format!(
                    "the dead-letter table could not be read: PostgreSQL did not answer within {} s",
                    PG_DEADLINE.as_secs()
                )),
            }
        }
    };
    items.sort_by_key(|d| std::cmp::Reverse(d.timestamp));
    items.truncate(limit);
    DeadLetters {
        items,
        consumer_note,
    }
}

/// The last `limit` records of every `.dlq` topic's partitions.
fn producer_dead_letters(b: &BrokerView, limit: usize) -> Vec<DeadLetter> {
    let mut out = Vec::new();
    let partitions = b
        .topics()
        .into_iter()
        .filter(|t| t.name.ends_with(".dlq"))
        .flat_map(|t| {
            t.partitions
                .into_iter()
                .map(move |p| (t.name.clone(), p.index))
        })
        .take(MAX_DLQ_PARTITIONS);
    for (topic, partition) in partitions {
        match b.browse(&topic, partition, Start::Tail(limit as i64), limit) {
            Ok(page) => out.extend(
                page.records
                    .into_iter()
                    .map(|r| producer_dead_letter(&topic, r)),
            ),
            Err(e) => tracing::warn!("console: cannot read {topic}/{partition}: {e}"),
        }
    }
    out
}

fn header<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn producer_dead_letter(topic: &str, r: Record) -> DeadLetter {
    let location = match (header(&r, "source_file"), header(&r, "source_line")) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        _ => format!("{topic}/{}", r.offset),
    };
    DeadLetter {
        source: "producer",
        reason: header(&r, "error").unwrap_or("").to_string(),
        location,
        timestamp: r.timestamp,
        kept_in: format!("{topic} offset {}", r.offset),
        raw: r.value.unwrap_or_default(),
    }
}

fn consumer_dead_letter(d: finstream_consumer::dead_letters::StoredDeadLetter) -> DeadLetter {
    let l = d.letter;
    DeadLetter {
        source: "consumer",
        reason: l.error,
        location: format!("{}/{}/{}", l.topic, l.partition, l.offset),
        timestamp: d.received_at_ms,
        kept_in: format!("finstream_dead_letters (group {})", d.group),
        raw: l.value.unwrap_or_default(),
    }
}
