//! The `lake-sink` binary: parses the command line, loads the configuration, and calls the
//! library with a shutdown signal. Same shape as the producer's and the transformer's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lake_sink::config::{self, Flags, LogFormat};
use lake_sink::maintain::{self, MaintainArgs};
use pipeline_io::cli::{LogFormatArg, invalid_config};

/// mimalloc instead of glibc's malloc: the sink allocates per record (decoded Avro values), and
/// glibc's malloc and free took about a quarter of its CPU time in a profile
/// (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes the normalized topics into Delta Lake tables, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file (see consumers/lake-sink/README.md); defaults apply without it.
    #[arg(long, short, global = true, env = "LAKE_SINK_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides the file and KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long, global = true)]
    bootstrap_servers: Option<String>,
    /// Confluent-compatible schema registry URL (overrides the file and SCHEMA_REGISTRY_URL).
    #[arg(long, global = true)]
    schema_registry_url: Option<String>,
    /// Where the tables are: a directory or an s3://, gs://, az:// URL (overrides the file).
    #[arg(long, global = true)]
    location: Option<String>,
    /// Log format; defaults to the config's `operations.log_format`.
    #[arg(long, global = true, env = "LAKE_SINK_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Default, clap::Args)]
struct RunArgs {
    /// Exit once every assigned partition's end (when reached) is committed to the tables.
    #[arg(long)]
    until_caught_up: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the topics into the tables until SIGINT/SIGTERM (the default).
    Run(RunArgs),
    /// Compact small files and/or vacuum unreferenced ones; safe while sinks run.
    Maintain(MaintainArgs),
    /// The benchmark's baseline: read the three topics to their end with the sink's consumer,
    /// decoding and writing nothing, and print records, bytes and seconds as JSON.
    ConsumeOnly,
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
        location: cli.location.clone(),
    };
    let command = cli.command.unwrap_or(Command::Run(RunArgs::default()));
    if let Command::Maintain(args) = &command {
        // Only the tables: no broker or registry address is needed.
        let lake = match config::load_lake(cli.config.as_deref(), &flags) {
            Ok(l) => l,
            Err(e) => return Ok(invalid_config(e)),
        };
        if let Err(e) = maintain::check(args) {
            return Ok(invalid_config(e));
        }
        let format = cli.log_format.map_or(LogFormat::Text, Into::into);
        let args = args.clone();
        let done =
            pipeline_io::cli::run(format, std::time::Duration::from_secs(15), |_| async move {
                maintain::maintain_all(&lake, &args).await
            })??;
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = match config::load(cli.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => return Ok(invalid_config(e)),
    };
    let format = cli
        .log_format
        .map_or(config.operations.log_format, Into::into);
    let deadline = config.operations.shutdown_deadline;
    match command {
        Command::ValidateConfig => {
            let source = cli.config.as_ref().map_or_else(
                || "defaults and environment".to_owned(),
                |p| p.display().to_string(),
            );
            println!(
                "{source}: valid; {}, {}, {} -> tables under {}, group {}, brokers {}",
                config.kafka.topics.users,
                config.kafka.topics.applications,
                config.kafka.topics.app_usage,
                config.lake.location,
                config.kafka.group_id,
                config.kafka.client.bootstrap_servers
            );
        }
        Command::Run(args) => {
            config.lake.stop_at_end |= args.until_caught_up;
            let summary = pipeline_io::cli::run(format, deadline, |shutdown| {
                lake_sink::run(config, shutdown)
            })??;
            tracing::info!(rows = ?summary.rows, commits = summary.commits, "lake sink stopped");
        }
        Command::Maintain(_) => {}
        Command::ConsumeOnly => {
            let read = pipeline_io::cli::run(format, deadline, |shutdown| {
                lake_sink::sink::consume_only(config, shutdown)
            })??;
            println!("{}", serde_json::to_string(&read)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
