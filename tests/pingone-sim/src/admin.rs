//! The admin API (under `/__admin/{envId}`, not part of PingOne's): mutate a tenant between
//! scans, set faults, and dump the current truth for tests to compare against.
//!
//! | method | path | body | effect |
//! |---|---|---|---|
//! | GET | `/__admin/{env}/info` | | tenant info (same as the stdout line) |
//! | POST | `/__admin/{env}/users` | user JSON (needs `username`) | creates a user, returns it |
//! | PATCH | `/__admin/{env}/users/{id}` | JSON merge patch | changes a user, returns it |
//! | DELETE | `/__admin/{env}/users/{id}` | | deletes a user |
//! | POST | `/__admin/{env}/users/{id}/lock` / `unlock` | | locks / unlocks |
//! | PUT | `/__admin/{env}/users/{id}/mfa` | `{"enabled":bool}` | sets `mfaEnabled` |
//! | PUT/DELETE | `/__admin/{env}/groups/{gid}/members/{uid}` | | adds / removes a membership |
//! | POST | `/__admin/{env}/applications` | app JSON (needs `name`) | creates an application |
//! | DELETE | `/__admin/{env}/applications/{id}` | | deletes an application |
//! | POST | `/__admin/{env}/signons` | `[{"userId","applicationId","at"}]` | appends `USER.ACCESS_ALLOWED` events |
//! | POST | `/__admin/{env}/signon-counts` | `[{"applicationId","at","count"}]` | adds sign-ons only `/applicationSignons` counts (no audit event) |
//! | PUT | `/__admin/{env}/faults` | [`FaultProfile`] | sets probability faults |
//! | POST | `/__admin/{env}/faults/schedule` | [`ScheduledFault`] | arms a scheduled fault |
//! | DELETE | `/__admin/{env}/faults` | | clears all faults |
//! | POST | `/__admin/{env}/tokens/expire` | | expires every token of the tenant |
//! | GET | `/__admin/{env}/truth/{users,groups,applications,memberships}` | | NDJSON, streamed |
//! | GET | `/__admin/{env}/truth/activities?from=&to=` | | NDJSON, newest first |

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::Server;
use crate::data::{fmt_ms, parse_ms};
use crate::error::ApiError;
use crate::faults::{FaultProfile, ScheduledFault};
use crate::filter::ActivityFilter;
use crate::state::{ActivityPos, Tenant};

type Shared = State<Arc<Server>>;

/// The admin routes.
pub fn router() -> Router<Arc<Server>> {
    Router::new()
        .route("/__admin/{env}/info", get(info))
        .route("/__admin/{env}/users", post(create_user))
        .route(
            "/__admin/{env}/users/{id}",
            axum::routing::patch(change_user).delete(delete_user),
        )
        .route("/__admin/{env}/users/{id}/lock", post(lock))
        .route("/__admin/{env}/users/{id}/unlock", post(unlock))
        .route("/__admin/{env}/users/{id}/mfa", put(set_mfa))
        .route(
            "/__admin/{env}/groups/{gid}/members/{uid}",
            put(add_member).delete(remove_member),
        )
        .route("/__admin/{env}/applications", post(create_app))
        .route("/__admin/{env}/applications/{id}", delete(delete_app))
        .route("/__admin/{env}/signons", post(signons))
        .route("/__admin/{env}/signon-counts", post(signon_counts))
        .route(
            "/__admin/{env}/faults",
            put(set_faults).delete(clear_faults),
        )
        .route("/__admin/{env}/faults/schedule", post(schedule_fault))
        .route("/__admin/{env}/tokens/expire", post(expire_tokens))
        .route("/__admin/{env}/truth/{what}", get(truth))
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_DATA", message, None)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("invalid body: {e}")))
}

fn now_str(s: &Server) -> String {
    fmt_ms(s.clock.now_ms())
}

async fn info(
    State(s): Shared,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let info = crate::TenantInfo::of(&t.spec, &s.base(&headers));
    Ok(axum::Json(info.to_json()).into_response())
}

fn user_mut(
    t: &Tenant,
    id: &str,
    f: impl FnOnce(&mut Map<String, Value>),
) -> Result<Value, ApiError> {
    let mut ov = t.write();
    let (i, mut u) = t
        .user_by_id(&ov, id)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find user {id}.")))?;
    if let Some(m) = u.as_object_mut() {
        f(m);
    }
    ov.users.insert(i, Some(u.clone()));
    Ok(u)
}

/// RFC 7386 merge patch: `null` removes a key, objects merge, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

async fn create_user(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let given: Value = parse_json(&body)?;
    let Some(username) = given.get("username").and_then(Value::as_str) else {
        return Err(bad("username is required"));
    };
    let now = now_str(&s);
    let mut ov = t.write();
    let i = ov.next_user;
    ov.next_user += 1;
    let id = t.data.user_id(i);
    let mut u = json!({
        "_links": {"self": {"href": format!("/v1/environments/{}/users/{id}", t.data.env_id)}},
        "id": id,
        "environment": {"id": t.data.env_id},
        "account": {"canAuthenticate": true, "status": "OK"},
        "createdAt": now,
        "enabled": true,
        "identityProvider": {"type": "PING_ONE"},
        "lifecycle": {"status": "ACCOUNT_OK"},
        "mfaEnabled": false,
        "population": {"id": t.data.populations[0].id},
        "updatedAt": now,
        "username": username,
        "verifyStatus": "NOT_INITIATED",
    });
    merge(&mut u, &given);
    if let Some(m) = u.as_object_mut() {
        m.insert("id".into(), json!(id));
        m.insert("environment".into(), json!({"id": t.data.env_id}));
    }
    ov.users.insert(i, Some(u.clone()));
    Ok((StatusCode::CREATED, axum::Json(u)).into_response())
}

async fn change_user(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let patch: Value = parse_json(&body)?;
    if !patch.is_object() {
        return Err(bad("the patch must be a JSON object"));
    }
    let now = now_str(&s);
    let u = user_mut(&t, &id, |m| {
        let mut v = Value::Object(std::mem::take(m));
        merge(&mut v, &patch);
        if let Value::Object(mut o) = v {
            o.insert("id".into(), json!(id.to_ascii_lowercase()));
            o.insert("updatedAt".into(), json!(now));
            *m = o;
        }
    })?;
    Ok(axum::Json(u).into_response())
}

async fn delete_user(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let mut ov = t.write();
    let (i, _) = t
        .user_by_id(&ov, &id)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find user {id}.")))?;
    ov.users.insert(i, None);
    if i < t.data.users {
        ov.deleted_generated += 1;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn lock(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let now = now_str(&s);
    let u = user_mut(&t, &id, |m| {
        m.insert(
            "account".into(),
            json!({"canAuthenticate": false, "status": "LOCKED", "lockedAt": now}),
        );
        m.insert("updatedAt".into(), json!(now));
    })?;
    Ok(axum::Json(u).into_response())
}

async fn unlock(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let now = now_str(&s);
    let u = user_mut(&t, &id, |m| {
        let enabled = m.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        m.insert(
            "account".into(),
            json!({"canAuthenticate": enabled, "status": "OK"}),
        );
        m.insert("updatedAt".into(), json!(now));
    })?;
    Ok(axum::Json(u).into_response())
}

/// Body of `PUT /__admin/{env}/users/{id}/mfa`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MfaBody {
    /// The new `mfaEnabled`.
    pub enabled: bool,
}

async fn set_mfa(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let b: MfaBody = parse_json(&body)?;
    let now = now_str(&s);
    let u = user_mut(&t, &id, |m| {
        m.insert("mfaEnabled".into(), json!(b.enabled));
        m.insert("updatedAt".into(), json!(now));
    })?;
    Ok(axum::Json(u).into_response())
}

fn member_target(t: &Tenant, gid: &str, uid: &str) -> Result<(u64, u32), ApiError> {
    let g = t
        .group_index(gid)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find group {gid}.")))?;
    let ov = t.read();
    let (i, _) = t
        .user_by_id(&ov, uid)
        .ok_or_else(|| ApiError::not_found(&format!("Unable to find user {uid}.")))?;
    Ok((i, g))
}

async fn add_member(
    State(s): Shared,
    Path((env, gid, uid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let (i, g) = member_target(&t, &gid, &uid)?;
    let mut ov = t.write();
    ov.member_del.remove(&(i, g));
    if !t.data.is_member(i, g) {
        ov.member_add.insert((i, g));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_member(
    State(s): Shared,
    Path((env, gid, uid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let (i, g) = member_target(&t, &gid, &uid)?;
    let mut ov = t.write();
    ov.member_add.remove(&(i, g));
    if t.data.is_member(i, g) {
        ov.member_del.insert((i, g));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_app(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let given: Value = parse_json(&body)?;
    if given.get("name").and_then(Value::as_str).is_none() {
        return Err(bad("name is required"));
    }
    let now = now_str(&s);
    let mut ov = t.write();
    if ov.apps.range(..).filter(|(_, v)| v.is_some()).count() as u64 + t.data.apps.len() as u64
        >= 1000
    {
        return Err(bad("at most 1,000 applications per environment"));
    }
    let i = ov.next_app;
    ov.next_app += 1;
    let id = t.data.app_ids.encode(i).to_string();
    let mut a = json!({
        "_links": {"self": {"href": format!("/v1/environments/{}/applications/{id}", t.data.env_id)}},
        "environment": {"id": t.data.env_id},
        "id": id,
        "enabled": true,
        "type": "WEB_APP",
        "protocol": "OPENID_CONNECT",
        "createdAt": now,
        "updatedAt": now,
    });
    merge(&mut a, &given);
    if let Some(m) = a.as_object_mut() {
        m.insert("id".into(), json!(id));
    }
    ov.apps.insert(i, Some(a.clone()));
    Ok((StatusCode::CREATED, axum::Json(a)).into_response())
}

async fn delete_app(
    State(s): Shared,
    Path((env, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let idx = uuid::Uuid::parse_str(&id)
        .ok()
        .and_then(|u| t.data.app_ids.decode(&u));
    let mut ov = t.write();
    let exists = idx.is_some_and(|i| match ov.apps.get(&i) {
        Some(v) => v.is_some(),
        None => i < t.data.apps.len() as u64,
    });
    match (idx, exists) {
        (Some(i), true) => {
            ov.apps.insert(i, None);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found(&format!(
            "Unable to find application {id}."
        ))),
    }
}

/// One sign-on to append (`POST /__admin/{env}/signons`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignonSpec {
    /// The user.
    pub user_id: String,
    /// The application.
    pub application_id: String,
    /// When (RFC 3339).
    pub at: String,
}

async fn signons(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let specs: Vec<SignonSpec> = parse_json(&body)?;
    let apps = t.applications();
    let mut out = Vec::new();
    for spec in specs {
        let at =
            parse_ms(&spec.at).ok_or_else(|| bad(&format!("at {:?} is not RFC 3339", spec.at)))?;
        let app = apps
            .iter()
            .find(|a| {
                a.get("id").and_then(Value::as_str)
                    == Some(spec.application_id.to_ascii_lowercase().as_str())
            })
            .ok_or_else(|| {
                ApiError::not_found(&format!(
                    "Unable to find application {}.",
                    spec.application_id
                ))
            })?;
        let name = app
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (i, u) = {
            let ov = t.read();
            t.user_by_id(&ov, &spec.user_id).ok_or_else(|| {
                ApiError::not_found(&format!("Unable to find user {}.", spec.user_id))
            })?
        };
        out.push(t.append_signon(
            i,
            &u,
            (&spec.application_id.to_ascii_lowercase(), &name),
            at,
        ));
    }
    Ok((StatusCode::CREATED, axum::Json(Value::Array(out))).into_response())
}

/// Sign-ons that PingOne's `/applicationSignons` counts but no audit activity shows
/// (`POST /__admin/{env}/signon-counts`): a disagreement to test the cross-check with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignonCountSpec {
    /// The application.
    pub application_id: String,
    /// When (RFC 3339).
    pub at: String,
    /// How many sign-ons.
    pub count: u64,
}

async fn signon_counts(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let specs: Vec<SignonCountSpec> = parse_json(&body)?;
    let apps = t.applications();
    for spec in &specs {
        let at =
            parse_ms(&spec.at).ok_or_else(|| bad(&format!("at {:?} is not RFC 3339", spec.at)))?;
        let id = spec.application_id.to_ascii_lowercase();
        if !apps
            .iter()
            .any(|a| a.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            return Err(ApiError::not_found(&format!(
                "Unable to find application {}.",
                spec.application_id
            )));
        }
        t.add_signon_count(&id, at, spec.count);
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"added": specs.len()})),
    )
        .into_response())
}

async fn set_faults(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let p: FaultProfile = parse_json(&body)?;
    p.validate().map_err(|m| bad(&m))?;
    t.faults().set_profile(p);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn schedule_fault(
    State(s): Shared,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let f: ScheduledFault = parse_json(&body)?;
    f.validate().map_err(|m| bad(&m))?;
    t.faults().schedule(f);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clear_faults(State(s): Shared, Path(env): Path<String>) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let fired = t.faults().fired_total();
    t.faults().clear();
    Ok(axum::Json(json!({"fired_total": fired})).into_response())
}

async fn expire_tokens(State(s): Shared, Path(env): Path<String>) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    let n = s.tokens.expire_env(&t.data.env_id);
    Ok(axum::Json(json!({"expired": n})).into_response())
}

/// NDJSON lines from a producer running on a blocking thread, through a bounded channel.
fn ndjson(produce: impl FnOnce(&mut dyn FnMut(&str) -> bool) + Send + 'static) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut emit = |v: &str| {
            buf.extend_from_slice(v.as_bytes());
            buf.push(b'\n');
            if buf.len() >= 60 * 1024 {
                let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(64 * 1024)));
                return tx.blocking_send(chunk).is_ok();
            }
            true
        };
        produce(&mut emit);
        if !buf.is_empty() {
            let _ = tx.blocking_send(Bytes::from(buf));
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<Bytes, std::io::Error>))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn truth(
    State(s): Shared,
    Path((env, what)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let t = s.tenant(&env)?;
    match what.as_str() {
        "users" => Ok(ndjson(move |emit| {
            let mut from = 0;
            loop {
                let (users, next) = t.users_page(from, 1000, None);
                for u in &users {
                    if !emit(u) {
                        return;
                    }
                }
                match next {
                    Some(n) => from = n,
                    None => return,
                }
            }
        })),
        "groups" => Ok(ndjson(move |emit| {
            for g in &t.data.groups {
                if !emit(&g.json.to_string()) {
                    return;
                }
            }
        })),
        "applications" => Ok(ndjson(move |emit| {
            for a in t.applications() {
                if !emit(&a.to_string()) {
                    return;
                }
            }
        })),
        "memberships" => Ok(ndjson(move |emit| {
            let end = t.read().next_user;
            let mut i = 0;
            while i < end {
                let batch: Vec<Value> = {
                    let ov = t.read();
                    (i..(i + 1000).min(end))
                        .filter(|u| t.user_at(&ov, *u).is_some())
                        .flat_map(|u| {
                            let uid = t.data.user_id(u);
                            t.groups_of(&ov, u)
                                .into_iter()
                                .map(move |g| (g, uid.clone()))
                        })
                        .map(|(g, uid)| json!({"groupId": t.data.groups[g as usize].id, "userId": uid}))
                        .collect()
                };
                for v in &batch {
                    if !emit(&v.to_string()) {
                        return;
                    }
                }
                i += 1000;
            }
        })),
        "activities" => {
            let from = q.get("from").ok_or_else(|| bad("from is required"))?;
            let to = q.get("to").ok_or_else(|| bad("to is required"))?;
            let filter = format!("recordedat ge \"{from}\" and recordedat lt \"{to}\"");
            let f = ActivityFilter::new(&filter).map_err(|m| bad(&m))?;
            Ok(ndjson(move |emit| {
                let mut pos = ActivityPos::START;
                loop {
                    let (events, next) = t.activities_page(&f, i64::MIN, pos, 1000);
                    for e in &events {
                        if !emit(e) {
                            return;
                        }
                    }
                    match next {
                        Some(n) => pos = n,
                        None => return,
                    }
                }
            }))
        }
        other => Err(ApiError::not_found(&format!(
            "no truth for {other:?}: use users, groups, applications, memberships or activities"
        ))),
    }
}
