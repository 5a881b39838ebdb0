//! A small client of the Confluent-compatible schema registry API (Apicurio's `/apis/ccompat/v7`):
//! writer schemas by id (cached for the process, as are the schemas it registered) and
//! registration of a topic's value subject with `BACKWARD_TRANSITIVE` compatibility (a subject
//! that holds the schema already is only looked up: its level was set when it was registered).
//! The producer registers the raw schema with it; the transformer registers its outputs and
//! resolves the writer schemas of what it reads.
//!
//! Errors separate "this id does not exist" (the message is poison: dead letter) from "the
//! registry cannot be asked right now" (transient: the caller retries). Unknown ids are
//! remembered for [`UNKNOWN_ID_TTL`], so a burst of poison records naming one id costs one
//! request, not one per record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde_json::json;

use serde::Deserialize;

use crate::secret::Secret;

/// Basic-auth credentials for the schema registry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password (redacted in every output).
    pub password: Secret,
}

/// Why the registry did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No schema has this id: the record that names it is poison.
    #[error("schema id {id} is unknown to the registry")]
    UnknownId {
        /// The id.
        id: u32,
    },
    /// The registry returned a schema that does not parse as Avro: poison as well.
    #[error("schema id {id} is not valid avro: {reason}")]
    BadSchema {
        /// The id.
        id: u32,
        /// The parser's message.
        reason: String,
    },
    /// The registry refused a registration as incompatible (a release mistake: fatal).
    #[error("registry refused schema for subject {subject}: {status} {body}")]
    Refused {
        /// The subject.
        subject: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The registry could not be reached or answered with an unexpected status (transient).
    #[error("registry request {url} failed: {reason}")]
    Unavailable {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl RegistryError {
    /// Whether the record naming the schema should be dead-lettered (rather than retried).
    pub fn is_poison(&self) -> bool {
        matches!(self, Self::UnknownId { .. } | Self::BadSchema { .. })
    }
}

/// The registry client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    base: String,
    http: Http,
    auth: Option<RegistryAuth>,
    cache: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
    /// Ids the registry said it does not know, and when it said so.
    unknown: Arc<Mutex<HashMap<u32, Instant>>>,
    /// How many more times a schema fetch that got no answer is tried ([`Registry::retrying`]).
    retries: u32,
}

/// The HTTP client, built on a thread of its own while the process starts.
///
/// Building a `reqwest` client on native-tls sets up its TLS connector, and OpenSSL 3 then
/// parses the system's CA bundle, twice (OpenSSL's default paths, then `openssl-probe`'s file):
/// 40 to 110 ms of CPU on the machines measured here. An `https://` registry pays it on this
/// thread, overlapped with the Kafka clients' start; an `http://` one skips it ([`plain_http`]).
/// The first request waits for the client, and every later one gets the same client (or the
/// same reason it could not be built).
type Http = Shared<BoxFuture<'static, Result<reqwest::Client, String>>>;

/// Whether a registry at `base_url`, trusting `roots` besides the system's CAs, is reached
/// without TLS: an `http://` URL and no roots of its own (roots say TLS is meant somewhere).
fn is_plain_http(base_url: &str, roots: &[reqwest::Certificate]) -> bool {
    roots.is_empty() && url::Url::parse(base_url).is_ok_and(|u| u.scheme() == "http")
}

/// The TLS set-up of a client for an `http://` registry with no roots of its own: rustls with
/// no trusted roots at all, which costs nothing to build. Its requests never use TLS; a
/// redirect to `https://`, or an `https://` proxy, would fail on the unknown issuer (configure
/// the registry's `https://` URL, or its CA, instead).
fn plain_http() -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .map_err(|e| format!("setting up the HTTP client: {e}"))
}

/// Starts building a client of `base_url` whose requests and connections time out after
/// `timeout`, trusting `roots` besides the system's CA certificates.
fn build_http(
    base_url: &str,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
) -> Result<Http, RegistryError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let plain = is_plain_http(base_url, &roots);
    std::thread::Builder::new()
        .name("registry-http".into())
        .spawn(move || {
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout);
            let built = if plain {
                plain_http().map(|tls| builder.tls_backend_preconfigured(tls))
            } else {
                Ok(roots
                    .into_iter()
                    .fold(builder, |b, root| b.add_root_certificate(root)))
            }
            .and_then(|b| {
                b.build()
                    .map_err(|e| format!("building the HTTP client: {}", crate::error_text(&e)))
            });
            // The registry may be dropped before the client is built: nothing waits then.
            let _ = tx.send(built);
        })
        .map_err(|e| RegistryError::Unavailable {
            url: base_url.to_owned(),
            reason: format!("starting the HTTP client's thread: {e}"),
        })?;
    Ok(rx
        .map(|built| {
            built.unwrap_or_else(|_| Err("the HTTP client's thread ended without a client".into()))
        })
        .boxed()
        .shared())
}

/// How long an id the registry does not know is answered from memory.
pub const UNKNOWN_ID_TTL: Duration = Duration::from_secs(60);

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What the registry holds of a schema under a subject ([`Registry::register`]).
enum Lookup {
    /// The schema, with this id.
    Registered(u32),
    /// No version at all: the subject does not exist.
    NoSubject,
    /// Versions, none of them this schema.
    NotUnderSubject,
}

/// The schema id in a registry's answer to `url`.
fn id_in(url: &str, body: &str) -> Result<u32, RegistryError> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .as_ref()
        .and_then(id_of)
        .ok_or_else(|| RegistryError::Unavailable {
            url: url.to_owned(),
            reason: format!("no id in response: {body}"),
        })
}

/// The `id` field of a registry's JSON answer.
fn id_of(answer: &serde_json::Value) -> Option<u32> {
    answer
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
}

impl Registry {
    /// A client of the API at `base_url` with a per-request timeout.
    ///
    /// # Errors
    /// [`RegistryError::Unavailable`] if the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        auth: Option<RegistryAuth>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        Self::with_roots(base_url, auth, timeout, Vec::new())
    }

    /// As [`Registry::new`], trusting `roots` besides the system's CA certificates (an
    /// `https` registry whose certificate a private CA signed).
    ///
    /// # Errors
    /// [`RegistryError::Unavailable`] if the HTTP client cannot be built.
    pub fn with_roots(
        base_url: &str,
        auth: Option<RegistryAuth>,
        timeout: Duration,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, RegistryError> {
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http: build_http(base_url, timeout, roots)?,
            auth,
            cache: Arc::new(Mutex::new(HashMap::new())),
            unknown: Arc::new(Mutex::new(HashMap::new())),
            retries: 0,
        })
    }

    /// This client, with a schema fetch that gets no answer (a timeout, a dropped connection,
    /// an error status) tried `retries` more times, 1 s, 2 s, ... later: for one-shot commands,
    /// which nothing restarts. The live loops keep failing fast (their attempts restart).
    #[must_use]
    pub fn retrying(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// A request to `url`, with the credentials.
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let req = self
            .http
            .clone()
            .await
            .map_err(|reason| RegistryError::Unavailable {
                url: url.to_owned(),
                reason,
            })?
            .request(method, url);
        Ok(match &self.auth {
            Some(a) => req.basic_auth(&a.username, Some(a.password.expose())),
            None => req,
        })
    }

    fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.cache.lock().ok().and_then(|c| c.get(&id).cloned())
    }

    fn known_unknown(&self, id: u32) -> bool {
        let Ok(mut unknown) = self.unknown.lock() else {
            return false;
        };
        match unknown.get(&id) {
            Some(at) if at.elapsed() < UNKNOWN_ID_TTL => true,
            Some(_) => {
                unknown.remove(&id);
                false
            }
            None => false,
        }
    }

    /// The writer schema with this id (from the cache after the first call).
    ///
    /// # Errors
    /// [`RegistryError::UnknownId`] / [`RegistryError::BadSchema`] (poison) or
    /// [`RegistryError::Unavailable`] (transient).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        if self.known_unknown(id) {
            return Err(RegistryError::UnknownId { id });
        }
        let mut retried = 0;
        loop {
            match self.fetch_schema(id).await {
                Err(e @ RegistryError::Unavailable { .. }) if retried < self.retries => {
                    retried += 1;
                    tracing::warn!(error = %e, retried, "the registry did not answer; asking again");
                    tokio::time::sleep(Duration::from_secs(u64::from(retried))).await;
                }
                result => return result,
            }
        }
    }

    /// One request for the schema `id` ([`Registry::schema_by_id`]), cached once parsed.
    async fn fetch_schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let Some(body) = self.get(&url).await? else {
            if let Ok(mut unknown) = self.unknown.lock() {
                unknown.insert(id, Instant::now());
            }
            return Err(RegistryError::UnknownId { id });
        };
        self.keep(id, &body)
    }

    /// Reads the latest version of `subject` into the cache (`GET
    /// /subjects/{subject}/versions/latest`) and returns its id: records written with that
    /// version then need no request of their own. A consumer asks while it joins its group, so
    /// that its first records do not wait for the registry.
    ///
    /// # Errors
    /// [`RegistryError::Unavailable`] when the registry does not answer or has no such subject;
    /// [`RegistryError::BadSchema`] when the schema does not parse.
    pub async fn prefetch_latest(&self, subject: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.base);
        let body = self
            .get(&url)
            .await?
            .ok_or_else(|| RegistryError::Unavailable {
                url: url.clone(),
                reason: format!("no subject {subject}"),
            })?;
        let id = id_of(&body).ok_or_else(|| RegistryError::Unavailable {
            url: url.clone(),
            reason: format!("no id in response: {body}"),
        })?;
        self.keep(id, &body)?;
        Ok(id)
    }

    /// The JSON answer to `GET url`; `None` for a 404.
    async fn get(&self, url: &str) -> Result<Option<serde_json::Value>, RegistryError> {
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: url.to_owned(),
            reason,
        };
        let resp = self
            .request(reqwest::Method::GET, url)
            .await?
            .send()
            .await
            .map_err(|e| unavailable(crate::error_text(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(unavailable(format!("status {status}")));
        }
        resp.json()
            .await
            .map(Some)
            .map_err(|e| unavailable(crate::error_text(&e)))
    }

    /// Parses the `schema` of a registry's answer as schema `id`, and caches it.
    fn keep(&self, id: u32, body: &serde_json::Value) -> Result<Arc<Schema>, RegistryError> {
        let text = body.get("schema").and_then(|s| s.as_str()).ok_or_else(|| {
            RegistryError::BadSchema {
                id,
                reason: "response has no `schema` string".into(),
            }
        })?;
        let schema = Schema::parse_str(text).map_err(|e| RegistryError::BadSchema {
            id,
            reason: e.to_string(),
        })?;
        let schema = Arc::new(schema);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// Registers `schema` under `subject` (idempotent: an identical schema keeps its id) with
    /// the subject's compatibility `BACKWARD_TRANSITIVE`. Returns the schema id.
    ///
    /// The registry is asked first whether the subject holds the schema already (a restart:
    /// one short request, about 10 ms against Apicurio, where setting the level and
    /// registering took about 90). A new subject has no version to check the schema against,
    /// so its level is set while the schema is registered. Under an existing subject the level
    /// is set first, so that the registration itself is checked.
    ///
    /// # Errors
    /// [`RegistryError::Refused`] when the registry rejects the schema (409: incompatible, 422:
    /// invalid); [`RegistryError::Unavailable`] otherwise.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let id = match self.lookup(subject, schema).await? {
            Lookup::Registered(id) => id,
            found => {
                let (config_status, id) = if matches!(found, Lookup::NoSubject) {
                    tokio::try_join!(
                        self.set_compatibility(subject),
                        self.register_version(subject, schema)
                    )?
                } else {
                    let config_status = self.set_compatibility(subject).await?;
                    (config_status, self.register_version(subject, schema).await?)
                };
                // A registry that keeps no level for a subject without versions (404) is
                // asked again now that the subject exists.
                if config_status == reqwest::StatusCode::NOT_FOUND {
                    self.require_compatibility(subject).await?;
                }
                id
            }
        };
        // The id now names exactly this schema: reading records written with it back (the
        // transformer's restore) needs no request, so a restart does not wait for the registry.
        if let (Ok(parsed), Ok(mut cache)) = (Schema::parse_str(schema), self.cache.lock()) {
            cache.insert(id, Arc::new(parsed));
        }
        Ok(id)
    }

    /// Whether `subject` holds `schema` already (`POST /subjects/{subject}`). An answer other
    /// than the schema or a 404 counts as "not under the subject", so that the registration,
    /// which follows, decides between refused and unavailable.
    async fn lookup(&self, subject: &str, schema: &str) -> Result<Lookup, RegistryError> {
        let url = format!("{}/subjects/{subject}", self.base);
        let (status, body) = self.post_schema(&url, schema).await?;
        if status.is_success() {
            return Ok(Lookup::Registered(id_in(&url, &body)?));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            // 40401: no such subject; 40403: the subject has versions, none of them this schema.
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error_code").and_then(serde_json::Value::as_u64));
            return Ok(if code == Some(40401) {
                Lookup::NoSubject
            } else {
                Lookup::NotUnderSubject
            });
        }
        // A registry that answers lookups otherwise: the registration decides.
        tracing::debug!(%url, %status, "schema lookup not answered; registering");
        Ok(Lookup::NotUnderSubject)
    }

    /// Registers `schema` as a version of `subject`; the schema id.
    async fn register_version(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let (status, body) = self.post_schema(&url, schema).await?;
        if status == reqwest::StatusCode::CONFLICT
            || status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
        {
            return Err(RegistryError::Refused {
                subject: subject.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable {
                url,
                reason: format!("status {status}: {body}"),
            });
        }
        id_in(&url, &body)
    }

    /// Posts `schema` (as Avro) to `url`: the status and the body.
    async fn post_schema(
        &self,
        url: &str,
        schema: &str,
    ) -> Result<(reqwest::StatusCode, String), RegistryError> {
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: url.to_owned(),
            reason,
        };
        let resp = self
            .request(reqwest::Method::POST, url)
            .await?
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&json!({"schema": schema, "schemaType": "AVRO"}))
            .send()
            .await
            .map_err(|e| unavailable(crate::error_text(&e)))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| unavailable(crate::error_text(&e)))?;
        Ok((status, body))
    }

    /// Sets `subject`'s level, which must succeed.
    async fn require_compatibility(&self, subject: &str) -> Result<(), RegistryError> {
        let status = self.set_compatibility(subject).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(RegistryError::Unavailable {
            url: format!("{}/config/{subject}", self.base),
            reason: format!("setting compatibility of {subject}: status {status}"),
        })
    }

    async fn set_compatibility(&self, subject: &str) -> Result<reqwest::StatusCode, RegistryError> {
        let url = format!("{}/config/{subject}", self.base);
        let resp = self
            .request(reqwest::Method::PUT, &url)
            .await?
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&json!({"compatibility": "BACKWARD_TRANSITIVE"}))
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable {
                url: url.clone(),
                reason: crate::error_text(&e),
            })?;
        Ok(resp.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http_url_without_roots_of_its_own_skips_tls() {
        assert!(is_plain_http("http://127.0.0.1:8081/apis/ccompat/v7", &[]));
        assert!(is_plain_http("HTTP://registry:8081", &[]));
        assert!(!is_plain_http("https://registry:8081", &[]));
        assert!(!is_plain_http("not a url", &[]));
        let ca = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/registry-ca.pem"
        ))
        .unwrap();
        let roots = vec![reqwest::Certificate::from_pem(&ca).unwrap()];
        assert!(!is_plain_http("http://registry:8081", &roots));
    }

    /// The latest version of a subject is read into the cache: asking for its id afterwards
    /// needs no registry (this one answers one request, then is gone).
    #[tokio::test]
    async fn a_prefetched_latest_version_is_answered_from_the_cache() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/apis/ccompat/v7", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = socket.read(&mut request).await.unwrap();
            let body =
                r#"{"subject":"t-value","version":2,"id":42,"schema":"{\"type\":\"string\"}"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let registry = Registry::new(&base, None, Duration::from_secs(5)).unwrap();
        assert_eq!(registry.prefetch_latest("t-value").await.unwrap(), 42);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /apis/ccompat/v7/subjects/t-value/versions/latest "),
            "{request}"
        );
        let schema = registry.schema_by_id(42).await.unwrap();
        assert_eq!(*schema, Schema::String);
        assert!(matches!(
            registry.schema_by_id(43).await,
            Err(RegistryError::Unavailable { .. })
        ));
    }

    #[tokio::test]
    async fn the_client_of_an_http_registry_builds() {
        let registry = Registry::new("http://127.0.0.1:1", None, Duration::from_secs(1)).unwrap();
        assert!(registry.http.clone().await.is_ok());
    }
}
