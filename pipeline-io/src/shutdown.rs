//! The one shutdown path of every binary: SIGINT or SIGTERM cancels a [`CancellationToken`] that
//! the library's tasks watch; the binary then gives them a deadline to finish.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled at the first SIGINT or SIGTERM (Ctrl-C elsewhere than Unix). Must be called
/// within a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                },
                _ => {
                    tracing::error!("cannot install signal handlers; stop with SIGKILL");
                    return;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        cancel.cancel();
    });
    token
}

/// Why [`run_until_shutdown`] returned without the work's own result.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The work did not finish within the deadline after shutdown was requested.
    #[error(
        "shutdown deadline of {0:?} passed; open transactions are aborted by the broker or the next start"
    )]
    Deadline(Duration),
    /// The work's task panicked.
    #[error("the main task panicked")]
    Panicked,
}

/// Runs `work` to completion; once `shutdown` is cancelled, waits at most `deadline` more.
///
/// # Errors
/// [`ShutdownError`] when the deadline passed or the task panicked; otherwise the work's own
/// result is returned as `Ok`.
pub async fn run_until_shutdown<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
    shutdown: CancellationToken,
    deadline: Duration,
) -> Result<T, ShutdownError> {
    let mut task = tokio::spawn(work);
    let joined = tokio::select! {
        joined = &mut task => joined,
        () = shutdown.cancelled() => match tokio::time::timeout(deadline, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                task.abort();
                return Err(ShutdownError::Deadline(deadline));
            }
        },
    };
    joined.map_err(|_| ShutdownError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_ignores_shutdown_is_cut_at_the_deadline() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let never = std::future::pending::<()>();
        let result = run_until_shutdown(never, shutdown, Duration::from_millis(10)).await;
        assert!(matches!(result, Err(ShutdownError::Deadline(_))));
    }

    #[tokio::test]
    async fn finished_work_returns_its_result() {
        let result = run_until_shutdown(
            async { 5 },
            CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(result.unwrap(), 5);
    }
}
