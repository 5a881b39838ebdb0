//! Table and scenario tests of the processor: syncs, deletes, usage windows, restore.

use serde_json::json;

use super::*;

const TENANT: &str = "acme";
const ENV: &str = "11111111-2222-4333-8444-555555555555";

fn ev(
    kind: &str,
    entity: Option<&str>,
    sync: Option<&str>,
    payload: serde_json::Value,
) -> RawEvent {
    RawEvent {
        tenant_id: TENANT.into(),
        environment_id: ENV.into(),
        region: "eu".into(),
        kind: kind.into(),
        entity_id: entity.map(str::to_owned),
        sync_id: sync.map(str::to_owned),
        observed_at_ms: 1_795_000_000_000,
        payload: payload.to_string(),
        producer_version: "test".into(),
    }
}

fn user(sync: &str, id: &str, mfa: bool) -> RawEvent {
    ev(
        kind::USER,
        Some(id),
        Some(sync),
        json!({"id": id, "username": format!("{id}-name"), "mfaEnabled": mfa,
               "account": {"canAuthenticate": true, "status": "OK"}}),
    )
}

fn app(sync: &str, id: &str, rule: Option<(&str, &[&str])>) -> RawEvent {
    let mut payload =
        json!({"id": id, "name": id, "type": "WEB_APP", "protocol": "SAML", "enabled": true});
    if let Some((ty, groups)) = rule {
        let groups: Vec<_> = groups.iter().map(|g| json!({"id": g})).collect();
        payload["accessControl"] = json!({"group": {"type": ty, "groups": groups}});
    }
    ev(kind::APPLICATION, Some(id), Some(sync), payload)
}

fn member(sync: &str, group: &str, user: &str) -> RawEvent {
    ev(
        kind::GROUP_MEMBERSHIP,
        Some(&format!("{group}/{user}")),
        Some(sync),
        json!({"id": user, "username": user}),
    )
}

fn started(sync: &str) -> RawEvent {
    ev(
        kind::SYNC_STARTED,
        None,
        Some(sync),
        json!({"sync_id": sync}),
    )
}

fn completed(sync: &str) -> RawEvent {
    ev(
        kind::SYNC_COMPLETED,
        None,
        Some(sync),
        json!({"sync_id": sync}),
    )
}

fn access(id: &str, app: &str, user: &str, at: &str) -> RawEvent {
    ev(
        kind::ACTIVITY,
        Some(id),
        None,
        json!({"id": id, "recordedAt": at, "action": {"type": "USER.ACCESS_ALLOWED"},
               "actors": {"client": {"id": app, "name": format!("{app} name")}, "user": {"id": user}}}),
    )
}

/// Feeds events at consecutive offsets from `first_offset`; returns every output and note.
fn feed(
    p: &mut Processor,
    events: &[RawEvent],
    first_offset: i64,
    mode: Mode,
) -> (Vec<Output>, Vec<Note>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let source = Source {
            topic: "raw",
            partition: 0,
            offset: first_offset + i64::try_from(i).unwrap(),
        };
        notes.push(p.process(e, source, mode, &mut out).unwrap());
    }
    (out, notes)
}

fn first_sync() -> Vec<RawEvent> {
    vec![
        started("s1"),
        app("s1", "open", None),
        app("s1", "any", Some(("ANY_GROUP", &["g1", "g2"]))),
        app("s1", "all", Some(("ALL_GROUPS", &["g1", "g2"]))),
        member("s1", "g1", "u1"),
        member("s1", "g2", "u1"),
        member("s1", "g2", "u2"),
        user("s1", "u1", true),
        user("s1", "u2", false),
        user("s1", "u3", false),
        completed("s1"),
    ]
}

fn apps(out: &[Output]) -> BTreeMap<String, i64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Application(a) => Some((a.application_id.clone(), a.authorized_user_count)),
            _ => None,
        })
        .collect()
}

fn tombstones(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::UserTombstone { key } | Output::ApplicationTombstone { key } => {
                Some(key.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_complete_sync_writes_users_then_applications_with_counts() {
    let mut p = Processor::new(100);
    let (out, _) = feed(&mut p, &first_sync(), 0, Mode::Live);
    let users: Vec<&UserUsage> = out
        .iter()
        .filter_map(|o| match o {
            Output::User(u) => Some(&**u),
            _ => None,
        })
        .collect();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0].user_id, "u1");
    assert_eq!(
        users[0].access_group_ids,
        vec!["g1".to_owned(), "g2".to_owned()]
    );
    assert_eq!(users[0].mfa_enabled, Some(true));
    assert_eq!(users[0].source_offset, 7);
    assert_eq!(users[0].sync_id.as_deref(), Some("s1"));
    assert_eq!(users[1].access_group_ids, vec!["g2".to_owned()]);
    assert!(users[2].access_group_ids.is_empty());
    assert_eq!(
        apps(&out),
        BTreeMap::from([("all".into(), 1), ("any".into(), 2), ("open".into(), 3)])
    );
    assert!(tombstones(&out).is_empty());
    assert_eq!(out[0].key(), "acme/u1");
    assert!(p.in_progress(0).is_empty());
}

#[test]
fn a_later_complete_sync_tombstones_exactly_what_it_no_longer_has() {
    let mut p = Processor::new(100);
    feed(&mut p, &first_sync(), 0, Mode::Live);
    let second = vec![
        started("s2"),
        app("s2", "open", None),
        user("s2", "u1", true),
        user("s2", "u3", false),
        completed("s2"),
    ];
    let (out, _) = feed(&mut p, &second, 100, Mode::Live);
    let mut t = tombstones(&out);
    t.sort();
    assert_eq!(t, vec!["acme/all", "acme/any", "acme/u2"]);
    assert_eq!(apps(&out), BTreeMap::from([("open".into(), 2)]));
    assert_eq!(p.live_users(TENANT), 2);
}

#[test]
fn an_abandoned_sync_never_decides_deletes() {
    let mut p = Processor::new(100);
    feed(&mut p, &first_sync(), 0, Mode::Live);
    // s2 sees only u1, then is abandoned: nothing may be deleted on its account.
    let (out, notes) = feed(
        &mut p,
        &[
            started("s2"),
            user("s2", "u1", true),
            user("s2", "u4", true),
            started("s3"),
        ],
        100,
        Mode::Live,
    );
    assert!(tombstones(&out).is_empty());
    assert_eq!(notes.last(), Some(&Note::SyncAbandoned));
    // s2's completion marker arriving late is not the sync in progress: no deletes.
    let (out, notes) = feed(&mut p, &[completed("s2")], 200, Mode::Live);
    assert!(out.is_empty());
    assert_eq!(notes, vec![Note::SyncMismatch]);
    let (out, _) = feed(
        &mut p,
        &[
            app("s3", "open", None),
            user("s3", "u2", false),
            user("s3", "u3", false),
            completed("s3"),
        ],
        300,
        Mode::Live,
    );
    let mut t = tombstones(&out);
    t.sort();
    assert_eq!(t, vec!["acme/all", "acme/any", "acme/u1", "acme/u4"]);
}

#[test]
fn duplicate_users_in_one_sync_are_written_once() {
    let mut p = Processor::new(100);
    let (out, notes) = feed(
        &mut p,
        &[
            started("s1"),
            user("s1", "u1", true),
            user("s1", "u1", true),
        ],
        0,
        Mode::Live,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(notes[2], Note::DuplicateUser);
}

#[test]
fn accesses_count_per_window_and_duplicates_are_dropped() {
    let mut p = Processor::new(100);
    let events = vec![
        access("a1", "app", "u1", "2026-11-20T10:00:00Z"),
        access("a2", "app", "u1", "2026-11-19T10:00:00Z"),
        access("a3", "app", "u1", "2026-11-01T10:00:00Z"),
        access("a4", "app", "u1", "2026-09-01T10:00:00Z"),
        access("a5", "app", "u1", "2026-05-01T10:00:00Z"),
        access("a2", "app", "u1", "2026-11-19T10:00:00Z"),
        access("b1", "other", "u1", "2026-11-21T00:00:00Z"),
    ];
    let (out, notes) = feed(&mut p, &events, 0, Mode::Live);
    assert_eq!(notes[5], Note::DuplicateActivity);
    let Some(Output::AppUsage(last)) = out.get(4) else {
        panic!("expected app usage, got {out:?}");
    };
    assert_eq!(last.last_access_at, 1_795_168_800_000);
    assert_eq!(last.last_activity_id, "a1");
    assert_eq!(last.application_name.as_deref(), Some("app name"));
    assert_eq!(
        (
            last.access_count_7d,
            last.access_count_30d,
            last.access_count_90d
        ),
        (2, 3, 4)
    );
    assert_eq!(last.access_count_total, 5);
    assert_eq!(last.daily_access_counts.len(), 4);
    assert_eq!(out.len(), 6);
    assert_eq!(out[5].key(), "acme/other/u1");
}

#[test]
fn delete_activities_make_tombstones() {
    let mut p = Processor::new(100);
    feed(&mut p, &first_sync(), 0, Mode::Live);
    let del_user = ev(
        kind::ACTIVITY,
        Some("d1"),
        None,
        json!({"id": "d1", "action": {"type": "USER.DELETED"}, "resources": [{"type": "USER", "id": "u2"}]}),
    );
    let del_app = ev(
        kind::ACTIVITY,
        Some("d2"),
        None,
        json!({"id": "d2", "action": {"type": "APPLICATION.DELETED"}, "resources": [{"type": "APPLICATION", "id": "any"}]}),
    );
    let (out, _) = feed(&mut p, &[del_user, del_app], 50, Mode::Live);
    assert_eq!(tombstones(&out), vec!["acme/u2", "acme/any"]);
    assert_eq!(p.live_users(TENANT), 2);
    // The next complete sync does not delete them a second time.
    let (out, _) = feed(
        &mut p,
        &[
            started("s2"),
            app("s2", "open", None),
            app("s2", "all", None),
            user("s2", "u1", true),
            user("s2", "u3", true),
            completed("s2"),
        ],
        60,
        Mode::Live,
    );
    assert!(tombstones(&out).is_empty());
}

#[test]
fn malformed_events_fail_without_touching_state() {
    let mut p = Processor::new(100);
    let rows = vec![
        (
            "invalid json",
            ev(kind::USER, Some("u"), Some("s"), json!(null)),
            "not a json object",
        ),
        (
            "missing id",
            ev(kind::USER, Some("u"), Some("s"), json!({"username": "x"})),
            "`id`",
        ),
        (
            "missing sync id",
            ev(kind::USER, Some("u"), None, json!({"id": "u"})),
            "sync_id",
        ),
        (
            "bad membership",
            ev(
                kind::GROUP_MEMBERSHIP,
                Some("g"),
                Some("s"),
                json!({"id": "u"}),
            ),
            "groupId",
        ),
        (
            "activity without id",
            ev(
                kind::ACTIVITY,
                None,
                None,
                json!({"action": {"type": "USER.ACCESS_ALLOWED"}}),
            ),
            "`id`",
        ),
        (
            "group without id",
            ev(kind::GROUP, None, Some("s"), json!({"name": "g"})),
            "`id`",
        ),
    ];
    for (what, event, needle) in rows {
        let mut out = Vec::new();
        let err = p
            .process(
                &event,
                Source {
                    topic: "raw",
                    partition: 0,
                    offset: 1,
                },
                Mode::Live,
                &mut out,
            )
            .expect_err(what);
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert!(out.is_empty(), "{what}");
    }
    let mut slash = ev(kind::USER, Some("u"), Some("s"), json!({"id": "u"}));
    slash.tenant_id = "a/b".into();
    let mut out = Vec::new();
    assert_eq!(
        p.process(
            &slash,
            Source {
                topic: "raw",
                partition: 0,
                offset: 1
            },
            Mode::Live,
            &mut out
        ),
        Err(NormalizeError::BadTenant("a/b".into()))
    );
    let mut raw = ev(kind::USER, Some("u"), Some("s"), json!({}));
    raw.payload = "{\"id\": ".into();
    let mut out = Vec::new();
    assert!(matches!(
        p.process(
            &raw,
            Source {
                topic: "raw",
                partition: 0,
                offset: 1
            },
            Mode::Live,
            &mut out
        ),
        Err(NormalizeError::InvalidJson(_))
    ));
    assert!(p.in_progress(0).is_empty());
    assert_eq!(p.live_users(TENANT), 0);
}

#[test]
fn unknown_kinds_are_skipped() {
    let mut p = Processor::new(100);
    let (out, notes) = feed(
        &mut p,
        &[ev("licence", Some("x"), None, json!({}))],
        0,
        Mode::Live,
    );
    assert!(out.is_empty());
    assert_eq!(notes, vec![Note::UnknownKind]);
}

/// A restart in the middle of a sync: the state rebuilt from the outputs written so far plus a
/// restore pass over the in-progress sync gives the same outputs as an uninterrupted run.
#[test]
fn restore_mid_sync_matches_an_uninterrupted_run() {
    let mut events = first_sync();
    events.extend([
        access("a1", "open", "u1", "2026-11-20T10:00:00Z"),
        started("s2"),
        app("s2", "any", Some(("ANY_GROUP", &["g1"]))),
        member("s2", "g1", "u3"),
        access("a2", "open", "u1", "2026-11-21T10:00:00Z"),
        user("s2", "u1", true),
        // crash after the event above
        user("s2", "u3", false),
        access("a3", "open", "u1", "2026-11-22T10:00:00Z"),
        completed("s2"),
    ]);
    let cut = 17;
    let mut whole = Processor::new(100);
    let (all_out, _) = feed(&mut whole, &events, 0, Mode::Live);

    let mut first = Processor::new(100);
    let (before, _) = feed(&mut first, &events[..cut], 0, Mode::Live);
    let plan = first.in_progress(0);
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].start_offset, 12);

    // Rebuild as pipeline.rs does: compacted topics (last value per key), then raw re-read.
    let mut restored = Processor::new(100);
    for o in &before {
        match o {
            Output::User(u) => restored.restore_user(&o.key(), Some(u)),
            Output::UserTombstone { key } => restored.restore_user(key, None),
            Output::Application(a) => restored.restore_application(&o.key(), Some(a)),
            Output::ApplicationTombstone { key } => restored.restore_application(key, None),
            Output::AppUsage(u) => restored.restore_app_usage(&o.key(), Some((**u).clone())),
        }
    }
    restored.set_restore_plan(plan.clone());
    let start = usize::try_from(plan[0].start_offset).unwrap();
    feed(
        &mut restored,
        &events[start..cut],
        plan[0].start_offset,
        Mode::Restore,
    );
    let (after, _) = feed(
        &mut restored,
        &events[cut..],
        i64::try_from(cut).unwrap(),
        Mode::Live,
    );
    assert_eq!(after, all_out[before.len()..].to_vec());
    assert!(!tombstones(&after).is_empty());
}

/// The producer may write a sync's memberships after its users: a user already written in the
/// sync is written again with its complete access groups; counts are the same either way.
#[test]
fn memberships_after_users_rewrite_those_users() {
    let mut p = Processor::new(100);
    let events = vec![
        started("s1"),
        app("s1", "any", Some(("ANY_GROUP", &["g1", "g2"]))),
        user("s1", "u1", true),
        user("s1", "u2", false),
        member("s1", "g1", "u1"),
        member("s1", "g2", "u1"),
        member("s1", "g1", "u1"),
        completed("s1"),
    ];
    let (out, notes) = feed(&mut p, &events, 0, Mode::Live);
    let users: Vec<(String, Vec<String>, i64)> = out
        .iter()
        .filter_map(|o| match o {
            Output::User(u) => Some((
                u.user_id.clone(),
                u.access_group_ids.clone(),
                u.source_offset,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        users,
        vec![
            ("u1".into(), vec![], 2),
            ("u2".into(), vec![], 3),
            ("u1".into(), vec!["g1".into()], 4),
            ("u1".into(), vec!["g1".into(), "g2".into()], 5),
        ]
    );
    assert_eq!(notes[4], Note::UserRewritten);
    assert_eq!(notes[6], Note::Processed);
    assert_eq!(apps(&out), BTreeMap::from([("any".into(), 1)]));
}
