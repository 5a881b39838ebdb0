//! The transformer's state machine: one decoded raw event in, the records to write out.
//!
//! Synchronous and free of I/O, so the Kafka loop, the replay command and the tests drive the
//! same code. The loop decides whether outputs are written (normal run, replay) or dropped
//! (state restore after a restart).
//!
//! # What is held in memory, per tenant
//! - every live user and application id with the id of the sync that last saw it (to find the
//!   entities a complete sync no longer has: O(users + applications) small strings);
//! - for the sync in progress only: the applications seen (≤ 1,000 per PingOne environment)
//!   and, per member of an access-control group, the sorted ids of those groups
//!   (O(memberships of access-control groups));
//! - the current [`AppUsage`] of each (application, user) pair that ever had an access, at most
//!   90 day buckets each;
//! - the ids of the last `activity_dedup_capacity` activities, to drop duplicates.
//!
//! None of it is stored on local disk: [`Processor::restore_user`], [`Processor::restore_application`]
//! and [`Processor::restore_app_usage`] rebuild it from the compacted output topics, and
//! [`Mode::Restore`] re-reads the raw events of the syncs that were in progress at the last
//! commit (see `pipeline.rs`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use schemas::raw::{RawEvent, kind};
use schemas::usage::{AppUsage, Application, DailyAccessCount, UserUsage};
use serde::{Deserialize, Serialize};

use crate::normalize::{self, Activity, NormalizeError};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Days of history kept per (application, user) pair; also the widest count window.
const HISTORY_DAYS: i32 = 90;

/// Where a raw event was read from (provenance of the records made from it).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Raw topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One record to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A user record for the users topic.
    User(Box<UserUsage>),
    /// A tombstone on the users topic (key `<tenant>/<user>`).
    UserTombstone {
        /// Record key.
        key: String,
    },
    /// An application record for the applications topic.
    Application(Box<Application>),
    /// A tombstone on the applications topic (key `<tenant>/<application>`).
    ApplicationTombstone {
        /// Record key.
        key: String,
    },
    /// An app usage record for the app usage topic.
    AppUsage(Box<AppUsage>),
}

impl Output {
    /// The record key: `<tenant>/<entity>` (app usage: `<tenant>/<application>/<user>`).
    pub fn key(&self) -> String {
        match self {
            Output::User(u) => entity_key(&u.tenant_id, &u.user_id),
            Output::Application(a) => entity_key(&a.tenant_id, &a.application_id),
            Output::AppUsage(u) => app_usage_key(&u.tenant_id, &u.application_id, &u.user_id),
            Output::UserTombstone { key } | Output::ApplicationTombstone { key } => key.clone(),
        }
    }
}

/// The key of a user or an application record (or its tombstone): `<tenant>/<id>`.
fn entity_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

/// The key of an app usage record: `<tenant>/<application>/<user>`.
fn app_usage_key(tenant: &str, app: &str, user: &str) -> String {
    format!("{tenant}/{app}/{user}")
}

/// What happened to an event that produced no error (for logs and metrics; bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Normal processing (records may or may not have been produced).
    Processed,
    /// A `kind` this version does not know: skipped and counted, as the contract asks.
    UnknownKind,
    /// A user already seen in the same sync: not written twice.
    DuplicateUser,
    /// A group membership arrived after its user was written in the same sync: the user was
    /// written again with the new access group.
    UserRewritten,
    /// An activity id seen recently: not counted twice.
    DuplicateActivity,
    /// An activity that does not change usage records.
    IgnoredActivity,
    /// A `sync_started` replaced a sync that never completed.
    SyncAbandoned,
    /// A `sync_completed` for a sync that is not the one in progress: no deletes derived.
    SyncMismatch,
    /// [`Mode::Restore`] skipped the event (its effects are already in the output topics).
    NotRestored,
}

impl Note {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Note::Processed => "processed",
            Note::UnknownKind => "unknown_kind",
            Note::DuplicateUser => "duplicate_user",
            Note::UserRewritten => "user_rewritten",
            Note::DuplicateActivity => "duplicate_activity",
            Note::IgnoredActivity => "ignored_activity",
            Note::SyncAbandoned => "sync_abandoned",
            Note::SyncMismatch => "sync_mismatch",
            Note::NotRestored => "not_restored",
        }
    }
}

/// How [`Processor::process`] treats an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Normal processing: state changes and outputs.
    Live,
    /// Rebuild the state of syncs in progress at the last commit (see [`InProgress`]); only
    /// events of those syncs at or after their start offset are applied, no outputs are made.
    Restore,
}

/// A sync that was in progress at a commit: written to the checkpoint topic so that a restart
/// re-reads its raw events (from `start_offset`) to rebuild its memberships and applications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// Tenant id.
    pub tenant_id: String,
    /// The sync's id.
    pub sync_id: String,
    /// Offset of its `sync_started` (or first event) on the raw partition.
    pub start_offset: i64,
}

#[derive(Debug)]
struct SyncInProgress {
    sync_id: Arc<str>,
    start_offset: i64,
    /// Member of an access-control group -> sorted group ids.
    member_of: HashMap<String, Vec<String>>,
    /// The applications seen, complete but for `authorized_user_count` (known at the end).
    apps: BTreeMap<String, Application>,
}

#[derive(Debug, Default)]
struct RecentIds {
    capacity: usize,
    set: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
}

impl RecentIds {
    /// Remembers `id`; false if it was already remembered.
    fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.into());
        self.order.push_back(id.into());
        true
    }
}

#[derive(Debug, Default)]
struct TenantState {
    partition: Option<i32>,
    users: HashMap<Box<str>, Arc<str>>,
    apps: HashMap<Box<str>, Arc<str>>,
    in_progress: Option<SyncInProgress>,
    usage: HashMap<Box<str>, AppUsage>,
    recent_activities: RecentIds,
    /// Interned sync ids, so that each live entity holds a pointer, not a copy.
    sync_ids: HashMap<Box<str>, Arc<str>>,
}

impl TenantState {
    fn intern(&mut self, sync_id: &str) -> Arc<str> {
        if let Some(s) = self.sync_ids.get(sync_id) {
            return s.clone();
        }
        let s: Arc<str> = sync_id.into();
        self.sync_ids.insert(sync_id.into(), s.clone());
        s
    }
}

/// The transformer's state and rules; see the module documentation.
#[derive(Debug)]
pub struct Processor {
    tenants: HashMap<String, TenantState>,
    activity_dedup_capacity: usize,
    restore_plan: HashMap<String, InProgress>,
}

impl Processor {
    /// An empty processor remembering up to `activity_dedup_capacity` activity ids per tenant.
    pub fn new(activity_dedup_capacity: usize) -> Self {
        Self {
            tenants: HashMap::new(),
            activity_dedup_capacity,
            restore_plan: HashMap::new(),
        }
    }

    fn tenant(&mut self, tenant_id: &str) -> &mut TenantState {
        let capacity = self.activity_dedup_capacity;
        self.tenants
            .entry(tenant_id.to_owned())
            .or_insert_with(|| TenantState {
                recent_activities: RecentIds {
                    capacity,
                    ..RecentIds::default()
                },
                ..TenantState::default()
            })
    }

    /// Rebuild: a user record (or, with `None`, a tombstone) read from the users topic.
    pub fn restore_user(&mut self, key: &str, record: Option<&UserUsage>) {
        self.restore_live(key, record.map(|r| r.sync_id.as_deref()), |t| &mut t.users);
    }

    /// Rebuild: an application record (or tombstone) read from the applications topic.
    pub fn restore_application(&mut self, key: &str, record: Option<&Application>) {
        self.restore_live(key, record.map(|r| r.sync_id.as_deref()), |t| &mut t.apps);
    }

    /// A live entity keyed `tenant/id` that the sync `sync` last saw, or (`None`) a tombstone.
    fn restore_live(
        &mut self,
        key: &str,
        sync: Option<Option<&str>>,
        live: fn(&mut TenantState) -> &mut HashMap<Box<str>, Arc<str>>,
    ) {
        let Some((tenant, id)) = key.split_once('/') else {
            return;
        };
        let t = self.tenant(tenant);
        match sync {
            Some(sync) => {
                let sync = t.intern(sync.unwrap_or(""));
                live(t).insert(id.into(), sync);
            }
            None => {
                live(t).remove(id);
            }
        }
    }

    /// Rebuild: an app usage record read from the app usage topic.
    pub fn restore_app_usage(&mut self, key: &str, record: Option<AppUsage>) {
        let Some((tenant, pair)) = key.split_once('/') else {
            return;
        };
        let t = self.tenant(tenant);
        match record {
            Some(r) => {
                t.usage.insert(pair.into(), r);
            }
            None => {
                t.usage.remove(pair);
            }
        }
    }

    /// Sets the syncs whose raw events [`Mode::Restore`] re-applies.
    pub fn set_restore_plan(&mut self, plan: impl IntoIterator<Item = InProgress>) {
        self.restore_plan = plan.into_iter().map(|p| (p.tenant_id.clone(), p)).collect();
    }

    /// The syncs in progress on `partition`, for the checkpoint written with each commit.
    pub fn in_progress(&self, partition: i32) -> Vec<InProgress> {
        let mut out: Vec<InProgress> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.partition == Some(partition))
            .filter_map(|(tenant, t)| {
                t.in_progress.as_ref().map(|s| InProgress {
                    tenant_id: tenant.clone(),
                    sync_id: s.sync_id.to_string(),
                    start_offset: s.start_offset,
                })
            })
            .collect();
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        out
    }

    /// Number of live users known for `tenant` (for tests and diagnostics).
    pub fn live_users(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.users.len())
    }

    /// Applies one raw event; appends what to write to `out`.
    ///
    /// On error nothing was changed and nothing appended: the caller dead-letters the event.
    ///
    /// # Errors
    /// [`NormalizeError`] when the event cannot be normalized (in [`Mode::Live`]).
    pub fn process(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        mode: Mode,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        if mode == Mode::Restore {
            return Ok(self.restore_event(event, source));
        }
        if event.tenant_id.is_empty() || event.tenant_id.contains('/') {
            return Err(NormalizeError::BadTenant(event.tenant_id.clone()));
        }
        match event.kind.as_str() {
            kind::SYNC_STARTED => self.sync_started(event, source),
            kind::SYNC_COMPLETED => self.sync_completed(event, out),
            kind::USER => self.user(event, source, out),
            kind::APPLICATION => self.application(event, source),
            kind::GROUP_MEMBERSHIP => self.group_membership(event, source, out),
            kind::GROUP => {
                // Groups matter only through memberships and application rules, but a group
                // without an id is still malformed input.
                let obj = normalize::parse_object(&event.payload)?;
                match obj.get("id").and_then(|v| v.as_str()) {
                    Some(id) if !id.is_empty() => Ok(Note::Processed),
                    _ => Err(NormalizeError::MissingField("id")),
                }
            }
            kind::ACTIVITY => self.activity(event, source, out),
            _ => Ok(Note::UnknownKind),
        }
    }

    fn restore_event(&mut self, event: &RawEvent, source: Source<'_>) -> Note {
        let Some(plan) = self.restore_plan.get(&event.tenant_id) else {
            return Note::NotRestored;
        };
        if source.offset < plan.start_offset || event.sync_id.as_deref() != Some(&plan.sync_id) {
            return Note::NotRestored;
        }
        let result = match event.kind.as_str() {
            kind::SYNC_STARTED => self.sync_started(event, source),
            kind::APPLICATION => self.application(event, source),
            kind::GROUP_MEMBERSHIP => self.group_membership(event, source, &mut Vec::new()),
            _ => Ok(Note::NotRestored),
        };
        // Events that failed were dead-lettered when first processed.
        result.unwrap_or(Note::NotRestored)
    }

    fn sync_id(event: &RawEvent) -> Result<&str, NormalizeError> {
        match event.sync_id.as_deref() {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(NormalizeError::MissingEnvelope("sync_id")),
        }
    }

    /// Makes sure `sync_id` is the tenant's sync in progress; starts it (abandoning another) if
    /// not. Returns whether another sync was abandoned.
    fn ensure_sync(&mut self, tenant_id: &str, sync_id: &str, source: Source<'_>) -> bool {
        let t = self.tenant(tenant_id);
        t.partition = Some(source.partition);
        if t.in_progress
            .as_ref()
            .is_some_and(|s| &*s.sync_id == sync_id)
        {
            return false;
        }
        let abandoned = t.in_progress.is_some();
        let sync_id = t.intern(sync_id);
        t.in_progress = Some(SyncInProgress {
            sync_id,
            start_offset: source.offset,
            member_of: HashMap::new(),
            apps: BTreeMap::new(),
        });
        abandoned
    }

    fn sync_started(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        normalize::parse_object(&event.payload)?;
        let t = self.tenant(&event.tenant_id);
        let restart_same = t
            .in_progress
            .as_ref()
            .is_some_and(|s| &*s.sync_id == sync_id);
        if restart_same {
            // The same sync started again (a producer retry): begin afresh.
            t.in_progress = None;
        }
        if self.ensure_sync(&event.tenant_id, sync_id, source) {
            return Ok(Note::SyncAbandoned);
        }
        Ok(Note::Processed)
    }

    fn user(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        let obj = normalize::parse_object(&event.payload)?;
        let user = normalize::user(&obj, event.entity_id.as_deref())?;
        self.ensure_sync(&event.tenant_id, sync_id, source);
        let t = self.tenant(&event.tenant_id);
        let sync = t.intern(sync_id);
        if t.users
            .get(user.user_id.as_str())
            .is_some_and(|s| Arc::ptr_eq(s, &sync))
        {
            return Ok(Note::DuplicateUser);
        }
        t.users.insert(user.user_id.as_str().into(), sync);
        let access_group_ids = t
            .in_progress
            .as_ref()
            .and_then(|s| s.member_of.get(&user.user_id))
            .cloned()
            .unwrap_or_default();
        out.push(Output::User(Box::new(user_record(
            event,
            user,
            access_group_ids,
            sync_id,
            source,
        ))));
        Ok(Note::Processed)
    }

    fn application(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        let obj = normalize::parse_object(&event.payload)?;
        let app = normalize::application(&obj, event.entity_id.as_deref())?;
        self.ensure_sync(&event.tenant_id, sync_id, source);
        let t = self.tenant(&event.tenant_id);
        if let Some(s) = t.in_progress.as_mut() {
            let app = Application {
                tenant_id: event.tenant_id.clone(),
                environment_id: event.environment_id.clone(),
                sync_id: Some(sync_id.to_owned()),
                source_topic: source.topic.to_owned(),
                source_partition: source.partition,
                source_offset: source.offset,
                observed_at: event.observed_at_ms,
                ..app
            };
            s.apps.insert(app.application_id.clone(), app);
        }
        Ok(Note::Processed)
    }

    fn group_membership(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        let (group, user) = normalize::membership(event.entity_id.as_deref())?;
        let obj = normalize::parse_object(&event.payload)?;
        // The payload is the member user: it must be the user the entity id names.
        let member = normalize::user(&obj, Some(&user))?;
        self.ensure_sync(&event.tenant_id, sync_id, source);
        let t = self.tenant(&event.tenant_id);
        let sync = t.intern(sync_id);
        let already_written = t
            .users
            .get(user.as_str())
            .is_some_and(|s| Arc::ptr_eq(s, &sync));
        let Some(s) = t.in_progress.as_mut() else {
            return Ok(Note::Processed);
        };
        let groups = s.member_of.entry(user).or_default();
        let added = match groups.binary_search(&group) {
            Ok(_) => false,
            Err(pos) => {
                groups.insert(pos, group);
                true
            }
        };
        // A membership that arrives after its user was written in this sync: write the user
        // again (the payload is the same user JSON) so that its access groups are complete.
        if already_written && added {
            let groups = groups.clone();
            out.push(Output::User(Box::new(user_record(
                event, member, groups, sync_id, source,
            ))));
            return Ok(Note::UserRewritten);
        }
        Ok(Note::Processed)
    }

    fn sync_completed(
        &mut self,
        event: &RawEvent,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        normalize::parse_object(&event.payload)?;
        let tenant_id = event.tenant_id.clone();
        let t = self.tenant(&tenant_id);
        let matches = t
            .in_progress
            .as_ref()
            .is_some_and(|s| &*s.sync_id == sync_id);
        if !matches {
            return Ok(Note::SyncMismatch);
        }
        let Some(sync) = t.in_progress.take() else {
            return Ok(Note::SyncMismatch);
        };
        // Users of earlier syncs that this complete sync did not see are gone.
        let mut gone: Vec<Box<str>> = t
            .users
            .iter()
            .filter(|(_, s)| !Arc::ptr_eq(s, &sync.sync_id))
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        for id in gone {
            t.users.remove(&id);
            out.push(Output::UserTombstone {
                key: entity_key(&tenant_id, &id),
            });
        }
        let mut gone_apps: Vec<Box<str>> = t
            .apps
            .keys()
            .filter(|k| !sync.apps.contains_key(&***k))
            .cloned()
            .collect();
        gone_apps.sort();
        for id in gone_apps {
            t.apps.remove(&id);
            out.push(Output::ApplicationTombstone {
                key: entity_key(&tenant_id, &id),
            });
        }
        let all_users = t.users.len();
        for (id, mut app) in sync.apps {
            let count = match app.access_control_group_type.as_deref() {
                None => all_users,
                Some(rule) => sync
                    .member_of
                    .iter()
                    .filter(|(user, groups)| {
                        t.users.contains_key(user.as_str())
                            && normalize::may_use(Some(rule), &app.access_control_group_ids, groups)
                    })
                    .count(),
            };
            app.authorized_user_count = i64::try_from(count).unwrap_or(i64::MAX);
            t.apps.insert(id.as_str().into(), sync.sync_id.clone());
            out.push(Output::Application(Box::new(app)));
        }
        // Only this sync's id is referenced now.
        t.sync_ids.retain(|_, s| Arc::ptr_eq(s, &sync.sync_id));
        Ok(Note::Processed)
    }

    fn activity(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let obj = normalize::parse_object(&event.payload)?;
        let activity = normalize::activity(&obj, event.entity_id.as_deref())?;
        let tenant_id = event.tenant_id.clone();
        let t = self.tenant(&tenant_id);
        let id = match &activity {
            Activity::Access { activity_id, .. }
            | Activity::UserDeleted { activity_id, .. }
            | Activity::ApplicationDeleted { activity_id, .. }
            | Activity::Other { activity_id, .. } => activity_id.clone(),
        };
        if matches!(activity, Activity::Other { .. }) {
            return Ok(Note::IgnoredActivity);
        }
        if !t.recent_activities.insert(&id) {
            return Ok(Note::DuplicateActivity);
        }
        match activity {
            Activity::Access {
                activity_id,
                application_id,
                application_name,
                user_id,
                at_ms,
            } => {
                let pair = format!("{application_id}/{user_id}");
                let record = t.usage.entry(pair.into()).or_insert_with(|| AppUsage {
                    tenant_id: tenant_id.clone(),
                    environment_id: event.environment_id.clone(),
                    application_id,
                    user_id,
                    last_access_at: i64::MIN,
                    ..AppUsage::default()
                });
                count_access(record, at_ms);
                if at_ms >= record.last_access_at || record.last_activity_id.is_empty() {
                    record.last_access_at = at_ms;
                    record.last_activity_id = activity_id;
                    if application_name.is_some() {
                        record.application_name = application_name;
                    }
                    record.source_topic = source.topic.to_owned();
                    record.source_partition = source.partition;
                    record.source_offset = source.offset;
                    record.observed_at = event.observed_at_ms;
                }
                recompute_windows(record);
                out.push(Output::AppUsage(Box::new(record.clone())));
            }
            Activity::UserDeleted { user_id, .. } => {
                t.users.remove(user_id.as_str());
                if let Some(s) = t.in_progress.as_mut() {
                    s.member_of.remove(&user_id);
                }
                out.push(Output::UserTombstone {
                    key: entity_key(&tenant_id, &user_id),
                });
            }
            Activity::ApplicationDeleted { application_id, .. } => {
                t.apps.remove(application_id.as_str());
                if let Some(s) = t.in_progress.as_mut() {
                    s.apps.remove(&application_id);
                }
                out.push(Output::ApplicationTombstone {
                    key: entity_key(&tenant_id, &application_id),
                });
            }
            Activity::Other { .. } => return Ok(Note::IgnoredActivity),
        }
        Ok(Note::Processed)
    }
}

/// A normalized user ([`normalize::user`]) completed with what only the processor knows: the
/// envelope, the user's access groups in this sync, the sync id and the provenance.
fn user_record(
    event: &RawEvent,
    user: UserUsage,
    access_group_ids: Vec<String>,
    sync_id: &str,
    source: Source<'_>,
) -> UserUsage {
    UserUsage {
        tenant_id: event.tenant_id.clone(),
        environment_id: event.environment_id.clone(),
        access_group_ids,
        sync_id: Some(sync_id.to_owned()),
        source_topic: source.topic.to_owned(),
        source_partition: source.partition,
        source_offset: source.offset,
        observed_at: event.observed_at_ms,
        ..user
    }
}

/// The UTC day (days since the Unix epoch) of a time in milliseconds.
pub fn day_of(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(DAY_MS)).unwrap_or(if ms < 0 { i32::MIN } else { i32::MAX })
}

/// Adds one access at `at_ms` to the totals and day buckets (before `last_access_at` moves).
fn count_access(record: &mut AppUsage, at_ms: i64) {
    record.access_count_total += 1;
    let newest = record.last_access_at.max(at_ms);
    let first_kept = day_of(newest).saturating_sub(HISTORY_DAYS - 1);
    let day = day_of(at_ms);
    if day >= first_kept {
        let days = &mut record.daily_access_counts;
        match days.binary_search_by_key(&day, |d| d.day) {
            Ok(i) => days[i].count = days[i].count.saturating_add(1),
            Err(i) => days.insert(i, DailyAccessCount { day, count: 1 }),
        }
    }
}

/// Drops day buckets older than 90 days before the newest access and recomputes the windows:
/// a window of N days is the N UTC days ending with the day of `last_access_at`.
fn recompute_windows(record: &mut AppUsage) {
    let last = day_of(record.last_access_at);
    record
        .daily_access_counts
        .retain(|d| d.day > last - HISTORY_DAYS);
    let sum = |n: i32| {
        record
            .daily_access_counts
            .iter()
            .filter(|d| d.day > last - n)
            .map(|d| d.count)
            .fold(0_i32, i32::saturating_add)
    };
    record.access_count_7d = sum(7);
    record.access_count_30d = sum(30);
    record.access_count_90d = sum(90);
}

#[cfg(test)]
mod tests;
