//! The `pingone-sim` binary: parse flags, serve until Ctrl-C or SIGTERM, print tenants when ready.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = pingone_sim::cli::Cli::parse().into_config()?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        pingone_sim::cli::wait_for_signal().await;
        signal.cancel();
    });
    pingone_sim::run(config, shutdown, |addr, tenants| {
        tracing::info!(%addr, tenants = tenants.len(), "pingone simulator listening");
        for t in tenants {
            println!("{}", t.to_json());
        }
    })
    .await?;
    Ok(())
}
