//! `finstream consume`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use finstream_consumer::{ConsumeConfig, Targets};
use tokio::sync::watch;

use crate::kafka_opts;

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(
        long,
        alias = "bootstrap_servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Topic to load.
    #[arg(
        long,
        env = "FINSTREAM_TOPIC",
        default_value = "financial_transactions"
    )]
    pub topic: String,
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
    /// librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = kafka_opts::parse_property)]
    pub property: Vec<(String, String)>,
    /// Properties file (key=value lines) with librdkafka settings.
    #[arg(long, value_name = "FILE")]
    pub consumer_config: Option<PathBuf>,
    /// Exit once everything up to the high watermarks seen at start is loaded.
    #[arg(long)]
    pub stop_at_end: bool,
}

impl ConsumeArgs {
    pub fn to_config(&self) -> anyhow::Result<ConsumeConfig> {
        let pg = finstream_consumer::pg_config(self.database_url.as_deref())
            .map_err(anyhow::Error::msg)?;
        let mut cfg = ConsumeConfig::new(&self.bootstrap_servers, &self.topic, &self.group, pg);
        cfg.table = self.table.clone();
        cfg.batch_size = self.batch_size.max(1);
        cfg.batch_timeout = Duration::from_millis(self.batch_timeout_ms);
        cfg.kafka_properties =
            kafka_opts::collect(self.consumer_config.as_deref(), &self.property)?;
        cfg.stop_at_end = self.stop_at_end;
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
    let (_targets_tx, targets) = watch::channel::<Option<Targets>>(None);
    let summary = finstream_consumer::run(cfg, shutdown_watch(), targets).await?;
    println!("consume: {summary}");
    Ok(ExitCode::SUCCESS)
}
