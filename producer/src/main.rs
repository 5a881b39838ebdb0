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
    /// Manage the tenants topic (`kafka.tenants_topic`, with `kafka.tenant_source = "topic"`).
    Tenants {
        /// Configuration file.
        #[arg(long, env = "PRODUCER_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TenantsAction,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsAction {
    /// Register the tenants of a file of `[[tenants]]` entries; refused if one is registered.
    Add {
        /// File of `[[tenants]]` entries, with the same fields as the configuration file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Change registered tenants from a file of `[[tenants]]` entries.
    Update {
        /// File of `[[tenants]]` entries.
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove a tenant: the instance running it stops it.
    Remove {
        /// The tenant's `tenant_id`.
        #[arg(long)]
        tenant: String,
    },
    /// Print the registered tenants: id, partition, environment, region, secret reference.
    List,
}

fn main() -> ExitCode {
    pipeline_io::cli::exit(real_main(Cli::parse()))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = match &cli.command {
        Command::Run { config }
        | Command::Sync { config, .. }
        | Command::ValidateConfig { config } => config.clone(),
        Command::Tenants { config: None, .. } => {
            return Ok(invalid_config("--config (or PRODUCER_CONFIG) is required"));
        }
        Command::Tenants {
            config: Some(config),
            ..
        } => config.clone(),
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
        Command::Tenants { action, .. } => {
            return pipeline_io::cli::run(format, deadline, |_| tenants(config, action))?;
        }
        Command::ValidateConfig { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `producer tenants …`.
async fn tenants(config: config::Config, action: TenantsAction) -> anyhow::Result<ExitCode> {
    use producer::registry;
    if config.kafka.tenant_source != config::TenantSource::Topic {
        return Ok(invalid_config(
            "kafka.tenant_source is \"file\": this configuration runs the [[tenants]] of its \
             file; set kafka.tenant_source = \"topic\" to use the tenants topic",
        ));
    }
    let kafka = &config.kafka;
    let outcome = match action {
        TenantsAction::Add { file } => put(kafka, &file, false).await?,
        TenantsAction::Update { file } => put(kafka, &file, true).await?,
        TenantsAction::Remove { tenant } => {
            registry::remove(kafka, &tenant).await?;
            println!("removed {tenant}");
            Ok(())
        }
        TenantsAction::List => {
            for (id, r) in registry::list(kafka).await? {
                match r.tenant {
                    Ok(t) => println!(
                        "{id}\tpartition={}\tenvironment={}\tregion={}\tsecret={}",
                        r.partition,
                        t.environment_id,
                        t.region,
                        t.client_secret_env
                            .map(|v| format!("env:{v}"))
                            .or_else(|| t
                                .client_secret_file
                                .map(|f| format!("file:{}", f.display())))
                            .unwrap_or_else(|| "-".into())
                    ),
                    Err(reason) => {
                        println!("{id}\tpartition={}\tunreadable: {reason}", r.partition)
                    }
                }
            }
            Ok(())
        }
    };
    Ok(match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => invalid_config(e),
    })
}

/// `tenants add` (`update` false) or `tenants update`: an invalid file is the `Err` of the
/// outcome (exit 2); Kafka's refusal or failure is the error (exit 1).
async fn put(
    kafka: &config::KafkaConfig,
    file: &std::path::Path,
    update: bool,
) -> anyhow::Result<Result<(), config::ConfigError>> {
    use producer::registry;
    let list = match registry::read_tenant_file(file, |name| std::env::var(name).ok()) {
        Ok(list) => list,
        Err(e) => return Ok(Err(e)),
    };
    registry::put(kafka, &list, update).await?;
    for t in &list {
        println!(
            "{} {}",
            if update { "updated" } else { "added" },
            t.tenant_id
        );
    }
    Ok(Ok(()))
}
