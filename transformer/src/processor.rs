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
//! # Deletions only from evidence
//! A complete sync deletes (tombstones) the users and applications it no longer has, but only
//! when this processor saw the sync whole: from its `sync_started` to its `sync_completed`, with
//! the counts in `sync_completed` equal to the events of each kind it saw. A sync seen in part
//! (a history cut by retention, a replay from a mid-sync offset, an orphan `sync_completed`)
//! deletes nothing; its `sync_completed` goes to the dead-letter topic saying why
//! ([`Output::DeadLetter`]). A whole sync that would delete more than `max_delete_share` of the
//! tenant's live users (or applications) is held back the same way, as `rsync --max-delete`
//! does. An entity that failed normalization, or stood for by an `oversized` marker, still
//! counts as seen: it is never deleted for being unreadable.
//!
//! None of it is stored on local disk: [`Processor::restore_user`], [`Processor::restore_application`]
//! and [`Processor::restore_app_usage`] rebuild it from the compacted output topics, and
//! [`Mode::Restore`] re-reads the raw events of the syncs that were in progress at the last
//! commit (see `pipeline.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use schemas::raw::{RawEvent, kind};
use schemas::usage::{AppSignons, AppUsage, Application, DailyAccessCount, UserUsage};
use serde::{Deserialize, Serialize};

use crate::normalize::{self, Activity, NormalizeError};

mod ids;
use ids::{LiveIds, SyncIds};

/// The state's maps hash with foldhash (seeded per process): hashing ids with the standard
/// library's SipHash was a visible share of the per-record time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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
    /// An app usage record for the app usage topic (shared with the processor's state, which
    /// changes it again only after this output is dropped).
    AppUsage(Arc<AppUsage>),
    /// PingOne's sign-on count of one application and period, for the app sign-ons topic.
    AppSignons(Box<AppSignons>),
    /// The raw event itself goes to the dead-letter topic with this reason, besides whatever
    /// else it produced: evidence the processor would not act on (an `oversized` marker, a sync
    /// seen in part, deletions held back).
    DeadLetter {
        /// The dead letter's `error_kind`.
        kind: &'static str,
        /// The dead letter's `error`.
        error: String,
    },
}

impl Output {
    /// The record key: `<tenant>/<entity>` (app usage: `<tenant>/<application>/<user>`).
    pub fn key(&self) -> String {
        let mut key = Vec::new();
        self.write_key(&mut key);
        String::from_utf8(key)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Appends [`Output::key`] to `out` (nothing for a dead letter, which keeps the raw key).
    pub fn write_key(&self, out: &mut Vec<u8>) {
        let mut parts = |parts: &[&str]| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(b'/');
                }
                out.extend_from_slice(part.as_bytes());
            }
        };
        match self {
            Output::User(u) => parts(&[&u.tenant_id, &u.user_id]),
            Output::Application(a) => parts(&[&a.tenant_id, &a.application_id]),
            Output::AppUsage(u) => parts(&[&u.tenant_id, &u.application_id, &u.user_id]),
            Output::AppSignons(r) => parts(&[
                &r.tenant_id,
                &r.application_id,
                &schemas::time::format_ms(r.period_start),
            ]),
            Output::UserTombstone { key } | Output::ApplicationTombstone { key } => {
                parts(&[key]);
            }
            Output::DeadLetter { .. } => {}
        }
    }
}

/// The key of a user or an application record (or its tombstone): `<tenant>/<id>`.
fn entity_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
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
    /// A `sync_completed` for a sync that is not the one in progress: no deletes derived, the
    /// marker dead-lettered.
    SyncMismatch,
    /// A `sync_completed` for a sync not seen whole (no `sync_started`, or counts that differ
    /// from what was seen): no deletes derived, the marker dead-lettered.
    SyncUnverified,
    /// A whole sync would have deleted more than `max_delete_share` of the tenant's users or
    /// applications: those deletions were held back, the marker dead-lettered.
    DeletionsHeld,
    /// An `oversized` marker: its entity counts as seen, the marker is dead-lettered.
    Oversized,
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
            Note::SyncUnverified => "sync_unverified",
            Note::DeletionsHeld => "deletions_held",
            Note::Oversized => "oversized",
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

/// Events of each kind in one sync, as `sync_completed.counts` gives them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct Counts {
    user: u64,
    group: u64,
    group_membership: u64,
    application: u64,
}

impl Counts {
    fn add(&mut self, kind: &str) {
        match kind {
            kind::USER => self.user += 1,
            kind::GROUP => self.group += 1,
            kind::GROUP_MEMBERSHIP => self.group_membership += 1,
            kind::APPLICATION => self.application += 1,
            _ => {}
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {}, group {}, group_membership {}, application {}",
            self.user, self.group, self.group_membership, self.application
        )
    }
}

#[derive(Debug)]
struct SyncInProgress {
    sync_id: Arc<str>,
    /// Its number in the tenant's [`SyncIds`].
    number: u32,
    start_offset: i64,
    /// Whether its `sync_started` was seen (not started implicitly by a later event).
    from_start: bool,
    /// The events of each kind seen since then.
    seen: Counts,
    /// Applications that count as seen without a record: oversized or unreadable.
    kept_apps: HashSet<String>,
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
    users: LiveIds,
    apps: LiveIds,
    in_progress: Option<SyncInProgress>,
    usage: HashMap<Box<str>, Arc<AppUsage>>,
    recent_activities: RecentIds,
    /// The syncs live entities were last seen by, by number.
    sync_ids: SyncIds,
}

/// The default of [`Processor::with_max_delete_share`]: a whole sync may delete at most half of
/// a tenant's live users (and, separately, applications).
pub const DEFAULT_MAX_DELETE_SHARE: f64 = 0.5;

/// The transformer's state and rules; see the module documentation.
#[derive(Debug)]
pub struct Processor {
    tenants: hashbrown::HashMap<String, TenantState, foldhash::fast::RandomState>,
    activity_dedup_capacity: usize,
    max_delete_share: f64,
    restore_plan: HashMap<String, InProgress>,
    /// A user record given back once staged ([`Processor::recycle`]): the next user is written
    /// over it, reusing its strings instead of allocating a score of them.
    spare_user: Option<Box<UserUsage>>,
}

impl Processor {
    /// An empty processor remembering up to `activity_dedup_capacity` activity ids per tenant,
    /// holding back deletions over [`DEFAULT_MAX_DELETE_SHARE`].
    pub fn new(activity_dedup_capacity: usize) -> Self {
        Self {
            tenants: hashbrown::HashMap::default(),
            activity_dedup_capacity,
            max_delete_share: DEFAULT_MAX_DELETE_SHARE,
            restore_plan: HashMap::default(),
            spare_user: None,
        }
    }

    /// The share (0 to 1) of a tenant's live users, or of its applications, that one sync may
    /// delete; a sync that would delete more deletes none of them (1 turns the guard off).
    #[must_use]
    pub fn with_max_delete_share(mut self, share: f64) -> Self {
        self.max_delete_share = share;
        self
    }

    fn tenant(&mut self, tenant_id: &str) -> &mut TenantState {
        let capacity = self.activity_dedup_capacity;
        // Looked up by `&str`: the key is allocated only for a tenant seen the first time.
        self.tenants
            .entry_ref(tenant_id)
            .or_insert_with(|| TenantState {
                recent_activities: RecentIds {
                    capacity,
                    ..RecentIds::default()
                },
                ..TenantState::default()
            })
    }

    /// Takes back an output once it is staged (encoded): a user record's allocations are
    /// kept for the next user, so that normalizing users allocates next to nothing once warm.
    pub fn recycle(&mut self, output: Output) {
        if let Output::User(user) = output {
            self.spare_user.get_or_insert(user);
        }
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
        live: fn(&mut TenantState) -> &mut LiveIds,
    ) {
        let Some((tenant, id)) = key.split_once('/') else {
            return;
        };
        let t = self.tenant(tenant);
        match sync {
            Some(sync) => {
                let sync = t.sync_ids.intern(sync.unwrap_or(""));
                live(t).insert(id, sync);
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
                t.usage.insert(pair.into(), Arc::new(r));
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

    /// The syncs in progress, for the checkpoint written with each commit (the live loop keeps
    /// one processor per raw partition).
    pub fn in_progress(&self) -> Vec<InProgress> {
        let mut out: Vec<InProgress> = self
            .tenants
            .iter()
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
    /// On error nothing was appended and the only change is that the event counts as seen by
    /// its sync (see the module documentation): the caller dead-letters the event.
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
        if let Some(observed) = self.observe(event, source, out) {
            return observed;
        }
        let result = match event.kind.as_str() {
            kind::SYNC_STARTED => self.sync_started(event, source),
            kind::SYNC_COMPLETED => self.sync_completed(event, out),
            kind::USER => self.user(event, source, out),
            kind::APPLICATION => self.application(event, source),
            kind::GROUP_MEMBERSHIP => self.group_membership(event, source, out),
            kind::GROUP => Self::group(event),
            kind::ACTIVITY => self.activity(event, source, out),
            kind::APPLICATION_SIGNONS => Self::application_signons(event, source, out),
            _ => Ok(Note::UnknownKind),
        };
        if result.is_err() {
            self.keep_unreadable(event, event.kind.as_str(), event.entity_id.as_deref());
        }
        result
    }

    /// Counts a sync's entity event (an `oversized` marker under its original kind) in the
    /// sync in progress, starting the sync if needed. An `oversized` marker needs nothing else:
    /// its entity is kept as seen, the marker dead-lettered, and its outcome returned; `None`
    /// for every other event.
    fn observe(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Option<Result<Note, NormalizeError>> {
        let oversized = if event.kind == kind::OVERSIZED {
            match serde_json::from_str::<schemas::raw::Oversized>(&event.payload) {
                Ok(o) => Some(o),
                Err(e) => return Some(Err(NormalizeError::InvalidJson(e.to_string()))),
            }
        } else {
            None
        };
        let counted = oversized.as_ref().map_or(event.kind.as_str(), |o| &o.kind);
        let in_sync = matches!(
            counted,
            kind::USER | kind::GROUP | kind::GROUP_MEMBERSHIP | kind::APPLICATION
        );
        match Self::sync_id(event) {
            Ok(sync_id) if in_sync => {
                self.ensure_sync(&event.tenant_id, sync_id, source);
                if let Some(s) = self.tenant(&event.tenant_id).in_progress.as_mut() {
                    s.seen.add(counted);
                }
            }
            // A sync's entity without a sync id: its handler (or, for a marker, here) says so.
            Err(e) if in_sync && oversized.is_some() => return Some(Err(e)),
            _ => {}
        }
        let o = oversized?;
        self.keep_unreadable(event, &o.kind, Some(&o.entity_id));
        out.push(Output::DeadLetter {
            kind: "oversized",
            error: format!(
                "{} {} of {} bytes (sha256 {}) is over the record limit of {} bytes",
                o.kind, o.entity_id, o.size, o.sha256, o.limit
            ),
        });
        Some(Ok(Note::Oversized))
    }

    /// An entity of the sync in progress that could not be read (failed normalization, or an
    /// `oversized` marker): a user or application that is live stays live, as seen by this
    /// sync, so that it is never deleted for being unreadable. Marks a marker's user live.
    fn keep_unreadable(&mut self, event: &RawEvent, kind: &str, entity_id: Option<&str>) {
        let (Some(id), Some(sync_id)) = (entity_id, event.sync_id.as_deref()) else {
            return;
        };
        let marker = event.kind == kind::OVERSIZED;
        let t = self.tenant(&event.tenant_id);
        if t.in_progress
            .as_ref()
            .is_none_or(|s| &*s.sync_id != sync_id)
        {
            return;
        }
        let sync = t.sync_ids.intern(sync_id);
        match kind {
            kind::USER if marker || t.users.contains(id) => {
                t.users.insert(id, sync);
            }
            kind::APPLICATION if marker || t.apps.contains(id) => {
                if let Some(s) = t.in_progress.as_mut() {
                    s.kept_apps.insert(id.to_owned());
                }
            }
            _ => {}
        }
    }

    /// Groups matter only through memberships and application rules, but a group without an id
    /// is still malformed input.
    fn group(event: &RawEvent) -> Result<Note, NormalizeError> {
        Self::sync_id(event)?;
        let obj = normalize::parse_object(&event.payload)?;
        match obj.get("id").and_then(|v| v.as_str()) {
            Some(id) if !id.is_empty() => Ok(Note::Processed),
            _ => Err(NormalizeError::MissingField("id")),
        }
    }

    fn restore_event(&mut self, event: &RawEvent, source: Source<'_>) -> Note {
        let Some(plan) = self.restore_plan.get(&event.tenant_id) else {
            return Note::NotRestored;
        };
        if source.offset < plan.start_offset || event.sync_id.as_deref() != Some(&plan.sync_id) {
            return Note::NotRestored;
        }
        if event.kind == kind::SYNC_COMPLETED {
            return Note::NotRestored;
        }
        // The same steps as in `process`, outputs dropped (they are in the output topics):
        // counts, the sync's applications and memberships, and which entities it has seen.
        let mut dropped = Vec::new();
        if let Some(observed) = self.observe(event, source, &mut dropped) {
            return observed.unwrap_or(Note::NotRestored);
        }
        let result = match event.kind.as_str() {
            kind::SYNC_STARTED => self.sync_started(event, source),
            kind::APPLICATION => self.application(event, source),
            kind::GROUP_MEMBERSHIP => self.group_membership(event, source, &mut dropped),
            kind::USER => self.user(event, source, &mut dropped),
            kind::GROUP => Self::group(event),
            _ => Ok(Note::NotRestored),
        };
        match result {
            Ok(_) => Note::NotRestored,
            Err(_) => {
                // Dead-lettered when first processed; still seen by its sync.
                self.keep_unreadable(event, event.kind.as_str(), event.entity_id.as_deref());
                Note::NotRestored
            }
        }
    }

    fn sync_id(event: &RawEvent) -> Result<&str, NormalizeError> {
        match event.sync_id.as_deref() {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(NormalizeError::MissingEnvelope("sync_id")),
        }
    }

    /// Makes sure `sync_id` is the tenant's sync in progress; starts it (abandoning another) if
    /// not, as seen from this event on, not from its start. Returns whether another sync was
    /// abandoned.
    fn ensure_sync(&mut self, tenant_id: &str, sync_id: &str, source: Source<'_>) -> bool {
        let t = self.tenant(tenant_id);
        if t.in_progress
            .as_ref()
            .is_some_and(|s| &*s.sync_id == sync_id)
        {
            return false;
        }
        let abandoned = t.in_progress.is_some();
        let number = t.sync_ids.intern(sync_id);
        t.in_progress = Some(SyncInProgress {
            sync_id: sync_id.into(),
            number,
            start_offset: source.offset,
            from_start: false,
            seen: Counts::default(),
            kept_apps: HashSet::default(),
            member_of: HashMap::default(),
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
        let abandoned = self.ensure_sync(&event.tenant_id, sync_id, source);
        if let Some(s) = self.tenant(&event.tenant_id).in_progress.as_mut() {
            s.from_start = true;
        }
        Ok(if abandoned {
            Note::SyncAbandoned
        } else {
            Note::Processed
        })
    }

    fn user(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let sync_id = Self::sync_id(event)?;
        let mut user = self.spare_user.take().unwrap_or_default();
        if let Err(e) = normalize::user_into(&event.payload, event.entity_id.as_deref(), &mut user)
        {
            self.spare_user = Some(user);
            return Err(e);
        }
        self.ensure_sync(&event.tenant_id, sync_id, source);
        let t = self.tenant(&event.tenant_id);
        let sync = t.sync_ids.intern(sync_id);
        // Seen by this sync already: written already (the insert changed nothing).
        if t.users.replace(&user.user_id, sync) == Some(sync) {
            self.spare_user = Some(user);
            return Ok(Note::DuplicateUser);
        }
        let groups = t
            .in_progress
            .as_ref()
            .and_then(|s| s.member_of.get(&user.user_id));
        fill_user_envelope(&mut user, event, groups, sync_id, source);
        out.push(Output::User(user));
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
        // The payload is the member user: it must be the user the entity id names.
        let member = normalize::user(&event.payload, Some(&user))?;
        self.ensure_sync(&event.tenant_id, sync_id, source);
        let t = self.tenant(&event.tenant_id);
        let sync = t.sync_ids.intern(sync_id);
        let already_written = t.users.get(&user) == Some(sync);
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
            let mut member = Box::new(member);
            fill_user_envelope(&mut member, event, Some(groups), sync_id, source);
            out.push(Output::User(member));
            return Ok(Note::UserRewritten);
        }
        Ok(Note::Processed)
    }

    fn sync_completed(
        &mut self,
        event: &RawEvent,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        #[derive(Deserialize)]
        struct Marker {
            counts: Option<Counts>,
        }
        let sync_id = Self::sync_id(event)?;
        normalize::parse_object(&event.payload)?;
        let announced = serde_json::from_str::<Marker>(&event.payload)
            .ok()
            .and_then(|m| m.counts);
        let max_share = self.max_delete_share;
        let tenant_id = event.tenant_id.clone();
        let t = self.tenant(&tenant_id);
        let in_progress = t.in_progress.as_ref().map(|s| s.sync_id.clone());
        let Some(sync) = t.in_progress.take_if(|s| &*s.sync_id == sync_id) else {
            out.push(Output::DeadLetter {
                kind: "sync_mismatch",
                error: format!(
                    "sync_completed of sync {sync_id}, but the sync in progress is {}: no deletions derived",
                    in_progress.as_deref().unwrap_or("none")
                ),
            });
            return Ok(Note::SyncMismatch);
        };
        let mut note = Note::Processed;
        let whole = sync.from_start && announced == Some(sync.seen);
        if !whole {
            let why = if sync.from_start {
                match announced {
                    Some(a) => format!("it announced {a} but {} were seen", sync.seen),
                    None => "its sync_completed has no counts".to_owned(),
                }
            } else {
                "its sync_started was not seen (history cut, or read from a mid-sync offset)"
                    .to_owned()
            };
            out.push(Output::DeadLetter {
                kind: "sync_unverified",
                error: format!("sync {sync_id} was not seen whole: {why}; no deletions derived"),
            });
            note = Note::SyncUnverified;
        }
        // Users of earlier syncs that this complete sync did not see are gone.
        let mut gone = t.users.not_seen_by(sync.number);
        let mut gone_apps = t.apps.not_seen_by(sync.number);
        gone_apps.retain(|k| !sync.apps.contains_key(k) && !sync.kept_apps.contains(k));
        if whole {
            for (what, gone, live) in [
                ("users", &mut gone, t.users.len()),
                ("applications", &mut gone_apps, t.apps.len()),
            ] {
                if exceeds(gone.len(), live, max_share) {
                    out.push(Output::DeadLetter {
                        kind: "deletions_held",
                        error: format!(
                            "sync {sync_id} would delete {} of {live} {what}, more than \
                             processing.max_delete_share ({max_share}): held back",
                            gone.len()
                        ),
                    });
                    gone.clear();
                    note = Note::DeletionsHeld;
                }
            }
        } else {
            gone.clear();
            gone_apps.clear();
        }
        gone.sort();
        for id in gone {
            t.users.remove(&id);
            out.push(Output::UserTombstone {
                key: entity_key(&tenant_id, &id),
            });
        }
        gone_apps.sort();
        for id in gone_apps {
            t.apps.remove(&id);
            out.push(Output::ApplicationTombstone {
                key: entity_key(&tenant_id, &id),
            });
        }
        for id in &sync.kept_apps {
            t.apps.touch(id, sync.number);
        }
        let all_users = t.users.len();
        let members = LiveMembers::new(&sync.apps, &sync.member_of, |user| t.users.contains(user));
        for (id, mut app) in sync.apps {
            let count = match app.access_control_group_type.as_deref() {
                None => all_users,
                Some(rule) => members.count(rule, &app.access_control_group_ids),
            };
            app.authorized_user_count = i64::try_from(count).unwrap_or(i64::MAX);
            t.apps.insert(&id, sync.number);
            out.push(Output::Application(Box::new(app)));
        }
        // Only the numbers still referenced are kept.
        t.sync_ids.keep_only(t.users.syncs().chain(t.apps.syncs()));
        Ok(note)
    }

    /// PingOne's sign-on counts of one application: one record per period, no state.
    fn application_signons(
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let obj = normalize::parse_object(&event.payload)?;
        let (app, periods) = normalize::application_signons(&obj, event.entity_id.as_deref())?;
        out.extend(periods.into_iter().map(|p| {
            Output::AppSignons(Box::new(AppSignons {
                tenant_id: event.tenant_id.clone(),
                environment_id: event.environment_id.clone(),
                application_id: app.clone(),
                period_start: p.start_ms,
                period_end: p.end_ms,
                signons: p.signons,
                partial: p.partial,
                source_topic: source.topic.to_owned(),
                source_partition: source.partition,
                source_offset: source.offset,
                observed_at: event.observed_at_ms,
            }))
        }));
        Ok(Note::Processed)
    }

    fn activity(
        &mut self,
        event: &RawEvent,
        source: Source<'_>,
        out: &mut Vec<Output>,
    ) -> Result<Note, NormalizeError> {
        let activity = normalize::activity_payload(&event.payload, event.entity_id.as_deref())?;
        let tenant_id = event.tenant_id.as_str();
        let t = self.tenant(tenant_id);
        let id = match &activity {
            Activity::Access { activity_id, .. }
            | Activity::UserDeleted { activity_id, .. }
            | Activity::ApplicationDeleted { activity_id, .. }
            | Activity::Other { activity_id, .. } => activity_id.as_str(),
        };
        if matches!(activity, Activity::Other { .. }) {
            return Ok(Note::IgnoredActivity);
        }
        if !t.recent_activities.insert(id) {
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
                let pair = [application_id.as_str(), "/", user_id.as_str()].concat();
                let shared = t.usage.entry(pair.into()).or_insert_with(|| {
                    Arc::new(AppUsage {
                        tenant_id: tenant_id.to_owned(),
                        environment_id: event.environment_id.clone(),
                        application_id,
                        user_id,
                        last_access_at: i64::MIN,
                        ..AppUsage::default()
                    })
                });
                // The previous output of this pair has been encoded and dropped by now, so
                // the record is not copied here.
                let record = Arc::make_mut(shared);
                count_access(record, at_ms);
                if at_ms >= record.last_access_at || record.last_activity_id.is_empty() {
                    record.last_access_at = at_ms;
                    record.last_activity_id = activity_id;
                    if application_name.is_some() {
                        record.application_name = application_name;
                    }
                    source.topic.clone_into(&mut record.source_topic);
                    record.source_partition = source.partition;
                    record.source_offset = source.offset;
                    record.observed_at = event.observed_at_ms;
                }
                recompute_windows(record);
                out.push(Output::AppUsage(Arc::clone(shared)));
            }
            Activity::UserDeleted { user_id, .. } => {
                t.users.remove(user_id.as_str());
                if let Some(s) = t.in_progress.as_mut() {
                    s.member_of.remove(&user_id);
                }
                out.push(Output::UserTombstone {
                    key: entity_key(tenant_id, &user_id),
                });
            }
            Activity::ApplicationDeleted { application_id, .. } => {
                t.apps.remove(application_id.as_str());
                if let Some(s) = t.in_progress.as_mut() {
                    s.apps.remove(&application_id);
                }
                out.push(Output::ApplicationTombstone {
                    key: entity_key(tenant_id, &application_id),
                });
            }
            Activity::Other { .. } => return Ok(Note::IgnoredActivity),
        }
        Ok(Note::Processed)
    }
}

/// The live members of a sync's access-control groups, each as a bit set over the groups the
/// sync's applications name, so that each application's authorized users are counted with a
/// few word operations per member instead of a map lookup and a group search (with many
/// applications and members, counting per application was the slowest part of a sync's end).
struct LiveMembers {
    /// Bit position of each group named by an application's rule.
    bit: HashMap<String, usize>,
    /// Words per member.
    words: usize,
    /// The members' bit sets, `words` each, one after another.
    sets: Vec<u64>,
}

impl LiveMembers {
    fn new(
        apps: &BTreeMap<String, Application>,
        member_of: &HashMap<String, Vec<String>>,
        live: impl Fn(&str) -> bool,
    ) -> Self {
        let mut bit: HashMap<String, usize> = HashMap::default();
        for app in apps.values() {
            if app.access_control_group_type.is_some() {
                for g in &app.access_control_group_ids {
                    let next = bit.len();
                    bit.entry(g.clone()).or_insert(next);
                }
            }
        }
        let words = bit.len().div_ceil(64).max(1);
        let mut sets = Vec::with_capacity(member_of.len() * words);
        for (user, groups) in member_of {
            if !live(user) {
                continue;
            }
            let start = sets.len();
            sets.resize(start + words, 0_u64);
            for g in groups {
                if let Some(&b) = bit.get(g.as_str()) {
                    sets[start + b / 64] |= 1 << (b % 64);
                }
            }
        }
        Self { bit, words, sets }
    }

    /// How many live members may use an application with group rule `rule` over `group_ids`
    /// (as [`normalize::may_use`] decides for each).
    fn count(&self, rule: &str, group_ids: &[String]) -> usize {
        let sets = self.sets.chunks_exact(self.words);
        if group_ids.is_empty() {
            return sets.count();
        }
        let mut mask = vec![0_u64; self.words];
        for g in group_ids {
            if let Some(&b) = self.bit.get(g.as_str()) {
                mask[b / 64] |= 1 << (b % 64);
            }
        }
        if rule == "ALL_GROUPS" {
            sets.filter(|m| m.iter().zip(&mask).all(|(m, k)| m & k == *k))
                .count()
        } else {
            sets.filter(|m| m.iter().zip(&mask).any(|(m, k)| m & k != 0))
                .count()
        }
    }
}

/// A normalized user ([`normalize::user`]) completed with what only the processor knows: the
/// envelope, the user's access groups in this sync, the sync id and the provenance.
fn fill_user_envelope(
    user: &mut UserUsage,
    event: &RawEvent,
    access_group_ids: Option<&Vec<String>>,
    sync_id: &str,
    source: Source<'_>,
) {
    event.tenant_id.clone_into(&mut user.tenant_id);
    event.environment_id.clone_into(&mut user.environment_id);
    match access_group_ids {
        Some(groups) => user.access_group_ids.clone_from(groups),
        None => user.access_group_ids.clear(),
    }
    normalize::put(&mut user.sync_id, Some(sync_id));
    source.topic.clone_into(&mut user.source_topic);
    user.source_partition = source.partition;
    user.source_offset = source.offset;
    user.observed_at = event.observed_at_ms;
}

/// Whether deleting `gone` of `live` entities is more than `share` of them.
fn exceeds(gone: usize, live: usize, share: f64) -> bool {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let over = gone as f64 > share * live as f64;
    gone > 0 && over
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
