//! The PingOne routes: the token endpoint and the Management API reads the producer uses, with
//! authentication, paging, filters and fault injection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::data::{DAY_MS, fmt_ms, parse_ms};
use crate::error::ApiError;
use crate::faults::{FaultKind, Route};
use crate::filter::{ActivityFilter, Collection, Filter};
use crate::rng;
use crate::state::{ActivityPos, Clock, Tenant, TokenCheck, Tokens};

/// Longest activities window and how far back activities are served.
pub const ACTIVITY_WINDOW_MS: i64 = 14 * DAY_MS;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Server {
    /// Tenants by lowercase environment id.
    pub tenants: HashMap<String, Arc<Tenant>>,
    /// Issued tokens.
    pub tokens: Tokens,
    /// Simulated time.
    pub clock: Clock,
    /// Configured public base URL (no trailing slash).
    pub public_base_url: Option<String>,
    /// `http` or `https`.
    pub scheme: &'static str,
}

type Shared = State<Arc<Server>>;
type Params = Query<HashMap<String, String>>;

/// Builds the router of PingOne and admin routes.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/{env}/as/token", post(token))
        .route("/v1/environments/{env}/users", get(users))
        .route("/v1/environments/{env}/users/{id}", get(user))
        .route(
            "/v1/environments/{env}/users/{id}/memberOfGroups",
            get(user_groups),
        )
        .route("/v1/environments/{env}/groups", get(groups))
        .route("/v1/environments/{env}/applications", get(applications))
        .route(
            "/v1/environments/{env}/activities",
            get(activities_get).post(activities_post),
        )
        .route(
            "/v1/environments/{env}/applicationSignons",
            get(application_signons),
        )
        .merge(crate::admin::router())
        .fallback(fallback)
        .layer(axum::middleware::map_request(host_from_authority))
        .with_state(server)
}

/// HTTP/2 requests carry the host in the `:authority` pseudo-header, not `Host`: copy it so
/// links are built the same way for both protocol versions.
async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.headers().contains_key(header::HOST)
        && let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    req
}

async fn fallback(uri: Uri) -> ApiError {
    ApiError::not_found(&format!(
        "The requested resource {} was not found.",
        uri.path()
    ))
}

impl Server {
    /// The tenant of `env`, or 404.
    ///
    /// # Errors
    /// 404 `NOT_FOUND` for an unknown environment.
    pub fn tenant(&self, env: &str) -> Result<Arc<Tenant>, ApiError> {
        self.tenants
            .get(&env.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&format!("Unable to find environment {env}.")))
    }

    /// The base URL links are made from.
    #[must_use]
    pub fn base(&self, headers: &HeaderMap) -> String {
        if let Some(b) = &self.public_base_url {
            return b.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}", self.scheme)
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    fn authorize(&self, headers: &HeaderMap, tenant: &Tenant) -> Result<String, ApiError> {
        let Some(token) = Self::bearer(headers) else {
            return Err(ApiError::invalid_token(
                "The request could not be completed. You do not have access to this resource.",
            ));
        };
        match self.tokens.check(token, &tenant.data.env_id) {
            TokenCheck::Ok => Ok(token.to_string()),
            TokenCheck::Invalid => Err(ApiError::invalid_token(
                "The access token is invalid or expired.",
            )),
            TokenCheck::OtherEnvironment => Err(ApiError::forbidden(
                "The request could not be completed. The access token is not valid for this environment.",
            )),
        }
    }

    /// Applies the fault (if any) chosen for this request. `Ok(true)` = reset mid-body.
    async fn inject(
        &self,
        tenant: &Tenant,
        route: Route,
        page: Option<u32>,
        token: Option<&str>,
    ) -> Result<bool, ApiError> {
        let fault = tenant.faults().decide(route, page);
        let Some(fault) = fault else { return Ok(false) };
        tracing::info!(env = %tenant.data.env_id, ?route, ?page, ?fault, "injecting fault");
        match fault {
            FaultKind::RateLimitSeconds { retry_after_secs } => {
                Err(ApiError::rate_limited(retry_after_secs.to_string()))
            }
            FaultKind::RateLimitHttpDate { retry_after_secs } => Err(ApiError::rate_limited(
                httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(retry_after_secs)),
            )),
            FaultKind::ServerError { status } => Err(ApiError::server(status)),
            FaultKind::Slow { delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(false)
            }
            FaultKind::ResetMidBody => Ok(true),
            FaultKind::ExpireToken => {
                if let Some(t) = token {
                    self.tokens.expire(t);
                }
                Err(ApiError::invalid_token(
                    "The access token is invalid or expired.",
                ))
            }
        }
    }
}

/// A JSON answer, or one cut half-way through its body.
fn respond(body: &Value, reset: bool) -> Response {
    respond_bytes(serde_json::to_vec(body).unwrap_or_default(), reset)
}

/// A JSON answer from its bytes, or one cut half-way through its body.
fn respond_bytes(bytes: Vec<u8>, reset: bool) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    if !reset {
        return ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    }
    let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
    let len = bytes.len();
    // Send the status, headers and half the body, give them time to leave, then fail the body:
    // hyper drops the connection before the declared length was sent.
    let stream = futures::stream::unfold(Some(half), |state| async move {
        match state {
            Some(half) => Some((Ok::<Bytes, std::io::Error>(half), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let e = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection reset",
                );
                Some((Err(e), None))
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, content_type);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Percent-encodes a query value.
#[must_use]
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_form(body: &[u8]) -> HashMap<String, String> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(
                        std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                        16,
                    ) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// Encodes a cursor: the fields, a kind tag and a tenant-keyed check value.
fn encode_cursor(tenant: &Tenant, fields: &[u64]) -> String {
    let mut bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
    let check = rng::hash(tenant.data.seed, fields);
    bytes.extend_from_slice(&check.to_le_bytes()[..4]);
    rng::b64url(&bytes)
}

fn decode_cursor(tenant: &Tenant, s: &str, kind: u64, n: usize) -> Result<Vec<u64>, ApiError> {
    let bad = || ApiError::invalid_value("cursor", "The cursor is invalid or expired.");
    let bytes = rng::b64url_decode(s).ok_or_else(bad)?;
    if bytes.len() != n * 8 + 4 {
        return Err(bad());
    }
    let fields: Vec<u64> = bytes[..n * 8]
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let check = rng::hash(tenant.data.seed, &fields);
    if bytes[n * 8..] != check.to_le_bytes()[..4] || fields.first() != Some(&kind) {
        return Err(bad());
    }
    Ok(fields)
}

fn parse_limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default.min(max)),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(ApiError::invalid_value(
                "limit",
                &format!("The limit {v:?} must be a positive integer."),
            )),
        },
    }
}

fn page_of(fields: &[u64]) -> u32 {
    fields
        .last()
        .and_then(|p| u32::try_from(*p).ok())
        .unwrap_or(1)
}

fn links(base: &str, uri: &Uri, next: Option<String>) -> Value {
    let mut l = Map::new();
    l.insert("self".into(), json!({"href": format!("{base}{uri}")}));
    if let Some(n) = next {
        l.insert("next".into(), json!({"href": n}));
    }
    Value::Object(l)
}

fn next_url(
    base: &str,
    path: &str,
    limit: usize,
    cursor: &str,
    extra: &[(&str, Option<&String>)],
) -> String {
    let mut url = format!("{base}{path}?limit={limit}");
    for (k, v) in extra {
        if let Some(v) = v {
            url.push_str(&format!("&{k}={}", encode_query(v)));
        }
    }
    url.push_str(&format!("&cursor={cursor}"));
    url
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "page task failed");
        ApiError::server(500)
    })
}

async fn token(
    State(s): Shared,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    if s.inject(&tenant, Route::Token, None, None).await? {
        return Ok(respond(&json!({"error": "server_error"}), true));
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Request must be application/x-www-form-urlencoded",
        ));
    }
    let form = decode_form(&body);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic "));
    let unsupported = || {
        ApiError::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Request denied: Unsupported authentication method",
        )
    };
    if basic || form.contains_key("client_assertion") {
        tracing::info!(env = %tenant.data.env_id, "token denied: unsupported client authentication method");
        return Err(unsupported());
    }
    match form.get("grant_type").map(String::as_str) {
        None => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing grant_type",
            ));
        }
        Some("client_credentials") => {}
        Some(_) => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant type",
            ));
        }
    }
    let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) else {
        return Err(unsupported());
    };
    if *id != tenant.spec.client_id || secret != tenant.spec.client_secret.expose() {
        tracing::info!(env = %tenant.data.env_id, client_id = %id, "token denied: wrong client id or secret");
        return Err(ApiError::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Request denied: Unsupported authentication method",
        ));
    }
    let ttl = Duration::from_secs(tenant.spec.token_ttl_secs);
    tracing::debug!(env = %tenant.data.env_id, ttl_secs = ttl.as_secs(), "token issued");
    let issuer = format!("{}/{}/as", s.base(&headers), tenant.data.env_id);
    let access = s
        .tokens
        .issue(&tenant.data.env_id, id, &issuer, ttl, s.clock.now_ms());
    let body = json!({"access_token": access, "token_type": "Bearer", "expires_in": tenant.spec.token_ttl_secs});
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response())
}

async fn users(
    State(s): Shared,
    Path(env): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let limit = parse_limit(&q, 100, tenant.spec.users_page_max as usize)?;
    let filter = q
        .get("filter")
        .map(|f| {
            Filter::new(f, Collection::Users)
                .map_err(|m| ApiError::invalid_filter(&format!("Invalid filter: {m}")))
        })
        .transpose()?;
    let (from, page) = match q.get("cursor") {
        Some(c) => {
            let f = decode_cursor(&tenant, c, 1, 3)?;
            (f[1], page_of(&f))
        }
        None => (0, 1),
    };
    let reset = s
        .inject(&tenant, Route::Users, Some(page), Some(&token))
        .await?;
    let t = Arc::clone(&tenant);
    let has_filter = filter.is_some();
    let (items, next) = blocking(move || t.users_page(from, limit, filter.as_ref())).await?;
    let base = s.base(&headers);
    let next = next.map(|pos| {
        let c = encode_cursor(&tenant, &[1, pos, u64::from(page) + 1]);
        next_url(
            &base,
            uri.path(),
            limit,
            &c,
            &[("filter", q.get("filter")), ("expand", q.get("expand"))],
        )
    });
    // Users arrive as JSON text: the page is assembled around them without re-parsing.
    let size = items.len() as u64;
    let mut numbers = Vec::new();
    if !has_filter {
        numbers.push(("count", tenant.user_count(&tenant.read())));
    }
    numbers.push(("size", size));
    let body = hal_page(&links(&base, &uri, next), "users", &items, &numbers);
    Ok(respond_bytes(body.into_bytes(), reset))
}

async fn user(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let reset = s.inject(&tenant, Route::User, None, Some(&token)).await?;
    let ov = tenant.read();
    let (i, mut u) = tenant
        .user_by_id(&ov, &id)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find user {id}.")))?;
    let include = q.get("include").map(String::as_str).unwrap_or_default();
    if let Some(m) = u.as_object_mut() {
        let groups = tenant.groups_of(&ov, i);
        if include.contains("memberOfGroupIDs") {
            m.insert(
                "memberOfGroupIDs".into(),
                groups
                    .iter()
                    .map(|g| json!(tenant.data.groups[*g as usize].id))
                    .collect(),
            );
        }
        if include.contains("memberOfGroupNames") {
            m.insert(
                "memberOfGroupNames".into(),
                groups
                    .iter()
                    .map(|g| json!(tenant.data.groups[*g as usize].name))
                    .collect(),
            );
        }
    }
    drop(ov);
    Ok(respond(&u, reset))
}

async fn user_groups(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let reset = s.inject(&tenant, Route::User, None, Some(&token)).await?;
    let ov = tenant.read();
    let (i, _) = tenant
        .user_by_id(&ov, &id)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find user {id}.")))?;
    let items: Vec<Value> = tenant
        .groups_of(&ov, i)
        .into_iter()
        .map(|g| tenant.membership_json(g))
        .collect();
    drop(ov);
    let body = json!({
        "_links": links(&s.base(&headers), &uri, None),
        "_embedded": {"groupMemberships": items},
        "count": items.len(),
        "size": items.len(),
    });
    Ok(respond(&body, reset))
}

async fn groups(
    State(s): Shared,
    Path(env): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let limit = parse_limit(&q, 100, 1000)?;
    let filter = q
        .get("filter")
        .map(|f| {
            Filter::new(f, Collection::Groups)
                .map_err(|m| ApiError::invalid_filter(&format!("Invalid filter: {m}")))
        })
        .transpose()?;
    let (from, page) = match q.get("cursor") {
        Some(c) => {
            let f = decode_cursor(&tenant, c, 2, 3)?;
            (usize::try_from(f[1]).unwrap_or(usize::MAX), page_of(&f))
        }
        None => (0, 1),
    };
    let reset = s
        .inject(&tenant, Route::Groups, Some(page), Some(&token))
        .await?;
    let all = &tenant.data.groups;
    let mut items = Vec::new();
    let mut pos = from;
    while pos < all.len() && items.len() < limit {
        let g = &all[pos].json;
        if filter.as_ref().is_none_or(|f| f.matches(g, &mut |_| false)) {
            items.push(g.clone());
        }
        pos += 1;
    }
    let base = s.base(&headers);
    let next = (pos < all.len()).then(|| {
        let c = encode_cursor(&tenant, &[2, pos as u64, u64::from(page) + 1]);
        next_url(&base, uri.path(), limit, &c, &[("filter", q.get("filter"))])
    });
    let mut body = Map::new();
    body.insert("_links".into(), links(&base, &uri, next));
    let size = items.len();
    body.insert("_embedded".into(), json!({"groups": items}));
    if filter.is_none() {
        body.insert("count".into(), json!(all.len()));
    }
    body.insert("size".into(), json!(size));
    Ok(respond(&Value::Object(body), reset))
}

async fn applications(
    State(s): Shared,
    Path(env): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let reset = s
        .inject(&tenant, Route::Applications, Some(1), Some(&token))
        .await?;
    let items = tenant.applications();
    let body = json!({
        "_links": links(&s.base(&headers), &uri, None),
        "_embedded": {"applications": items},
        "size": items.len(),
    });
    Ok(respond(&body, reset))
}

#[derive(Debug, serde::Deserialize)]
struct ActivitiesBody {
    filter: Option<String>,
    limit: Option<serde_json::Value>,
    cursor: Option<String>,
}

async fn activities_get(
    State(s): Shared,
    Path(env): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    activities(&s, &env, q, &headers, &uri).await
}

async fn activities_post(
    State(s): Shared,
    Path(env): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed: ActivitiesBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("The request body is invalid: {e}"),
            None,
        )
    })?;
    let mut q = HashMap::new();
    if let Some(f) = parsed.filter {
        q.insert("filter".to_string(), f);
    }
    if let Some(l) = parsed.limit {
        q.insert(
            "limit".to_string(),
            l.as_str().map_or_else(|| l.to_string(), str::to_owned),
        );
    }
    if let Some(c) = parsed.cursor {
        q.insert("cursor".to_string(), c);
    }
    activities(&s, &env, q, &headers, &uri).await
}

async fn activities(
    s: &Arc<Server>,
    env: &str,
    q: HashMap<String, String>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(env)?;
    let token = s.authorize(headers, &tenant)?;
    let limit = parse_limit(&q, 100, 1000)?;
    let raw_filter = q.get("filter").ok_or_else(|| {
        ApiError::invalid_filter("A filter with a time range is required: recordedat gt \"<from>\" and recordedat lt \"<to>\"")
    })?;
    let filter = ActivityFilter::new(raw_filter)
        .map_err(|m| ApiError::invalid_filter(&format!("Invalid filter: {m}")))?;
    if filter.to_ms.0 - filter.from_ms.0 > ACTIVITY_WINDOW_MS {
        return Err(ApiError::out_of_range(
            "filter",
            "The time range must not exceed 14 days.",
        ));
    }
    let (pos, page) = match q.get("cursor") {
        Some(c) => {
            let f = decode_cursor(&tenant, c, 3, 6)?;
            let pos = ActivityPos {
                gen_pos: f[1],
                gen_sub: u32::try_from(f[2]).unwrap_or(u32::MAX),
                appended_before: (i64::from_le_bytes(f[3].to_le_bytes()), f[4]),
            };
            (pos, page_of(&f))
        }
        None => (ActivityPos::START, 1),
    };
    let reset = s
        .inject(&tenant, Route::Activities, Some(page), Some(&token))
        .await?;
    let horizon = s.clock.now_ms() - ACTIVITY_WINDOW_MS;
    let t = Arc::clone(&tenant);
    let (items, next) = blocking(move || t.activities_page(&filter, horizon, pos, limit)).await?;
    let base = s.base(headers);
    let next = next.map(|p| {
        let fields = [
            3,
            p.gen_pos,
            u64::from(p.gen_sub),
            u64::from_le_bytes(p.appended_before.0.to_le_bytes()),
            p.appended_before.1,
            u64::from(page) + 1,
        ];
        let c = encode_cursor(&tenant, &fields);
        next_url(
            &base,
            uri.path(),
            limit,
            &c,
            &[("filter", Some(raw_filter))],
        )
    });
    let body = hal_page(&links(&base, uri, next), "activities", &items, &[]);
    Ok(respond_bytes(body.into_bytes(), reset))
}

/// A HAL page around items that are already JSON text, plus numeric members (`count`, `size`).
fn hal_page(links: &Value, name: &str, items: &[String], numbers: &[(&str, u64)]) -> String {
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 512);
    body.push_str("{\"_links\":");
    body.push_str(&links.to_string());
    body.push_str(",\"_embedded\":{");
    crate::jsonw::push_str(&mut body, name);
    body.push_str(":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    for (k, v) in numbers {
        body.push(',');
        crate::jsonw::push_str(&mut body, k);
        body.push_str(&format!(":{v}"));
    }
    body.push('}');
    body
}

async fn application_signons(
    State(s): Shared,
    Path(env): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let tenant = s.tenant(&env)?;
    let token = s.authorize(&headers, &tenant)?;
    let num = |name: &str, lo: u64, hi: u64, default: Option<u64>| -> Result<u64, ApiError> {
        match q.get(name) {
            None => default
                .ok_or_else(|| ApiError::invalid_value(name, &format!("{name} is required."))),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(ApiError::out_of_range(
                    name,
                    &format!("{name} must be between {lo} and {hi}."),
                )),
            },
        }
    };
    let period_h = num("samplePeriod", 1, 8760, Some(24))?;
    let count = num("samplePeriodCount", 1, 1000, Some(1))?;
    let limit = num("limit", 1, 1000, Some(100))?;
    if period_h * count * limit > 100_000 {
        return Err(ApiError::out_of_range(
            "samplePeriod",
            "samplePeriod × samplePeriodCount × limit must not exceed 100000.",
        ));
    }
    let raw = q.get("filter").ok_or_else(|| {
        ApiError::invalid_filter("A filter occurredAt ge \"<timestamp>\" is required.")
    })?;
    let start_ms = match crate::filter::parse(raw) {
        Ok(crate::filter::Expr::Cmp {
            path,
            op: crate::filter::Op::Ge | crate::filter::Op::Gt,
            value: crate::filter::Lit::Str(v),
        }) if path.eq_ignore_ascii_case("occurredAt") => parse_ms(&v)
            .ok_or_else(|| ApiError::invalid_filter("occurredAt takes an RFC 3339 timestamp"))?,
        _ => {
            return Err(ApiError::invalid_filter(
                "Invalid filter: use occurredAt ge \"<timestamp>\"",
            ));
        }
    };
    let (from_app, page) = match q.get("cursor") {
        Some(c) => {
            let f = decode_cursor(&tenant, c, 4, 3)?;
            (usize::try_from(f[1]).unwrap_or(usize::MAX), page_of(&f))
        }
        None => (0, 1),
    };
    let reset = s
        .inject(&tenant, Route::ApplicationSignons, Some(page), Some(&token))
        .await?;
    let now = s.clock.now_ms();
    let period_ms = i64::try_from(period_h).unwrap_or(1) * 3_600_000;
    let end_ms = start_ms + period_ms * i64::try_from(count).unwrap_or(1);
    let apps: Vec<String> = tenant
        .applications()
        .iter()
        .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let limit = usize::try_from(limit).unwrap_or(100);
    let page_apps: Vec<String> = apps.iter().skip(from_app).take(limit).cloned().collect();
    let t = Arc::clone(&tenant);
    let wanted = page_apps.clone();
    let counts = blocking(move || {
        let mut counts: HashMap<String, Vec<u64>> = wanted
            .iter()
            .map(|a| (a.clone(), vec![0; usize::try_from(count).unwrap_or(1)]))
            .collect();
        t.for_each_signon(start_ms, end_ms.min(now), &mut |app, at, n| {
            if let Some(v) = counts.get_mut(app) {
                let b = usize::try_from((at - start_ms) / period_ms).unwrap_or(0);
                if let Some(slot) = v.get_mut(b) {
                    *slot += n;
                }
            }
        });
        counts
    })
    .await?;
    let items: Vec<Value> = page_apps
        .iter()
        .map(|a| {
            let buckets: Vec<Value> = counts
                .get(a)
                .map(|v| {
                    v.iter()
                        .enumerate()
                        .map(|(b, n)| {
                            let bs = start_ms + period_ms * i64::try_from(b).unwrap_or(0);
                            let mut m = json!({"startDate": fmt_ms(bs), "endDate": fmt_ms(bs + period_ms), "signons": n});
                            if bs + period_ms > now {
                                m["partial"] = json!(true);
                            }
                            m
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"id": a, "authentication": buckets})
        })
        .collect();
    let base = s.base(&headers);
    let next_pos = from_app + page_apps.len();
    let next = (next_pos < apps.len()).then(|| {
        let c = encode_cursor(&tenant, &[4, next_pos as u64, u64::from(page) + 1]);
        let mut url = next_url(&base, uri.path(), limit, &c, &[("filter", Some(raw))]);
        url.push_str(&format!(
            "&samplePeriod={period_h}&samplePeriodCount={count}"
        ));
        url
    });
    let body =
        json!({"_links": links(&base, &uri, next), "_embedded": {"applicationSignons": items}});
    Ok(respond(&body, reset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let f = decode_form(b"grant_type=client_credentials&client_id=a%2Bb&client_secret=x+y%21");
        assert_eq!(f.get("client_id").map(String::as_str), Some("a+b"));
        assert_eq!(f.get("client_secret").map(String::as_str), Some("x y!"));
        assert_eq!(encode_query("a b\"c"), "a%20b%22c");
    }
}
