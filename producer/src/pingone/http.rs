//! HTTP helpers shared by the token requests ([`super::token`]) and the API requests
//! ([`super::client`]): the HTTP client, reading `Retry-After`, and the text of a transport
//! error.
//!
//! This module depends on neither of them, so that `client` → `token` → `http` runs one way.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Idle connections kept per host.
const IDLE_CONNECTIONS: usize = 16;

/// What makes two tenants' HTTP clients differ: the request timeout and the extra CA file.
type ClientKey = (Duration, Option<Vec<u8>>);

/// The HTTP client of tenants with this request timeout and extra CA (PEM), shared by all of
/// them: one connection pool and one TLS context (with the system's CA store loaded once)
/// instead of one per tenant, which cost about 1 MB each with hundreds of tenants. The token,
/// the rate limit and the retries stay per tenant.
///
/// # Errors
/// The CA file holds no usable certificate, or the TLS backend cannot start.
pub fn shared_client(
    request_timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, reqwest::Client>>> = OnceLock::new();
    let key = (request_timeout, extra_ca_pem.map(<[u8]>::to_vec));
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(30))
        // Connections left idle after a burst of syncs keep their read buffers: keep a few.
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .user_agent(concat!(
            "pingone-usage-producer/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(pem) = extra_ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("ca_file: {e}"))?;
        if certs.is_empty() {
            return Err("ca_file holds no certificate".into());
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| without_url(&e))?;
    clients.insert(key, client.clone());
    Ok(client)
}

/// Parses `Retry-After`: delta-seconds or an HTTP date (a date in the past gives zero).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A reqwest error's text, with its causes, and its URL replaced by `<url>` (URLs are not secret,
/// but they make messages long).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let future = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(future).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
