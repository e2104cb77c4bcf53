//! `finstream`: the one binary, a thin CLI over the broker, producer and consumer crates.

mod admin_cmd;
mod all_in_one;
mod broker_cmd;
mod config_file;
mod console;
mod consume_cmd;
mod http;
mod kafka_opts;
mod produce_cmd;
mod topics_alter;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// jemalloc for the whole process; see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "finstream",
    version,
    about = "Bank transactions from CSV through Kafka into PostgreSQL, with an embedded Kafka-compatible broker"
)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(long, global = true, env = "FINSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// TOML file with options (keys are the long flag names; top level for every command,
    /// `[consume]`, `[broker]`... for one); flags and environment variables win over it.
    #[arg(long, global = true, env = "FINSTREAM_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded Kafka-compatible broker.
    Broker(broker_cmd::BrokerArgs),
    /// Clean a CSV of transactions and send it to a Kafka topic.
    Produce(produce_cmd::ProduceArgs),
    /// Fit the min-max amount scaler on a CSV and write scaler.json.
    FitScaler(produce_cmd::FitScalerArgs),
    /// Write synthetic transactions as CSV (for demos and benchmarks).
    Generate(produce_cmd::GenerateArgs),
    /// Load a Kafka topic into PostgreSQL, exactly once.
    Consume(consume_cmd::ConsumeArgs),
    /// Broker + consumer + producer in one process: CSV into PostgreSQL with no Kafka installed.
    AllInOne(all_in_one::AllInOneArgs),
    /// List, create, describe and delete topics (embedded broker or any Kafka cluster).
    Topics(admin_cmd::TopicsArgs),
    /// List and describe consumer groups: members, committed offsets, lag.
    Groups(admin_cmd::GroupsArgs),
    /// Print a shell completion script: `finstream completions bash > /etc/bash_completion.d/finstream`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write one per command into --out-dir.
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// `finstream completions` and `finstream man`: generated from the command line itself.
fn documentation(command: &Command) -> anyhow::Result<std::process::ExitCode> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "finstream", &mut std::io::stdout());
        }
        Command::Man { out_dir: Some(dir) } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cli, dir)?;
            println!("man pages written to {}", dir.display());
        }
        Command::Man { out_dir: None } => {
            clap_mangen::Man::new(cli).render(&mut std::io::stdout())?;
        }
        _ => {}
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Parses the command line, then applies `--config FILE` below flags and environment.
fn parse() -> Cli {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let matches = command.clone().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Some(path) = &cli.config else {
        return cli;
    };
    match config_file::args_from_file(path, &command, &matches) {
        Ok(extra) if extra.is_empty() => cli,
        Ok(extra) => {
            let argv: Vec<_> = argv.into_iter().chain(extra).collect();
            Cli::try_parse_from(argv).unwrap_or_else(|e| {
                eprintln!("error: in config file {}:", path.display());
                e.exit()
            })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// A fetch reads up to 8 MiB of log into a fresh buffer and encodes the response into
/// another. glibc serves such sizes with `mmap` and returns them with `munmap`, so every
/// fetch paid a page fault per 4 KiB twice over (a third of the broker's time reading 1 KiB
/// messages back, by `perf`). A fixed 32 MiB mmap threshold and a 128 MiB trim threshold
/// let freed buffers be reused; the cost is up to that much memory kept after a burst.
#[allow(unsafe_code)] // mallopt(3)
fn keep_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

fn main() -> std::process::ExitCode {
    let cli = parse();
    init_logging(cli.log_format);
    if matches!(cli.command, Command::Broker(_)) {
        keep_large_buffers();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Produce(args) => produce_cmd::run(args).await,
            Command::FitScaler(args) => produce_cmd::fit_scaler(args),
            Command::Generate(args) => produce_cmd::generate(args),
            Command::Consume(args) => consume_cmd::run(args).await,
            Command::AllInOne(args) => all_in_one::run(args).await,
            Command::Topics(args) => admin_cmd::topics(args).await,
            Command::Groups(args) => admin_cmd::groups(args).await,
            c @ (Command::Completions { .. } | Command::Man { .. }) => documentation(&c),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
