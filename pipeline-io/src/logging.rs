//! Logging of every binary: `tracing` to stderr, filtered by `RUST_LOG` (default
//! [`DEFAULT_FILTER`]), as text lines or JSON objects.

use crate::config::LogFormat;

/// `info`, except the Delta kernel's own logs (the lake sink's dependency), which log every
/// snapshot at `info` and a table not created yet at `error`: the sink reports what matters of
/// those in its own errors.
pub const DEFAULT_FILTER: &str = "info,buoyant_kernel=off,deltalake_core=warn";

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
