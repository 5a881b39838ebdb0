//! What the end-to-end tests share: the expected pipeline output computed straight from the
//! PingOne simulator's truth dumps (users, applications, memberships, activities), written
//! independently of the transformer's code so that a shared mistake cannot hide.
//!
//! Definitions follow `transformer/README.md` ("License report") and `schemas/README.md`:
//! - a user may use an application without a group rule; with `ANY_GROUP` when they belong to
//!   one of its groups; with `ALL_GROUPS` when they belong to all of them;
//! - `active_<N>d`: last `USER.ACCESS_ALLOWED` to the application (the tenant row: to any live
//!   application) at or after `as_of − N days`;
//! - `never_used`: no such access recorded;
//! - `inactive_can_authenticate`: no access to any live application and no PingOne sign-on
//!   (`lastSignOn.at`) within the largest window, and `account.canAuthenticate` true;
//! - `without_mfa`: `mfaEnabled` not true.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DAY_MS: i64 = 86_400_000;

/// The path of a workspace binary (`producer`, `transformer`, `lake-sink`) for a test to run:
/// tests run from `target/<profile>/deps/`, the binaries sit in `target/<profile>/`.
///
/// # Panics
/// When the binary is not built, naming the command that builds it.
pub fn binary(name: &str) -> std::path::PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p producer -p transformer -p lake-sink`)",
        path.display()
    );
    path
}

/// Milliseconds since the epoch of an RFC 3339 time, `None` when absent or malformed.
pub fn parse_ms(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// RFC 3339 text of a time in milliseconds since the epoch.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The seven integration fields of a user, in the order `can_authenticate`, `locality`,
/// `mfa_enabled`, `region`, `status`, `type`, `verify_status`; absent keys are JSON null.
pub type Seven = [Value; 7];

/// The seven fields as PingOne's user JSON holds them.
pub fn seven_from_pingone(user: &Value) -> Seven {
    let at = |pointer: &str| user.pointer(pointer).cloned().unwrap_or(Value::Null);
    [
        at("/account/canAuthenticate"),
        at("/address/locality"),
        at("/mfaEnabled"),
        at("/address/region"),
        at("/account/status"),
        at("/type"),
        at("/verifyStatus"),
    ]
}

/// The seven fields of a decoded `UserUsage` record (as JSON, e.g. from fastavro).
pub fn seven_from_record(record: &Value) -> Seven {
    let at = |field: &str| record.get(field).cloned().unwrap_or(Value::Null);
    [
        at("can_authenticate"),
        at("locality"),
        at("mfa_enabled"),
        at("region"),
        at("status"),
        at("type"),
        at("verify_status"),
    ]
}

/// A tenant's truth, as the simulator's admin dumps give it.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Users by id.
    pub users: BTreeMap<String, Value>,
    /// Applications by id.
    pub applications: BTreeMap<String, Value>,
    /// Group ids of each user (every membership, direct).
    pub groups_of: HashMap<String, BTreeSet<String>>,
}

impl Truth {
    /// Builds the truth from the dumps (`memberships` items are `{"groupId","userId"}`).
    pub fn new(users: &[Value], applications: &[Value], memberships: &[Value]) -> Self {
        let by_id = |items: &[Value]| {
            items
                .iter()
                .filter_map(|v| Some((v.get("id")?.as_str()?.to_owned(), v.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        let mut groups_of: HashMap<String, BTreeSet<String>> = HashMap::new();
        for m in memberships {
            if let (Some(g), Some(u)) = (
                m.get("groupId").and_then(Value::as_str),
                m.get("userId").and_then(Value::as_str),
            ) {
                groups_of
                    .entry(u.to_owned())
                    .or_default()
                    .insert(g.to_owned());
            }
        }
        Self {
            users: by_id(users),
            applications: by_id(applications),
            groups_of,
        }
    }

    /// The group rule of an application: `(type, group ids)`, `None` without one.
    pub fn rule(app: &Value) -> Option<(String, BTreeSet<String>)> {
        let group = app.pointer("/accessControl/group")?;
        let kind = group.get("type").and_then(Value::as_str)?.to_owned();
        let ids = group
            .get("groups")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|g| g.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some((kind, ids))
    }

    /// Whether `user` may use `app` under its group rule.
    pub fn may_use(&self, app: &Value, user: &str) -> bool {
        let Some((kind, ids)) = Self::rule(app) else {
            return true;
        };
        let empty = BTreeSet::new();
        let mine = self.groups_of.get(user).unwrap_or(&empty);
        if kind == "ALL_GROUPS" {
            ids.iter().all(|g| mine.contains(g))
        } else {
            ids.iter().any(|g| mine.contains(g))
        }
    }

    /// The users who may use `app`.
    pub fn authorized(&self, app: &Value) -> BTreeSet<String> {
        self.users
            .keys()
            .filter(|u| self.may_use(app, u))
            .cloned()
            .collect()
    }
}

/// Newest `USER.ACCESS_ALLOWED` per (application, user) and per user, live entities only.
#[allow(clippy::type_complexity)]
fn last_accesses(
    truth: &Truth,
    activities: &[Value],
) -> (HashMap<(String, String), i64>, HashMap<String, i64>) {
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    let mut last_any: HashMap<String, i64> = HashMap::new();
    for a in activities {
        if a.pointer("/action/type").and_then(Value::as_str) != Some("USER.ACCESS_ALLOWED") {
            continue;
        }
        let (Some(app), Some(user), Some(at)) = (
            a.pointer("/actors/client/id").and_then(Value::as_str),
            a.pointer("/actors/user/id").and_then(Value::as_str),
            a.get("recordedAt").and_then(parse_ms),
        ) else {
            continue;
        };
        if !truth.users.contains_key(user) || !truth.applications.contains_key(app) {
            continue;
        }
        let slot = last
            .entry((app.to_owned(), user.to_owned()))
            .or_insert(i64::MIN);
        *slot = (*slot).max(at);
        let any = last_any.entry(user.to_owned()).or_insert(i64::MIN);
        *any = (*any).max(at);
    }
    (last, last_any)
}

/// Per application id, the users `license-report reclaim --app <id> --inactive-days <days>` must
/// list: those who may use it and have no access to it within `days` of `as_of_ms`.
pub fn expected_reclaims(
    truth: &Truth,
    activities: &[Value],
    days: u32,
    as_of_ms: i64,
) -> BTreeMap<String, BTreeSet<String>> {
    let (last, _) = last_accesses(truth, activities);
    let cutoff = as_of_ms - i64::from(days) * DAY_MS;
    truth
        .applications
        .iter()
        .map(|(id, app)| {
            let listed = truth
                .authorized(app)
                .into_iter()
                .filter(|u| {
                    last.get(&(id.clone(), u.clone()))
                        .is_none_or(|at| *at < cutoff)
                })
                .collect();
            (id.clone(), listed)
        })
        .collect()
}

/// The numbers of one report line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportLine {
    /// Users who may use it.
    pub may_use: u64,
    /// Window in days -> active users.
    pub active: BTreeMap<u32, u64>,
    /// Users without any recorded access.
    pub never_used: u64,
    /// Users inactive everywhere that can still authenticate.
    pub inactive_can_authenticate: u64,
    /// Users without MFA.
    pub without_mfa: u64,
}

/// The expected report of one tenant, keyed by application id (`*` for the tenant line), from
/// the truth and the `USER.ACCESS_ALLOWED` activities the pipeline was given.
pub fn expected_report(
    truth: &Truth,
    activities: &[Value],
    windows: &[u32],
    as_of_ms: i64,
) -> BTreeMap<String, ReportLine> {
    let widest = windows.iter().copied().max().unwrap_or(0);
    let cutoff = |days: u32| as_of_ms - i64::from(days) * DAY_MS;
    let (last, last_any) = last_accesses(truth, activities);
    let line = |members: &BTreeSet<String>, last_of: &dyn Fn(&str) -> Option<i64>| {
        let mut l = ReportLine {
            active: windows.iter().map(|w| (*w, 0)).collect(),
            ..ReportLine::default()
        };
        for user in members {
            let u = &truth.users[user];
            l.may_use += 1;
            match last_of(user) {
                None => l.never_used += 1,
                Some(at) => {
                    for (w, n) in &mut l.active {
                        if at >= cutoff(*w) {
                            *n += 1;
                        }
                    }
                }
            }
            let used = last_any.get(user).is_some_and(|at| *at >= cutoff(widest));
            let signed_on = u
                .pointer("/lastSignOn/at")
                .and_then(parse_ms)
                .is_some_and(|at| at >= cutoff(widest));
            let can_authenticate =
                u.pointer("/account/canAuthenticate") == Some(&Value::Bool(true));
            if !used && !signed_on && can_authenticate {
                l.inactive_can_authenticate += 1;
            }
            if u.get("mfaEnabled") != Some(&Value::Bool(true)) {
                l.without_mfa += 1;
            }
        }
        l
    };
    let mut report = BTreeMap::new();
    let everyone: BTreeSet<String> = truth.users.keys().cloned().collect();
    report.insert(
        "*".to_owned(),
        line(&everyone, &|user| last_any.get(user).copied()),
    );
    for (id, app) in &truth.applications {
        let members = truth.authorized(app);
        let of_app = |user: &str| last.get(&(id.clone(), user.to_owned())).copied();
        report.insert(id.clone(), line(&members, &of_app));
    }
    report
}

/// Parses the JSON output of `transformer license-report --format json` for one tenant into
/// the same shape as [`expected_report`].
///
/// # Errors
/// A description of the first malformed row.
pub fn parse_report(json: &str, tenant: &str) -> Result<BTreeMap<String, ReportLine>, String> {
    let rows: Vec<Value> = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    for row in rows {
        if row.get("tenant_id").and_then(Value::as_str) != Some(tenant) {
            continue;
        }
        let number = |field: &str| {
            row.get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("row without a number {field}: {row}"))
        };
        let active = row
            .get("active_last_days")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("row without active_last_days: {row}"))?
            .iter()
            .map(|(days, n)| {
                Ok((
                    days.parse::<u32>()
                        .map_err(|e| format!("window {days}: {e}"))?,
                    n.as_u64().ok_or_else(|| format!("window {days}: {n}"))?,
                ))
            })
            .collect::<Result<BTreeMap<u32, u64>, String>>()?;
        let key = match row.get("application_id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Null) | None => "*".to_owned(),
            Some(other) => return Err(format!("application_id {other}")),
        };
        out.insert(
            key,
            ReportLine {
                may_use: number("may_use")?,
                active,
                never_used: number("never_used")?,
                inactive_can_authenticate: number("inactive_can_authenticate")?,
                without_mfa: number("without_mfa")?,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn truth() -> Truth {
        let users = vec![
            json!({"id": "u1", "account": {"canAuthenticate": true}, "mfaEnabled": true}),
            json!({"id": "u2", "account": {"canAuthenticate": true},
                   "lastSignOn": {"at": "2026-11-27T00:00:00.000Z"}}),
            json!({"id": "u3", "account": {"canAuthenticate": false}, "mfaEnabled": false}),
        ];
        let apps = vec![
            json!({"id": "open", "name": "Open"}),
            json!({"id": "any", "accessControl": {"group": {"type": "ANY_GROUP", "groups": [{"id": "g1"}, {"id": "g2"}]}}}),
            json!({"id": "all", "accessControl": {"group": {"type": "ALL_GROUPS", "groups": [{"id": "g1"}, {"id": "g2"}]}}}),
        ];
        let members = vec![
            json!({"groupId": "g1", "userId": "u1"}),
            json!({"groupId": "g2", "userId": "u1"}),
            json!({"groupId": "g2", "userId": "u3"}),
        ];
        Truth::new(&users, &apps, &members)
    }

    fn access(app: &str, user: &str, at: &str) -> Value {
        json!({"action": {"type": "USER.ACCESS_ALLOWED"}, "recordedAt": at,
               "actors": {"client": {"id": app}, "user": {"id": user}}})
    }

    #[test]
    fn group_rules() {
        let t = truth();
        let ids = |app: &str| t.authorized(&t.applications[app]);
        assert_eq!(ids("open").len(), 3);
        assert_eq!(ids("any"), BTreeSet::from(["u1".into(), "u3".into()]));
        assert_eq!(ids("all"), BTreeSet::from(["u1".into()]));
    }

    #[test]
    fn report_by_hand() {
        let t = truth();
        let as_of = parse_ms(&json!("2026-11-28T00:00:00Z")).unwrap_or_default();
        let activities = vec![
            access("open", "u1", "2026-11-20T00:00:00.000Z"),
            access("any", "u1", "2026-11-27T12:00:00.000Z"),
            access("gone", "u3", "2026-11-27T12:00:00.000Z"),
            json!({"action": {"type": "USER.ACCESS_DENIED"}, "recordedAt": "2026-11-27T12:00:00.000Z",
                   "actors": {"client": {"id": "open"}, "user": {"id": "u2"}}}),
        ];
        let r = expected_report(&t, &activities, &[1, 30], as_of);
        let line = |may, a1, a30, never, inactive, no_mfa| ReportLine {
            may_use: may,
            active: BTreeMap::from([(1, a1), (30, a30)]),
            never_used: never,
            inactive_can_authenticate: inactive,
            without_mfa: no_mfa,
        };
        // u2 signed on a day ago (no access), u3 cannot authenticate: nobody is inactive.
        assert_eq!(r["*"], line(3, 1, 1, 2, 0, 2));
        assert_eq!(r["open"], line(3, 0, 1, 2, 0, 2));
        assert_eq!(r["any"], line(2, 1, 1, 1, 0, 1));
        assert_eq!(r["all"], line(1, 0, 0, 1, 0, 0));
        assert_eq!(format_ms(as_of), "2026-11-28T00:00:00Z");
    }

    #[test]
    fn parses_report_rows() {
        let json = r#"[{"tenant_id":"t","application_id":null,"application_name":null,"may_use":3,
            "active_last_days":{"30":1},"never_used":2,"inactive_can_authenticate":1,"without_mfa":2},
            {"tenant_id":"other","application_id":"x","application_name":"X","may_use":9,
            "active_last_days":{"30":9},"never_used":0,"inactive_can_authenticate":0,"without_mfa":0}]"#;
        let parsed = parse_report(json, "t").unwrap_or_default();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed["*"].may_use, 3);
        assert_eq!(parsed["*"].active, BTreeMap::from([(30, 1)]));
        assert!(parse_report("[{\"tenant_id\":\"t\"}]", "t").is_err());
    }
}
