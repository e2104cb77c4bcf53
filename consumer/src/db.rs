//! PostgreSQL side: connection, versioned migrations of our own tables, the target table,
//! and the one transaction per batch that makes the load exactly-once:
//! `COPY rows` + `INSERT dead letters` + compare-and-set of each partition's next offset.

use std::collections::HashMap;
use std::pin::pin;

use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Errors talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The connection failed or was lost; worth retrying.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(tokio_postgres::Error),
    /// A statement failed for a reason retrying will not fix.
    #[error("PostgreSQL error: {0}")]
    Fatal(tokio_postgres::Error),
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
        if is_transient(&e) {
            DbError::Unavailable(e)
        } else {
            DbError::Fatal(e)
        }
    }
}

impl DbError {
    /// Whether reconnecting and retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

/// Connection-level problems, server shutdown/restart, and transaction conflicts.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O, connect, protocol errors: no SQLSTATE
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::TOO_MANY_CONNECTIONS
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
const MIGRATIONS: &[(i32, &str)] = &[(
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
)];

/// The PostgreSQL side of one consumer.
pub struct Sink {
    table: TableName,
    offsets: String,
    dead: String,
}

/// CopyData messages of at most this size (PostgreSQL accepts larger ones; this keeps the
/// connection's buffers small).
const COPY_PIECE: usize = 256 * 1024;

/// One good row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Amount (scaled by the producer).
    pub amount: f64,
    /// Cleaned description.
    pub description: String,
}

/// Good rows of a batch, already encoded in PostgreSQL's binary COPY format
/// (`amount float8, description text`), so a batch is one buffer sent as a few large
/// CopyData messages rather than a write per row.
#[derive(Debug, Default)]
pub struct CopyRows {
    buf: Vec<u8>,
    rows: usize,
}

/// Binary COPY signature, flags and header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl CopyRows {
    /// Appends one row. A description longer than PostgreSQL's 1 GB field limit cannot come
    /// from a Kafka message, so the length always fits.
    pub fn push(&mut self, amount: f64, description: &str) {
        if self.buf.is_empty() {
            self.buf.reserve(64 * 1024);
            self.buf.extend_from_slice(COPY_HEADER);
        }
        let len = i32::try_from(description.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&2i16.to_be_bytes());
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&amount.to_bits().to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(description.as_bytes());
        self.rows += 1;
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The complete COPY stream (header, rows, trailer).
    fn into_stream(mut self) -> bytes::Bytes {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        bytes::Bytes::from(self.buf)
    }
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

/// Result of writing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Committed.
    Committed,
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
            table,
        };
        let migrations = sink.table.sibling("finstream_schema_migrations");
        let tx = client.transaction().await?;
        // Two consumers starting together must not both migrate.
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
                    .replace("{offsets}", &sink.offsets)
                    .replace("{dead}", &sink.dead);
                tx.batch_execute(&sql).await?;
                tx.execute(
                    &format!("INSERT INTO {migrations} (version) VALUES ($1)"),
                    &[version],
                )
                .await?;
                tracing::info!(version, "applied schema migration");
            }
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 id SERIAL PRIMARY KEY,
                 amount FLOAT NOT NULL,
                 description TEXT NOT NULL,
                 timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
            sink.table.quoted()
        ))
        .await?;
        let schema = sink.table.schema.clone();
        let columns = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_name = $1
                   AND table_schema = COALESCE($2, current_schema())",
                &[&sink.table.name, &schema],
            )
            .await?;
        let columns: HashMap<String, String> =
            columns.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (col, ty) in [("amount", "double precision"), ("description", "text")] {
            match columns.get(col) {
                Some(t) if t == ty => {}
                Some(t) => {
                    return Err(DbError::TableShape {
                        table: sink.table.to_string(),
                        detail: format!("column {col} is {t}, expected {ty}"),
                    })
                }
                None => {
                    return Err(DbError::TableShape {
                        table: sink.table.to_string(),
                        detail: format!("no column {col}"),
                    })
                }
            }
        }
        tx.commit().await?;
        Ok(sink)
    }

    /// The stored next offset of every partition of `topic` for `group`.
    pub async fn positions(
        &self,
        client: &Client,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<i32, i64>, DbError> {
        let rows = client
            .query(
                &format!(
                    "SELECT partition, next_offset FROM {} WHERE group_id = $1 AND topic = $2",
                    self.offsets
                ),
                &[&group, &topic],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
    /// compare-and-set of every partition's offset. Nothing is written on conflict.
    pub async fn write(
        &self,
        client: &mut Client,
        group: &str,
        topic: &str,
        rows: CopyRows,
        dead: &[DeadLetter],
        advances: &HashMap<i32, Advance>,
    ) -> Result<Written, DbError> {
        let tx = client.transaction().await?;
        if !rows.is_empty() {
            let sink = tx
                .copy_in::<_, bytes::Bytes>(&format!(
                    "COPY {} (amount, description) FROM STDIN BINARY",
                    self.table.quoted()
                ))
                .await?;
            let mut sink = pin!(sink);
            let mut stream = rows.into_stream();
            while !stream.is_empty() {
                let piece = stream.split_to(stream.len().min(COPY_PIECE));
                sink.as_mut().send(piece).await?;
            }
            sink.as_mut().finish().await?;
        }
        if !dead.is_empty() {
            let stmt = tx
                .prepare(&format!(
                    "INSERT INTO {} (group_id, topic, partition, \"offset\", key, value, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (group_id, topic, partition, \"offset\") DO NOTHING",
                    self.dead
                ))
                .await?;
            for d in dead {
                tx.execute(
                    &stmt,
                    &[
                        &group,
                        &d.topic,
                        &d.partition,
                        &d.offset,
                        &d.key,
                        &d.value,
                        &d.error,
                    ],
                )
                .await?;
            }
        }
        let update = tx
            .prepare(&format!(
                "UPDATE {} SET next_offset = $4, updated_at = now()
                 WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
                self.offsets
            ))
            .await?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                self.offsets
            ))
            .await?;
        for (partition, adv) in advances {
            let n = match adv.expected {
                Some(expected) => {
                    tx.execute(&update, &[&group, &topic, partition, &adv.next, &expected])
                        .await?
                }
                None => {
                    tx.execute(&insert, &[&group, &topic, partition, &adv.next])
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
                tx.rollback().await?;
                return Ok(Written::Conflict);
            }
        }
        tx.commit().await?;
        Ok(Written::Committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_are_postgres_binary_copy_format() {
        let mut rows = CopyRows::default();
        assert!(rows.is_empty());
        rows.push(0.5, "ab");
        rows.push(-1.0, "");
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
        assert_eq!(rows.into_stream().as_ref(), &want[..]);
    }

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
