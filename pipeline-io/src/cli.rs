//! What every binary's `main.rs` shares, so that each stays thin and both have one shape:
//! parse the command line, load the configuration, then [`run`] the library's future on a
//! runtime with logging and the shutdown signal, and turn the outcome into an exit status
//! ([`exit`], [`invalid_config`]).

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use crate::shutdown::{ShutdownError, on_signals, run_until_shutdown};

/// `--log-format`, overriding the configuration's `operations.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

/// Why [`run`] could not give the work's own result.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The work did not stop in time after a signal, or panicked.
    #[error(transparent)]
    Shutdown(#[from] ShutdownError),
}

/// Most threads of the runtime's blocking pool.
pub const BLOCKING_THREADS: usize = 32;

/// Installs logging in `format`, starts a multi-threaded runtime, wires SIGINT and SIGTERM to a
/// cancellation token, and runs `work(token)` to its end; after a signal, at most `deadline`
/// longer. Then it waits at most `deadline` again for what still runs on the blocking pool
/// (clients closing off the runtime, see [`crate::kafka::OffRuntimeDrop`], or a call the work
/// abandoned): dropping the runtime would wait for those with no bound.
///
/// # Errors
/// [`MainError`]; the work's own outcome is the `Ok` value.
pub fn run<T, Fut>(
    format: LogFormat,
    deadline: Duration,
    work: impl FnOnce(CancellationToken) -> Fut,
) -> Result<T, MainError>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    crate::logging::init(format);
    // The blocking pool runs librdkafka's blocking calls and DNS lookups; bounded so that
    // hundreds of tenants resolving at once cannot start hundreds of threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(MainError::Runtime)?;
    let outcome = runtime.block_on(async move {
        let shutdown = on_signals();
        let future = work(shutdown.clone());
        Ok(run_until_shutdown(future, shutdown, deadline).await?)
    });
    let closing = std::time::Instant::now();
    runtime.shutdown_timeout(deadline);
    if closing.elapsed() >= deadline {
        tracing::warn!(
            ?deadline,
            "blocking calls or client shutdowns still running at exit: abandoned"
        );
    }
    outcome
}

/// Turns transparent huge pages off for this process, at the start of `main`: a process whose
/// memory turns over fast (batches, Parquet row groups, fetched messages) gets each fresh 2 MiB
/// huge page zeroed whole however little of it is used. In the transformer that zeroing was
/// 3.5-7 % of a profile and peak RSS 10-25 MB higher; in the lake sink up to a third of its CPU
/// time. Best effort: where the call is refused the process runs as before.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// The exit status of `main`: the code given, or 1 after printing the error with each of its
/// causes once ([`crate::error_text`]). Takes `anyhow::Error` and any boxed error.
pub fn exit<E>(result: Result<ExitCode, E>) -> ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::error_text(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Prints a configuration error (every problem it lists) and gives exit status 2.
pub fn invalid_config(error: impl fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_does_not_wait_unbounded_for_the_blocking_pool() {
        // A client close that never ends, left on the blocking pool by finished work.
        let started = std::time::Instant::now();
        let out = run(LogFormat::Text, Duration::from_millis(200), |_| async {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(120)));
            7
        })
        .unwrap();
        assert_eq!(out, 7);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run waited {:?} for a blocking task",
            started.elapsed()
        );
    }
}
