//! The `transformer` binary: parses the command line and calls the library
//! (`run`, `replay`, `license-report`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use transformer::config::Config;
use transformer::metrics::{self, Metrics};
use transformer::{replay, report};

/// mimalloc instead of glibc's malloc: the transformer allocates per event (JSON values, Avro
/// records), and malloc and free took about a third of its CPU time in a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Normalizes raw PingOne events into usage metadata, exactly once"
)]
struct Cli {
    /// TOML configuration file (see transformer/README.md); defaults apply without it.
    #[arg(long, short, global = true, env = "TRANSFORMER_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the file).
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Confluent-compatible schema registry URL (overrides the file).
    #[arg(long, global = true, env = "SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Default, clap::Args)]
struct RunArgs {
    /// Exit once the raw topic's end (as first reached) is processed and committed.
    #[arg(long)]
    until_caught_up: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the exactly-once transformer until SIGINT/SIGTERM (the default).
    Run(RunArgs),
    /// Re-normalize past raw events into the outputs or topics with another prefix.
    Replay(replay::ReplayArgs),
    /// Print the license-optimization report from the normalized topics.
    LicenseReport(report::ReportArgs),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::new("", ""),
    };
    if let Some(b) = &cli.bootstrap_servers {
        config.bootstrap_servers.clone_from(b);
    }
    if let Some(r) = &cli.schema_registry_url {
        config.schema_registry_url.clone_from(r);
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    token.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = load_config(&cli)?;
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(run) => {
            config.stop_at_end |= run.until_caught_up;
            let shutdown = CancellationToken::new();
            let metrics = Arc::new(Metrics::new());
            if let Some(addr) = config.metrics_listen_addr {
                let bound = metrics::serve(addr, metrics.clone(), shutdown.clone())
                    .await
                    .with_context(|| format!("serving metrics on {addr}"))?;
                tracing::info!(%bound, "metrics and health endpoints listening");
            }
            let deadline = Duration::from_millis(config.shutdown_deadline_ms);
            let mut task = tokio::spawn(transformer::pipeline::run_with_metrics(
                config,
                shutdown.clone(),
                metrics,
            ));
            tokio::select! {
                done = &mut task => return Ok(done.context("transformer task")??),
                () = shutdown_signal(shutdown.clone()) => {}
            }
            tracing::info!(deadline_ms = deadline.as_millis() as u64, "shutting down");
            match tokio::time::timeout(deadline, task).await {
                Ok(done) => done.context("transformer task")??,
                Err(_) => tracing::warn!(
                    "shutdown deadline passed; the open transaction is aborted by the next start"
                ),
            }
            Ok(())
        }
        Command::Replay(args) => {
            let summary = replay::replay(&config, &args).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::LicenseReport(args) => {
            let text = report::run(&config, &args).await?;
            print!("{text}");
            Ok(())
        }
    }
}
