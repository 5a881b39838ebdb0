//! Errors: the simulator's own (`SimError`) and PingOne-shaped HTTP error answers (`ApiError`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the simulator (or its admin client) failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A config file could not be read or parsed.
    #[error("cannot read config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load tls certificate {cert} / key {key}: {source}")]
    Tls {
        /// Certificate path.
        cert: String,
        /// Key path.
        key: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An admin API call failed.
    #[error("admin call {what} failed: {message}")]
    Admin {
        /// The call.
        what: String,
        /// Status and body, or the transport error.
        message: String,
    },
}

/// A PingOne error answer: `{"id","code","message","details":[...]}` or, on the token endpoint,
/// the OAuth2 `{"error","error_description"}` shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<String>,
    www_authenticate: bool,
}

impl ApiError {
    /// A Management API error with one detail (when `detail` is given).
    #[must_use]
    pub fn new(
        status: StatusCode,
        code: &str,
        message: &str,
        detail: Option<(&str, &str)>,
    ) -> Self {
        let mut body = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "code": code,
            "message": message,
        });
        if let Some((dcode, target)) = detail {
            body["details"] = json!([{"code": dcode, "target": target, "message": message}]);
        }
        Self {
            status,
            body,
            retry_after: None,
            www_authenticate: false,
        }
    }

    /// 400 `INVALID_DATA` / `INVALID_FILTER`.
    #[must_use]
    pub fn invalid_filter(message: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            message,
            Some(("INVALID_FILTER", "filter")),
        )
    }

    /// 400 `INVALID_DATA` / `OUT_OF_RANGE` on `target`.
    #[must_use]
    pub fn out_of_range(target: &str, message: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            message,
            Some(("OUT_OF_RANGE", target)),
        )
    }

    /// 400 `INVALID_DATA` / `INVALID_VALUE` on `target`.
    #[must_use]
    pub fn invalid_value(target: &str, message: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            message,
            Some(("INVALID_VALUE", target)),
        )
    }

    /// 401 `ACCESS_FAILED` / `INVALID_TOKEN`.
    #[must_use]
    pub fn invalid_token(message: &str) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "ACCESS_FAILED",
            message,
            Some(("INVALID_TOKEN", "Authorization")),
        );
        e.www_authenticate = true;
        e
    }

    /// 403 `ACCESS_FAILED` / `INSUFFICIENT_PERMISSIONS`.
    #[must_use]
    pub fn forbidden(message: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ACCESS_FAILED",
            message,
            Some(("INSUFFICIENT_PERMISSIONS", "Authorization")),
        )
    }

    /// 404 `NOT_FOUND`.
    #[must_use]
    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message, None)
    }

    /// 429 `REQUEST_LIMITED` with a `Retry-After` value.
    #[must_use]
    pub fn rate_limited(retry_after: String) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMITED",
            "The request was rate limited.",
            Some(("LIMIT_EXCEEDED", "")),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// A 5xx answer.
    #[must_use]
    pub fn server(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            Self::new(
                status,
                "UNEXPECTED_ERROR",
                "An unexpected error occurred.",
                None,
            )
        } else {
            let mut e = Self::new(
                status,
                "UNEXPECTED_ERROR",
                "The service is temporarily unavailable.",
                None,
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                e.retry_after = Some("1".into());
            }
            e
        }
    }

    /// An OAuth2 token endpoint error (RFC 6749 §5.2).
    #[must_use]
    pub fn oauth(status: StatusCode, error: &str, description: &str) -> Self {
        let body = json!({
            "error": error,
            "error_description": format!("{description} (Correlation ID: {})", uuid::Uuid::new_v4()),
        });
        Self {
            status,
            body,
            retry_after: None,
            www_authenticate: false,
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if let Some(v) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.www_authenticate {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        r
    }
}
