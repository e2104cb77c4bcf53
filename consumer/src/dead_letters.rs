//! Reading back the dead-letter table (`finstream_dead_letters`, beside the target table):
//! the newest rows first, a bounded number, for consoles and scripts.

use tokio_postgres::error::SqlState;

use crate::db::{connect, DbError, PgTarget, TableName};
use crate::sink::DeadLetter;

/// One poison message the consumer set aside, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// The consumer group that met it.
    pub group: String,
    /// The message and why it was refused.
    pub letter: DeadLetter,
    /// When it was set aside, in ms since the epoch.
    pub received_at_ms: i64,
}

/// The newest `limit` dead letters kept beside `table`. An empty list when the consumer
/// has not created its tables yet.
pub async fn recent(
    target: &PgTarget,
    table: &str,
    limit: i64,
) -> Result<Vec<StoredDeadLetter>, DbError> {
    let dead = TableName::parse(table)?.sibling("finstream_dead_letters");
    let client = connect(target).await?;
    let sql = format!(
        "SELECT group_id, topic, partition, \"offset\", key, value, error,
                (extract(epoch FROM received_at) * 1000)::BIGINT
           FROM {dead} ORDER BY id DESC LIMIT $1"
    );
    let rows = match client.query(&sql, &[&limit.max(0)]).await {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    rows.iter()
        .map(|r| {
            Ok(StoredDeadLetter {
                group: r.try_get(0)?,
                letter: DeadLetter {
                    topic: r.try_get(1)?,
                    partition: r.try_get(2)?,
                    offset: r.try_get(3)?,
                    key: r.try_get(4)?,
                    value: r.try_get(5)?,
                    error: r.try_get(6)?,
                },
                received_at_ms: r.try_get(7)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::from)
}
