//! `finstream all-in-one`: the embedded broker, the consumer and the producer in one process.
//! Loads the CSV into PostgreSQL and exits once every row is in the table (or, with
//! `--serve`, keeps broker and consumer running for more producers until Ctrl-C).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use finstream_broker::BrokerConfig;
use finstream_consumer::{ConsumeConfig, Targets};
use finstream_producer::{ProduceConfig, Scaler};
use tokio::sync::watch;

use crate::produce_cmd;
use finstream_consumer::cluster::PrivateCluster;

#[derive(Args, Debug, Clone)]
pub struct AllInOneArgs {
    /// CSV file of transactions.
    /// [default: data/sample.csv if it exists, else a generated sample of 1,000 rows,
    /// written to the data directory]
    #[arg(long, alias = "csv_name")]
    pub csv: Option<PathBuf>,
    /// PostgreSQL URL [default: the local server on 127.0.0.1:5432 (PG* variables apply)
    /// if it answers, else a private cluster under the data dir if PostgreSQL is installed].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the broker's log (and a private PostgreSQL cluster, if one is needed).
    #[arg(long, env = "FINSTREAM_DATA_DIR", default_value = "./finstream-data")]
    pub data_dir: PathBuf,
    /// Fitted amount scaler [default: data/scaler.json if it exists, else the reference
    /// scaler built into the binary].
    #[arg(long, env = "FINSTREAM_SCALER")]
    pub scaler: Option<PathBuf>,
    /// Topic.
    #[arg(long, default_value = "financial_transactions")]
    pub topic: String,
    /// Target table.
    #[arg(long, default_value = "transactions")]
    pub table: String,
    /// Consumer group.
    #[arg(long, default_value = "finstream")]
    pub group: String,
    /// Broker listen address [default: 127.0.0.1:9092 with --serve, else a free port].
    #[arg(long)]
    pub listen: Option<String>,
    /// Keep broker and consumer running after the load, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Consumer batch size.
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Wait for every batch's COMMIT to reach the disk (see `consume --synchronous-commit`).
    #[arg(long, env = "FINSTREAM_SYNCHRONOUS_COMMIT")]
    pub synchronous_commit: bool,
    /// Metrics, health and status page on this HTTP address ("off" to disable).
    #[arg(long, env = "FINSTREAM_HTTP", default_value = "127.0.0.1:9644")]
    pub http: String,
}

/// Finds a PostgreSQL to use, starting a private cluster as a last resort.
async fn database(
    args: &AllInOneArgs,
) -> anyhow::Result<(finstream_consumer::PgTarget, Option<PrivateCluster>)> {
    if let Some(url) = args.database_url.as_deref().filter(|u| !u.is_empty()) {
        return Ok((
            finstream_consumer::pg_config(Some(url)).map_err(anyhow::Error::msg)?,
            None,
        ));
    }
    let local = finstream_consumer::pg_config(None).map_err(anyhow::Error::msg)?;
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        finstream_consumer::db::connect(&local),
    )
    .await;
    match probe {
        Ok(Ok(_)) => {
            tracing::info!("using the local PostgreSQL server");
            return Ok((local, None));
        }
        Ok(Err(e)) => tracing::info!("no usable local PostgreSQL ({e})"),
        Err(_) => tracing::info!("no usable local PostgreSQL (timed out)"),
    }
    if !PrivateCluster::available() {
        anyhow::bail!(
            "no PostgreSQL to load into: pass --database-url postgres://USER:PASS@HOST:PORT/DB \
             (or set DATABASE_URL / PGHOST...), start a server on 127.0.0.1:5432, or install \
             PostgreSQL (e.g. `sudo apt-get install postgresql`) so a private cluster can be created"
        );
    }
    let data_dir = args.data_dir.clone();
    let cluster =
        tokio::task::spawn_blocking(move || PrivateCluster::start(&data_dir.join("postgres")))
            .await??;
    let cfg = finstream_consumer::pg_config(Some(&cluster.url())).map_err(anyhow::Error::msg)?;
    Ok((cfg, Some(cluster)))
}

/// Rows of the sample generated when there is no CSV to load.
const GENERATED_ROWS: u64 = 1_000;

/// The CSV to load: `--csv`, else `data/sample.csv`, else a generated sample written to
/// the data directory (and the log says so).
fn input_csv(args: &AllInOneArgs) -> anyhow::Result<PathBuf> {
    if let Some(csv) = &args.csv {
        return Ok(csv.clone());
    }
    let shipped = PathBuf::from("data/sample.csv");
    if shipped.is_file() {
        return Ok(shipped);
    }
    let path = args.data_dir.join("generated-sample.csv");
    let f = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    finstream_producer::generate::write_csv(std::io::BufWriter::new(f), GENERATED_ROWS, 42)?;
    tracing::info!(
        csv = %path.display(),
        rows = GENERATED_ROWS,
        "no --csv and no data/sample.csv: loading a generated sample"
    );
    Ok(path)
}

pub async fn run(args: AllInOneArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let scaler = match Scaler::resolve(args.scaler.as_deref()) {
        Ok((s, which)) => {
            tracing::info!(scaler = %which, "amount scaler");
            s
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(produce_cmd::EXIT_INPUT));
        }
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let csv = input_csv(&args)?;
    let (pg, cluster) = database(&args).await?;
    let broker = start_broker(&args).await?;
    let bootstrap = broker.bootstrap_servers();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (targets_tx, targets_rx) = watch::channel::<Option<Targets>>(None);
    let mut ccfg = ConsumeConfig::new(&bootstrap, &args.topic, &args.group, pg);
    ccfg.table = args.table.clone();
    ccfg.batch_size = args.batch_size.max(1);
    ccfg.synchronous_commit = args.synchronous_commit;
    let pcfg = ProduceConfig::new(&bootstrap, &args.topic, &csv, scaler);
    let observed = crate::http::Observed {
        broker: Some(broker.view()),
        consumer: Some(ccfg.stats.clone()),
        producer: Some(pcfg.stats.clone()),
        dead_letters: Some(crate::console::DeadLetterTable {
            target: ccfg.pg.clone(),
            table: ccfg.table.clone(),
        }),
    };
    if let Err(e) = crate::http::maybe_serve(&args.http, observed).await {
        // The load does not depend on the status page: warn and go on.
        tracing::warn!("{e:#}; continuing without the HTTP endpoint");
    }
    let consumer = tokio::spawn(finstream_consumer::run(ccfg, stop_rx, targets_rx));

    let (produced, interrupted) = produce_cmd::produce(pcfg).await?;
    let produced = match produced {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = consumer.await;
            let _ = broker.shutdown().await;
            drop(cluster);
            return produce_cmd::report(Err(e), interrupted);
        }
    };
    tracing::info!("produce: {produced}");
    if interrupted {
        let _ = stop_tx.send(true);
    } else if args.serve {
        println!(
            "all-in-one: loaded {}; serving on {bootstrap} (topic {}), Ctrl-C to stop",
            csv.display(),
            args.topic
        );
    } else {
        // Everything is in the log: the load is done once PostgreSQL holds these offsets.
        let _ = targets_tx.send(Some(high_watermarks(&broker, &args.topic)));
    }
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        let _ = stop_on_signal.send(true);
    });
    let consumed = consumer.await.context("consumer task panicked")??;
    broker.shutdown().await.context("broker shutdown")?;
    drop(cluster);
    let stopped = interrupted || (*stop_tx.borrow() && !args.serve);
    Ok(report(&produced, &consumed, started, stopped))
}

/// The embedded broker: a free port (or 127.0.0.1:9092 with `--serve`), the data under
/// the data directory, and the topic created.
async fn start_broker(args: &AllInOneArgs) -> anyhow::Result<finstream_broker::RunningBroker> {
    let default_listen = if args.serve {
        "127.0.0.1:9092"
    } else {
        "127.0.0.1:0"
    };
    let broker = finstream_broker::start(BrokerConfig {
        listen: args.listen.clone().unwrap_or_else(|| default_listen.into()),
        data_dir: Some(args.data_dir.join("broker")),
        // The group's one member is our own consumer: nothing to wait for.
        group_initial_rebalance_delay: std::time::Duration::ZERO,
        ..BrokerConfig::default()
    })
    .await
    .context("cannot start the embedded broker")?;
    if let Err(e) = broker.ensure_topic(&args.topic) {
        anyhow::bail!("cannot create topic {}: {e}", args.topic);
    }
    Ok(broker)
}

/// The high watermark of every partition of `topic`.
fn high_watermarks(broker: &finstream_broker::RunningBroker, topic: &str) -> Targets {
    broker
        .view()
        .topic(topic)
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.index, p.high_watermark))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints the summary; the exit code says whether every row arrived.
fn report(
    produced: &finstream_producer::Summary,
    consumed: &finstream_consumer::Summary,
    started: Instant,
    stopped: bool,
) -> ExitCode {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "all-in-one: rows read {}, loaded {}, dead-lettered {} (bad rows) + {} (poison messages), failed {}, {:.2} s, {:.0} rows/s",
        produced.rows_read,
        consumed.rows_loaded,
        produced.dead_lettered,
        consumed.dead_letters,
        produced.failed,
        seconds,
        produced.rows_read as f64 / seconds.max(1e-9)
    );
    if stopped {
        return ExitCode::from(produce_cmd::EXIT_INTERRUPTED);
    }
    if let Some(why) = &produced.aborted {
        eprintln!("error: aborted: {why}");
        return ExitCode::FAILURE;
    }
    if produced.failed > 0 {
        eprintln!(
            "error: {} messages were not acknowledged (see the log for file:line)",
            produced.failed
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
