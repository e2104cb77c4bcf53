//! PostgreSQL side: connection settings (a URL or libpq's `PG*` variables), connecting with
//! retries, versioned migrations of our own tables and the target table. The batch
//! transaction itself is in [`crate::sink`].

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, Config, NoTls, Transaction};

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
    /// TLS to PostgreSQL cannot work as configured: a bad setting or file, or a server
    /// certificate that fails the check `sslmode` asks for.
    #[error("PostgreSQL TLS ({host}): {detail}")]
    Tls {
        /// The host connected to.
        host: String,
        /// What failed.
        detail: String,
    },
}

/// Where PostgreSQL is: the connection settings, and the TLS ones ([`crate::pgtls`]).
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host, port, user, database... (tokio-postgres's settings).
    pub config: Config,
    /// `sslmode` and the certificates.
    pub tls: crate::pgtls::TlsOptions,
}

impl std::ops::Deref for PgTarget {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl std::ops::DerefMut for PgTarget {
    fn deref_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

impl PgTarget {
    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }
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
    pub(crate) fn context(self, what: impl FnOnce() -> String) -> Self {
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
    pub(crate) fn sibling(&self, name: &str) -> String {
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

/// Connects (with TLS as `sslmode` says) and drives the connection on its own task (as
/// rust-postgres intends). A certificate that fails its check is a [`DbError::Tls`], not
/// worth retrying.
pub async fn connect(target: &PgTarget) -> Result<Client, DbError> {
    let tls_error = |detail: String| DbError::Tls {
        host: target.host(),
        detail,
    };
    let client = match crate::pgtls::client_config(&target.tls).map_err(tls_error)? {
        None => {
            let (client, connection) = target
                .config
                .connect(NoTls)
                .await
                .map_err(DbError::Unavailable)?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = target.config.connect(connector).await.map_err(|e| {
                if is_tls_failure(&e) {
                    tls_error(with_causes(&e))
                } else {
                    DbError::Unavailable(e)
                }
            })?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

async fn drive<C: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: C) {
    if let Err(e) = connection.await {
        tracing::warn!("PostgreSQL connection ended: {e}");
    }
}

/// An error and its causes, `a: b: c` (rustls says what was wrong with the certificate).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Whether a connection failed in the TLS handshake on a certificate (not a network
/// problem): rustls says so in the error chain.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return matches!(
                r,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(_)
            );
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        source = s.source();
    }
    e.to_string().contains("server does not support TLS")
}

/// Resolves the PostgreSQL settings: a URL (flag or `DATABASE_URL`) if given, otherwise the
/// libpq `PG*` variables with libpq's defaults (but TCP to 127.0.0.1 rather than a socket).
pub fn pg_config(url: Option<&str>) -> Result<PgTarget, String> {
    let (rest, tls) = crate::pgtls::split(url.unwrap_or(""))?;
    let mut config = if url.is_some_and(|u| !u.is_empty()) {
        rest.parse::<Config>()
            .map_err(|e| format!("invalid database URL: {e}"))?
    } else {
        env_config()?
    };
    config.ssl_mode(match tls.mode {
        crate::pgtls::SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        crate::pgtls::SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok(PgTarget { config, tls })
}

/// libpq's `PG*` variables with libpq's defaults.
fn env_config() -> Result<Config, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut c = tokio_postgres::Config::new();
    c.host(env("PGHOST").unwrap_or_else(|| "127.0.0.1".into()));
    let port = env("PGPORT").unwrap_or_else(|| "5432".into());
    c.port(
        port.parse()
            .map_err(|_| format!("PGPORT '{port}' is not a port"))?,
    );
    let user = env("PGUSER").unwrap_or_else(|| "postgres".into());
    c.user(&user);
    c.dbname(env("PGDATABASE").unwrap_or(user));
    if let Some(p) = env("PGPASSWORD") {
        c.password(p);
    }
    c.application_name("finstream");
    c.connect_timeout(Duration::from_secs(10));
    Ok(c)
}

/// Connects with `synchronous_commit` as asked, retrying with capped exponential backoff
/// while PostgreSQL is unavailable (or until shutdown, then `None`).
pub async fn connect_with_retry(
    config: &PgTarget,
    synchronous_commit: bool,
    max_backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Client>, DbError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = match connect(config).await {
            Ok(c) if synchronous_commit => Ok(c),
            Ok(c) => c
                .batch_execute("SET synchronous_commit = off")
                .await
                .map(|()| c)
                .map_err(DbError::from),
            Err(e) => Err(e),
        };
        match connected {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.is_transient() => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(None),
                }
                backoff = (backoff * 2).min(max_backoff);
            }
            Err(e) => return Err(e),
        }
    }
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
    pub(crate) table: TableName,
    pub(crate) offsets: String,
    pub(crate) dead: String,
    pub(crate) gaps: String,
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
