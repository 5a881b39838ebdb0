//! Benchmark baseline: a plain HTTP client that reads the same pages as a producer snapshot
//! sync (applications, groups, users, members of access-control groups) with the same page
//! size, following `next` links, and writes nothing. `producer/bench/run.sh` compares the
//! producer's entities/s with this reader's, in the same run.
//!
//! Usage: `plain_reader <token_url> <api_base_url> <environment_id> <client_id> <page_size>`
//! with the client secret in `PLAIN_READER_SECRET`. Prints one JSON line with the counts,
//! seconds and entities/s.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

async fn get(http: &reqwest::Client, token: &str, url: &str) -> anyhow::Result<Value> {
    for attempt in 0..10 {
        let r = http.get(url).bearer_auth(token).send().await;
        match r {
            Ok(r) if r.status().is_success() => return Ok(r.json().await?),
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {}
            Ok(r) => bail!("{url}: http {}", r.status()),
            Err(_) if attempt < 9 => {}
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bail!("{url}: retries exhausted")
}

async fn scan(
    http: &reqwest::Client,
    token: &str,
    first: String,
    collection: &str,
    mut each: impl FnMut(&Value),
) -> anyhow::Result<u64> {
    let mut url = Some(first);
    let mut n = 0;
    while let Some(u) = url.take() {
        let page = get(http, token, &u).await?;
        if let Some(items) = page["_embedded"][collection].as_array() {
            for item in items {
                each(item);
                n += 1;
            }
        }
        url = page["_links"]["next"]["href"].as_str().map(str::to_owned);
    }
    Ok(n)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, token_url, api, env, client_id, page_size] = args.as_slice() else {
        bail!(
            "usage: plain_reader <token_url> <api_base_url> <environment_id> <client_id> <page_size>"
        );
    };
    let secret = std::env::var("PLAIN_READER_SECRET").context("PLAIN_READER_SECRET")?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let token: Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .context("access_token")?
        .to_string();
    let base = format!("{}/environments/{env}", api.trim_end_matches('/'));
    let mut groups_of_apps = BTreeSet::new();
    let apps = scan(
        &http,
        &token,
        format!("{base}/applications"),
        "applications",
        |a| {
            if let Some(gs) = a
                .pointer("/accessControl/group/groups")
                .and_then(Value::as_array)
            {
                groups_of_apps.extend(
                    gs.iter()
                        .filter_map(|g| g["id"].as_str().map(str::to_owned)),
                );
            }
        },
    )
    .await?;
    let groups = scan(
        &http,
        &token,
        format!("{base}/groups?limit={page_size}"),
        "groups",
        |_| {},
    )
    .await?;
    let users = scan(
        &http,
        &token,
        format!("{base}/users?limit={page_size}"),
        "users",
        |_| {},
    )
    .await?;
    let mut members = 0;
    for g in &groups_of_apps {
        let filter = format!("memberOfGroups[id eq \"{g}\"]");
        let encoded: String = filter
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        members += scan(
            &http,
            &token,
            format!("{base}/users?limit={page_size}&filter={encoded}"),
            "users",
            |_| {},
        )
        .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = apps + groups + users + members;
    println!(
        "{}",
        serde_json::json!({
            "applications": apps, "groups": groups, "users": users, "group_memberships": members,
            "entities": total, "seconds": seconds, "entities_per_s": total as f64 / seconds,
        })
    );
    Ok(())
}
