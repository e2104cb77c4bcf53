//! The one transaction per batch that makes the load exactly-once: `COPY rows` + `INSERT
//! dead letters` + compare-and-set of each partition's next offset; and the positions it
//! keeps in `finstream_offsets`.

use std::collections::HashMap;

use tokio_postgres::{Client, Transaction};

use crate::copy::{self, CopyRows};
use crate::db::{DbError, Sink};
use crate::gap::{Gap, Stored};
use crate::pgerror::{self, Kind};

/// One good row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Amount (scaled by the producer).
    pub amount: f64,
    /// Cleaned description.
    pub description: String,
}

/// One poison message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Raw value.
    pub value: Option<Vec<u8>>,
    /// Why it was refused.
    pub error: String,
}

/// Offset advance of one partition: from `expected` (what PostgreSQL holds now, `None` if no
/// row yet) to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// Stored next offset before this batch.
    pub expected: Option<i64>,
    /// Next offset after this batch.
    pub next: i64,
}

/// One batch, ready to commit.
#[derive(Debug, Default)]
pub struct BatchData {
    /// Good rows.
    pub rows: CopyRows,
    /// Poison messages.
    pub dead: Vec<DeadLetter>,
    /// Offset advance per partition.
    pub advances: HashMap<i32, Advance>,
    /// The topic's id as last checked (`None`: unknown, the stored id is kept).
    pub topic_id: Option<String>,
}

/// A batch whose transaction failed: the error, and what is needed to settle whether it
/// committed after all (an ambiguous COMMIT: the connection broke before the answer).
#[derive(Debug)]
pub struct Unsettled {
    /// What failed.
    pub error: DbError,
    /// The transaction's id, if it got one ([`Sink::committed`] asks its fate).
    pub xid: Option<i64>,
    /// Rows PostgreSQL had refused for their content, moved to the dead-letter table.
    pub refused: usize,
}

/// Result of writing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Committed; `refused` rows PostgreSQL refused for their content went to the
    /// dead-letter table instead of the table.
    Committed {
        /// Rows moved to the dead-letter table by PostgreSQL's verdict.
        refused: usize,
    },
    /// Another consumer moved a partition's offset first: rolled back, nothing written.
    Conflict,
}

impl Sink {
    /// The stored next offset and topic id of every partition of `topic` for `group`.
    pub async fn positions(
        &self,
        client: &Client,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<i32, Stored>, DbError> {
        let rows = client
            .query(
                &format!(
                    "SELECT partition, next_offset, topic_id FROM {}
                     WHERE group_id = $1 AND topic = $2",
                    self.offsets
                ),
                &[&group, &topic],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let stored = Stored {
                    next: r.get(1),
                    topic_id: r.get(2),
                };
                (r.get(0), stored)
            })
            .collect())
    }

    /// Makes every earlier commit of this connection durable: a transaction with
    /// `synchronous_commit = on` that writes (it touches this group's offset rows) waits for
    /// the WAL up to itself, i.e. for all asynchronous commits before it.
    pub async fn make_durable(
        &self,
        client: &mut Client,
        group: &str,
        topic: &str,
    ) -> Result<(), DbError> {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await?;
        tx.execute(
            &format!(
                "UPDATE {} SET updated_at = now() WHERE group_id = $1 AND topic = $2",
                self.offsets
            ),
            &[&group, &topic],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes one batch in one transaction: rows by binary COPY, dead letters, and the
    /// compare-and-set of every partition's offset. Nothing is written on conflict. Rows
    /// PostgreSQL refuses for their content go to the dead-letter table (see [`copy`]).
    pub async fn write(
        &self,
        client: &mut Client,
        group: &str,
        topic: &str,
        batch: BatchData,
    ) -> Result<Written, Unsettled> {
        let what = describe_batch(topic, &batch.advances);
        let (mut xid, mut refused) = (None, 0);
        self.write_in(client, group, topic, batch, &mut xid, &mut refused)
            .await
            .map_err(|e| Unsettled {
                error: e.context(|| what),
                xid,
                refused,
            })
    }

    async fn write_in(
        &self,
        client: &mut Client,
        group: &str,
        topic: &str,
        batch: BatchData,
        xid: &mut Option<i64>,
        refused: &mut usize,
    ) -> Result<Written, DbError> {
        let BatchData {
            rows,
            mut dead,
            advances,
            topic_id,
        } = batch;
        let rows = rows.freeze();
        let sql = copy::copy_sql(&self.table.quoted());
        let mut tx = client.transaction().await?;
        *xid = Some(tx.query_one("SELECT txid_current()", &[]).await?.get(0));
        if !rows.is_empty() {
            if let Err(e) = copy::copy_all(&tx, &sql, &rows).await {
                if pgerror::kind(&e) != Kind::Row {
                    return Err(e.into());
                }
                tracing::warn!(
                    "{}: PostgreSQL refused a row ({}); loading the batch again without \
                     the rows it refuses",
                    describe_batch(topic, &advances),
                    pgerror::describe(&e)
                );
                tx.rollback().await?;
                tx = client.transaction().await?;
                *xid = Some(tx.query_one("SELECT txid_current()", &[]).await?.get(0));
                let hint = pgerror::copy_line(&e).map(|line| line - 1);
                let out = copy::copy_sorting_out(&tx, &sql, &rows, topic, hint).await?;
                for d in &out {
                    tracing::warn!(
                        topic = %d.topic, partition = d.partition, offset = d.offset,
                        "row to the dead-letter table: {}", d.error
                    );
                }
                *refused = out.len();
                dead.extend(out);
            }
        }
        self.insert_dead_letters(&tx, group, &dead).await?;
        if !self
            .advance(&tx, group, topic, &advances, topic_id.as_deref())
            .await?
        {
            tx.rollback().await?;
            return Ok(Written::Conflict);
        }
        tx.commit().await?;
        Ok(Written::Committed { refused: *refused })
    }

    /// Whether transaction `xid` committed (asked after an ambiguous COMMIT, on a new
    /// connection).
    pub async fn committed(&self, client: &Client, xid: i64) -> Result<bool, DbError> {
        match client.query_one("SELECT txid_status($1)", &[&xid]).await {
            Ok(row) => Ok(row.get::<_, Option<String>>(0).as_deref() == Some("committed")),
            // "transaction ID is in the future": a crash took back the transaction (it was
            // committed asynchronously and not yet in the WAL on disk) and its id with it.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_dead_letters(
        &self,
        tx: &Transaction<'_>,
        group: &str,
        dead: &[DeadLetter],
    ) -> Result<(), DbError> {
        if dead.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {} (group_id, topic, partition, \"offset\", key, value, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (group_id, topic, partition, \"offset\") DO NOTHING",
                self.dead
            ))
            .await?;
        for d in dead {
            // PostgreSQL text cannot hold NUL; an error message quoting input might.
            let error = d.error.replace('\0', "\\0");
            tx.execute(
                &stmt,
                &[
                    &group,
                    &d.topic,
                    &d.partition,
                    &d.offset,
                    &d.key,
                    &d.value,
                    &error,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Compare-and-set of every partition's next offset (and its topic id, when known).
    /// False if another consumer moved one first.
    async fn advance(
        &self,
        tx: &Transaction<'_>,
        group: &str,
        topic: &str,
        advances: &HashMap<i32, Advance>,
        topic_id: Option<&str>,
    ) -> Result<bool, DbError> {
        let update = tx
            .prepare(&format!(
                "UPDATE {} SET next_offset = $4, topic_id = COALESCE($6, topic_id),
                     updated_at = now()
                 WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
                self.offsets
            ))
            .await?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} (group_id, topic, partition, next_offset, topic_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                self.offsets
            ))
            .await?;
        for (partition, adv) in advances {
            let n = match adv.expected {
                Some(expected) => {
                    tx.execute(
                        &update,
                        &[&group, &topic, partition, &adv.next, &expected, &topic_id],
                    )
                    .await?
                }
                None => {
                    tx.execute(&insert, &[&group, &topic, partition, &adv.next, &topic_id])
                        .await?
                }
            };
            if n != 1 {
                tracing::warn!(
                    topic,
                    partition,
                    expected = ?adv.expected,
                    "offset moved by another consumer; batch rolled back"
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records a gap (see [`crate::gap`]) and moves the partition's position to where
    /// loading resumes, in one transaction, by compare-and-set from `stored`. Conflict if
    /// another consumer moved the position first.
    pub async fn record_gap(
        &self,
        client: &mut Client,
        group: &str,
        topic: &str,
        partition: i32,
        gap: &Gap,
    ) -> Result<Written, DbError> {
        let (old_id, new_id) = match &gap.kind {
            crate::gap::GapKind::TopicRecreated { old, new } => (Some(old), Some(new)),
            _ => (None, gap.live.topic_id.as_ref()),
        };
        let tx = client.transaction().await?;
        let adv = HashMap::from([(
            partition,
            Advance {
                expected: Some(gap.stored),
                next: gap.resume_at(),
            },
        )]);
        if !self
            .advance(&tx, group, topic, &adv, new_id.map(String::as_str))
            .await?
        {
            tx.rollback().await?;
            return Ok(Written::Conflict);
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (group_id, topic, partition, kind, stored_offset, resumed_at,
                     log_start, high_watermark, old_topic_id, new_topic_id, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                self.gaps
            ),
            &[
                &group,
                &topic,
                &partition,
                &gap.kind.name(),
                &gap.stored,
                &gap.resume_at(),
                &gap.live.log_start,
                &gap.live.high_watermark,
                &old_id,
                &new_id,
                &gap.describe(topic, partition),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Written::Committed { refused: 0 })
    }
}

/// `topic t partitions 0 [5..9], 1 [17..17]`: which offsets a batch holds, for errors.
fn describe_batch(topic: &str, advances: &HashMap<i32, Advance>) -> String {
    let mut parts: Vec<_> = advances.iter().collect();
    parts.sort_by_key(|(p, _)| **p);
    let list: Vec<String> = parts
        .iter()
        .map(|(p, a)| match a.expected {
            Some(from) => format!("{p} offsets {from}..{}", a.next - 1),
            None => format!("{p} offsets up to {}", a.next - 1),
        })
        .collect();
    format!("loading topic {topic} partition {}", list.join(", "))
}
