//! The `producer` binary: command line, logging, signals; everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use producer::config::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// Polls PingOne tenants and writes raw events to Kafka.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format; defaults to the config's `operations.log_format`.
    #[arg(long, global = true, env = "PRODUCER_LOG_FORMAT")]
    log_format: Option<Format>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run continuously for every tenant.
    Run {
        /// Configuration file.
        #[arg(long, env = "PRODUCER_CONFIG")]
        config: PathBuf,
    },
    /// Run a single snapshot sync of one tenant; the exit status says whether it completed.
    Sync {
        /// Configuration file.
        #[arg(long, env = "PRODUCER_CONFIG")]
        config: PathBuf,
        /// The tenant's `tenant_id`.
        #[arg(long)]
        tenant: String,
        /// Run one sync and exit (the only mode).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Check a configuration file without connecting to anything.
    ValidateConfig {
        /// Configuration file.
        #[arg(long, env = "PRODUCER_CONFIG")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        token.cancel();
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = match &cli.command {
        Command::Run { config }
        | Command::Sync { config, .. }
        | Command::ValidateConfig { config } => config.clone(),
    };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Command::ValidateConfig { .. } = cli.command {
        println!(
            "{}: valid, {} tenant(s): {}",
            path.display(),
            config.tenants.len(),
            config
                .tenants
                .iter()
                .map(|t| t.tenant_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let format = match cli.log_format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Text) => LogFormat::Text,
        None => config.operations.log_format,
    };
    init_logging(format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        shutdown_on_signals(shutdown.clone());
        let deadline = config.operations.shutdown_deadline;
        match cli.command {
            Command::Run { .. } => {
                let task = tokio::spawn(producer::run(config, shutdown.clone()));
                wait_with_deadline(task, shutdown, deadline)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Sync { tenant, .. } => {
                let cancel = shutdown.clone();
                let task = tokio::spawn(async move {
                    producer::sync_once(config, &tenant, shutdown).await.map(|c| {
                        tracing::info!(tenant = %tenant, sync_id = %c.sync_id, "sync completed");
                    })
                });
                wait_with_deadline(task, cancel, deadline)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::ValidateConfig { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Waits for the task; once shutdown is requested, waits at most `deadline` more.
async fn wait_with_deadline(
    mut task: tokio::task::JoinHandle<Result<(), producer::RunError>>,
    shutdown: CancellationToken,
    deadline: std::time::Duration,
) -> anyhow::Result<()> {
    let joined = tokio::select! {
        joined = &mut task => joined,
        () = shutdown.cancelled() => match tokio::time::timeout(deadline, &mut task).await {
            Ok(joined) => joined,
            Err(_) => anyhow::bail!("shutdown deadline of {deadline:?} passed; open transactions are aborted by the broker"),
        },
    };
    joined
        .context("producer task panicked")?
        .map_err(anyhow::Error::from)
}
