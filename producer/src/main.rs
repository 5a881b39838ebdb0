//! The `producer` binary: parses the command line, loads the configuration, and calls the
//! library with a shutdown signal. Same shape as the transformer's `main.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipeline_io::cli::{LogFormatArg, invalid_config};
use producer::config;

/// Polls PingOne tenants and writes raw events to Kafka.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format; defaults to the config's `operations.log_format`.
    #[arg(long, global = true, env = "PRODUCER_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
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

fn main() -> ExitCode {
    pipeline_io::cli::exit(real_main(Cli::parse()))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = match &cli.command {
        Command::Run { config }
        | Command::Sync { config, .. }
        | Command::ValidateConfig { config } => config.clone(),
    };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => return Ok(invalid_config(e)),
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
    let format = cli
        .log_format
        .map_or(config.operations.log_format, Into::into);
    let deadline = config.operations.shutdown_deadline;
    match cli.command {
        Command::Run { .. } => {
            pipeline_io::cli::run(format, deadline, |shutdown| producer::run(config, shutdown))??;
        }
        Command::Sync { tenant, .. } => {
            let completed = pipeline_io::cli::run(format, deadline, |shutdown| async move {
                let done = producer::sync_once(config, &tenant, shutdown).await;
                done.map(|c| (tenant, c))
            })??;
            tracing::info!(tenant = %completed.0, sync_id = %completed.1.sync_id, "sync completed");
        }
        Command::ValidateConfig { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}
