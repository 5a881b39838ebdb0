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

/// A `sync_completed` without counts; [`counted`] fills them in as the producer does.
fn completed(sync: &str) -> RawEvent {
    ev(
        kind::SYNC_COMPLETED,
        None,
        Some(sync),
        json!({"sync_id": sync}),
    )
}

/// The events with the counts of each `sync_completed` filled in as the producer writes them:
/// the entity events of its sync since that sync's `sync_started` (an `oversized` marker under
/// its original kind).
fn counted(mut events: Vec<RawEvent>) -> Vec<RawEvent> {
    let mut counts: HashMap<String, serde_json::Map<String, serde_json::Value>> =
        HashMap::default();
    for e in &mut events {
        let Some(sync) = e.sync_id.clone() else {
            continue;
        };
        match e.kind.as_str() {
            kind::SYNC_STARTED => {
                counts.remove(&sync);
            }
            kind::SYNC_COMPLETED => {
                let c = counts.remove(&sync).unwrap_or_default();
                e.payload = json!({"sync_id": sync, "counts": c}).to_string();
            }
            other => {
                let kind = if other == kind::OVERSIZED {
                    serde_json::from_str::<schemas::raw::Oversized>(&e.payload)
                        .unwrap()
                        .kind
                } else {
                    other.to_owned()
                };
                let n = counts
                    .entry(sync)
                    .or_default()
                    .entry(kind)
                    .or_insert(json!(0));
                *n = json!(n.as_u64().unwrap() + 1);
            }
        }
    }
    events
}

/// A processor with the deletion guard off, for tests of what a diff deletes.
fn unguarded() -> Processor {
    Processor::new(100).with_max_delete_share(1.0)
}

fn oversized(sync: &str, of: &str, id: &str) -> RawEvent {
    ev(
        kind::OVERSIZED,
        Some(id),
        Some(sync),
        json!({"kind": of, "entity_id": id, "size": 1_153_433, "sha256": "ab12", "limit": 1_032_192}),
    )
}

fn dead_letters(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeadLetter { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
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
    counted(vec![
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
    ])
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
    assert!(p.in_progress().is_empty());
}

#[test]
fn a_later_complete_sync_tombstones_exactly_what_it_no_longer_has() {
    let mut p = unguarded();
    feed(&mut p, &first_sync(), 0, Mode::Live);
    let second = counted(vec![
        started("s2"),
        app("s2", "open", None),
        user("s2", "u1", true),
        user("s2", "u3", false),
        completed("s2"),
    ]);
    let (out, _) = feed(&mut p, &second, 100, Mode::Live);
    let mut t = tombstones(&out);
    t.sort();
    assert_eq!(t, vec!["acme/all", "acme/any", "acme/u2"]);
    assert_eq!(apps(&out), BTreeMap::from([("open".into(), 2)]));
    assert_eq!(p.live_users(TENANT), 2);
}

#[test]
fn an_abandoned_sync_never_decides_deletes() {
    let mut p = unguarded();
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
    let (out, notes) = feed(&mut p, &counted(vec![completed("s2")]), 200, Mode::Live);
    assert_eq!(dead_letters(&out), vec!["sync_mismatch"]);
    assert_eq!(out.len(), 1);
    assert_eq!(notes, vec![Note::SyncMismatch]);
    let mut s3 = counted(vec![
        started("s3"),
        app("s3", "open", None),
        user("s3", "u2", false),
        user("s3", "u3", false),
        completed("s3"),
    ]);
    s3.remove(0); // s3 started above
    let (out, _) = feed(&mut p, &s3, 300, Mode::Live);
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
        &counted(vec![
            started("s2"),
            app("s2", "open", None),
            app("s2", "all", None),
            user("s2", "u1", true),
            user("s2", "u3", true),
            completed("s2"),
        ]),
        60,
        Mode::Live,
    );
    assert!(tombstones(&out).is_empty());
    assert!(dead_letters(&out).is_empty());
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
    // The malformed entities of sync `s` count as seen by it (started implicitly, so it can
    // never decide deletions), and nothing else changed.
    let plan = p.in_progress();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].sync_id, "s");
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

#[test]
fn pingone_sign_on_counts_become_one_record_per_period() {
    let mut p = Processor::new(100);
    let counts = ev(
        kind::APPLICATION_SIGNONS,
        Some("app-1"),
        None,
        json!({"id": "app-1", "authentication": [
            {"startDate": "2026-11-27T00:00:00.000Z", "endDate": "2026-11-28T00:00:00.000Z", "signons": 7},
            {"startDate": "2026-11-28T00:00:00Z", "endDate": "2026-11-29T00:00:00Z", "signons": 2, "partial": true}
        ]}),
    );
    // A single period object and `application.id` are read too.
    let single = ev(
        kind::APPLICATION_SIGNONS,
        Some("app-2"),
        None,
        json!({"application": {"id": "app-2"}, "authentication":
            {"startDate": "2026-11-27T00:00:00Z", "endDate": "2026-11-28T00:00:00Z", "signons": 0}}),
    );
    let (out, notes) = feed(&mut p, &[counts, single], 5, Mode::Live);
    assert_eq!(notes, vec![Note::Processed, Note::Processed]);
    let records: Vec<(String, &AppSignons)> = out
        .iter()
        .map(|o| match o {
            Output::AppSignons(r) => (o.key(), &**r),
            other => panic!("unexpected output {other:?}"),
        })
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].0, "acme/app-1/2026-11-27T00:00:00.000Z");
    assert_eq!(records[0].1.signons, 7);
    assert_eq!(
        records[0].1.period_end - records[0].1.period_start,
        86_400_000
    );
    assert!(!records[0].1.partial);
    assert!(records[1].1.partial);
    assert_eq!(records[1].1.source_offset, 5);
    assert_eq!(records[2].1.application_id, "app-2");
    assert_eq!(records[2].1.source_offset, 6);

    // Malformed counts fail (the caller dead-letters them) and write nothing.
    for bad in [
        json!({"id": "app-1"}),
        json!({"id": "app-1", "authentication": [{"startDate": "yesterday", "endDate": "2026-11-28T00:00:00Z", "signons": 1}]}),
        json!({"id": "app-1", "authentication": [{"startDate": "2026-11-28T00:00:00Z", "endDate": "2026-11-28T00:00:00Z", "signons": 1}]}),
        json!({"id": "app-1", "authentication": [{"startDate": "2026-11-27T00:00:00Z", "endDate": "2026-11-28T00:00:00Z", "signons": -1}]}),
        json!({"id": "other", "authentication": []}),
    ] {
        let mut out = Vec::new();
        let e = ev(kind::APPLICATION_SIGNONS, Some("app-1"), None, bad.clone());
        let source = Source {
            topic: "raw",
            partition: 0,
            offset: 9,
        };
        assert!(
            p.process(&e, source, Mode::Live, &mut out).is_err(),
            "{bad} must fail"
        );
        assert!(out.is_empty());
    }
}

/// A restart in the middle of a sync: the state rebuilt from the outputs written so far plus a
/// restore pass over the in-progress sync gives the same outputs as an uninterrupted run.
#[test]
fn restore_mid_sync_matches_an_uninterrupted_run() {
    let mut events = first_sync();
    events.extend(counted(vec![
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
    ]));
    let cut = 17;
    let mut whole = unguarded();
    let (all_out, _) = feed(&mut whole, &events, 0, Mode::Live);

    let mut first = unguarded();
    let (before, _) = feed(&mut first, &events[..cut], 0, Mode::Live);
    let plan = first.in_progress();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].start_offset, 12);

    // Rebuild as pipeline.rs does: compacted topics (last value per key), then raw re-read.
    let mut restored = unguarded();
    for o in &before {
        match o {
            Output::User(u) => restored.restore_user(&o.key(), Some(u)),
            Output::UserTombstone { key } => restored.restore_user(key, None),
            Output::Application(a) => restored.restore_application(&o.key(), Some(a)),
            Output::ApplicationTombstone { key } => restored.restore_application(key, None),
            Output::AppUsage(u) => restored.restore_app_usage(&o.key(), Some((**u).clone())),
            Output::AppSignons(_) | Output::DeadLetter { .. } => {}
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
    assert!(dead_letters(&after).is_empty());
}

/// The producer may write a sync's memberships after its users: a user already written in the
/// sync is written again with its complete access groups; counts are the same either way.
#[test]
fn memberships_after_users_rewrite_those_users() {
    let mut p = Processor::new(100);
    let events = counted(vec![
        started("s1"),
        app("s1", "any", Some(("ANY_GROUP", &["g1", "g2"]))),
        user("s1", "u1", true),
        user("s1", "u2", false),
        member("s1", "g1", "u1"),
        member("s1", "g2", "u1"),
        member("s1", "g1", "u1"),
        completed("s1"),
    ]);
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

/// A tenant of `n` users u0.. in one complete sync `sync`.
fn users_sync(sync: &str, ids: impl IntoIterator<Item = usize>) -> Vec<RawEvent> {
    let mut v = vec![started(sync)];
    v.extend(ids.into_iter().map(|i| user(sync, &format!("u{i}"), false)));
    v.push(completed(sync));
    counted(v)
}

/// Defect: a `user` event and a `sync_completed` of a sync whose `sync_started` is missing (cut
/// by retention, or a replay from a mid-sync offset) tombstoned 200 of 200 users.
#[test]
fn a_sync_seen_without_its_start_deletes_nothing() {
    let mut p = unguarded();
    feed(&mut p, &users_sync("s1", 0..200), 0, Mode::Live);
    assert_eq!(p.live_users(TENANT), 200);
    let mut cut = users_sync("s2", [7]);
    cut.remove(0); // the sync_started is gone
    let (out, notes) = feed(&mut p, &cut, 300, Mode::Live);
    assert!(tombstones(&out).is_empty(), "{out:?}");
    assert_eq!(dead_letters(&out), vec!["sync_unverified"]);
    assert_eq!(notes.last(), Some(&Note::SyncUnverified));
    assert_eq!(p.live_users(TENANT), 200);
    let Some(Output::DeadLetter { error, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert!(error.contains("sync_started was not seen"), "{error}");
}

/// Counts in `sync_completed` that differ from what was seen (events lost, or read with a
/// filter) are no evidence either; nor is a `sync_completed` without counts.
#[test]
fn counts_that_differ_from_what_was_seen_delete_nothing() {
    let mut p = unguarded();
    feed(&mut p, &users_sync("s1", 0..10), 0, Mode::Live);
    let mut short = users_sync("s2", 0..3);
    short.remove(2); // u1 of s2 lost: announced 3 users, 2 seen
    let (out, notes) = feed(&mut p, &short, 100, Mode::Live);
    assert!(tombstones(&out).is_empty());
    assert_eq!(notes.last(), Some(&Note::SyncUnverified));
    let Some(Output::DeadLetter { error, .. }) = out.last() else {
        panic!("{out:?}");
    };
    assert!(
        error.contains("announced user 3") && error.contains("user 2,"),
        "{error}"
    );
    let mut bare = users_sync("s3", 0..3);
    *bare.last_mut().unwrap() = completed("s3");
    let (out, _) = feed(&mut p, &bare, 200, Mode::Live);
    assert!(tombstones(&out).is_empty());
    assert_eq!(dead_letters(&out), vec!["sync_unverified"]);
    // A whole sync with matching counts deletes again.
    let (out, notes) = feed(&mut p, &users_sync("s4", 0..3), 300, Mode::Live);
    assert_eq!(tombstones(&out).len(), 7);
    assert_eq!(notes.last(), Some(&Note::Processed));
}

/// The guard: a whole sync that would delete more than `max_delete_share` of the tenant's live
/// users deletes none of them and says so; raising the share lets the same diff through.
#[test]
fn deletions_over_the_max_delete_share_are_held_back() {
    let mut p = Processor::new(100);
    feed(&mut p, &users_sync("s1", 0..10), 0, Mode::Live);
    // 6 of 10 users gone: over the default 50 %.
    let (out, notes) = feed(&mut p, &users_sync("s2", 0..4), 100, Mode::Live);
    assert!(tombstones(&out).is_empty());
    assert_eq!(dead_letters(&out), vec!["deletions_held"]);
    assert_eq!(notes.last(), Some(&Note::DeletionsHeld));
    assert_eq!(p.live_users(TENANT), 10);
    // 5 of 10 is not more than half: deleted.
    let mut p = Processor::new(100);
    feed(&mut p, &users_sync("s1", 0..10), 0, Mode::Live);
    let (out, _) = feed(&mut p, &users_sync("s2", 0..5), 100, Mode::Live);
    assert_eq!(tombstones(&out).len(), 5);
    // The documented override: a larger share.
    let mut p = Processor::new(100).with_max_delete_share(0.7);
    feed(&mut p, &users_sync("s1", 0..10), 0, Mode::Live);
    let (out, _) = feed(&mut p, &users_sync("s2", 0..4), 100, Mode::Live);
    assert_eq!(tombstones(&out).len(), 6);
    assert!(dead_letters(&out).is_empty());
}

/// An `oversized` marker stands for its entity: the entity is not deleted, the marker is
/// dead-lettered, and the counts (which include it) still match.
#[test]
fn oversized_markers_keep_their_entity_and_are_dead_lettered() {
    let mut p = unguarded();
    let first = counted(vec![
        started("s1"),
        app("s1", "a1", None),
        app("s1", "a2", None),
        user("s1", "u1", true),
        user("s1", "u2", true),
        user("s1", "u3", true),
        completed("s1"),
    ]);
    feed(&mut p, &first, 0, Mode::Live);
    let second = counted(vec![
        started("s2"),
        oversized("s2", kind::APPLICATION, "a1"),
        app("s2", "a2", None),
        user("s2", "u1", true),
        oversized("s2", kind::USER, "u2"),
        oversized("s2", kind::USER, "u9"),
        completed("s2"),
    ]);
    let (out, notes) = feed(&mut p, &second, 100, Mode::Live);
    assert_eq!(tombstones(&out), vec!["acme/u3"]);
    assert_eq!(dead_letters(&out), vec!["oversized"; 3]);
    assert_eq!(notes[1], Note::Oversized);
    assert_eq!(notes.last(), Some(&Note::Processed));
    // u9 is live (it exists in PingOne), so a later sync without it deletes it.
    assert_eq!(p.live_users(TENANT), 3);
    let Some(Output::DeadLetter { error, .. }) = out.first() else {
        panic!("{out:?}");
    };
    assert!(error.contains("application a1 of 1153433 bytes"), "{error}");
    // a1 stays live too: the next sync without it deletes it.
    let (out, _) = feed(
        &mut p,
        &counted(vec![
            started("s3"),
            app("s3", "a2", None),
            user("s3", "u1", true),
            user("s3", "u2", true),
            completed("s3"),
        ]),
        200,
        Mode::Live,
    );
    assert_eq!(tombstones(&out), vec!["acme/u9", "acme/a1"]);
}

/// A live user whose event cannot be read in a later sync is kept, not deleted.
#[test]
fn unreadable_entities_of_a_whole_sync_are_not_deleted() {
    let mut p = unguarded();
    feed(&mut p, &users_sync("s1", 0..3), 0, Mode::Live);
    let mut second = users_sync("s2", 0..3);
    second[2] = ev(
        kind::USER,
        Some("u1"),
        Some("s2"),
        json!({"username": "no id"}),
    );
    let second = counted(second);
    let mut out = Vec::new();
    for (i, e) in second.iter().enumerate() {
        let source = Source {
            topic: "raw",
            partition: 0,
            offset: 100 + i64::try_from(i).unwrap(),
        };
        let r = p.process(e, source, Mode::Live, &mut out);
        assert_eq!(r.is_err(), i == 2, "{i}: {r:?}");
    }
    assert!(tombstones(&out).is_empty(), "{out:?}");
    assert!(dead_letters(&out).is_empty());
    assert_eq!(p.live_users(TENANT), 3);
}

/// The bit-set count of authorized users equals counting with `normalize::may_use` member by
/// member: 40 applications naming up to 160 of 100–200 groups (so the bit sets span several
/// words), `ANY_GROUP`, `ALL_GROUPS` and unseen rule types, members of unnamed groups, and members
/// no longer live.
#[test]
fn live_member_counts_equal_may_use() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % n).unwrap()
    };
    let mut multi_word = 0;
    for round in 0..20 {
        let groups = 100 + next(100);
        let group = |i: usize| format!("g{i:03}");
        let mut apps = BTreeMap::new();
        for a in 0..40 {
            let ids: Vec<String> = (0..1 + next(4))
                .map(|_| group(next(groups as u64)))
                .collect();
            let rule = ["ANY_GROUP", "ALL_GROUPS", "SOMETHING_NEW"][next(3)];
            apps.insert(
                format!("a{a}"),
                Application {
                    access_control_group_type: Some(rule.into()),
                    access_control_group_ids: ids,
                    ..Application::default()
                },
            );
        }
        let mut member_of: HashMap<String, Vec<String>> = HashMap::default();
        for u in 0..300 {
            let mut gs: Vec<String> = (0..next(6))
                .map(|_| group(next(groups as u64 + 20)))
                .collect();
            gs.sort();
            gs.dedup();
            member_of.insert(format!("u{u}"), gs);
        }
        let live = |u: &str| !u.ends_with('7');
        let members = LiveMembers::new(&apps, &member_of, live);
        multi_word += usize::from(members.words >= 2);
        for (id, app) in &apps {
            let rule = app.access_control_group_type.as_deref().unwrap();
            let want = member_of
                .iter()
                .filter(|(u, gs)| {
                    live(u) && normalize::may_use(Some(rule), &app.access_control_group_ids, gs)
                })
                .count();
            assert_eq!(
                members.count(rule, &app.access_control_group_ids),
                want,
                "round {round}, app {id} ({rule} {:?})",
                app.access_control_group_ids
            );
        }
        let live_members = member_of.keys().filter(|u| live(u)).count();
        assert_eq!(members.count("ANY_GROUP", &[]), live_members);
    }
    assert!(
        multi_word >= 15,
        "only {multi_word} of 20 rounds span several words"
    );
}

/// A user written over a recycled record ([`Processor::recycle`]) carries nothing of the user
/// before it: the same events give the same outputs with and without recycling, for users with
/// and without access groups, fields and a second sync.
#[test]
fn recycled_user_records_carry_nothing_over() {
    let full = |sync: &str| {
        ev(
            kind::USER,
            Some("u-full"),
            Some(sync),
            json!({"id": "u-full", "username": "full", "email": "f@example.com",
                   "name": {"given": "Ada", "family": "Lovelace"}, "address": {"locality": "London", "region": "GB"},
                   "mfaEnabled": true, "enabled": true, "type": "Employee", "verifyStatus": "ENABLED",
                   "lifecycle": {"status": "ACCOUNT_OK"}, "population": {"id": "p"},
                   "identityProvider": {"type": "SAML", "id": "idp"}, "lastSignOn": {"at": "2026-11-20T10:00:00Z"},
                   "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-11-01T00:00:00Z",
                   "account": {"canAuthenticate": true, "status": "OK"}}),
        )
    };
    let bare = |sync: &str| {
        ev(
            kind::USER,
            Some("u-bare"),
            Some(sync),
            json!({"id": "u-bare"}),
        )
    };
    let events = counted(vec![
        started("s1"),
        member("s1", "g1", "u-full"),
        full("s1"),
        bare("s1"),
        completed("s1"),
        started("s2"),
        bare("s2"),
        full("s2"),
        member("s2", "g2", "u-bare"),
        completed("s2"),
    ]);
    let run = |recycle: bool| {
        let mut p = Processor::new(100);
        let mut all = Vec::new();
        for (offset, e) in (0..).zip(&events) {
            let mut out = Vec::new();
            let source = Source {
                topic: "raw",
                partition: 0,
                offset,
            };
            p.process(e, source, Mode::Live, &mut out).unwrap();
            for o in out {
                all.push(o.clone());
                if recycle {
                    p.recycle(o);
                }
            }
        }
        all
    };
    let fresh = run(false);
    assert!(
        fresh
            .iter()
            .filter(|o| matches!(o, Output::User(_)))
            .count()
            >= 4,
        "{fresh:?}"
    );
    assert_eq!(run(true), fresh);
}
