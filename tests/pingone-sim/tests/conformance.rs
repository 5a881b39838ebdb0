//! Conformance tests over HTTP, one or more per rule of section 9 of `pingone-api.md`, against
//! the simulator spawned in-process on port 0.

use std::collections::{HashMap, HashSet};

use pingone_sim::{
    FaultKind, FaultProfile, Route, RunningSim, ScheduledFault, SimConfig, TenantInfo, TenantSpec,
    spawn,
};
use serde_json::{Value, json};

const ANCHOR: &str = "2026-11-20T12:00:00Z";

fn anchor() -> time::OffsetDateTime {
    time::OffsetDateTime::parse(ANCHOR, &time::format_description::well_known::Rfc3339)
        .expect("anchor")
}

async fn sim_with(tenants: Vec<TenantSpec>) -> RunningSim {
    let mut config = SimConfig::with_tenants(tenants);
    config.anchor_time = Some(anchor());
    spawn(config).await.expect("simulator starts")
}

async fn sim(users: u64) -> (RunningSim, TenantInfo) {
    let s = sim_with(vec![TenantSpec::generated("conf", users, 11)]).await;
    let t = s.tenants()[0].clone();
    (s, t)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

async fn token(c: &reqwest::Client, t: &TenantInfo) -> String {
    let r = c
        .post(t.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.expose()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("token json");
    assert_eq!(v["token_type"], "Bearer");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn get(c: &reqwest::Client, url: &str, tok: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(tok).send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn api(t: &TenantInfo, path: &str) -> String {
    format!("{}/environments/{}{path}", t.api_base_url, t.environment_id)
}

/// Follows `next` verbatim; returns every item of `_embedded.<name>` and the page count.
async fn scan(c: &reqwest::Client, first: &str, tok: &str, name: &str) -> (Vec<Value>, usize) {
    let mut url = first.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let (status, body) = get(c, &url, tok).await;
        assert_eq!(status, 200, "{url}: {body}");
        pages += 1;
        items.extend(
            body["_embedded"][name]
                .as_array()
                .expect("embedded array")
                .iter()
                .cloned(),
        );
        match body["_links"]["next"]["href"].as_str() {
            Some(n) => url = n.to_string(),
            None => return (items, pages),
        }
    }
}

fn assert_no_nulls(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("null at {path}"),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| assert_no_nulls(v, &format!("{path}.{k}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| assert_no_nulls(v, &format!("{path}[{i}]"))),
        _ => {}
    }
}

fn window(from: &str, to: &str) -> String {
    format!("recordedat gt \"{from}\" and recordedat lt \"{to}\"")
}

#[tokio::test]
async fn token_and_api_paths_are_served_by_one_listener() {
    let (s, t) = sim(50).await;
    assert_eq!(t.auth_base_url, s.base_url());
    assert_eq!(t.api_base_url, format!("{}/v1", s.base_url()));
    let c = http();
    let tok = token(&c, &t).await;
    let (status, body) = get(&c, &api(&t, "/users?limit=5"), &tok).await;
    assert_eq!(status, 200);
    assert_eq!(body["_embedded"]["users"].as_array().map(Vec::len), Some(5));
    s.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_after_expires_in() {
    let mut spec = TenantSpec::generated("ttl", 10, 1);
    spec.token_ttl_secs = 1;
    let s = sim_with(vec![spec]).await;
    let t = s.tenants()[0].clone();
    let c = http();
    let r: Value = c
        .post(t.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.expose()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    assert_eq!(r["expires_in"], 1);
    let tok = r["access_token"].as_str().expect("token").to_string();
    assert_eq!(tok.split('.').count(), 3, "a JWT-shaped token");
    assert_eq!(get(&c, &api(&t, "/users"), &tok).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (status, body) = get(&c, &api(&t, "/users"), &tok).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "ACCESS_FAILED");
    assert_eq!(body["details"][0]["code"], "INVALID_TOKEN");
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_token_is_401_invalid_token() {
    let (s, t) = sim(10).await;
    let c = http();
    let (status, body) = get(&c, &api(&t, "/users"), "not-a-token").await;
    assert_eq!(status, 401);
    assert_eq!(body["details"][0]["code"], "INVALID_TOKEN");
    let r = c.get(api(&t, "/users")).send().await.expect("request");
    assert_eq!(r.status(), 401, "no Authorization header");
    s.shutdown().await;
}

#[tokio::test]
async fn token_of_another_environment_is_403() {
    let s = sim_with(vec![
        TenantSpec::generated("a", 10, 1),
        TenantSpec::generated("b", 10, 2),
    ])
    .await;
    let (a, b) = (s.tenants()[0].clone(), s.tenants()[1].clone());
    let c = http();
    let tok_a = token(&c, &a).await;
    let (status, body) = get(&c, &api(&b, "/users"), &tok_a).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "ACCESS_FAILED");
    assert_eq!(get(&c, &api(&a, "/users"), &tok_a).await.0, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_environment_is_404_not_found() {
    let (s, t) = sim(10).await;
    let c = http();
    let tok = token(&c, &t).await;
    let other = "0b7e4b3c-1111-4222-8333-944455556666";
    let (status, body) = get(
        &c,
        &format!("{}/environments/{other}/users", t.api_base_url),
        &tok,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(
        body["id"].is_string() && body["message"].is_string(),
        "PingOne error shape: {body}"
    );
    let r = c
        .post(format!("{}/{other}/as/token", t.auth_base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.expose()),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 404);
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_or_auth_method_is_401_invalid_client() {
    let (s, t) = sim(10).await;
    let c = http();
    let r = c
        .post(t.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_client");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("Correlation ID"))
    );
    // client_secret_basic is not the configured method.
    let r = c
        .post(t.token_url())
        .basic_auth(&t.client_id, Some(t.client_secret.expose()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_client");
    let r = c
        .post(t.token_url())
        .form(&[
            ("grant_type", "password"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.expose()),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 400);
    s.shutdown().await;
}

#[tokio::test]
async fn full_scan_returns_every_user_once_and_equals_the_truth() {
    let (s, t) = sim(1234).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (users, pages) = scan(&c, &api(&t, "/users?limit=200"), &tok, "users").await;
    assert_eq!(pages, 7);
    assert_eq!(users.len(), 1234);
    let ids: HashSet<&str> = users.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids.len(), 1234, "every user exactly once");
    let truth = s
        .admin(&t.environment_id)
        .truth_users()
        .await
        .expect("truth");
    assert_eq!(users, truth);
    s.shutdown().await;
}

#[tokio::test]
async fn next_is_absolute_with_an_opaque_cursor_and_absent_on_the_last_page() {
    let (s, t) = sim(30).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (_, body) = get(&c, &api(&t, "/users?limit=20"), &tok).await;
    let next = body["_links"]["next"]["href"].as_str().expect("next");
    assert!(next.starts_with(&s.base_url()), "absolute: {next}");
    let url = reqwest::Url::parse(next).expect("url");
    let cursor = url
        .query_pairs()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.to_string())
        .expect("cursor");
    assert!(
        cursor.parse::<u64>().is_err(),
        "cursor is not a plain offset: {cursor}"
    );
    let (_, last) = get(&c, next, &tok).await;
    assert_eq!(
        last["_embedded"]["users"].as_array().map(Vec::len),
        Some(10)
    );
    assert!(
        last["_links"].get("next").is_none(),
        "no next on the last page"
    );
    // A tampered cursor is refused.
    let (status, _) = get(&c, &next.replace(&cursor, &format!("{cursor}x")), &tok).await;
    assert_eq!(status, 400);
    s.shutdown().await;
}

#[tokio::test]
async fn next_uses_public_base_url_or_the_request_host() {
    let mut config = SimConfig::with_tenants(vec![TenantSpec::generated("pub", 10, 1)]);
    config.public_base_url = Some("https://sim.example:8443".into());
    let s = spawn(config).await.expect("spawn");
    let t = s.tenants()[0].clone();
    assert_eq!(t.api_base_url, "https://sim.example:8443/v1");
    let local = TenantInfo {
        auth_base_url: format!("http://{}", s.local_addr()),
        api_base_url: format!("http://{}/v1", s.local_addr()),
        ..t
    };
    let c = http();
    let tok = token(&c, &local).await;
    let (_, body) = get(&c, &api(&local, "/users?limit=3"), &tok).await;
    assert!(
        body["_links"]["next"]["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("https://sim.example:8443/v1/"))
    );
    s.shutdown().await;

    let (s, t) = sim(10).await;
    let tok = token(&c, &t).await;
    let r = c
        .get(api(&t, "/users?limit=3"))
        .bearer_auth(&tok)
        .header("Host", "proxy.internal:9999")
        .send()
        .await
        .expect("request");
    let body: Value = r.json().await.expect("json");
    assert!(
        body["_links"]["next"]["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("http://proxy.internal:9999/v1/")),
        "{body}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn users_page_size_is_capped_at_200() {
    let (s, t) = sim(450).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (_, body) = get(&c, &api(&t, "/users?limit=1000"), &tok).await;
    assert_eq!(
        body["_embedded"]["users"].as_array().map(Vec::len),
        Some(200)
    );
    assert_eq!(body["size"], 200);
    let (status, body) = get(&c, &api(&t, "/users?limit=abc"), &tok).await;
    assert_eq!(status, 400, "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn count_and_size_are_sometimes_absent() {
    let (s, t) = sim(20).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (_, all) = get(&c, &api(&t, "/users"), &tok).await;
    assert_eq!(all["count"], 20);
    let (_, filtered) = get(&c, &api(&t, "/users?filter=enabled%20eq%20true"), &tok).await;
    assert!(filtered.get("count").is_none());
    let (_, apps) = get(&c, &api(&t, "/applications"), &tok).await;
    assert!(apps.get("count").is_none());
    let f = window("2026-11-19T00:00:00Z", "2026-11-20T12:00:00Z");
    let url = format!(
        "{}?filter={}",
        api(&t, "/activities"),
        pingone_sim::api::encode_query(&f)
    );
    let (status, acts) = get(&c, &url, &tok).await;
    assert_eq!(status, 200);
    assert!(acts.get("count").is_none() && acts.get("size").is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn optional_keys_are_absent_never_null() {
    let (s, t) = sim(600).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (users, _) = scan(&c, &api(&t, "/users?limit=200"), &tok, "users").await;
    users.iter().for_each(|u| assert_no_nulls(u, "user"));
    assert!(
        users.iter().any(|u| u.get("lastSignOn").is_none()),
        "some users never signed on"
    );
    assert!(
        users.iter().any(|u| u.get("type").is_none()),
        "type is sometimes absent"
    );
    assert!(users.iter().any(|u| u["account"].get("lockedAt").is_some()));
    assert!(
        users
            .iter()
            .filter(|u| u["account"]["status"] == "OK")
            .all(|u| u["account"].get("lockedAt").is_none())
    );
    for v in ["NOT_INITIATED", "ENABLED", "DISABLED"] {
        assert!(
            users.iter().any(|u| u["verifyStatus"] == v),
            "verifyStatus {v}"
        );
    }
    assert!(
        users
            .iter()
            .any(|u| u["account"]["canAuthenticate"] == false)
    );
    let mfa = users.iter().filter(|u| u["mfaEnabled"] == true).count();
    assert!(mfa * 2 > users.len(), "MFA on for most");
    let (apps, _) = scan(&c, &api(&t, "/applications"), &tok, "applications").await;
    apps.iter().for_each(|a| assert_no_nulls(a, "application"));
    let (groups, _) = scan(&c, &api(&t, "/groups"), &tok, "groups").await;
    groups.iter().for_each(|g| assert_no_nulls(g, "group"));
    s.shutdown().await;
}

#[tokio::test]
async fn scim_filter_subset_is_supported_and_the_rest_is_invalid_filter() {
    let (s, t) = sim(800).await;
    let c = http();
    let tok = token(&c, &t).await;
    let admin = s.admin(&t.environment_id);
    let memberships = admin.truth_memberships().await.expect("memberships");
    let group = memberships[0]["groupId"]
        .as_str()
        .expect("group")
        .to_string();
    let expected: HashSet<String> = memberships
        .iter()
        .filter(|m| m["groupId"] == group.as_str())
        .filter_map(|m| m["userId"].as_str().map(str::to_owned))
        .collect();
    let f = pingone_sim::api::encode_query(&format!("memberOfGroups[id eq \"{group}\"]"));
    let (members, _) = scan(
        &c,
        &api(&t, &format!("/users?limit=50&filter={f}")),
        &tok,
        "users",
    )
    .await;
    let got: HashSet<String> = members
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(got.len(), members.len());
    assert_eq!(got, expected);

    let users = admin.truth_users().await.expect("users");
    let name = users[7]["username"].as_str().expect("username");
    let f = pingone_sim::api::encode_query(&format!("username eq \"{name}\""));
    let (_, body) = get(&c, &api(&t, &format!("/users?filter={f}")), &tok).await;
    assert_eq!(body["_embedded"]["users"].as_array().map(Vec::len), Some(1));
    let f = pingone_sim::api::encode_query(
        "(address.countryCode eq \"US\" or address.countryCode eq \"CA\") and enabled eq true",
    );
    let (us, _) = scan(
        &c,
        &api(&t, &format!("/users?limit=200&filter={f}")),
        &tok,
        "users",
    )
    .await;
    let want = users
        .iter()
        .filter(|u| {
            (u["address"]["countryCode"] == "US" || u["address"]["countryCode"] == "CA")
                && u["enabled"] == true
        })
        .count();
    assert_eq!(us.len(), want);
    assert!(want > 0);

    for bad in [
        "mfaEnabled eq true",
        "lastSignOn.at gt \"2026-01-01T00:00:00Z\"",
        "username co \"a\"",
        "username eq",
        "account.status eq \"OK\"",
    ] {
        let (status, body) = get(
            &c,
            &api(
                &t,
                &format!("/users?filter={}", pingone_sim::api::encode_query(bad)),
            ),
            &tok,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["details"][0]["code"], "INVALID_FILTER", "{bad}");
    }
    s.shutdown().await;
}

async fn activities(
    c: &reqwest::Client,
    t: &TenantInfo,
    tok: &str,
    filter: &str,
    limit: Option<u32>,
) -> (u16, Value) {
    let mut url = format!(
        "{}?filter={}",
        api(t, "/activities"),
        pingone_sim::api::encode_query(filter)
    );
    if let Some(l) = limit {
        url.push_str(&format!("&limit={l}"));
    }
    get(c, &url, tok).await
}

#[tokio::test]
async fn activities_require_a_time_range() {
    let (s, t) = sim(100).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (status, body) = get(&c, &api(&t, "/activities"), &tok).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["code"], "INVALID_FILTER");
    let (status, _) =
        activities(&c, &t, &tok, "action.type eq \"USER.ACCESS_ALLOWED\"", None).await;
    assert_eq!(status, 400);
    let (status, _) =
        activities(&c, &t, &tok, "recordedat gt \"2026-11-19T00:00:00Z\"", None).await;
    assert_eq!(status, 400);
    s.shutdown().await;
}

#[tokio::test]
async fn activity_windows_are_at_most_14_days_and_only_the_last_14_days_are_served() {
    let (s, t) = sim(300).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (status, body) = activities(
        &c,
        &t,
        &tok,
        &window("2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["code"], "OUT_OF_RANGE");
    // A window reaching back further than 14 days from now serves only the last 14 days.
    let (status, body) = activities(
        &c,
        &t,
        &tok,
        &window("2026-10-20T00:00:00Z", "2026-11-03T00:00:00Z"),
        Some(1000),
    )
    .await;
    assert_eq!(status, 200);
    let events = body["_embedded"]["activities"]
        .as_array()
        .expect("activities");
    let horizon = "2026-11-06T12:00:00.000Z";
    assert!(
        events
            .iter()
            .all(|e| e["recordedAt"].as_str().is_some_and(|r| r >= horizon)),
        "nothing older than 14 days"
    );
    // The truth has older events, so the horizon is what removed them.
    let old = s
        .admin(&t.environment_id)
        .truth_activities("2026-10-20T00:00:00Z", "2026-11-03T00:00:00Z")
        .await
        .expect("truth");
    assert!(!old.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn activities_come_newest_first_with_limit_default_100_and_match_apps_and_users() {
    let (s, t) = sim(1000).await;
    let c = http();
    let tok = token(&c, &t).await;
    let f = window("2026-11-13T12:00:00Z", "2026-11-20T12:00:00Z");
    let (status, first) = activities(&c, &t, &tok, &f, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        first["_embedded"]["activities"].as_array().map(Vec::len),
        Some(100),
        "limit defaults to 100"
    );
    let url = format!(
        "{}?filter={}&limit=500",
        api(&t, "/activities"),
        pingone_sim::api::encode_query(&f)
    );
    let (events, _) = scan(&c, &url, &tok, "activities").await;
    assert!(
        (500..50_000).contains(&events.len()),
        "{} events in a week for 1000 users",
        events.len()
    );
    let times: Vec<&str> = events
        .iter()
        .filter_map(|e| e["recordedAt"].as_str())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let ids: HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "unique ids");
    let admin = s.admin(&t.environment_id);
    let users: HashMap<String, Value> = admin
        .truth_users()
        .await
        .expect("users")
        .into_iter()
        .map(|u| (u["id"].as_str().unwrap_or_default().to_string(), u))
        .collect();
    let apps: HashMap<String, Value> = admin
        .truth_applications()
        .await
        .expect("apps")
        .into_iter()
        .map(|a| (a["id"].as_str().unwrap_or_default().to_string(), a))
        .collect();
    let mut groups_of: HashMap<String, HashSet<String>> = HashMap::new();
    for m in admin.truth_memberships().await.expect("memberships") {
        groups_of
            .entry(m["userId"].as_str().unwrap_or_default().into())
            .or_default()
            .insert(m["groupId"].as_str().unwrap_or_default().into());
    }
    let mut newest: HashMap<String, String> = HashMap::new();
    for e in &events {
        assert_eq!(e["action"]["type"], "USER.ACCESS_ALLOWED");
        let uid = e["actors"]["user"]["id"].as_str().expect("user id");
        let app = &apps[e["actors"]["client"]["id"].as_str().expect("client id")];
        assert_eq!(e["actors"]["user"]["name"], users[uid]["username"]);
        if let Some(rule) = app["accessControl"]["group"]["groups"].as_array() {
            let mine = groups_of.get(uid).cloned().unwrap_or_default();
            let ids: Vec<&str> = rule.iter().filter_map(|g| g["id"].as_str()).collect();
            let ok = if app["accessControl"]["group"]["type"] == "ALL_GROUPS" {
                ids.iter().all(|g| mine.contains(*g))
            } else {
                ids.iter().any(|g| mine.contains(*g))
            };
            assert!(ok, "user {uid} used app {} without access", app["name"]);
        }
        newest
            .entry(uid.to_string())
            .or_insert_with(|| e["recordedAt"].as_str().unwrap_or_default().to_string());
    }
    for (uid, at) in &newest {
        assert_eq!(
            users[uid]["lastSignOn"]["at"].as_str(),
            Some(at.as_str()),
            "lastSignOn of {uid} is its newest event"
        );
    }
    // Long tail: some apps are almost unused, some users inactive for 30+ days.
    let mut per_app: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *per_app
            .entry(e["actors"]["client"]["id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let max = per_app.values().max().copied().unwrap_or(0);
    assert!(
        per_app.values().any(|n| *n * 50 < max) || per_app.len() < apps.len(),
        "a long tail of app usage"
    );
    let stale = users
        .values()
        .filter(|u| {
            u["lastSignOn"]["at"]
                .as_str()
                .is_some_and(|a| a < "2026-10-21T12:00:00Z")
        })
        .count();
    assert!(stale > 50, "{stale} users inactive for 30+ days");
    // The filter's eq on action.type and actors.user.id.
    let (uid, _) = newest.iter().next().expect("a user");
    let (status, body) = activities(
        &c,
        &t,
        &tok,
        &format!("{f} and actors.user.id eq \"{uid}\""),
        Some(1000),
    )
    .await;
    assert_eq!(status, 200);
    let mine = body["_embedded"]["activities"]
        .as_array()
        .expect("activities");
    assert_eq!(
        mine.len(),
        events
            .iter()
            .filter(|e| e["actors"]["user"]["id"] == uid.as_str())
            .count()
    );
    let app_id = events[0]["actors"]["client"]["id"]
        .as_str()
        .expect("app id")
        .to_string();
    let url = format!(
        "{}?filter={}&limit=1000",
        api(&t, "/activities"),
        pingone_sim::api::encode_query(&format!("{f} and actors.client.id eq \"{app_id}\""))
    );
    let (by_app, _) = scan(&c, &url, &tok, "activities").await;
    assert_eq!(
        by_app.len(),
        events
            .iter()
            .filter(|e| e["actors"]["client"]["id"] == app_id.as_str())
            .count()
    );
    let (_, users_only) = activities(
        &c,
        &t,
        &tok,
        &format!("{f} and resources.type eq \"GROUP\""),
        None,
    )
    .await;
    assert_eq!(
        users_only["_embedded"]["activities"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let (_, none) = activities(
        &c,
        &t,
        &tok,
        &format!("{f} and action.type eq \"USER.DELETED\""),
        None,
    )
    .await;
    assert_eq!(
        none["_embedded"]["activities"].as_array().map(Vec::len),
        Some(0)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn post_form_of_activities_matches_get() {
    let (s, t) = sim(200).await;
    let c = http();
    let tok = token(&c, &t).await;
    let f = window("2026-11-18T12:00:00Z", "2026-11-20T12:00:00Z");
    let (_, g) = activities(&c, &t, &tok, &f, Some(50)).await;
    let r = c
        .post(api(&t, "/activities"))
        .bearer_auth(&tok)
        .json(&json!({"filter": f, "limit": 50}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["_embedded"], g["_embedded"]);
    s.shutdown().await;
}

#[tokio::test]
async fn faults_429_with_retry_after_seconds_and_http_date() {
    let (s, t) = sim(50).await;
    let c = http();
    let tok = token(&c, &t).await;
    let admin = s.admin(&t.environment_id);
    for (fault, seconds) in [
        (
            FaultKind::RateLimitSeconds {
                retry_after_secs: 7,
            },
            true,
        ),
        (
            FaultKind::RateLimitHttpDate {
                retry_after_secs: 30,
            },
            false,
        ),
    ] {
        admin
            .schedule_fault(&ScheduledFault {
                route: Route::Users,
                page: None,
                nth_request: None,
                fault,
                times: 1,
            })
            .await
            .expect("schedule");
        let r = c
            .get(api(&t, "/users"))
            .bearer_auth(&tok)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 429);
        let ra = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .expect("Retry-After")
            .to_string();
        if seconds {
            assert_eq!(ra, "7");
        } else {
            assert!(httpdate::parse_http_date(&ra).is_ok(), "HTTP date: {ra}");
        }
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], "REQUEST_LIMITED");
        assert_eq!(get(&c, &api(&t, "/users"), &tok).await.0, 200, "fires once");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn faults_5xx_on_the_third_page_of_the_next_scan() {
    let (s, t) = sim(100).await;
    let c = http();
    let tok = token(&c, &t).await;
    let admin = s.admin(&t.environment_id);
    for status in [500u16, 502, 503, 504] {
        admin
            .schedule_fault(&ScheduledFault {
                route: Route::Users,
                page: Some(3),
                nth_request: None,
                fault: FaultKind::ServerError { status },
                times: 1,
            })
            .await
            .expect("schedule");
        let mut url = api(&t, "/users?limit=10");
        let mut statuses = Vec::new();
        let mut got = 0;
        while statuses.len() < 20 {
            let (st, body) = get(&c, &url, &tok).await;
            statuses.push(st);
            if st != 200 {
                continue; // retry the same page
            }
            got += body["_embedded"]["users"].as_array().map_or(0, Vec::len);
            match body["_links"]["next"]["href"].as_str() {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
        assert_eq!(statuses[..4], [200, 200, status, 200]);
        assert_eq!(got, 100, "the retried scan is complete");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn faults_slow_and_reset_mid_body() {
    let (s, t) = sim(50).await;
    let c = http();
    let tok = token(&c, &t).await;
    let admin = s.admin(&t.environment_id);
    admin
        .schedule_fault(&ScheduledFault {
            route: Route::Groups,
            page: None,
            nth_request: None,
            fault: FaultKind::Slow { delay_ms: 300 },
            times: 1,
        })
        .await
        .expect("schedule");
    let started = std::time::Instant::now();
    assert_eq!(get(&c, &api(&t, "/groups"), &tok).await.0, 200);
    // A lower bound the injected sleep guarantees (not a performance measurement).
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "the slow answer was delayed"
    );
    admin
        .schedule_fault(&ScheduledFault {
            route: Route::Users,
            page: Some(1),
            nth_request: None,
            fault: FaultKind::ResetMidBody,
            times: 1,
        })
        .await
        .expect("schedule");
    let r = c
        .get(api(&t, "/users"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the body is cut");
    assert_eq!(get(&c, &api(&t, "/users"), &tok).await.0, 200);
    assert_eq!(admin.clear_faults().await.expect("clear"), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn faults_token_outage_and_token_expiring_mid_scan() {
    let (s, t) = sim(60).await;
    let c = http();
    let admin = s.admin(&t.environment_id);
    admin
        .schedule_fault(&ScheduledFault {
            route: Route::Token,
            page: None,
            nth_request: None,
            fault: FaultKind::ServerError { status: 503 },
            times: 2,
        })
        .await
        .expect("schedule");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", t.client_id.as_str()),
        ("client_secret", t.client_secret.expose()),
    ];
    for _ in 0..2 {
        assert_eq!(
            c.post(t.token_url())
                .form(&form)
                .send()
                .await
                .expect("token")
                .status(),
            503
        );
    }
    let tok = token(&c, &t).await;
    admin
        .schedule_fault(&ScheduledFault {
            route: Route::Users,
            page: Some(2),
            nth_request: None,
            fault: FaultKind::ExpireToken,
            times: 1,
        })
        .await
        .expect("schedule");
    let (_, p1) = get(&c, &api(&t, "/users?limit=20"), &tok).await;
    let next = p1["_links"]["next"]["href"]
        .as_str()
        .expect("next")
        .to_string();
    let (status, body) = get(&c, &next, &tok).await;
    assert_eq!(status, 401);
    assert_eq!(body["details"][0]["code"], "INVALID_TOKEN");
    assert_eq!(
        get(&c, &next, &tok).await.0,
        401,
        "the old token stays expired"
    );
    let fresh = token(&c, &t).await;
    assert_eq!(
        get(&c, &next, &fresh).await.0,
        200,
        "a new token resumes the scan"
    );
    // Probability faults at p=1 fail every request, reproducibly.
    admin
        .set_faults(&FaultProfile {
            seed: 3,
            api_probability: 1.0,
            ..FaultProfile::default()
        })
        .await
        .expect("faults");
    for _ in 0..5 {
        let r = c
            .get(api(&t, "/groups"))
            .bearer_auth(&fresh)
            .send()
            .await
            .expect("request");
        let ok = r.status() == 200 && r.bytes().await.is_ok();
        assert!(!ok, "every request faulted");
    }
    admin.clear_faults().await.expect("clear");
    s.shutdown().await;
}

#[tokio::test]
async fn mutations_between_scans_are_served_and_in_the_truth() {
    let (s, t) = sim(120).await;
    let c = http();
    let tok = token(&c, &t).await;
    let admin = s.admin(&t.environment_id);
    let before = admin.truth_users().await.expect("truth");
    let (victim, locked, mfa) = (
        before[3]["id"].as_str().expect("id"),
        before[4]["id"].as_str().expect("id"),
        before[5]["id"].as_str().expect("id"),
    );
    admin.delete_user(victim).await.expect("delete");
    admin.lock_user(locked).await.expect("lock");
    let was = before[5]["mfaEnabled"].as_bool().expect("mfa");
    admin.set_mfa(mfa, !was).await.expect("mfa");
    let created = admin
        .create_user(&json!({"username": "new.hire", "type": "Intern"}))
        .await
        .expect("create");
    let changed = admin
        .change_user(
            before[6]["id"].as_str().expect("id"),
            &json!({"title": "CTO", "type": null}),
        )
        .await
        .expect("change");
    assert!(changed.get("type").is_none());
    let (users, _) = scan(&c, &api(&t, "/users?limit=200"), &tok, "users").await;
    assert_eq!(users.len(), 120);
    assert!(users.iter().all(|u| u["id"] != victim));
    let by_id = |id: &str| users.iter().find(|u| u["id"] == id).cloned().expect("user");
    assert_eq!(by_id(locked)["account"]["status"], "LOCKED");
    assert_eq!(by_id(locked)["account"]["canAuthenticate"], false);
    assert_eq!(by_id(mfa)["mfaEnabled"], !was);
    assert_eq!(by_id(created["id"].as_str().expect("id"))["type"], "Intern");
    assert_eq!(by_id(before[6]["id"].as_str().expect("id"))["title"], "CTO");
    assert_eq!(users, admin.truth_users().await.expect("truth"));
    admin.unlock_user(locked).await.expect("unlock");
    let (st, u) = get(&c, &api(&t, &format!("/users/{locked}")), &tok).await;
    assert_eq!(st, 200);
    assert_eq!(u["account"]["status"], "OK");
    assert!(u["account"].get("lockedAt").is_none());
    assert_eq!(
        get(&c, &api(&t, &format!("/users/{victim}")), &tok).await.0,
        404
    );

    // Applications and memberships.
    let app = admin
        .create_application(&json!({"name": "Brand New SaaS", "protocol": "SAML"}))
        .await
        .expect("app");
    let app_id = app["id"].as_str().expect("id").to_string();
    let (_, apps) = get(&c, &api(&t, "/applications"), &tok).await;
    assert!(
        apps["_embedded"]["applications"]
            .as_array()
            .expect("apps")
            .iter()
            .any(|a| a["id"] == app_id.as_str())
    );
    let groups = admin.truth_groups().await.expect("groups");
    let gid = groups[1]["id"].as_str().expect("gid");
    let uid = created["id"].as_str().expect("id");
    admin.add_membership(gid, uid).await.expect("add");
    let (_, mg) = get(&c, &api(&t, &format!("/users/{uid}/memberOfGroups")), &tok).await;
    assert_eq!(mg["_embedded"]["groupMemberships"][0]["id"], gid);
    admin.remove_membership(gid, uid).await.expect("remove");
    let (_, mg) = get(&c, &api(&t, &format!("/users/{uid}/memberOfGroups")), &tok).await;
    assert_eq!(
        mg["_embedded"]["groupMemberships"].as_array().map(Vec::len),
        Some(0)
    );

    // Sign-ons appended at chosen times appear in /activities and move lastSignOn.
    let at = "2026-11-20T11:59:00.000Z";
    let appended = admin
        .append_signons(&[pingone_sim::admin::SignonSpec {
            user_id: uid.into(),
            application_id: app_id.clone(),
            at: at.into(),
        }])
        .await
        .expect("append");
    let (_, acts) = activities(
        &c,
        &t,
        &tok,
        &window("2026-11-20T11:00:00Z", "2026-11-20T12:00:00Z"),
        Some(1000),
    )
    .await;
    let list = acts["_embedded"]["activities"].as_array().expect("acts");
    assert_eq!(list[0], appended[0]);
    assert_eq!(list[0]["actors"]["client"]["id"], app_id.as_str());
    let (_, u) = get(&c, &api(&t, &format!("/users/{uid}")), &tok).await;
    assert_eq!(u["lastSignOn"]["at"], at);
    admin.delete_application(&app_id).await.expect("delete app");
    let (_, apps) = get(&c, &api(&t, "/applications"), &tok).await;
    assert!(
        apps["_embedded"]["applications"]
            .as_array()
            .expect("apps")
            .iter()
            .all(|a| a["id"] != app_id.as_str())
    );
    s.shutdown().await;
}

#[tokio::test]
async fn same_seed_and_anchor_give_the_same_bytes() {
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (s, t) = sim(700).await;
        let c = http();
        let tok = token(&c, &t).await;
        let mut url = api(&t, "/users?limit=200");
        let mut bytes = Vec::new();
        loop {
            let r = c.get(&url).bearer_auth(&tok).send().await.expect("request");
            let b = r.bytes().await.expect("body");
            let v: Value = serde_json::from_slice(&b).expect("json");
            bytes.extend_from_slice(&b);
            match v["_links"]["next"]["href"].as_str() {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
        for path in ["/groups", "/applications"] {
            let r = c
                .get(api(&t, path))
                .bearer_auth(&tok)
                .send()
                .await
                .expect("request");
            bytes.extend_from_slice(&r.bytes().await.expect("body"));
        }
        let f = window("2026-11-10T00:00:00Z", "2026-11-20T00:00:00Z");
        let (_, a) = activities(&c, &t, &tok, &f, Some(1000)).await;
        bytes.extend_from_slice(a["_embedded"].to_string().as_bytes());
        // Ports differ between the two servers: compare with the base URL masked.
        bodies.push(String::from_utf8_lossy(&bytes).replace(&s.base_url(), "BASE"));
        s.shutdown().await;
    }
    assert!(bodies[0].len() > 100_000);
    assert!(bodies[0] == bodies[1], "two runs differ");
    let s = sim_with(vec![TenantSpec::generated("conf", 700, 12)]).await;
    let t = s.tenants()[0].clone();
    let other = s
        .admin(&t.environment_id)
        .truth_users()
        .await
        .expect("truth");
    assert!(
        !bodies[0].contains(other[0]["id"].as_str().expect("id")),
        "another seed gives other data"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn groups_memberships_and_applications_cover_every_type_and_protocol() {
    let (s, t) = sim(2000).await;
    let c = http();
    let tok = token(&c, &t).await;
    let (apps, _) = scan(&c, &api(&t, "/applications"), &tok, "applications").await;
    for ty in [
        "WEB_APP",
        "NATIVE_APP",
        "SINGLE_PAGE_APP",
        "WORKER",
        "SERVICE",
        "CUSTOM_APP",
        "PING_ONE_SELF_SERVICE",
        "PING_ONE_ADMIN_CONSOLE",
        "PING_ONE_PORTAL",
        "TEMPLATE_APP",
        "PORTAL_LINK_APP",
    ] {
        assert!(apps.iter().any(|a| a["type"] == ty), "type {ty}");
    }
    for p in ["OPENID_CONNECT", "SAML", "WS_FED", "EXTERNAL_LINK"] {
        assert!(apps.iter().any(|a| a["protocol"] == p), "protocol {p}");
    }
    assert!(
        apps.iter()
            .any(|a| a["accessControl"]["group"]["groups"].is_array()),
        "group-based access control"
    );
    let (groups, pages) = scan(&c, &api(&t, "/groups?limit=7"), &tok, "groups").await;
    assert_eq!(groups.len(), 20);
    assert_eq!(pages, 3);
    let users = s
        .admin(&t.environment_id)
        .truth_users()
        .await
        .expect("users");
    let pops: HashSet<&str> = users
        .iter()
        .filter_map(|u| u["population"]["id"].as_str())
        .collect();
    assert!(pops.len() >= 2, "several populations");
    let uid = users[0]["id"].as_str().expect("id");
    let (_, one) = get(
        &c,
        &api(&t, &format!("/users/{uid}?include=memberOfGroupIDs")),
        &tok,
    )
    .await;
    let (_, mg) = get(&c, &api(&t, &format!("/users/{uid}/memberOfGroups")), &tok).await;
    let ids: Vec<&Value> = mg["_embedded"]["groupMemberships"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        one["memberOfGroupIDs"]
            .as_array()
            .expect("ids")
            .iter()
            .collect::<Vec<_>>(),
        ids
    );
    s.shutdown().await;
}

#[tokio::test]
async fn application_signons_count_generated_sign_ons() {
    let (s, t) = sim(300).await;
    let c = http();
    let tok = token(&c, &t).await;
    let f = pingone_sim::api::encode_query("occurredAt ge \"2026-11-13T12:00:00Z\"");
    let week = api(
        &t,
        &format!("/applicationSignons?filter={f}&samplePeriod=24&samplePeriodCount=7&limit=100"),
    );
    let (st, body) = get(&c, &week, &tok).await;
    assert_eq!(st, 200, "{body}");
    let total: u64 = body["_embedded"]["applicationSignons"]
        .as_array()
        .expect("items")
        .iter()
        .flat_map(|i| i["authentication"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["signons"].as_u64())
        .sum();
    let truth = s
        .admin(&t.environment_id)
        .truth_activities("2026-11-13T12:00:00Z", "2026-11-20T12:00:00Z")
        .await
        .expect("truth");
    assert_eq!(total, truth.len() as u64);
    // One item per application, named by `id`, with seven day buckets.
    let items = body["_embedded"]["applicationSignons"]
        .as_array()
        .expect("items")
        .clone();
    let app = items[0]["id"].as_str().expect("application id").to_owned();
    assert!(
        items
            .iter()
            .all(|i| i["authentication"].as_array().map(Vec::len) == Some(7))
    );
    assert_eq!(
        items[0]["authentication"][1]["startDate"],
        json!("2026-11-14T12:00:00.000Z")
    );
    // Counts with no audit event (the admin API's disagreement) are added to their bucket.
    s.admin(&t.environment_id)
        .add_signon_counts(&[pingone_sim::admin::SignonCountSpec {
            application_id: app.clone(),
            at: "2026-11-14T13:00:00Z".into(),
            count: 5,
        }])
        .await
        .expect("extra counts");
    let (st, again) = get(&c, &week, &tok).await;
    assert_eq!(st, 200, "{again}");
    let bucket = |b: &Value| {
        b["_embedded"]["applicationSignons"][0]["authentication"][1]["signons"].as_u64()
    };
    assert_eq!(
        again["_embedded"]["applicationSignons"][0]["id"],
        json!(app)
    );
    assert_eq!(bucket(&again), bucket(&body).map(|n| n + 5));
    let (st, _) = get(
        &c,
        &api(
            &t,
            &format!(
                "/applicationSignons?filter={f}&samplePeriod=8760&samplePeriodCount=100&limit=100"
            ),
        ),
        &tok,
    )
    .await;
    assert_eq!(
        st, 400,
        "samplePeriod × samplePeriodCount × limit over 100000"
    );
    s.shutdown().await;
}
