//! `transformer license-report reclaim --app APP`: the seats of one application to take back, one
//! line per user with the evidence, ready for a ticket or a SCIM deprovisioning job.
//!
//! A user is listed when they may use the application (its group rule on their groups) and have
//! not accessed it within `--inactive-days` of the report's "now" (or never). Each line carries
//! what a reviewer checks — last PingOne sign-on, last access to this application,
//! `can_authenticate`, status, MFA — and where the user's facts come from: the sync that saw them
//! and the raw record (topic, partition, offset) they were normalized from, observed when.
//! Never-used seats come first, then the longest unused.

use std::collections::BTreeMap;

use schemas::time::format_ms;
use serde::Serialize;

use super::{DAY_MS, TenantData};
use crate::normalize::may_use;

/// Output format of the reclaim list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReclaimFormat {
    /// CSV with a header line.
    #[default]
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Arguments of `license-report reclaim`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReclaimArgs {
    /// The application: its PingOne id, or its name (case-insensitive).
    #[arg(long)]
    pub app: String,
    /// Days without access to the application after which a seat is listed.
    #[arg(long, default_value_t = 90)]
    pub inactive_days: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReclaimFormat::Csv)]
    pub format: ReclaimFormat,
}

/// Where a user's facts come from (kept only for the reclaim list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// `username`.
    pub username: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// The sync that saw the user.
    pub sync_id: Option<String>,
    /// The raw record the user's facts were normalized from.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// When the producer read it from PingOne (ms since the epoch).
    pub observed_at: i64,
}

/// One seat to reclaim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReclaimRow {
    /// Tenant.
    pub tenant_id: String,
    /// Application id.
    pub application_id: String,
    /// Application name.
    pub application_name: Option<String>,
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Last PingOne sign-on (RFC 3339).
    pub last_sign_on_at: Option<String>,
    /// Last access to this application (RFC 3339); `None`: never.
    pub last_access_at: Option<String>,
    /// Whole days since that access; `None`: never.
    pub days_since_last_access: Option<i64>,
    /// `can_authenticate`.
    pub can_authenticate: Option<bool>,
    /// `status`.
    pub status: Option<String>,
    /// `mfa_enabled`.
    pub mfa_enabled: Option<bool>,
    /// The sync that saw the user.
    pub sync_id: Option<String>,
    /// The raw record of the user's facts: topic.
    pub source_topic: Option<String>,
    /// Its partition.
    pub source_partition: Option<i32>,
    /// Its offset.
    pub source_offset: Option<i64>,
    /// When the producer read it from PingOne (RFC 3339).
    pub observed_at: Option<String>,
}

/// The seats of `app` (id, or name case-insensitively) unused for `inactive_days` before
/// `as_of_ms`, over every tenant (pure). `None` when no tenant has such an application.
pub fn compute(
    tenants: &BTreeMap<String, TenantData>,
    app: &str,
    inactive_days: u32,
    as_of_ms: i64,
) -> Option<Vec<ReclaimRow>> {
    let cutoff = as_of_ms - i64::from(inactive_days) * DAY_MS;
    let wanted = app.to_lowercase();
    let mut found = false;
    let mut rows = Vec::new();
    for (tenant, data) in tenants {
        let apps = data.apps.iter().filter(|(id, a)| {
            id.as_str() == app || a.name.as_ref().is_some_and(|n| n.to_lowercase() == wanted)
        });
        for (app_id, a) in apps {
            found = true;
            for (user_id, facts) in &data.users {
                if !may_use(
                    a.group_type.as_deref(),
                    &a.group_ids,
                    &facts.access_group_ids,
                ) {
                    continue;
                }
                let last = data
                    .last_access
                    .get(&(app_id.clone(), user_id.clone()))
                    .copied();
                if last.is_some_and(|t| t >= cutoff) {
                    continue;
                }
                let e = facts.evidence.as_deref();
                rows.push(ReclaimRow {
                    tenant_id: tenant.clone(),
                    application_id: app_id.clone(),
                    application_name: a.name.clone(),
                    user_id: user_id.clone(),
                    username: e.and_then(|e| e.username.clone()),
                    email: e.and_then(|e| e.email.clone()),
                    last_sign_on_at: facts.last_sign_on_at.map(format_ms),
                    last_access_at: last.map(format_ms),
                    days_since_last_access: last.map(|t| (as_of_ms - t) / DAY_MS),
                    can_authenticate: facts.can_authenticate,
                    status: e.and_then(|e| e.status.clone()),
                    mfa_enabled: facts.mfa_enabled,
                    sync_id: e.and_then(|e| e.sync_id.clone()),
                    source_topic: e.map(|e| e.source_topic.clone()),
                    source_partition: e.map(|e| e.source_partition),
                    source_offset: e.map(|e| e.source_offset),
                    observed_at: e.map(|e| format_ms(e.observed_at)),
                });
            }
        }
    }
    // Never used first, then the longest unused; ties by tenant and user.
    rows.sort_by(|a, b| {
        (&a.tenant_id, a.days_since_last_access.is_some())
            .cmp(&(&b.tenant_id, b.days_since_last_access.is_some()))
            .then(b.days_since_last_access.cmp(&a.days_since_last_access))
            .then(a.application_id.cmp(&b.application_id))
            .then(a.user_id.cmp(&b.user_id))
    });
    found.then_some(rows)
}

/// Renders the list in `format`.
pub fn render(rows: &[ReclaimRow], format: ReclaimFormat) -> String {
    match format {
        ReclaimFormat::Json => {
            let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        ReclaimFormat::Csv => {
            let mut s = String::from(
                "tenant,application_id,application_name,user_id,username,email,last_sign_on_at,\
                 last_access_at,days_since_last_access,can_authenticate,status,mfa_enabled,\
                 sync_id,source_topic,source_partition,source_offset,observed_at\n",
            );
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            let shown = |v: Option<String>| v.unwrap_or_default();
            for r in rows {
                let cells = [
                    r.tenant_id.clone(),
                    r.application_id.clone(),
                    text(&r.application_name),
                    r.user_id.clone(),
                    text(&r.username),
                    text(&r.email),
                    text(&r.last_sign_on_at),
                    text(&r.last_access_at),
                    shown(r.days_since_last_access.map(|d| d.to_string())),
                    shown(r.can_authenticate.map(|b| b.to_string())),
                    text(&r.status),
                    shown(r.mfa_enabled.map(|b| b.to_string())),
                    text(&r.sync_id),
                    text(&r.source_topic),
                    shown(r.source_partition.map(|p| p.to_string())),
                    shown(r.source_offset.map(|o| o.to_string())),
                    text(&r.observed_at),
                ];
                let line: Vec<String> = cells.iter().map(|c| super::csv_cell(c)).collect();
                s.push_str(&line.join(","));
                s.push('\n');
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AppFacts, UserFacts};
    use super::*;

    const NOW: i64 = 1_000 * DAY_MS;

    fn data() -> BTreeMap<String, TenantData> {
        let user = |groups: &[&str], offset: i64| UserFacts {
            can_authenticate: Some(true),
            mfa_enabled: Some(false),
            access_group_ids: groups.iter().map(|g| (*g).to_owned()).collect(),
            last_sign_on_at: Some(NOW - 2 * DAY_MS),
            evidence: Some(Box::new(Evidence {
                username: Some(format!("user{offset}")),
                email: Some(format!("user{offset}@example.com")),
                status: Some("ENABLED".into()),
                sync_id: Some("s-9".into()),
                source_topic: "pingone.raw.v1".into(),
                source_partition: 1,
                source_offset: offset,
                observed_at: NOW - DAY_MS,
            })),
        };
        let mut t = TenantData::default();
        t.users.insert("u1".into(), user(&["g"], 11));
        t.users.insert("u2".into(), user(&["g"], 12));
        t.users.insert("u3".into(), user(&["g"], 13));
        t.users.insert("u4".into(), user(&[], 14));
        t.apps.insert(
            "app-1".into(),
            AppFacts {
                name: Some("Slack".into()),
                group_type: Some("ANY_GROUP".into()),
                group_ids: vec!["g".into()],
            },
        );
        // u1 used it 10 days ago (kept), u2 200 days ago (listed), u3 never (listed first);
        // u4 may not use it (not listed).
        t.last_access
            .insert(("app-1".into(), "u1".into()), NOW - 10 * DAY_MS);
        t.last_access
            .insert(("app-1".into(), "u2".into()), NOW - 200 * DAY_MS);
        t.last_access
            .insert(("app-1".into(), "u4".into()), NOW - 300 * DAY_MS);
        BTreeMap::from([("acme".to_owned(), t)])
    }

    #[test]
    fn lists_unused_seats_with_their_evidence() {
        let rows = compute(&data(), "slack", 90, NOW).unwrap();
        let users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(users, ["u3", "u2"]);
        let u2 = &rows[1];
        assert_eq!(u2.days_since_last_access, Some(200));
        assert_eq!(
            u2.last_access_at.as_deref(),
            Some(format_ms(NOW - 200 * DAY_MS).as_str())
        );
        assert_eq!(u2.source_offset, Some(12));
        assert_eq!(u2.sync_id.as_deref(), Some("s-9"));
        assert_eq!(rows[0].last_access_at, None);
        // By id too; a wider window keeps u2's seat.
        let by_id = compute(&data(), "app-1", 365, NOW).unwrap();
        assert_eq!(by_id.len(), 1);
        assert!(compute(&data(), "Zoom", 90, NOW).is_none());
    }

    #[test]
    fn csv_and_json() {
        let rows = compute(&data(), "Slack", 90, NOW).unwrap();
        let csv = render(&rows, ReclaimFormat::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("tenant,application_id,application_name,user_id,"));
        assert!(
            lines[2].starts_with("acme,app-1,Slack,u2,user12,user12@example.com,"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(",s-9,pingone.raw.v1,1,12,1972-09-26T00:00:00.000Z"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, ReclaimFormat::Json)).unwrap();
        assert_eq!(json[0]["user_id"], "u3");
        assert_eq!(json[0]["last_access_at"], serde_json::Value::Null);
        assert_eq!(json[1]["days_since_last_access"], 200);
    }
}
