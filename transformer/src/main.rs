//! The `transformer` binary: parses the command line, loads the configuration, and calls the
//! library with a shutdown signal. Same shape as the producer's `main.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipeline_io::cli::{LogFormatArg, invalid_config};
use transformer::config::{self, Flags};
use transformer::{replay, report};

/// mimalloc instead of glibc's malloc: the transformer allocates per event (JSON values, Avro
/// records), and malloc and free took about a third of its CPU time in a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Normalizes raw PingOne events into usage metadata, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see transformer/README.md); defaults apply without it.
    #[arg(long, short, global = true, env = "TRANSFORMER_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the file and KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long, global = true)]
    bootstrap_servers: Option<String>,
    /// Confluent-compatible schema registry URL (overrides the file and SCHEMA_REGISTRY_URL).
    #[arg(long, global = true)]
    schema_registry_url: Option<String>,
    /// Log format; defaults to the config's `operations.log_format`.
    #[arg(long, global = true, env = "TRANSFORMER_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
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
    /// Check the configuration (file, environment, flags) without connecting to anything.
    ValidateConfig,
}

fn main() -> ExitCode {
    pipeline_io::cli::no_transparent_huge_pages();
    pipeline_io::cli::exit(real_main(Cli::parse()))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        bootstrap_servers: cli.bootstrap_servers.clone(),
        schema_registry_url: cli.schema_registry_url.clone(),
    };
    let mut config = match config::load(cli.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => return Ok(invalid_config(e)),
    };
    let command = cli.command.unwrap_or(Command::Run(RunArgs::default()));
    if let Command::ValidateConfig = command {
        let source = cli.config.as_ref().map_or_else(
            || "defaults and environment".to_owned(),
            |p| p.display().to_string(),
        );
        println!(
            "{source}: valid; raw topic {} -> {}*, group {}, brokers {}",
            config.kafka.raw_topic,
            config.kafka.output_prefix,
            config.kafka.group_id,
            config.kafka.client.bootstrap_servers
        );
        return Ok(ExitCode::SUCCESS);
    }
    let format = cli
        .log_format
        .map_or(config.operations.log_format, Into::into);
    let deadline = config.operations.shutdown_deadline;
    match command {
        Command::Run(args) => {
            config.processing.stop_at_end |= args.until_caught_up;
            pipeline_io::cli::run(format, deadline, |shutdown| {
                transformer::run(config, shutdown)
            })??;
        }
        Command::Replay(args) => {
            let summary = pipeline_io::cli::run(format, deadline, |_| async move {
                replay::replay(&config, &args).await
            })??;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::LicenseReport(args) => {
            let text = pipeline_io::cli::run(format, deadline, |_| async move {
                report::run(&config, &args).await
            })??;
            print!("{text}");
        }
        Command::ValidateConfig => {}
    }
    Ok(ExitCode::SUCCESS)
}
