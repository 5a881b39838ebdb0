//! The PingOne client against a scripted local server (no Kafka needed): 4xx errors carry
//! PingOne's code and id, a 401 `INVALID_TOKEN` renews the token once and retries once,
//! `invalid_client` is reported as such, and 429s are retried after `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use producer::metrics::Metrics;
use producer::pingone::{Client, PingOneError};
use tokio_util::sync::CancellationToken;

const ENV: &str = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f";

#[derive(Default)]
struct Counts {
    tokens: AtomicUsize,
    groups: AtomicUsize,
    apps: AtomicUsize,
}

async fn token(State(c): State<Arc<Counts>>, body: String) -> impl IntoResponse {
    let n = c.tokens.fetch_add(1, Ordering::SeqCst);
    if body.contains("client_secret=good") && !body.contains("scope") {
        (
            StatusCode::OK,
            format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}}"#),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"Request denied: Unsupported authentication method"}"#.to_string(),
        )
    }
}

async fn users() -> impl IntoResponse {
    (
        StatusCode::BAD_REQUEST,
        r#"{"id":"err-123","code":"INVALID_DATA","message":"The request could not be completed.","details":[{"code":"INVALID_FILTER","target":"filter"}]}"#,
    )
}

async fn groups(State(c): State<Arc<Counts>>) -> impl IntoResponse {
    c.groups.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::UNAUTHORIZED,
        r#"{"id":"err-401","code":"ACCESS_FAILED","message":"expired","details":[{"code":"INVALID_TOKEN"}]}"#,
    )
}

async fn applications(State(c): State<Arc<Counts>>, headers: HeaderMap) -> impl IntoResponse {
    let n = c.apps.fetch_add(1, Ordering::SeqCst);
    assert!(
        headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer tok-"))
    );
    let mut h = HeaderMap::new();
    if n < 2 {
        h.insert("retry-after", "0".parse().unwrap());
        return (
            StatusCode::TOO_MANY_REQUESTS,
            h,
            r#"{"code":"REQUEST_LIMITED"}"#.to_string(),
        );
    }
    (
        StatusCode::OK,
        h,
        r#"{"_links":{"self":{"href":"x"}},"_embedded":{"applications":[{"id":"a1","name":"App","newField":{"x":1}}]}}"#.to_string(),
    )
}

async fn serve() -> (String, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route(&format!("/{ENV}/as/token"), post(token))
        .route(&format!("/v1/environments/{ENV}/users"), get(users))
        .route(&format!("/v1/environments/{ENV}/groups"), get(groups))
        .route(
            &format!("/v1/environments/{ENV}/applications"),
            get(applications),
        )
        .with_state(Arc::clone(&counts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), counts)
}

fn client(base: &str, secret: &str) -> (Client, producer::config::TenantConfig) {
    let text = format!(
        r#"[kafka]
bootstrap_servers = "127.0.0.1:1"
[schema_registry]
url = "http://127.0.0.1:1"
[[tenants]]
tenant_id = "t"
environment_id = "{ENV}"
region = "com"
client_id = "c"
client_secret_env = "S"
auth_base_url = "{base}"
api_base_url = "{base}/v1"
retry_base_backoff_ms = 10
"#
    );
    let config = producer::config::parse_with_overrides(std::path::Path::new("t.toml"), &text, &[])
        .unwrap()
        .validate(|_| Some(secret.to_string()))
        .unwrap();
    let tenant = config.tenants[0].clone();
    (
        Client::new(&tenant, Metrics::new(), CancellationToken::new()).unwrap(),
        tenant,
    )
}

#[tokio::test]
async fn a_4xx_error_carries_pingone_code_id_and_details() {
    let (base, _) = serve().await;
    let (c, t) = client(&base, "good");
    let err = c
        .get_page(&t.collection_url("users"), "users")
        .await
        .unwrap_err();
    match &err {
        PingOneError::Api {
            status,
            code,
            id,
            details,
            ..
        } => {
            assert_eq!(
                (*status, code.as_str(), id.as_str()),
                (400, "INVALID_DATA", "err-123")
            );
            assert_eq!(details, &["INVALID_FILTER"]);
        }
        other => panic!("expected an api error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("INVALID_DATA") && text.contains("err-123"),
        "{text}"
    );
}

#[tokio::test]
async fn invalid_token_renews_once_and_retries_once() {
    let (base, counts) = serve().await;
    let (c, t) = client(&base, "good");
    let err = c
        .get_page(&t.collection_url("groups"), "groups")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PingOneError::Api { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        counts.groups.load(Ordering::SeqCst),
        2,
        "one retry after renewal"
    );
    assert_eq!(counts.tokens.load(Ordering::SeqCst), 2, "one renewal");
}

#[tokio::test]
async fn invalid_client_is_reported_and_never_leaks_the_secret() {
    let (base, _) = serve().await;
    let (c, t) = client(&base, "wrong-secret-value");
    let err = c
        .get_page(&t.collection_url("applications"), "applications")
        .await
        .unwrap_err();
    assert!(matches!(err, PingOneError::InvalidClient { .. }), "{err:?}");
    assert!(!format!("{err} {err:?} {c:?} {t:?}").contains("wrong-secret-value"));
}

#[tokio::test]
async fn rate_limits_are_retried_and_unknown_fields_kept() {
    let (base, counts) = serve().await;
    let (c, t) = client(&base, "good");
    let page = c
        .get_page(&t.collection_url("applications"), "applications")
        .await
        .unwrap();
    assert_eq!(counts.apps.load(Ordering::SeqCst), 3);
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        page.items[0].get(),
        r#"{"id":"a1","name":"App","newField":{"x":1}}"#
    );
    assert!(page.next.is_none());
}
