//! PostgreSQL side: connection, versioned migrations of our own tables, the target table,
//! and the one transaction per batch that makes the load exactly-once:
//! `COPY rows` + `INSERT dead letters` + compare-and-set of each partition's next offset.

use std::collections::HashMap;

use tokio_postgres::{Client, Config, NoTls, Transaction};

use crate::copy::{self, CopyRows};
use crate::gap::{Gap, Stored};
use crate::pgerror::{self, Kind};

/// Errors talking to PostgreSQL. Each prints the SQLSTATE, message, detail, hint and
/// context PostgreSQL gave, and what the consumer was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The connection failed or was lost; worth retrying.
    #[error("PostgreSQL unavailable: {}", pgerror::describe(.0))]
    Unavailable(tokio_postgres::Error),
    /// A statement failed for a reason retrying will not fix.
    #[error("PostgreSQL {}{}", pgerror::describe(.error), .context)]
    Fatal {
        /// PostgreSQL's error.
        error: tokio_postgres::Error,
        /// What was being done (`, while ...`), or empty.
        context: String,
    },
    /// The target table exists with a different shape.
    #[error("table {table} exists but does not have the expected columns: {detail}")]
    TableShape {
        /// Table name.
        table: String,
        /// What is missing or different.
        detail: String,
    },
    /// The table name cannot be used.
    #[error("invalid table name '{0}': use NAME or SCHEMA.NAME with letters, digits and _")]
    TableName(String),
    /// The consumer lost track of its connection (a bug, reported rather than panicking).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if pgerror::kind(&e) == Kind::Unavailable {
            DbError::Unavailable(e)
        } else {
            DbError::Fatal {
                error: e,
                context: String::new(),
            }
        }
    }
}

impl DbError {
    /// Whether reconnecting and retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }

    /// Adds what was being done to a fatal error.
    fn context(self, what: impl FnOnce() -> String) -> Self {
        match self {
            DbError::Fatal { error, .. } => DbError::Fatal {
                error,
                context: format!(", while {}", what()),
            },
            other => other,
        }
    }
}

/// A validated, quoted table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// Parses `NAME` or `SCHEMA.NAME`.
    pub fn parse(s: &str) -> Result<Self, DbError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let (schema, name) = match s.split_once('.') {
            Some((a, b)) => (Some(a), b),
            None => (None, s),
        };
        if !ok(name) || schema.is_some_and(|sc| !ok(sc)) {
            return Err(DbError::TableName(s.to_string()));
        }
        Ok(TableName {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// `"schema"."name"` for SQL.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }

    /// Our bookkeeping table `name` in the same schema as the target table.
    fn sibling(&self, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{name}\""),
            None => format!("\"{name}\""),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Connects and drives the connection on its own task (as rust-postgres intends).
pub async fn connect(config: &Config) -> Result<Client, DbError> {
    let (client, connection) = config.connect(NoTls).await.map_err(DbError::Unavailable)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// Our own tables, versioned. Never edit an applied migration; add a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS {offsets} (
             group_id   TEXT        NOT NULL,
             topic      TEXT        NOT NULL,
             partition  INTEGER     NOT NULL,
             next_offset BIGINT     NOT NULL,
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             PRIMARY KEY (group_id, topic, partition)
         );
         CREATE TABLE IF NOT EXISTS {dead} (
             id          BIGSERIAL   PRIMARY KEY,
             group_id    TEXT        NOT NULL,
             topic       TEXT        NOT NULL,
             partition   INTEGER     NOT NULL,
             \"offset\"  BIGINT      NOT NULL,
             key         BYTEA,
             value       BYTEA,
             error       TEXT        NOT NULL,
             received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             UNIQUE (group_id, topic, partition, \"offset\")
         );",
    ),
    (
        2,
        "ALTER TABLE {offsets} ADD COLUMN IF NOT EXISTS topic_id TEXT;
         CREATE TABLE IF NOT EXISTS {gaps} (
             id             BIGSERIAL   PRIMARY KEY,
             group_id       TEXT        NOT NULL,
             topic          TEXT        NOT NULL,
             partition      INTEGER     NOT NULL,
             kind           TEXT        NOT NULL,
             stored_offset  BIGINT      NOT NULL,
             resumed_at     BIGINT      NOT NULL,
             log_start      BIGINT      NOT NULL,
             high_watermark BIGINT      NOT NULL,
             old_topic_id   TEXT,
             new_topic_id   TEXT,
             detail         TEXT        NOT NULL,
             detected_at    TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    ),
];

/// The PostgreSQL side of one consumer.
pub struct Sink {
    table: TableName,
    offsets: String,
    dead: String,
    gaps: String,
}

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
    /// Creates our tables (migrations) and the target table if missing, and checks the
    /// target table's shape.
    pub async fn prepare(client: &mut Client, table: TableName) -> Result<Sink, DbError> {
        let sink = Sink {
            offsets: table.sibling("finstream_offsets"),
            dead: table.sibling("finstream_dead_letters"),
            gaps: table.sibling("finstream_gaps"),
            table,
        };
        let tx = client.transaction().await?;
        sink.migrate(&tx).await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 id SERIAL PRIMARY KEY,
                 amount FLOAT NOT NULL,
                 description TEXT NOT NULL,
                 timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
            sink.table.quoted()
        ))
        .await?;
        sink.check_shape(&tx).await?;
        tx.commit().await?;
        Ok(sink)
    }

    /// Applies the migrations not applied yet, under an advisory lock so that two consumers
    /// starting together do not both migrate.
    async fn migrate(&self, tx: &Transaction<'_>) -> Result<(), DbError> {
        let migrations = self.table.sibling("finstream_schema_migrations");
        tx.execute("SELECT pg_advisory_xact_lock(7412049)", &[])
            .await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {migrations} (
                 version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .await?;
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    &format!("SELECT 1 FROM {migrations} WHERE version = $1"),
                    &[version],
                )
                .await?
                .is_some();
            if !done {
                let sql = sql
                    .replace("{offsets}", &self.offsets)
                    .replace("{dead}", &self.dead)
                    .replace("{gaps}", &self.gaps);
                tx.batch_execute(&sql).await?;
                tx.execute(
                    &format!("INSERT INTO {migrations} (version) VALUES ($1)"),
                    &[version],
                )
                .await?;
                tracing::info!(version, "applied schema migration");
            }
        }
        Ok(())
    }

    /// Refuses a target table without `amount double precision` and `description text`.
    async fn check_shape(&self, tx: &Transaction<'_>) -> Result<(), DbError> {
        let columns = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_name = $1
                   AND table_schema = COALESCE($2, current_schema())",
                &[&self.table.name, &self.table.schema],
            )
            .await?;
        let columns: HashMap<String, String> =
            columns.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (col, ty) in [("amount", "double precision"), ("description", "text")] {
            let detail = match columns.get(col) {
                Some(t) if t == ty => continue,
                Some(t) => format!("column {col} is {t}, expected {ty}"),
                None => format!("no column {col}"),
            };
            return Err(DbError::TableShape {
                table: self.table.to_string(),
                detail,
            });
        }
        Ok(())
    }

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
    ) -> Result<Written, DbError> {
        let BatchData {
            rows,
            mut dead,
            advances,
            topic_id,
        } = batch;
        let what = || describe_batch(topic, &advances);
        let rows = rows.freeze();
        let sql = copy::copy_sql(&self.table.quoted());
        let mut tx = client.transaction().await?;
        let mut refused = 0;
        if !rows.is_empty() {
            if let Err(e) = copy::copy_all(&tx, &sql, &rows).await {
                if pgerror::kind(&e) != Kind::Row {
                    return Err(DbError::from(e).context(what));
                }
                tracing::warn!(
                    "{}: PostgreSQL refused a row ({}); loading the batch again without \
                     the rows it refuses",
                    what(),
                    pgerror::describe(&e)
                );
                tx.rollback().await?;
                tx = client.transaction().await?;
                let hint = pgerror::copy_line(&e).map(|line| line - 1);
                let out = copy::copy_sorting_out(&tx, &sql, &rows, topic, hint)
                    .await
                    .map_err(|e| DbError::from(e).context(what))?;
                for d in &out {
                    tracing::warn!(
                        topic = %d.topic, partition = d.partition, offset = d.offset,
                        "row to the dead-letter table: {}", d.error
                    );
                }
                refused = out.len();
                dead.extend(out);
            }
        }
        self.insert_dead_letters(&tx, group, &dead)
            .await
            .map_err(|e| e.context(what))?;
        let moved = self
            .advance(&tx, group, topic, &advances, topic_id.as_deref())
            .await
            .map_err(|e| e.context(what))?;
        if !moved {
            tx.rollback().await?;
            return Ok(Written::Conflict);
        }
        tx.commit().await?;
        Ok(Written::Committed { refused })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated_and_quoted() {
        assert_eq!(
            TableName::parse("transactions").unwrap().quoted(),
            "\"transactions\""
        );
        assert_eq!(
            TableName::parse("bank.tx_2024").unwrap().quoted(),
            "\"bank\".\"tx_2024\""
        );
        for bad in ["", "1abc", "a;drop table x", "a.b.c", "x\"y", "sp ace"] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }
}
