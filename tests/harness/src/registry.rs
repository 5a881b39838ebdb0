//! Small calls on the schema registry's Confluent-compatible API (`SCHEMA_REGISTRY_URL`), for
//! tests that check what the registry accepts, rejects or holds.

use std::time::Duration;

use serde_json::json;

use crate::schema_registry_url;

/// Content type of the Confluent schema registry API.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Errors of the registry calls, with the URL they concern.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request could not be sent or its answer not read.
    #[error("registry request {method} {url}: {source}")]
    Http {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("registry answered {status} to {method} {url}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response body (the registry's error message).
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("registry answer to {method} {url} is not what was expected: {body}")]
    Malformed {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Response body.
        body: String,
    },
}

/// What the registry said to a schema registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Accepted, with the schema id used in the wire format.
    Registered {
        /// Schema id.
        id: u32,
    },
    /// Refused (409 for an incompatible schema, 422 for an invalid one).
    Rejected {
        /// HTTP status.
        status: u16,
        /// The registry's explanation.
        body: String,
    },
}

/// One schema as the registry holds it under a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Schema id (the one in the wire format).
    pub id: u32,
    /// Version number under the subject.
    pub version: u32,
    /// The schema text as the registry returns it (Apicurio: canonical form).
    pub schema: String,
}

/// A client of the registry's Confluent-compatible API with a 10 s timeout per request.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base_url: String,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client of the registry at `SCHEMA_REGISTRY_URL` (see [`crate::infra`], which can panic).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn from_env() -> Result<Self, RegistryError> {
        Self::new(&schema_registry_url())
    }

    /// A client of the registry at `base_url` (e.g. `http://127.0.0.1:8081/apis/ccompat/v7`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| RegistryError::Http {
                method: "BUILD",
                url: base_url.to_owned(),
                source,
            })?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sets the compatibility level of `subject` (e.g. `BACKWARD_TRANSITIVE`).
    ///
    /// # Errors
    /// When the request fails or the registry does not answer 200.
    pub async fn set_subject_compatibility(
        &self,
        subject: &str,
        level: &str,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/config/{subject}", self.base_url);
        let response = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(json!({ "compatibility": level }).to_string())
            .send()
            .await
            .map_err(|source| RegistryError::Http {
                method: "PUT",
                url: url.clone(),
                source,
            })?;
        expect_ok("PUT", url, response).await.map(drop)
    }

    /// The compatibility level set on `subject` itself (not the global default).
    ///
    /// # Errors
    /// When the request fails or the answer has no level.
    pub async fn subject_compatibility(&self, subject: &str) -> Result<String, RegistryError> {
        let url = format!("{}/config/{subject}", self.base_url);
        let body = self.get_ok(&url).await?;
        let parsed: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| RegistryError::Malformed {
                method: "GET",
                url: url.clone(),
                body: body.clone(),
            })?;
        parsed
            .get("compatibilityLevel")
            .or_else(|| parsed.get("compatibility"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or(RegistryError::Malformed {
                method: "GET",
                url,
                body,
            })
    }

    /// Registers an Avro schema (its JSON text) under `subject`.
    ///
    /// # Errors
    /// When the request fails or the registry answers something other than 200, 409 or 422.
    pub async fn register_avro(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Registration, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base_url);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(json!({ "schema": schema, "schemaType": "AVRO" }).to_string())
            .send()
            .await
            .map_err(|source| RegistryError::Http {
                method: "POST",
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = read_body("POST", &url, response).await?;
        match status {
            200 => {
                let parsed: serde_json::Value =
                    serde_json::from_str(&body).map_err(|_| RegistryError::Malformed {
                        method: "POST",
                        url: url.clone(),
                        body: body.clone(),
                    })?;
                parsed
                    .get("id")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .map(|id| Registration::Registered { id })
                    .ok_or(RegistryError::Malformed {
                        method: "POST",
                        url,
                        body,
                    })
            }
            409 | 422 => Ok(Registration::Rejected { status, body }),
            _ => Err(RegistryError::Status {
                method: "POST",
                url,
                status,
                body,
            }),
        }
    }

    /// The latest schema registered under `subject`.
    ///
    /// # Errors
    /// When the request fails or the registry does not answer 200 with a schema.
    pub async fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.base_url);
        let body = self.get_ok(&url).await?;
        let malformed = || RegistryError::Malformed {
            method: "GET",
            url: url.clone(),
            body: body.clone(),
        };
        let parsed: serde_json::Value = serde_json::from_str(&body).map_err(|_| malformed())?;
        let number = |field: &str| {
            parsed
                .get(field)
                .and_then(serde_json::Value::as_u64)
                .and_then(|value| u32::try_from(value).ok())
        };
        Ok(RegisteredSchema {
            id: number("id").ok_or_else(malformed)?,
            version: number("version").ok_or_else(malformed)?,
            schema: parsed
                .get("schema")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(malformed)?
                .to_owned(),
        })
    }

    /// The version numbers registered under `subject`.
    ///
    /// # Errors
    /// When the request fails or the registry does not answer 200 with a list of numbers.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base_url);
        let body = self.get_ok(&url).await?;
        serde_json::from_str(&body).map_err(|_| RegistryError::Malformed {
            method: "GET",
            url,
            body,
        })
    }

    /// GET `url`; the body of a 200 answer, else the error.
    async fn get_ok(&self, url: &str) -> Result<String, RegistryError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| RegistryError::Http {
                method: "GET",
                url: url.to_owned(),
                source,
            })?;
        expect_ok("GET", url.to_owned(), response).await
    }
}

async fn read_body(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> Result<String, RegistryError> {
    response.text().await.map_err(|source| RegistryError::Http {
        method,
        url: url.to_owned(),
        source,
    })
}

async fn expect_ok(
    method: &'static str,
    url: String,
    response: reqwest::Response,
) -> Result<String, RegistryError> {
    let status = response.status().as_u16();
    let body = read_body(method, &url, response).await?;
    if status == 200 {
        Ok(body)
    } else {
        Err(RegistryError::Status {
            method,
            url,
            status,
            body,
        })
    }
}
