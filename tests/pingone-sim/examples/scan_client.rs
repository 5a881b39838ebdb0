//! Benchmark client: a full paged scan of one tenant's users (limit 200, `next` followed
//! verbatim) over loopback, timed; then an untimed second scan checked against the truth dump
//! (count, unique ids and a digest of every user's bytes in order).
//!
//! Usage: `scan_client '<stdout JSON line of pingone-sim>' [FROM TO]`; prints one JSON result
//! line. With FROM and TO (RFC 3339, at most 14 days apart) it also times a full paged read of
//! `/activities` in that window (limit 1000) and checks it against the truth dump (same count,
//! unique ids, newest first).

use std::collections::HashSet;
use std::time::Instant;

use serde_json::Value;

#[derive(serde::Deserialize)]
struct Href {
    href: String,
}

#[derive(serde::Deserialize)]
struct Links {
    next: Option<Href>,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(serde::Deserialize)]
struct Embedded {
    users: Vec<IdOnly>,
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(rename = "_links")]
    links: Links,
    #[serde(rename = "_embedded")]
    embedded: Embedded,
}

fn digest(acc: u64, bytes: &[u8]) -> u64 {
    // FNV-1a over the bytes, chained: order-sensitive.
    let mut h = acc ^ 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let line = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: scan_client '<tenant json line>'"))?;
    let t: Value = serde_json::from_str(&line)?;
    let field = |k: &str| {
        t[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("missing {k}"))
    };
    let (env, api, token_url) = (
        field("environment_id")?,
        field("api_base_url")?,
        field("token_url")?,
    );
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let tok: Value = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &field("client_id")?),
            ("client_secret", &field("client_secret")?),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let tok = tok["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no access_token"))?
        .to_string();

    // Timed pass: what any client must do (parse each page, follow next), nothing more.
    let started = Instant::now();
    let first = format!("{api}/environments/{env}/users?limit=200");
    let mut url = first.clone();
    let (mut users, mut pages) = (0u64, 0u64);
    let mut ids: HashSet<u128> = HashSet::new();
    loop {
        let bytes = http
            .get(&url)
            .bearer_auth(&tok)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: Page = serde_json::from_slice(&bytes)?;
        pages += 1;
        for u in page.embedded.users {
            users += 1;
            ids.insert(uuid::Uuid::parse_str(&u.id)?.as_u128());
        }
        match page.links.next {
            Some(n) => url = n.href,
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();

    // Untimed pass: every user's full JSON, in order, digested to compare with the truth.
    let mut url = first;
    let mut scan_digest = 0u64;
    loop {
        let body: Value = http
            .get(&url)
            .bearer_auth(&tok)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for u in body["_embedded"]["users"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no users array"))?
        {
            scan_digest = digest(scan_digest, serde_json::to_string(u)?.as_bytes());
        }
        match body["_links"]["next"]["href"].as_str() {
            Some(n) => url = n.to_string(),
            None => break,
        }
    }

    // The truth dump, streamed line by line.
    let base = api.trim_end_matches("/v1");
    let mut resp = http
        .get(format!("{base}/__admin/{env}/truth/users"))
        .send()
        .await?
        .error_for_status()?;
    let (mut truth_users, mut truth_digest, mut pending) = (0u64, 0u64, Vec::new());
    while let Some(chunk) = resp.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            truth_users += 1;
            truth_digest = digest(truth_digest, &line[..line.len() - 1]);
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = users as f64 / secs;
    println!(
        "{}",
        serde_json::json!({
            "users": users, "unique_ids": ids.len(), "pages": pages, "seconds": secs,
            "users_per_second": rate.round(), "truth_users": truth_users,
            "equals_truth": users == truth_users && scan_digest == truth_digest && ids.len() as u64 == users,
        })
    );
    if users != truth_users || scan_digest != truth_digest || ids.len() as u64 != users {
        anyhow::bail!("the scan differs from the truth dump");
    }
    if let (Some(from), Some(to)) = (std::env::args().nth(2), std::env::args().nth(3)) {
        activities(&http, &tok, base, &env, &from, &to).await?;
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "recordedAt")]
    recorded_at: String,
}

#[derive(serde::Deserialize)]
struct EventsEmbedded {
    activities: Vec<Event>,
}

#[derive(serde::Deserialize)]
struct EventsPage {
    #[serde(rename = "_links")]
    links: Links,
    #[serde(rename = "_embedded")]
    embedded: EventsEmbedded,
}

async fn activities(
    http: &reqwest::Client,
    tok: &str,
    base: &str,
    env: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    let filter = format!("recordedat ge \"{from}\" and recordedat lt \"{to}\"");
    let mut url = reqwest::Url::parse(&format!("{base}/v1/environments/{env}/activities"))?;
    url.query_pairs_mut()
        .append_pair("filter", &filter)
        .append_pair("limit", "1000");
    let mut url = url.to_string();
    let started = Instant::now();
    let (mut events, mut pages, mut ordered) = (0u64, 0u64, true);
    let mut ids: HashSet<String> = HashSet::new();
    let mut last = String::from("~");
    loop {
        let bytes = http
            .get(&url)
            .bearer_auth(tok)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: EventsPage = serde_json::from_slice(&bytes)?;
        pages += 1;
        for e in page.embedded.activities {
            events += 1;
            ordered &= e.recorded_at <= last;
            last = e.recorded_at;
            ids.insert(e.id);
        }
        match page.links.next {
            Some(n) => url = n.href,
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut truth = http
        .get(format!("{base}/__admin/{env}/truth/activities"))
        .query(&[("from", from), ("to", to)])
        .send()
        .await?
        .error_for_status()?;
    let mut truth_events = 0u64;
    while let Some(chunk) = truth.chunk().await? {
        truth_events += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = events as f64 / secs;
    let equal = events == truth_events && ids.len() as u64 == events && ordered;
    println!(
        "{}",
        serde_json::json!({
            "activities": events, "unique_ids": ids.len(), "pages": pages, "seconds": secs,
            "events_per_second": rate.round(), "newest_first": ordered, "truth_events": truth_events,
            "equals_truth": equal,
        })
    );
    if !equal {
        anyhow::bail!("the activities read differs from the truth dump");
    }
    Ok(())
}
