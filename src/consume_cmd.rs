//! `finstream consume`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use finstream_consumer::{ConsumeConfig, Targets};
use tokio::sync::watch;

use crate::kafka_opts;

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub kafka: kafka_opts::KafkaArgs,
    /// Consumer group (several processes in one group share the partitions).
    #[arg(long, env = "FINSTREAM_GROUP", default_value = "finstream")]
    pub group: String,
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db [default: libpq PG* variables,
    /// then postgres@127.0.0.1:5432/postgres].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Target table (NAME or SCHEMA.NAME), created with the original schema if missing.
    #[arg(long, env = "FINSTREAM_TABLE", default_value = "transactions")]
    pub table: String,
    /// A batch (one transaction) closes at this many messages...
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// ...or this many milliseconds after its first message.
    #[arg(long, default_value_t = 20)]
    pub batch_timeout_ms: u64,
    /// Exit once everything up to the high watermarks seen at start is loaded.
    #[arg(long)]
    pub stop_at_end: bool,
    /// Wait for every batch's COMMIT to reach PostgreSQL's disk. Without it (the default)
    /// rows and offsets still commit together, a PostgreSQL crash can only lose whole recent
    /// batches with their offsets, which are then loaded again, and one durable commit is
    /// made before exiting.
    #[arg(long, env = "FINSTREAM_SYNCHRONOUS_COMMIT")]
    pub synchronous_commit: bool,
    /// When a stored position no longer fits the log (offsets removed by retention or
    /// DeleteRecords, a position past the end): `earliest` records the gap in
    /// finstream_gaps and loads from the log start; `fail` stops with an error naming the
    /// partition and offsets. A topic deleted and created again is always loaded from its
    /// start (and recorded).
    #[arg(long, env = "FINSTREAM_ON_GAP", default_value = "earliest")]
    pub on_gap: finstream_consumer::OnGap,
    /// Metrics, health and status page on this HTTP address ("off" to disable).
    #[arg(long, env = "FINSTREAM_HTTP", default_value = "off")]
    pub http: String,
}

impl ConsumeArgs {
    pub fn to_config(&self) -> anyhow::Result<ConsumeConfig> {
        let pg = finstream_consumer::pg_config(self.database_url.as_deref())
            .map_err(anyhow::Error::msg)?;
        let mut cfg = ConsumeConfig::new(
            &self.kafka.bootstrap_servers,
            &self.kafka.topic,
            &self.group,
            pg,
        );
        cfg.table = self.table.clone();
        cfg.batch_size = self.batch_size.max(1);
        cfg.batch_timeout = Duration::from_millis(self.batch_timeout_ms);
        cfg.kafka_properties = self.kafka.properties()?;
        cfg.stop_at_end = self.stop_at_end;
        cfg.synchronous_commit = self.synchronous_commit;
        cfg.on_gap = self.on_gap;
        Ok(cfg)
    }
}

/// A watch that becomes true on SIGINT/SIGTERM.
pub fn shutdown_watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutting down: finishing the current batch");
        let _ = tx.send(true);
    });
    rx
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.to_config()?;
    let observed = crate::http::Observed {
        consumer: Some(cfg.stats.clone()),
        dead_letters: Some(crate::console::DeadLetterTable {
            target: cfg.pg.clone(),
            table: cfg.table.clone(),
        }),
        ..Default::default()
    };
    crate::http::maybe_serve(&args.http, observed).await?;
    let (_targets_tx, targets) = watch::channel::<Option<Targets>>(None);
    let summary = finstream_consumer::run(cfg, shutdown_watch(), targets).await?;
    println!("consume: {summary}");
    Ok(ExitCode::SUCCESS)
}
