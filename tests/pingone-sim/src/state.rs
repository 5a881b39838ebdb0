//! The live state of each tenant: the generated dataset plus a small overlay of mutations,
//! issued tokens and fault state, and the paged reads the API serves from them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::config::TenantSpec;
use crate::data::{self, Dataset, SignOn};
use crate::faults::FaultState;
use crate::filter::{ActivityFilter, Filter};
use crate::rng;

/// The simulator's clock: `now = anchor + time since start`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Anchor time in epoch milliseconds.
    pub anchor_ms: i64,
    start: Instant,
}

impl Clock {
    /// A clock starting now at `anchor_ms`.
    #[must_use]
    pub fn new(anchor_ms: i64) -> Self {
        Self {
            anchor_ms,
            start: Instant::now(),
        }
    }

    /// Simulated now in epoch milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        self.anchor_ms + i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX / 4)
    }
}

/// Mutations applied through the admin API since start.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Replaced or created users (`Some`) and deleted users (`None`), by index.
    pub users: BTreeMap<u64, Option<Value>>,
    /// Index the next created user gets.
    pub next_user: u64,
    /// Generated users deleted so far (for `count`).
    pub deleted_generated: u64,
    /// Memberships added: (user index, group index).
    pub member_add: BTreeSet<(u64, u32)>,
    /// Generated memberships removed.
    pub member_del: BTreeSet<(u64, u32)>,
    /// Replaced/created (`Some`) and deleted (`None`) applications, by index.
    pub apps: BTreeMap<u64, Option<Value>>,
    /// Index the next created application gets.
    pub next_app: u64,
    /// Appended events by (epoch ms, sequence).
    pub events: BTreeMap<(i64, u64), Value>,
    /// Next event sequence number.
    pub next_event: u64,
    /// Sign-ons counted by `/applicationSignons` only, with no audit event (as when PingOne's
    /// count and its audit log disagree), by (epoch ms, sequence): (application id, count).
    pub extra_signon_counts: BTreeMap<(i64, u64), (String, u64)>,
}

/// One tenant at run time.
#[derive(Debug)]
pub struct Tenant {
    /// Its configuration.
    pub spec: TenantSpec,
    /// Its generated data.
    pub data: Dataset,
    /// Its mutations.
    pub overlay: RwLock<Overlay>,
    /// Its faults.
    pub faults: Mutex<FaultState>,
    group_index: HashMap<String, u32>,
}

/// Where a paged activity read stands (carried in the cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityPos {
    /// Next generated slot position to read.
    pub gen_pos: u64,
    /// Within `gen_pos`, only sub-events below this are still to be read.
    pub gen_sub: u32,
    /// Appended events strictly older than this key are still to be read.
    pub appended_before: (i64, u64),
}

impl ActivityPos {
    /// The start of a read.
    pub const START: Self = Self {
        gen_pos: 0,
        gen_sub: u32::MAX,
        appended_before: (i64::MAX, u64::MAX),
    };
}

impl Tenant {
    /// Builds a tenant.
    #[must_use]
    pub fn new(spec: TenantSpec, anchor_ms: i64) -> Self {
        let data = Dataset::new(&spec, anchor_ms);
        let group_index = data
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.clone(), u32::try_from(i).unwrap_or(0)))
            .collect();
        let overlay = Overlay {
            next_user: data.users,
            next_app: data.apps.len() as u64,
            ..Overlay::default()
        };
        let faults = Mutex::new(FaultState::new(spec.faults.clone()));
        Self {
            spec,
            data,
            overlay: RwLock::new(overlay),
            faults,
            group_index,
        }
    }

    /// Read access to the overlay (a poisoned lock still holds consistent data: every writer
    /// completes its change before it can panic).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        self.overlay
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write access to the overlay.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Overlay> {
        self.overlay
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fault state.
    pub fn faults(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The index of a group id.
    #[must_use]
    pub fn group_index(&self, id: &str) -> Option<u32> {
        self.group_index.get(&id.to_ascii_lowercase()).copied()
    }

    /// User `i` as served now, `None` when deleted or never existed.
    #[must_use]
    pub fn user_at(&self, ov: &Overlay, i: u64) -> Option<Value> {
        match ov.users.get(&i) {
            Some(v) => v.clone(),
            None if i < self.data.users => Some(self.data.user_json(i)),
            None => None,
        }
    }

    /// User `i` as JSON text, `None` when deleted or never existed.
    #[must_use]
    pub fn user_raw_at(&self, ov: &Overlay, i: u64) -> Option<String> {
        match ov.users.get(&i) {
            Some(v) => v.as_ref().map(Value::to_string),
            None if i < self.data.users => Some(self.data.user_raw(i)),
            None => None,
        }
    }

    /// A user by id: its index and JSON.
    #[must_use]
    pub fn user_by_id(&self, ov: &Overlay, id: &str) -> Option<(u64, Value)> {
        let i = self.data.user_index(id)?;
        self.user_at(ov, i).map(|v| (i, v))
    }

    /// Whether user `i` is in group `g` now.
    #[must_use]
    pub fn is_member(&self, ov: &Overlay, i: u64, g: u32) -> bool {
        if ov.member_add.contains(&(i, g)) {
            return true;
        }
        !ov.member_del.contains(&(i, g)) && self.data.is_member(i, g)
    }

    /// The groups of user `i` now (indexes, ascending).
    #[must_use]
    pub fn groups_of(&self, ov: &Overlay, i: u64) -> Vec<u32> {
        let mut gs: Vec<u32> = self
            .data
            .memberships(i)
            .into_iter()
            .filter(|g| !ov.member_del.contains(&(i, *g)))
            .collect();
        gs.extend(ov.member_add.range((i, 0)..=(i, u32::MAX)).map(|(_, g)| *g));
        gs.sort_unstable();
        gs.dedup();
        gs
    }

    /// Number of users now.
    #[must_use]
    pub fn user_count(&self, ov: &Overlay) -> u64 {
        let created = ov
            .users
            .range(self.data.users..)
            .filter(|(_, v)| v.is_some())
            .count() as u64;
        self.data.users - ov.deleted_generated + created
    }

    /// Up to `limit` users from index `from` matching `filter`; returns them and the index to
    /// continue from, if any user may remain.
    #[must_use]
    pub fn users_page(
        &self,
        from: u64,
        limit: usize,
        filter: Option<&Filter>,
    ) -> (Vec<String>, Option<u64>) {
        let ov = self.read();
        let end = ov.next_user;
        let required: Vec<Option<u32>> = filter
            .map(|f| {
                f.required_groups()
                    .iter()
                    .map(|g| self.group_index(g))
                    .collect()
            })
            .unwrap_or_default();
        if required.iter().any(Option::is_none) {
            return (Vec::new(), None); // member of an unknown group: nobody
        }
        let required: Vec<u32> = required.into_iter().flatten().collect();
        // Filters made only of memberOfGroups terms are decided by the membership check.
        let needs_eval = filter.is_some_and(|f| !f.only_groups());
        let mut out = Vec::with_capacity(limit.min(1000));
        let mut i = from;
        while i < end {
            if out.len() == limit {
                return (out, Some(i));
            }
            let idx = i;
            i += 1;
            if !required.iter().all(|g| self.is_member(&ov, idx, *g)) {
                continue;
            }
            let Some(raw) = self.user_raw_at(&ov, idx) else {
                continue;
            };
            if let (true, Some(f)) = (needs_eval, filter) {
                let user: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                let mut member = |gid: &str| {
                    self.group_index(gid)
                        .is_some_and(|g| self.is_member(&ov, idx, g))
                };
                if !f.matches(&user, &mut member) {
                    continue;
                }
            }
            out.push(raw);
        }
        (out, None)
    }

    /// Applications now, in index order.
    #[must_use]
    pub fn applications(&self) -> Vec<Value> {
        let ov = self.read();
        let mut out = Vec::new();
        for (i, app) in self.data.apps.iter().enumerate() {
            match ov.apps.get(&(i as u64)) {
                Some(Some(v)) => out.push(v.clone()),
                Some(None) => {}
                None => out.push(app.json.clone()),
            }
        }
        out.extend(
            ov.apps
                .range(self.data.apps.len() as u64..)
                .filter_map(|(_, v)| v.clone()),
        );
        out
    }

    /// The newest-first activity read: up to `limit` events matching `f` at or after
    /// `horizon_ms`, starting at `pos`; returns the events and where to continue, if anything
    /// may remain.
    #[must_use]
    pub fn activities_page(
        &self,
        f: &ActivityFilter,
        horizon_ms: i64,
        pos: ActivityPos,
        limit: usize,
    ) -> (Vec<String>, Option<ActivityPos>) {
        let lo = f.from_ms.0.max(horizon_ms);
        let upper_excl = if f.to_ms.1 {
            f.to_ms.0.saturating_add(1)
        } else {
            f.to_ms.0
        };
        let mut gen_iter = GenIter::new(&self.data, upper_excl, pos);
        let ov = self.read();
        let mut appended = ov
            .events
            .range(..pos.appended_before)
            .rev()
            .filter(|((at, _), v)| *at >= lo && f.matches(*at, v))
            .map(|(k, v)| (*k, v))
            .peekable();
        let mut out = Vec::with_capacity(limit.min(1000));
        let mut last_appended = pos.appended_before;
        let mut next_gen = gen_iter.next_matching(self, f, lo);
        loop {
            let take_gen = match (&next_gen, appended.peek()) {
                (None, None) => return (out, None),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((g, _)), Some(((at, _), _))) => g.at_ms >= *at,
            };
            if out.len() == limit {
                // The peeked generated event (if any) is not sent yet: resume at it.
                let resume = next_gen
                    .as_ref()
                    .map_or(gen_iter.pos(), |(g, _)| (g.position, g.sub + 1));
                return (
                    out,
                    Some(ActivityPos {
                        gen_pos: resume.0,
                        gen_sub: resume.1,
                        appended_before: last_appended,
                    }),
                );
            }
            if take_gen {
                if let Some((_, v)) = next_gen.take() {
                    out.push(v);
                }
                next_gen = gen_iter.next_matching(self, f, lo);
            } else if let Some((k, v)) = appended.next() {
                last_appended = k;
                out.push(v.to_string());
            }
        }
    }

    /// Calls `each(application, at, count)` for the sign-ons PingOne counts in `[lo, hi)`: every
    /// sign-on event (generated and appended, count 1) and the extra counts with no event.
    pub fn for_each_signon(&self, lo: i64, hi: i64, each: &mut dyn FnMut(&str, i64, u64)) {
        let mut it = GenIter::new(&self.data, hi, ActivityPos::START);
        while let Some(e) = it.next_raw(lo) {
            if let Some(app) = self.data.apps.get(e.app as usize) {
                each(&app.id, e.at_ms, 1);
            }
        }
        let ov = self.read();
        for ((at, _), v) in ov.events.range((lo, 0)..(hi, 0)) {
            if let Some(app) = v.pointer("/actors/client/id").and_then(Value::as_str) {
                each(app, *at, 1);
            }
        }
        for ((at, _), (app, count)) in ov.extra_signon_counts.range((lo, 0)..(hi, 0)) {
            each(app, *at, *count);
        }
    }

    /// Adds `count` sign-ons of `app` at `at_ms` that only `/applicationSignons` counts.
    pub fn add_signon_count(&self, app: &str, at_ms: i64, count: u64) {
        let mut ov = self.write();
        let seq = ov.next_event;
        ov.next_event += 1;
        ov.extra_signon_counts
            .insert((at_ms, seq), (app.to_owned(), count));
    }

    /// Renders a user's membership list item.
    #[must_use]
    pub fn membership_json(&self, g: u32) -> Value {
        let group = &self.data.groups[g as usize];
        json!({"id": group.id, "name": group.name, "type": "DIRECT"})
    }

    /// Stores an appended sign-on event and moves the user's `lastSignOn` forward.
    pub fn append_signon(
        &self,
        user: u64,
        user_json: &Value,
        app: (&str, &str),
        at_ms: i64,
    ) -> Value {
        let mut ov = self.write();
        let seq = ov.next_event;
        ov.next_event += 1;
        let h = rng::hash(self.data.seed, &[0xadd, seq]);
        let id = uuid::Uuid::from_u64_pair(
            (h & !0xf000) | 0x4000,
            (rng::mix(h) & !(0b11 << 62)) | (0b10 << 62),
        );
        let username = user_json
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pop = user_json
            .pointer("/population/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let user_id = self.data.user_id(user);
        let event = data::render_event(
            &id.to_string(),
            &uuid::Uuid::new_v4().to_string(),
            at_ms,
            app,
            (&user_id, &username, &pop),
        );
        ov.events.insert((at_ms, seq), event.clone());
        let newer = user_json
            .pointer("/lastSignOn/at")
            .and_then(Value::as_str)
            .and_then(data::parse_ms)
            .is_none_or(|prev| prev < at_ms);
        if newer {
            let mut u = user_json.clone();
            if let Some(m) = u.as_object_mut() {
                let mut last = Map::new();
                last.insert("at".into(), json!(data::fmt_ms(at_ms)));
                last.insert("remoteIp".into(), json!("198.51.100.7"));
                m.insert("lastSignOn".into(), Value::Object(last));
            }
            ov.users.insert(user, Some(u));
        }
        event
    }
}

/// What an activity filter's `eq` allows among generated events, decided before rendering them
/// (generated events are all `USER.ACCESS_ALLOWED` with one `USER` resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefilter {
    /// No generated event matches.
    Nothing,
    /// Only this user's events can match.
    User(u64),
    /// Only this generated application's events can match.
    App(u32),
    /// Render and check each event.
    Render,
}

impl Prefilter {
    fn of(data: &Dataset, f: &ActivityFilter) -> Self {
        let Some((path, value)) = &f.eq else {
            return Self::Render;
        };
        match path.as_str() {
            "action.type" if value != "USER.ACCESS_ALLOWED" => Self::Nothing,
            "resources.type" if value != "USER" => Self::Nothing,
            "actors.user.id" | "resources.id" => data
                .user_index(value)
                .filter(|u| *u < data.users)
                .map_or(Self::Nothing, Self::User),
            "actors.client.id" => data
                .apps
                .iter()
                .position(|a| a.id.eq_ignore_ascii_case(value))
                .and_then(|a| u32::try_from(a).ok())
                .map_or(Self::Nothing, Self::App),
            _ => Self::Render,
        }
    }
}

/// Walks generated sign-on events newest first from a position.
struct GenIter<'a> {
    data: &'a Dataset,
    pos: u64,
    sub_limit: u32,
    pending: Vec<SignOn>,
}

impl<'a> GenIter<'a> {
    fn new(data: &'a Dataset, upper_excl: i64, pos: ActivityPos) -> Self {
        // First position whose slot starts before the upper bound (slot times never increase).
        let total = data.positions();
        let (mut a, mut b) = (0u64, total);
        while a < b {
            let mid = a + (b - a) / 2;
            if data.slot_time(mid) < upper_excl {
                b = mid
            } else {
                a = mid + 1
            }
        }
        let (start, sub_limit) = if pos.gen_pos > a {
            (pos.gen_pos, pos.gen_sub)
        } else {
            (
                a,
                if pos.gen_pos == a {
                    pos.gen_sub
                } else {
                    u32::MAX
                },
            )
        };
        Self {
            data,
            pos: start,
            sub_limit,
            pending: Vec::new(),
        }
    }

    /// Where an unread event would resume.
    fn pos(&self) -> (u64, u32) {
        match self.pending.last() {
            Some(e) => (e.position, e.sub + 1),
            None => (self.pos, u32::MAX),
        }
    }

    fn next_raw(&mut self, lo: i64) -> Option<SignOn> {
        loop {
            if let Some(e) = self.pending.pop() {
                if e.at_ms < lo {
                    self.pending.clear();
                    self.pos = self.data.positions();
                    return None;
                }
                return Some(e);
            }
            if self.pos >= self.data.positions() || self.data.slot_time(self.pos) + 2 < lo {
                return None;
            }
            let limit = std::mem::replace(&mut self.sub_limit, u32::MAX);
            self.pending = self
                .data
                .slot_events(self.pos)
                .into_iter()
                .filter(|e| e.sub < limit)
                .collect();
            self.pos += 1;
        }
    }

    fn next_matching(
        &mut self,
        tenant: &Tenant,
        f: &ActivityFilter,
        lo: i64,
    ) -> Option<(SignOn, String)> {
        let pre = Prefilter::of(&tenant.data, f);
        if pre == Prefilter::Nothing {
            return None;
        }
        while let Some(e) = self.next_raw(lo) {
            let within_upper = if f.to_ms.1 {
                e.at_ms <= f.to_ms.0
            } else {
                e.at_ms < f.to_ms.0
            };
            let wanted = match pre {
                Prefilter::User(u) => e.user == u,
                Prefilter::App(a) => e.app == a,
                Prefilter::Render | Prefilter::Nothing => true,
            };
            if !within_upper || !wanted {
                continue;
            }
            let after = if f.from_ms.1 {
                e.at_ms >= f.from_ms.0
            } else {
                e.at_ms > f.from_ms.0
            };
            if !after {
                continue;
            }
            let raw = tenant.data.event_raw(&e);
            // Only `eq` terms the prefilter could not decide need the parsed event.
            if pre == Prefilter::Render && f.eq.is_some() {
                let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                if !f.eq_matches(&v) {
                    continue;
                }
            }
            return Some((e, raw));
        }
        None
    }
}

/// Issued bearer tokens, shared by all tenants (a token is bound to one environment).
#[derive(Debug, Default)]
pub struct Tokens {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Valid for this environment.
    Ok,
    /// Unknown or expired.
    Invalid,
    /// Valid, but for another environment.
    OtherEnvironment,
}

impl Tokens {
    /// Issues a token for `env` valid `ttl`.
    pub fn issue(
        &self,
        env: &str,
        client_id: &str,
        issuer: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> String {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, (_, exp)| *exp > now);
        let jti = uuid::Uuid::new_v4();
        let header = rng::b64url(br#"{"alg":"RS256","kid":"pingone-sim","typ":"JWT"}"#);
        let payload = json!({
            "client_id": client_id,
            "iss": issuer,
            "jti": jti.to_string(),
            "iat": now_ms / 1000,
            "exp": now_ms / 1000 + i64::try_from(ttl.as_secs()).unwrap_or(0),
            "aud": ["https://api.pingone.com"],
            "env": env,
            "org": uuid::Uuid::nil().to_string(),
        });
        let sig = rng::b64url(uuid::Uuid::new_v4().as_bytes());
        let token = format!(
            "{header}.{}.{sig}",
            rng::b64url(payload.to_string().as_bytes())
        );
        map.insert(token.clone(), (env.to_string(), now + ttl));
        token
    }

    /// Checks a token against `env`.
    pub fn check(&self, token: &str, env: &str) -> TokenCheck {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(token) {
            Some((_, exp)) if *exp <= Instant::now() => TokenCheck::Invalid,
            Some((e, _)) if e == env => TokenCheck::Ok,
            Some(_) => TokenCheck::OtherEnvironment,
            None => TokenCheck::Invalid,
        }
    }

    /// Expires one token now.
    pub fn expire(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(token);
    }

    /// Expires every token of `env` now.
    pub fn expire_env(&self, env: &str) -> usize {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, (e, _)| e != env);
        before - map.len()
    }
}
