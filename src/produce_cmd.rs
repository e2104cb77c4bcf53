//! `finstream produce`, `finstream fit-scaler` and `finstream generate`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use finstream_producer::pipeline::Progress;
use finstream_producer::{ProduceConfig, ProduceError, Scaler, Summary};

use crate::kafka_opts;

/// Exit code for unusable input (missing columns, unreadable file).
pub const EXIT_INPUT: u8 = 2;
/// Exit code after SIGINT (128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub kafka: kafka_opts::KafkaArgs,
    /// CSV file with `Description` and `Amount` columns (other columns are ignored).
    #[arg(long, alias = "csv_name", default_value = "data/sample.csv")]
    pub csv: PathBuf,
    /// Fitted min-max scaler for the amounts [default: data/scaler.json if it exists,
    /// else the reference scaler built into the binary].
    #[arg(long, env = "FINSTREAM_SCALER")]
    pub scaler: Option<PathBuf>,
    /// Topic for bad rows [default: <topic>.dlq].
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Give up (exit 1) once more than N rows were bad.
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u64>,
    /// Rows larger than this many bytes are dead-lettered.
    #[arg(long, default_value_t = 512 * 1024)]
    pub max_row_bytes: usize,
    /// Rows per chunk handed to a cleaning thread.
    #[arg(long, alias = "chunk_size", default_value_t = 2048)]
    pub chunk_size: usize,
    /// Cleaning threads [default: number of CPUs].
    #[arg(long, alias = "num_tasks")]
    pub workers: Option<usize>,
    /// Parse and clean only, send nothing: validates a file and measures cleaning speed.
    #[arg(long)]
    pub dry_run: bool,
    /// Send in Kafka transactions with this transactional.id: read_committed readers (such
    /// as `finstream consume`) see the file's rows only once they are all acknowledged, and
    /// none of them after an interrupted or failed run.
    #[arg(long, env = "FINSTREAM_TRANSACTIONAL_ID", value_name = "ID")]
    pub transactional_id: Option<String>,
    /// With --transactional-id: rows (good and dead-lettered) per transaction [default:
    /// the whole file]. Each transaction must commit within 15 minutes.
    #[arg(long, value_name = "N", requires = "transactional_id", value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_rows: Option<u64>,
    /// Metrics (rows read, sent, dead-lettered) and status page on this HTTP address while
    /// the file is being sent ("off" to disable).
    #[arg(long, env = "FINSTREAM_HTTP", default_value = "off")]
    pub http: String,
}

impl ProduceArgs {
    pub fn to_config(&self) -> anyhow::Result<ProduceConfig> {
        let (scaler, which) = Scaler::resolve(self.scaler.as_deref())?;
        tracing::info!(scaler = %which, "amount scaler");
        let mut cfg = ProduceConfig::new(
            &self.kafka.bootstrap_servers,
            &self.kafka.topic,
            &self.csv,
            scaler,
        );
        if let Some(dlq) = &self.dlq_topic {
            cfg.dlq_topic = dlq.clone();
        }
        cfg.kafka_properties = self.kafka.properties()?;
        cfg.max_errors = self.max_errors;
        cfg.dry_run = self.dry_run;
        cfg.max_row_bytes = self.max_row_bytes;
        cfg.chunk_rows = self.chunk_size;
        cfg.transactional_id = self.transactional_id.clone();
        cfg.transaction_rows = self.transaction_rows;
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        Ok(cfg)
    }
}

/// A progress bar on a TTY, periodic log lines otherwise.
pub struct ProgressReport {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
    started: Instant,
}

impl ProgressReport {
    pub fn new(file_bytes: u64, label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(file_bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        ProgressReport {
            bar,
            last_log: Instant::now(),
            started: Instant::now(),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for ProgressReport {
    fn update(&mut self, bytes_read: u64, rows_read: u64) {
        let rate = rows_read as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes_read);
                bar.set_message(format!("{rows_read} rows, {rate:.0} rows/s"));
            }
            None if self.last_log.elapsed() >= Duration::from_secs(5) => {
                self.last_log = Instant::now();
                tracing::info!(rows_read, bytes_read, "producing, {rate:.0} rows/s");
            }
            None => {}
        }
    }
}

/// Runs the producer on a blocking thread, stopping it on SIGINT/SIGTERM. Returns the
/// run's result and whether it was interrupted.
pub async fn produce(cfg: ProduceConfig) -> anyhow::Result<(Result<Summary, ProduceError>, bool)> {
    let stop = Arc::new(AtomicBool::new(false));
    let file_bytes = std::fs::metadata(&cfg.csv).map(|m| m.len()).unwrap_or(0);
    let task_stop = stop.clone();
    let mut handle = tokio::task::spawn_blocking(move || {
        let mut progress = ProgressReport::new(file_bytes, "produce");
        let result = finstream_producer::run(&cfg, task_stop, &mut progress);
        progress.finish();
        result
    });
    let result = tokio::select! {
        r = &mut handle => r,
        _ = crate::shutdown_signal() => {
            tracing::warn!("interrupted: no more rows are read; delivering what is in flight");
            stop.store(true, Ordering::Relaxed);
            handle.await
        }
    };
    let result = result.context("producer thread panicked")?;
    Ok((result, stop.load(Ordering::Relaxed)))
}

/// Maps a finished run to the process exit code, printing the summary line.
pub fn report(
    result: Result<Summary, ProduceError>,
    interrupted: bool,
) -> anyhow::Result<ExitCode> {
    let summary = match result {
        Ok(s) => s,
        Err(ProduceError::Source(e)) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INPUT));
        }
        Err(e) => return Err(e.into()),
    };
    println!("produce: {summary}");
    if let Some(why) = &summary.aborted {
        eprintln!("error: aborted: {why}");
        return Ok(ExitCode::FAILURE);
    }
    if interrupted || summary.interrupted {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if summary.failed > 0 {
        eprintln!(
            "error: {} messages were not acknowledged (see the log for file:line)",
            summary.failed
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let cfg = match args.to_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_INPUT));
        }
    };
    let observed = crate::http::Observed {
        producer: Some(cfg.stats.clone()),
        ..Default::default()
    };
    crate::http::maybe_serve(&args.http, observed).await?;
    let (result, interrupted) = produce(cfg).await?;
    report(result, interrupted)
}

#[derive(Args, Debug, Clone)]
pub struct FitScalerArgs {
    /// CSV file with an `Amount` column.
    #[arg(long)]
    pub csv: PathBuf,
    /// Where to write the fitted scaler.
    #[arg(long, default_value = "scaler.json")]
    pub out: PathBuf,
}

/// Fits the scaler on every parsable amount of the file, like MinMaxScaler().fit.
pub fn fit_scaler(args: FitScalerArgs) -> anyhow::Result<ExitCode> {
    use finstream_producer::source;
    let (mut reader, columns) = match source::open(&args.csv) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INPUT));
        }
    };
    let mut amounts = Vec::new();
    let mut skipped = 0u64;
    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .with_context(|| format!("reading {}", args.csv.display()))?
    {
        source::strip_cr(&mut record);
        match record.get(columns.amount).map(source::parse_amount) {
            Some(Ok(x)) => amounts.push(x),
            _ => skipped += 1,
        }
    }
    let scaler = Scaler::fit(amounts)?;
    scaler.save(&args.out)?;
    println!(
        "fit-scaler: {} rows ({} skipped), data_min {}, data_max {}, written to {}",
        scaler.n_samples_seen,
        skipped,
        scaler.data_min,
        scaler.data_max,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Number of transactions.
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// Random seed (same seed, same file).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file [default: standard output].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    match &args.out {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            finstream_producer::generate::write_csv(
                std::io::BufWriter::new(f),
                args.rows,
                args.seed,
            )?;
        }
        None => {
            let stdout = std::io::stdout().lock();
            finstream_producer::generate::write_csv(
                std::io::BufWriter::new(stdout),
                args.rows,
                args.seed,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
