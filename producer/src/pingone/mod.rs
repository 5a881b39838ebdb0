//! The PingOne client: tokens ([`token`]), requests with retries and rate limiting
//! ([`client`]), the HTTP helpers both share ([`http`]), and tolerant parsing of HAL pages and
//! error bodies ([`page`]). Dependencies run one way: `client` → `token` → `http`, and both of
//! the first two → `page` and this module's [`PingOneError`].
//!
//! Everything here follows PingOne's documented API conventions (Ping's Platform API docs and
//! the OpenAPI specs in Ping's Go SDKs): `client_secret_post` tokens without `scope`, `next`
//! links followed verbatim, retries on 408/429/5xx honouring `Retry-After`, errors reported
//! with PingOne's `code` and `id`.

pub mod client;
pub mod http;
pub mod page;
pub mod token;

pub use client::Client;
pub use page::Page;

/// Why a PingOne call failed. Never carries a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum PingOneError {
    /// PingOne answered with an error that is not retried (most 4xx).
    #[error("pingone {status} {code} (id {id}) for {url}: {message}{}", detail_suffix(.details))]
    Api {
        /// HTTP status.
        status: u16,
        /// PingOne's error `code`, or `-` if the body had none.
        code: String,
        /// PingOne's error `id`, or `-`.
        id: String,
        /// PingOne's `message`.
        message: String,
        /// The `details[].code` values.
        details: Vec<String>,
        /// The request URL (cursors are not secret).
        url: String,
    },
    /// The token endpoint refused the client credentials (`invalid_client`).
    #[error("pingone refused the client credentials (invalid_client): {description}")]
    InvalidClient {
        /// `error_description` from the token endpoint.
        description: String,
    },
    /// The token endpoint failed otherwise.
    #[error("pingone token endpoint returned {status} {error}: {description}")]
    Token {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// A retryable failure persisted through every retry.
    #[error("pingone request to {url} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// The request URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The call, retries and waits included, did not succeed by the tenant's
    /// `request_deadline_ms`.
    #[error(
        "pingone request to {url} did not succeed within its deadline of {}s ({attempts} attempt(s)); last failure: {last}",
        deadline.as_secs_f64()
    )]
    DeadlineExceeded {
        /// The request URL.
        url: String,
        /// The deadline.
        deadline: std::time::Duration,
        /// Attempts started.
        attempts: u32,
        /// The last failure, or `no answer` when the attempt in flight was cut off.
        last: String,
    },
    /// The response was not the JSON expected.
    #[error("malformed pingone response from {url}: {reason}")]
    Malformed {
        /// The request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The HTTP client could not be built (bad CA file).
    #[error("cannot build the https client: {0}")]
    Setup(String),
    /// Shutdown was requested while waiting.
    #[error("cancelled by shutdown")]
    Cancelled,
}

fn detail_suffix(details: &[String]) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" (details: {})", details.join(", "))
    }
}

impl PingOneError {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::InvalidClient { .. } => "invalid_client",
            Self::Token { .. } => "token",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::DeadlineExceeded { .. } => "deadline",
            Self::Malformed { .. } => "malformed",
            Self::Setup(_) => "setup",
            Self::Cancelled => "cancelled",
        }
    }
}
