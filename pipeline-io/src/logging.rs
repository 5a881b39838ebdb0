//! Logging of every binary: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as
//! text lines or JSON objects.

use crate::config::LogFormat;

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
