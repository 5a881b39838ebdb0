//! Access tokens: OAuth2 client credentials with `client_secret_post`, one token per tenant,
//! renewed before `expires_in` runs out, or on demand after a 401 `INVALID_TOKEN`.
//!
//! The token and the client secret live in [`Secret`]s and are never logged.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::PingOneError;
use super::http::{retry_after, without_url};
use super::page::OAuthErrorBody;
use pipeline_io::secret::Secret;

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer value.
    pub value: Secret,
    /// Renew at or after this instant.
    pub renew_at: Instant,
    /// Generation number: lets a 401 invalidate exactly the token that failed.
    pub generation: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// Outcome of one token request.
#[derive(Debug)]
pub enum TokenAttempt {
    /// A token.
    Ok(Token),
    /// A failure worth retrying (transport, 429, 5xx), with an optional server-given wait.
    Retry {
        /// What happened.
        reason: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
        /// Metric label.
        label: &'static str,
    },
    /// A failure not worth retrying now.
    Fatal(PingOneError),
}

/// Holds the tenant's current token; one renewal at a time.
#[derive(Debug)]
pub struct TokenCache {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    renew_margin: Duration,
    current: Mutex<Option<Token>>,
}

impl TokenCache {
    /// A cache for one tenant's credentials.
    pub fn new(
        token_url: String,
        client_id: String,
        client_secret: Secret,
        renew_margin: Duration,
    ) -> Self {
        Self {
            token_url,
            client_id,
            client_secret,
            renew_margin,
            current: Mutex::new(None),
        }
    }

    /// The token endpoint (not secret: it names the environment).
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The current token if still fresh.
    pub async fn fresh(&self) -> Option<Token> {
        let guard = self.current.lock().await;
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .cloned()
    }

    /// Drops the token of `generation` (after a 401 `INVALID_TOKEN`).
    pub async fn invalidate(&self, generation: u64) {
        let mut guard = self.current.lock().await;
        if guard.as_ref().is_some_and(|t| t.generation == generation) {
            *guard = None;
        }
    }

    /// Requests a new token unless another task already renewed it.
    pub async fn renew(&self, http: &reqwest::Client) -> TokenAttempt {
        let mut guard = self.current.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return TokenAttempt::Ok(t.clone());
        }
        let generation = guard.as_ref().map_or(1, |t| t.generation + 1);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let sent_at = Instant::now();
        let response = match http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return TokenAttempt::Retry {
                    reason: format!("token request failed: {}", without_url(&e)),
                    retry_after: None,
                    label: "transport",
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return TokenAttempt::Retry {
                    reason: format!("token response body failed: {}", without_url(&e)),
                    retry_after: None,
                    label: "body",
                };
            }
        };
        if status == 200 {
            return match serde_json::from_slice::<TokenResponse>(&body) {
                Ok(t) if !t.access_token.is_empty() => {
                    let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
                    let margin = self.renew_margin.min(lifetime / 5);
                    let token = Token {
                        value: Secret::new(t.access_token),
                        renew_at: sent_at + lifetime.saturating_sub(margin),
                        generation,
                    };
                    *guard = Some(token.clone());
                    TokenAttempt::Ok(token)
                }
                _ => TokenAttempt::Retry {
                    reason: "token response without access_token".into(),
                    retry_after: None,
                    label: "body",
                },
            };
        }
        if status == 408 || status == 429 || status >= 500 {
            return TokenAttempt::Retry {
                reason: format!("token endpoint returned {status}"),
                retry_after,
                label: if status == 429 { "429" } else { "5xx" },
            };
        }
        let err = OAuthErrorBody::parse(&body);
        let code = err.error.unwrap_or_else(|| "-".into());
        let description = err.error_description.unwrap_or_default();
        if code == "invalid_client" {
            TokenAttempt::Fatal(PingOneError::InvalidClient { description })
        } else {
            TokenAttempt::Fatal(PingOneError::Token {
                status,
                error: code,
                description,
            })
        }
    }
}
