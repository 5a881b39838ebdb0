//! One tenant's PingOne client: rate-limited GETs of HAL pages with Ping's retry policy.
//!
//! - 408, 429 and 5xx, connection errors and truncated bodies are retried, waiting
//!   `Retry-After` (seconds or HTTP date) when given, else `base × 2^attempt` plus jitter, both
//!   capped (Ping's SDKs: at most 10 retries, 30 s cap).
//! - A 401 with `INVALID_TOKEN` renews the token once and retries once.
//! - Other 4xx are returned as [`PingOneError::Api`] with PingOne's code and id.
//! - Every call, its retries and their waits included, ends by the tenant's
//!   `request_deadline` ([`PingOneError::DeadlineExceeded`]).
//! - Every request and every wait is raced against shutdown, so a hung request ends at once on
//!   SIGTERM ([`PingOneError::Cancelled`]).

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::PingOneError;
use super::http::{retry_after, without_url};
use super::page::{ApiErrorBody, Page};
use super::token::{Token, TokenAttempt, TokenCache};
use crate::config::TenantConfig;
use crate::metrics::Metrics;

/// A tenant's PingOne client. Cheap to clone; clones share the token and the rate limit.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tenant: String,
    http: reqwest::Client,
    tokens: TokenCache,
    limiter: DefaultDirectRateLimiter,
    max_retries: u32,
    deadline: Duration,
    retry_cap: Duration,
    base_backoff: Duration,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// The wait before retry number `attempt` (0-based): `Retry-After` if given, else exponential
/// backoff with 0-100 ms jitter; both capped at `cap`.
pub fn backoff(
    attempt: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
) -> Duration {
    let wait = match retry_after {
        Some(d) => d,
        None => {
            let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
            exp + Duration::from_millis(rand::rng().random_range(0..=100))
        }
    };
    wait.min(cap)
}

enum Attempt {
    Done(Vec<u8>),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        label: &'static str,
    },
    InvalidToken(String),
    Fatal(PingOneError),
}

impl Client {
    /// Builds the client of `tenant`: system roots plus the tenant's extra CA, timeouts, rate
    /// limit.
    ///
    /// # Errors
    /// [`PingOneError::Setup`] when the CA file holds no usable certificate.
    pub fn new(
        tenant: &TenantConfig,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> Result<Self, PingOneError> {
        let http =
            super::http::shared_client(tenant.request_timeout, tenant.extra_ca_pem.as_deref())
                .map_err(PingOneError::Setup)?;
        let rps = NonZeroU32::new(tenant.requests_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            inner: Arc::new(Inner {
                tenant: tenant.tenant_id.clone(),
                http,
                tokens: TokenCache::new(
                    tenant.token_url.to_string(),
                    tenant.client_id.clone(),
                    tenant.client_secret.clone(),
                    tenant.token_renew_margin,
                ),
                limiter: RateLimiter::direct(Quota::per_second(rps)),
                max_retries: tenant.max_retries,
                deadline: tenant.request_deadline,
                retry_cap: tenant.retry_max_backoff,
                base_backoff: tenant.retry_base_backoff.min(tenant.retry_max_backoff),
                metrics,
                cancel,
            }),
        })
    }

    /// Runs `work` unless shutdown or `deadline` comes first: `Ok(None)` at the deadline,
    /// [`PingOneError::Cancelled`] on shutdown (the request in flight is dropped at once).
    async fn race<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, PingOneError> {
        tokio::select! {
            biased;
            () = self.inner.cancel.cancelled() => Err(PingOneError::Cancelled),
            () = tokio::time::sleep_until(deadline.into()) => Ok(None),
            value = work => Ok(Some(value)),
        }
    }

    fn deadline_error(&self, url: &str, attempts: u32, last: Option<String>) -> PingOneError {
        PingOneError::DeadlineExceeded {
            url: url.into(),
            deadline: self.inner.deadline,
            attempts,
            last: last.unwrap_or_else(|| "no answer".into()),
        }
    }

    /// Waits `wait` before a retry, unless it would end past `deadline` (then the call gives up
    /// now with the last failure) or shutdown comes first.
    async fn retry_wait(
        &self,
        wait: Duration,
        deadline: Instant,
        url: &str,
        attempts: u32,
        reason: &str,
    ) -> Result<(), PingOneError> {
        if Instant::now() + wait >= deadline {
            return Err(self.deadline_error(url, attempts, Some(reason.to_owned())));
        }
        self.race(deadline, tokio::time::sleep(wait)).await?;
        Ok(())
    }

    /// A fresh token, renewing with retries when needed. `invalid_client` is returned at once.
    ///
    /// # Errors
    /// [`PingOneError::InvalidClient`], [`PingOneError::Token`], retries exhausted, the deadline
    /// passed, or cancelled.
    pub async fn token(&self) -> Result<Token, PingOneError> {
        self.token_until(Instant::now() + self.inner.deadline).await
    }

    async fn token_until(&self, deadline: Instant) -> Result<Token, PingOneError> {
        if let Some(t) = self.inner.tokens.fresh().await {
            return Ok(t);
        }
        let url = self.inner.tokens.token_url().to_owned();
        let mut attempt = 0;
        let mut last = None;
        loop {
            if self.inner.cancel.is_cancelled() {
                return Err(PingOneError::Cancelled);
            }
            let renewed = self
                .race(deadline, async {
                    self.inner.limiter.until_ready().await;
                    self.inner.tokens.renew(&self.inner.http).await
                })
                .await?;
            let Some(renewed) = renewed else {
                return Err(self.deadline_error(&url, attempt + 1, last));
            };
            match renewed {
                TokenAttempt::Ok(t) => {
                    self.inner.metrics.token_renewal(&self.inner.tenant);
                    tracing::debug!(tenant = %self.inner.tenant, "access token renewed");
                    return Ok(t);
                }
                TokenAttempt::Fatal(e) => return Err(e),
                TokenAttempt::Retry {
                    reason,
                    retry_after,
                    label,
                } => {
                    if attempt >= self.inner.max_retries {
                        return Err(PingOneError::RetriesExhausted {
                            url,
                            attempts: attempt + 1,
                            last: reason,
                        });
                    }
                    self.inner.metrics.retry(&self.inner.tenant, label);
                    let wait = backoff(
                        attempt,
                        retry_after,
                        self.inner.base_backoff,
                        self.inner.retry_cap,
                    );
                    tracing::warn!(tenant = %self.inner.tenant, %reason, wait_ms = wait.as_millis() as u64, "retrying token request");
                    self.retry_wait(wait, deadline, &url, attempt + 1, &reason)
                        .await?;
                    last = Some(reason);
                    attempt += 1;
                }
            }
        }
    }

    /// GETs `url` (verbatim) and parses the page's `_embedded.<collection>`.
    ///
    /// # Errors
    /// See the module documentation.
    pub async fn get_page(&self, url: &str, collection: &str) -> Result<Page, PingOneError> {
        let deadline = Instant::now() + self.inner.deadline;
        let mut attempt: u32 = 0;
        let mut renewed = false;
        let mut last = None;
        loop {
            let token = self.token_until(deadline).await?;
            let outcome = self
                .race(deadline, async {
                    self.inner.limiter.until_ready().await;
                    self.try_get(url, &token).await
                })
                .await?;
            let Some(outcome) = outcome else {
                return Err(self.deadline_error(url, attempt + 1, last));
            };
            let outcome = match outcome {
                Attempt::Done(body) => match Page::parse(&body, collection) {
                    Ok(page) => {
                        self.inner.metrics.page(&self.inner.tenant, collection);
                        return Ok(page);
                    }
                    Err(reason) => Attempt::Retry {
                        reason: format!("malformed page: {reason}"),
                        retry_after: None,
                        label: "body",
                    },
                },
                other => other,
            };
            match outcome {
                Attempt::Done(_) => {}
                Attempt::Fatal(e) => return Err(e),
                Attempt::InvalidToken(message) => {
                    if renewed {
                        return Err(PingOneError::Api {
                            status: 401,
                            code: "ACCESS_FAILED".into(),
                            id: "-".into(),
                            message: format!("token refused again after renewal: {message}"),
                            details: vec!["INVALID_TOKEN".into()],
                            url: url.into(),
                        });
                    }
                    renewed = true;
                    self.inner.metrics.retry(&self.inner.tenant, "token");
                    tracing::info!(tenant = %self.inner.tenant, "access token refused, renewing once");
                    self.inner.tokens.invalidate(token.generation).await;
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                    label,
                } => {
                    if attempt >= self.inner.max_retries {
                        return Err(PingOneError::RetriesExhausted {
                            url: url.into(),
                            attempts: attempt + 1,
                            last: reason,
                        });
                    }
                    self.inner.metrics.retry(&self.inner.tenant, label);
                    let wait = backoff(
                        attempt,
                        retry_after,
                        self.inner.base_backoff,
                        self.inner.retry_cap,
                    );
                    tracing::warn!(
                        tenant = %self.inner.tenant, %reason, attempt,
                        wait_ms = wait.as_millis() as u64, "retrying pingone request"
                    );
                    self.retry_wait(wait, deadline, url, attempt + 1, &reason)
                        .await?;
                    last = Some(reason);
                    attempt += 1;
                }
            }
        }
    }

    async fn try_get(&self, url: &str, token: &Token) -> Attempt {
        let response = match self
            .inner
            .http
            .get(url)
            .bearer_auth(token.value.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.is_builder() {
                    return Attempt::Fatal(PingOneError::Malformed {
                        url: url.into(),
                        reason: format!("unusable url: {}", without_url(&e)),
                    });
                }
                return Attempt::Retry {
                    reason: without_url(&e),
                    retry_after: None,
                    label: "transport",
                };
            }
        };
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("reading body: {}", without_url(&e)),
                    retry_after: None,
                    label: "body",
                };
            }
        };
        match status {
            200..=299 => Attempt::Done(body.to_vec()),
            408 | 429 | 500..=599 => Attempt::Retry {
                reason: format!("http {status}"),
                retry_after: wait,
                label: match status {
                    429 => "429",
                    408 => "408",
                    _ => "5xx",
                },
            },
            _ => {
                let err = ApiErrorBody::parse(&body);
                let details = err.detail_codes();
                if status == 401
                    && (details.iter().any(|d| d == "INVALID_TOKEN") || err.code.is_none())
                {
                    return Attempt::InvalidToken(err.message.unwrap_or_default());
                }
                Attempt::Fatal(PingOneError::Api {
                    status,
                    code: err.code.unwrap_or_else(|| "-".into()),
                    id: err.id.unwrap_or_else(|| "-".into()),
                    message: err.message.unwrap_or_default(),
                    details,
                    url: url.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_BACKOFF: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(30);
        let b0 = backoff(0, None, BASE_BACKOFF, cap);
        assert!(b0 >= Duration::from_secs(1) && b0 <= Duration::from_millis(1100));
        let b3 = backoff(3, None, BASE_BACKOFF, cap);
        assert!(b3 >= Duration::from_secs(8) && b3 <= Duration::from_millis(8100));
        assert_eq!(backoff(9, None, BASE_BACKOFF, cap), cap);
        assert_eq!(
            backoff(0, Some(Duration::from_secs(300)), BASE_BACKOFF, cap),
            cap
        );
        assert_eq!(
            backoff(5, Some(Duration::from_secs(2)), BASE_BACKOFF, cap),
            Duration::from_secs(2)
        );
    }
}
