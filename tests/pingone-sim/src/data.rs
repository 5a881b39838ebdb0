//! The generated dataset: users, populations, groups, memberships, applications and sign-on
//! events, each a pure function of the tenant seed, an index and the anchor time.
//!
//! Nothing proportional to the number of users is stored: user `i` is rebuilt on demand, its
//! groups come from a hash, and sign-on events are laid out in per-day slots by a keyed
//! permutation of user indexes, so a time window maps to a range of slots and a user's newest
//! event (`lastSignOn`) is found by inverting the permutation.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::TenantSpec;
use crate::jsonw::ObjectWriter;
use crate::rng::{self, IdCodec, Permutation, Stream};
use crate::tables::{self, COUNTRIES};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Days of sign-on history generated (PingOne keeps user events 90 days).
pub const HISTORY_DAYS: u64 = 90;

const K_USER: u64 = 1;
const K_GROUP: u64 = 2;
const K_APP: u64 = 3;
const K_POP: u64 = 4;
const K_IDENT: u64 = 10;
const K_DETAIL: u64 = 11;
const K_ACT: u64 = 12;
const K_MEMB: u64 = 13;
const K_COIN: u64 = 14;
const K_PERM: u64 = 15;
const K_MULTI: u64 = 16;
const K_PICK: u64 = 17;
const K_EVENT: u64 = 18;

/// Formats epoch milliseconds as PingOne does: `2026-11-27T10:11:12.345Z`.
#[must_use]
pub fn fmt_ms(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let rem = ms.rem_euclid(DAY_MS);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses an RFC 3339 timestamp into epoch milliseconds (the contract's one parser).
pub use schemas::time::parse_rfc3339_ms as parse_ms;

fn uuid_from_hash(h1: u64, h2: u64) -> Uuid {
    Uuid::from_u64_pair((h1 & !0xf000) | 0x4000, (h2 & !(0b11 << 62)) | (0b10 << 62))
}

/// A generated population.
#[derive(Debug, Clone)]
pub struct Population {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// A generated group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The group as the API serves it.
    pub json: Value,
}

/// A generated application and the facts access control and usage need.
#[derive(Debug, Clone)]
pub struct App {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Groups of `accessControl.group.groups` (indexes); empty = no group rule.
    pub groups: Vec<u32>,
    /// `ALL_GROUPS` (true) or `ANY_GROUP` (false).
    pub all_groups: bool,
    /// Relative usage weight; 0 for apps users never sign on to (workers, services).
    pub weight: f64,
    /// The application as the API serves it.
    pub json: Value,
}

/// How a user uses the tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activity {
    /// Never signed on.
    Never,
    /// Last signed on before the 90 days of kept history (`days_ago` days before the anchor).
    Old {
        /// Days before the anchor.
        days_ago: u64,
    },
    /// Signs on with probability `p` a day, not in the last `dormant_days` days.
    Active {
        /// Days since the user stopped signing on.
        dormant_days: u64,
        /// Daily sign-on probability.
        p: f64,
    },
}

/// Name, username and population of a user: what events need, cheap to rebuild.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `name.given`.
    pub given: &'static str,
    /// `name.family`.
    pub family: &'static str,
    /// `username`.
    pub username: String,
    /// `type`, absent for some.
    pub kind: Option<&'static str>,
    /// Population index.
    pub population: usize,
}

/// One generated sign-on event (before rendering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignOn {
    /// Slot position (0 = the newest slot); see [`Dataset::slot_time`].
    pub position: u64,
    /// Sub-event within the slot (higher = newer).
    pub sub: u32,
    /// User index.
    pub user: u64,
    /// Application index.
    pub app: u32,
    /// Epoch milliseconds.
    pub at_ms: i64,
}

/// The immutable generated part of one tenant.
#[derive(Debug)]
pub struct Dataset {
    /// Environment id.
    pub env_id: String,
    /// Seed.
    pub seed: u64,
    /// Generated users.
    pub users: u64,
    /// Anchor time in epoch milliseconds: no generated event is newer.
    pub anchor_ms: i64,
    /// User id codec.
    pub user_ids: IdCodec,
    /// Application id codec (created apps continue the index range).
    pub app_ids: IdCodec,
    /// Populations.
    pub populations: Vec<Population>,
    /// Groups.
    pub groups: Vec<Group>,
    group_cumulative: Vec<f64>,
    /// Applications.
    pub apps: Vec<App>,
    domain: String,
}

/// Country weights, in table order.
static COUNTRY_WEIGHTS: std::sync::LazyLock<Vec<f64>> =
    std::sync::LazyLock::new(|| COUNTRIES.iter().map(|c| c.weight).collect());
/// User type weights, in table order.
static TYPE_WEIGHTS: std::sync::LazyLock<Vec<f64>> =
    std::sync::LazyLock::new(|| tables::USER_TYPES.iter().map(|t| t.1).collect());

const APP_KINDS: &[(&str, &str)] = &[
    ("WEB_APP", "OPENID_CONNECT"),
    ("SINGLE_PAGE_APP", "OPENID_CONNECT"),
    ("NATIVE_APP", "OPENID_CONNECT"),
    ("WEB_APP", "SAML"),
    ("WORKER", "OPENID_CONNECT"),
    ("SERVICE", "OPENID_CONNECT"),
    ("CUSTOM_APP", "OPENID_CONNECT"),
    ("PING_ONE_SELF_SERVICE", "OPENID_CONNECT"),
    ("PING_ONE_ADMIN_CONSOLE", "OPENID_CONNECT"),
    ("PING_ONE_PORTAL", "OPENID_CONNECT"),
    ("TEMPLATE_APP", "SAML"),
    ("PORTAL_LINK_APP", "EXTERNAL_LINK"),
    ("WEB_APP", "WS_FED"),
];

impl Dataset {
    /// Builds the small tables (populations, groups, apps) of a tenant.
    #[must_use]
    pub fn new(spec: &TenantSpec, anchor_ms: i64) -> Self {
        let seed = rng::hash(
            spec.seed,
            &[rng::hash_str(&spec.environment_id.to_ascii_lowercase())],
        );
        let env_id = spec.environment_id.to_ascii_lowercase();
        let mut s = Stream::new(seed, &[0]);
        let pop_count = spec.populations.unwrap_or_else(|| 3 + s.below(3));
        let pop_ids = IdCodec::new(seed, K_POP);
        let populations = (0..pop_count)
            .map(|p| {
                let base = tables::POPULATIONS
                    [usize::try_from(p).unwrap_or(0) % tables::POPULATIONS.len()];
                let name = if p < tables::POPULATIONS.len() as u64 {
                    base.to_string()
                } else {
                    format!("{base} {p}")
                };
                Population {
                    id: pop_ids.encode(p).to_string(),
                    name,
                }
            })
            .collect::<Vec<_>>();
        let domain = format!(
            "{}.example.com",
            ["acme", "globex", "initech", "umbrella", "hooli"]
                [usize::try_from(s.below(5)).unwrap_or(0)]
        );
        let group_count = spec.group_count();
        let group_ids = IdCodec::new(seed, K_GROUP);
        let anchor_days_ago = |s: &mut Stream, lo: u64, hi: u64| {
            anchor_ms - i64::try_from(s.range(lo, hi)).unwrap_or(0) * DAY_MS
                + i64::try_from(s.below(86_400_000)).unwrap_or(0)
        };
        let mut groups = Vec::new();
        let mut weights = Vec::new();
        for g in 0..group_count {
            let mut gs = Stream::new(seed, &[K_GROUP, g]);
            let name = if g == 0 {
                "Administrators".to_string()
            } else {
                let dept = tables::DEPARTMENTS
                    [usize::try_from(g - 1).unwrap_or(0) % tables::DEPARTMENTS.len()];
                let round = (g - 1) / tables::DEPARTMENTS.len() as u64;
                if round == 0 {
                    dept.to_string()
                } else {
                    format!("{dept} {}", round + 1)
                }
            };
            let id = group_ids.encode(g).to_string();
            let pop = &populations[usize::try_from(gs.below(pop_count)).unwrap_or(0)];
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("environment".into(), json!({"id": env_id}));
            m.insert("name".into(), json!(name));
            if gs.chance(0.7) {
                m.insert("description".into(), json!(format!("Members of {name}")));
            }
            if gs.chance(0.5) {
                m.insert("population".into(), json!({"id": pop.id}));
            }
            if gs.chance(0.3) {
                m.insert("externalId".into(), json!(format!("grp-{:05}", g)));
            }
            let created = anchor_days_ago(&mut gs, 200, 1500);
            m.insert("createdAt".into(), json!(fmt_ms(created)));
            m.insert(
                "updatedAt".into(),
                json!(fmt_ms(
                    created + i64::try_from(gs.below(100)).unwrap_or(0) * DAY_MS
                )),
            );
            #[allow(clippy::cast_precision_loss)]
            let w = if g == 0 {
                0.02
            } else {
                1.0 / (g as f64).powf(0.8)
            };
            weights.push(w);
            groups.push(Group {
                id,
                name,
                json: Value::Object(m),
            });
        }
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let group_cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let app_ids = IdCodec::new(seed, K_APP);
        let app_count = spec.application_count();
        let apps = (0..app_count)
            .map(|a| Self::make_app(seed, &env_id, a, group_count, &app_ids, anchor_ms))
            .collect();
        Self {
            env_id,
            seed,
            users: spec.users,
            anchor_ms,
            user_ids: IdCodec::new(seed, K_USER),
            app_ids,
            populations,
            groups,
            group_cumulative,
            apps,
            domain,
        }
    }

    fn make_app(
        seed: u64,
        env_id: &str,
        a: u64,
        group_count: u64,
        ids: &IdCodec,
        anchor_ms: i64,
    ) -> App {
        let mut s = Stream::new(seed, &[K_APP, a]);
        let (kind, protocol) = if a == 0 {
            ("WEB_APP", "OPENID_CONNECT")
        } else if a <= APP_KINDS.len() as u64 {
            APP_KINDS[usize::try_from(a - 1).unwrap_or(0)]
        } else {
            *s.pick(APP_KINDS)
        };
        let base = if a == 0 {
            "Intranet".to_string()
        } else {
            let n =
                tables::APP_NAMES[usize::try_from(a - 1).unwrap_or(0) % tables::APP_NAMES.len()];
            let round = (a - 1) / tables::APP_NAMES.len() as u64;
            if round == 0 {
                n.to_string()
            } else {
                format!("{n} ({})", round + 1)
            }
        };
        let name = match kind {
            "PING_ONE_SELF_SERVICE" => "PingOne Self-Service - MyAccount".to_string(),
            "PING_ONE_ADMIN_CONSOLE" => "PingOne Admin Console".to_string(),
            "PING_ONE_PORTAL" => "PingOne Application Portal".to_string(),
            "WORKER" | "SERVICE" => format!("{base} Sync Worker"),
            _ => base,
        };
        let id = ids.encode(a).to_string();
        let mut groups = Vec::new();
        let mut all_groups = false;
        let mut admin_only = false;
        if kind == "PING_ONE_ADMIN_CONSOLE" {
            admin_only = true;
            groups.push(0);
        } else if a != 0
            && kind != "PING_ONE_SELF_SERVICE"
            && kind != "PING_ONE_PORTAL"
            && s.chance(0.65)
        {
            let n = s.range(1, 3.min(group_count.saturating_sub(1)).max(1));
            for _ in 0..n {
                let g =
                    u32::try_from(s.range(1.min(group_count - 1), group_count - 1)).unwrap_or(0);
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            all_groups = groups.len() > 1 && s.chance(0.25);
        }
        #[allow(clippy::cast_precision_loss)]
        let mut weight = match kind {
            "WORKER" | "SERVICE" => 0.0,
            _ if a == 0 => 3.0,
            _ => 1.0 / ((a as f64) + 1.0).powf(0.9),
        };
        if weight > 0.0 && a != 0 && s.chance(0.2) {
            weight *= 0.01; // almost unused
        }
        let created = anchor_ms - i64::try_from(s.range(120, 1400)).unwrap_or(0) * DAY_MS;
        let mut m = Map::new();
        m.insert(
            "_links".into(),
            json!({"self": {"href": format!("/v1/environments/{env_id}/applications/{id}")}}),
        );
        m.insert("environment".into(), json!({"id": env_id}));
        m.insert("id".into(), json!(id));
        m.insert("name".into(), json!(name));
        if s.chance(0.6) {
            m.insert(
                "description".into(),
                json!(format!("{name} for the workforce")),
            );
        }
        m.insert("enabled".into(), json!(a == 0 || s.chance(0.92)));
        m.insert("type".into(), json!(kind));
        m.insert("protocol".into(), json!(protocol));
        if admin_only || !groups.is_empty() {
            let mut ac = Map::new();
            if admin_only {
                ac.insert("role".into(), json!({"type": "ADMIN_USERS_ONLY"}));
            }
            if !groups.is_empty() {
                let ids = IdCodec::new(seed, K_GROUP);
                let list: Vec<Value> = groups
                    .iter()
                    .map(|g| json!({"id": ids.encode(u64::from(*g)).to_string()}))
                    .collect();
                ac.insert(
                    "group".into(),
                    json!({"type": if all_groups { "ALL_GROUPS" } else { "ANY_GROUP" }, "groups": list}),
                );
            }
            m.insert("accessControl".into(), Value::Object(ac));
        }
        if s.chance(0.3) {
            m.insert("hiddenFromAppPortal".into(), json!(true));
        }
        if s.chance(0.5) {
            let icon = uuid_from_hash(s.next_u64(), s.next_u64());
            m.insert("icon".into(), json!({"id": icon.to_string(), "href": format!("https://uploads.pingone.com/environments/{env_id}/images/{icon}.png")}));
        }
        let slug: String = name
            .to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        if protocol != "WS_FED" {
            m.insert(
                "homePageUrl".into(),
                json!(format!("https://{slug}.example.net/")),
            );
        }
        match protocol {
            "OPENID_CONNECT" => {
                m.insert("clientId".into(), json!(id));
                let grants = match kind {
                    "WORKER" | "SERVICE" => json!(["CLIENT_CREDENTIALS"]),
                    "SINGLE_PAGE_APP" => json!(["IMPLICIT"]),
                    "NATIVE_APP" => json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]),
                    _ => json!(["AUTHORIZATION_CODE"]),
                };
                m.insert("grantTypes".into(), grants);
                let method = match kind {
                    "SINGLE_PAGE_APP" | "NATIVE_APP" => "NONE",
                    "WORKER" | "SERVICE" => "CLIENT_SECRET_BASIC",
                    _ => "CLIENT_SECRET_POST",
                };
                m.insert("tokenEndpointAuthMethod".into(), json!(method));
                if !matches!(kind, "WORKER" | "SERVICE") {
                    m.insert(
                        "redirectUris".into(),
                        json!([format!("https://{slug}.example.net/callback")]),
                    );
                }
            }
            "SAML" => {
                m.insert(
                    "acsUrls".into(),
                    json!([format!("https://{slug}.example.net/saml/acs")]),
                );
                m.insert("spEntityId".into(), json!(format!("urn:{slug}:sp")));
                m.insert("assertionDuration".into(), json!(60));
            }
            "WS_FED" => {
                m.insert(
                    "replyUrl".into(),
                    json!(format!("https://{slug}.example.net/wsfed")),
                );
                m.insert("domainName".into(), json!(format!("{slug}.example.net")));
            }
            _ => {}
        }
        m.insert("createdAt".into(), json!(fmt_ms(created)));
        m.insert(
            "updatedAt".into(),
            json!(fmt_ms(
                created + i64::try_from(s.below(100)).unwrap_or(0) * DAY_MS
            )),
        );
        App {
            id,
            name,
            groups,
            all_groups,
            weight,
            json: Value::Object(m),
        }
    }

    /// The id of generated or created user `i`.
    #[must_use]
    pub fn user_id(&self, i: u64) -> String {
        self.user_ids.encode(i).to_string()
    }

    /// The index of a user id (generated or created), if it was made by this tenant.
    #[must_use]
    pub fn user_index(&self, id: &str) -> Option<u64> {
        self.user_ids.decode(&Uuid::parse_str(id).ok()?)
    }

    /// The groups (indexes, ascending) generated user `i` belongs to.
    #[must_use]
    pub fn memberships(&self, i: u64) -> Vec<u32> {
        if i >= self.users {
            return Vec::new();
        }
        let mut s = Stream::new(self.seed, &[K_MEMB, i]);
        let mut out = Vec::with_capacity(3);
        let pick = |s: &mut Stream| {
            let r = s.unit();
            let idx = self.group_cumulative.partition_point(|c| *c <= r);
            u32::try_from(idx.min(self.groups.len() - 1)).unwrap_or(0)
        };
        out.push(pick(&mut s));
        if s.chance(0.35) {
            out.push(pick(&mut s));
            if s.chance(0.3) {
                out.push(pick(&mut s));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether generated user `i` is in group `g` (cheap: no user rendering).
    #[must_use]
    pub fn is_member(&self, i: u64, g: u32) -> bool {
        self.memberships(i).contains(&g)
    }

    /// Generated applications user `i` may use (by generated access control), with weights.
    #[must_use]
    pub fn allowed_apps(&self, groups: &[u32]) -> Vec<(u32, f64)> {
        self.apps
            .iter()
            .enumerate()
            .filter(|(_, a)| a.weight > 0.0)
            .filter(|(_, a)| {
                a.groups.is_empty()
                    || if a.all_groups {
                        a.groups.iter().all(|g| groups.contains(g))
                    } else {
                        a.groups.iter().any(|g| groups.contains(g))
                    }
            })
            .map(|(i, a)| (u32::try_from(i).unwrap_or(0), a.weight))
            .collect()
    }

    /// Name, username, type and population of user `i`.
    #[must_use]
    pub fn identity(&self, i: u64) -> Identity {
        let mut s = Stream::new(self.seed, &[K_IDENT, i]);
        let given = *s.pick(tables::GIVEN);
        let family = *s.pick(tables::FAMILY);
        let kind = tables::USER_TYPES[s.weighted(&TYPE_WEIGHTS)].0;
        let pops = self.populations.len() as u64;
        let population = usize::try_from(match kind {
            Some("Contractor" | "Vendor") if pops > 1 => 1,
            Some("Partner") if pops > 2 => 2,
            _ if s.chance(0.85) => 0,
            _ => s.below(pops),
        })
        .unwrap_or(0);
        let ascii = |n: &str| -> String {
            n.chars()
                .map(|c| match c {
                    'á' | 'à' | 'â' | 'ã' => 'a',
                    'é' | 'è' => 'e',
                    'í' => 'i',
                    'ó' | 'ô' => 'o',
                    'ú' | 'ü' => 'u',
                    'ç' => 'c',
                    c => c.to_ascii_lowercase(),
                })
                .filter(char::is_ascii_alphanumeric)
                .collect()
        };
        let username = format!("{}.{}{}", ascii(given), ascii(family), i);
        Identity {
            given,
            family,
            username,
            kind,
            population,
        }
    }

    /// How user `i` signs on.
    #[must_use]
    pub fn activity(&self, i: u64) -> Activity {
        if i >= self.users {
            return Activity::Never;
        }
        let mut s = Stream::new(self.seed, &[K_ACT, i]);
        let r = s.unit();
        let p = *s.pick(&[0.7, 0.45, 0.25, 0.1, 0.04]);
        if r < 0.05 {
            Activity::Never
        } else if r < 0.13 {
            Activity::Old {
                days_ago: s.range(HISTORY_DAYS + 1, 400),
            }
        } else if r < 0.21 {
            Activity::Active {
                dormant_days: s.range(60, 89),
                p,
            }
        } else if r < 0.31 {
            Activity::Active {
                dormant_days: s.range(30, 59),
                p,
            }
        } else if r < 0.41 {
            Activity::Active {
                dormant_days: s.range(7, 29),
                p,
            }
        } else {
            Activity::Active {
                dormant_days: if s.chance(0.8) { 0 } else { s.range(1, 2) },
                p,
            }
        }
    }

    fn signs_on(&self, i: u64, day: u64, p: f64) -> bool {
        rng::unit(rng::hash(self.seed, &[K_COIN, i, day])) < p
    }

    fn day_permutation(&self, day: u64) -> Permutation {
        Permutation::new(self.users, rng::hash(self.seed, &[K_PERM, day]))
    }

    /// Number of slot positions (`users × HISTORY_DAYS`).
    #[must_use]
    pub fn positions(&self) -> u64 {
        self.users * HISTORY_DAYS
    }

    /// Start time of slot `position` (0 = newest slot, just before the anchor). Non-increasing.
    #[must_use]
    pub fn slot_time(&self, position: u64) -> i64 {
        let n = self.users.max(1);
        let day = position / n;
        let k = n - 1 - position % n;
        let day_start = self.anchor_ms - (i64::try_from(day).unwrap_or(0) + 1) * DAY_MS;
        let offset = i128::from(k) * i128::from(DAY_MS) / i128::from(n);
        day_start + i64::try_from(offset).unwrap_or(0)
    }

    fn sub_events(&self, user: u64, day: u64) -> u32 {
        if rng::hash(self.seed, &[K_MULTI, user, day]) % 10 < 3 {
            2
        } else {
            1
        }
    }

    /// The sign-on events of slot `position`, oldest sub-event first.
    #[must_use]
    pub fn slot_events(&self, position: u64) -> Vec<SignOn> {
        if position >= self.positions() {
            return Vec::new();
        }
        let n = self.users;
        let day = position / n;
        let k = n - 1 - position % n;
        let user = self.day_permutation(day).forward(k);
        let Activity::Active { dormant_days, p } = self.activity(user) else {
            return Vec::new();
        };
        if day < dormant_days || !self.signs_on(user, day, p) {
            return Vec::new();
        }
        let allowed = self.allowed_apps(&self.memberships(user));
        if allowed.is_empty() {
            return Vec::new();
        }
        let weights: Vec<f64> = allowed.iter().map(|a| a.1).collect();
        let t0 = self.slot_time(position);
        (0..self.sub_events(user, day))
            .map(|sub| {
                let mut s = Stream::new(self.seed, &[K_PICK, user, day, u64::from(sub)]);
                SignOn {
                    position,
                    sub,
                    user,
                    app: allowed[s.weighted(&weights)].0,
                    at_ms: t0 + i64::from(sub),
                }
            })
            .collect()
    }

    /// The newest generated sign-on of user `i` (epoch ms), if any is kept.
    #[must_use]
    pub fn newest_signon(&self, i: u64) -> Option<i64> {
        self.newest_signon_with(i, self.activity(i))
    }

    fn newest_signon_with(&self, i: u64, activity: Activity) -> Option<i64> {
        let Activity::Active { dormant_days, p } = activity else {
            return None;
        };
        let groups = self.memberships(i);
        let any_app = self.apps.iter().any(|a| {
            a.weight > 0.0
                && (a.groups.is_empty()
                    || if a.all_groups {
                        a.groups.iter().all(|g| groups.contains(g))
                    } else {
                        a.groups.iter().any(|g| groups.contains(g))
                    })
        });
        if !any_app {
            return None;
        }
        (dormant_days..HISTORY_DAYS)
            .find(|d| self.signs_on(i, *d, p))
            .map(|day| {
                let k = self.day_permutation(day).inverse(i);
                let position = day * self.users + (self.users - 1 - k);
                self.slot_time(position) + i64::from(self.sub_events(i, day)) - 1
            })
    }

    /// `lastSignOn.at` of generated user `i` (epoch ms).
    #[must_use]
    pub fn last_signon(&self, i: u64) -> Option<i64> {
        self.last_signon_with(i, self.activity(i))
    }

    fn last_signon_with(&self, i: u64, activity: Activity) -> Option<i64> {
        match activity {
            Activity::Never => None,
            Activity::Old { days_ago } => Some(
                self.anchor_ms - i64::try_from(days_ago).unwrap_or(0) * DAY_MS
                    + i64::try_from(rng::hash(self.seed, &[K_ACT, i, 9]) % 86_400_000).unwrap_or(0),
            ),
            Activity::Active { dormant_days, .. } => {
                self.newest_signon_with(i, activity).or_else(|| {
                    // Signed on, but not within the kept history.
                    Some(
                        self.anchor_ms
                            - i64::try_from(HISTORY_DAYS + 1 + dormant_days).unwrap_or(0) * DAY_MS,
                    )
                })
            }
        }
    }

    fn remote_ip(&self, i: u64) -> String {
        let h = rng::hash(self.seed, &[K_DETAIL, i, 5]);
        let nets = ["198.51.100", "203.0.113", "192.0.2"];
        format!(
            "{}.{}",
            nets[usize::try_from(h % 3).unwrap_or(0)],
            1 + (h >> 8) % 254
        )
    }

    /// Generated user `i` exactly as `GET /users` serves it.
    #[must_use]
    pub fn user_json(&self, i: u64) -> Value {
        serde_json::from_str(&self.user_raw(i)).unwrap_or(Value::Null)
    }

    /// Generated user `i` as JSON text (what `GET /users` serves, without building a `Value`).
    #[must_use]
    pub fn user_raw(&self, i: u64) -> String {
        let ident = self.identity(i);
        let mut s = Stream::new(self.seed, &[K_DETAIL, i]);
        let activity = self.activity(i);
        let last = self.last_signon_with(i, activity);
        let country = &COUNTRIES[s.weighted(&COUNTRY_WEIGHTS)];
        let city = s.pick(country.cities);
        let created = self.anchor_ms
            - i64::try_from(s.range(95, 1800)).unwrap_or(0) * DAY_MS
            - i64::try_from(s.below(86_400_000)).unwrap_or(0);
        let stale = matches!(activity, Activity::Old { .. } | Activity::Never)
            || matches!(activity, Activity::Active { dormant_days, .. } if dormant_days >= 30);
        let locked = stale && s.chance(0.2);
        let enabled = !(stale && s.chance(0.1));
        let mfa = s.chance(0.85);
        let verify = [
            "ENABLED",
            "ENABLED",
            "ENABLED",
            "NOT_INITIATED",
            "NOT_INITIATED",
            "DISABLED",
        ];
        let verify = *s.pick(&verify);
        let needs_verification = matches!(activity, Activity::Never) && s.chance(0.4);
        let id = self.user_id(i);

        let mut w = ObjectWriter::new(1200);
        w.open("_links");
        w.open("self");
        w.str(
            "href",
            &format!("/v1/environments/{}/users/{id}", self.env_id),
        );
        w.close();
        w.close();
        w.str("id", &id);
        w.open("environment");
        w.str("id", &self.env_id);
        w.close();
        w.open("account");
        w.bool("canAuthenticate", enabled && !locked);
        w.str("status", if locked { "LOCKED" } else { "OK" });
        if locked {
            let base = last.unwrap_or(created).max(created);
            let at = (base + 3_600_000 + i64::try_from(s.below(86_400_000)).unwrap_or(0))
                .min(self.anchor_ms - 60_000);
            w.str("lockedAt", &fmt_ms(at));
        }
        w.close();
        w.open("address");
        if s.chance(0.6) {
            w.str(
                "streetAddress",
                &format!("{} {} Street", 1 + s.below(999), ident.family),
            );
        }
        if s.chance(0.92) {
            w.str("locality", city.locality);
        }
        if s.chance(0.9) {
            w.str("region", city.region);
        }
        w.str(
            "postalCode",
            &format!("{}{:02}", city.postal_prefix, s.below(100)),
        );
        w.str("countryCode", country.code);
        w.close();
        w.str("createdAt", &fmt_ms(created));
        w.str("email", &format!("{}@{}", ident.username, self.domain));
        w.bool("emailVerified", !needs_verification && s.chance(0.9));
        w.bool("enabled", enabled);
        if s.chance(0.35) {
            w.str("externalId", &format!("E{i:08}"));
        }
        w.open("identityProvider");
        match s.below(20) {
            0 => {
                w.str("type", "GOOGLE");
                w.str("id", &uuid_from_hash(self.seed, 11).to_string());
            }
            1 => {
                w.str("type", "MICROSOFT");
                w.str("id", &uuid_from_hash(self.seed, 12).to_string());
            }
            2 => {
                w.str("type", "SAML");
                w.str("id", &uuid_from_hash(self.seed, 13).to_string());
            }
            _ => w.str("type", "PING_ONE"),
        }
        w.close();
        if let Some(at) = last {
            w.open("lastSignOn");
            w.str("at", &fmt_ms(at));
            w.str("remoteIp", &self.remote_ip(i));
            w.close();
        }
        w.open("lifecycle");
        w.str(
            "status",
            if needs_verification {
                "VERIFICATION_REQUIRED"
            } else {
                "ACCOUNT_OK"
            },
        );
        w.close();
        w.str("locale", country.locale);
        w.bool("mfaEnabled", mfa);
        if s.chance(0.7) {
            let phone = format!(
                "{} {:03} {:03} {:04}",
                country.phone,
                s.below(1000),
                s.below(1000),
                s.below(10000)
            );
            w.str("mobilePhone", &phone);
        }
        w.open("name");
        w.str("formatted", &format!("{} {}", ident.given, ident.family));
        w.str("given", ident.given);
        if s.chance(0.15) {
            w.str("middle", s.pick::<&str>(tables::GIVEN));
        }
        w.str("family", ident.family);
        w.close();
        w.open("population");
        w.str("id", &self.populations[ident.population].id);
        w.close();
        w.str("preferredLanguage", country.language);
        w.str("timezone", city.timezone);
        if s.chance(0.6) {
            w.str("title", s.pick::<&str>(tables::TITLES));
        }
        if let Some(kind) = ident.kind {
            w.str("type", kind);
        }
        let updated = created.max(last.unwrap_or(created)).min(self.anchor_ms)
            - i64::try_from(s.below(3 * 86_400_000)).unwrap_or(0);
        w.str("updatedAt", &fmt_ms(updated.max(created)));
        w.str("username", &ident.username);
        w.str("verifyStatus", verify);
        if s.chance(0.25) {
            // A custom attribute, as a top-level key.
            w.str("costCenter", &format!("CC-{}", 100 + s.below(60)));
        }
        w.finish()
    }

    /// A generated sign-on event exactly as `/activities` serves it.
    #[must_use]
    pub fn event_json(&self, e: &SignOn) -> Value {
        serde_json::from_str(&self.event_raw(e)).unwrap_or(Value::Null)
    }

    /// A generated sign-on event as JSON text.
    #[must_use]
    pub fn event_raw(&self, e: &SignOn) -> String {
        let ident = self.identity(e.user);
        let app = &self.apps[e.app as usize];
        let h1 = rng::hash(self.seed, &[K_EVENT, e.position, u64::from(e.sub)]);
        let h2 = rng::mix(h1 ^ 0x55);
        let user_id = self.user_id(e.user);
        let pop = &self.populations[ident.population].id;
        render_event_raw(
            &uuid_from_hash(h1, h2).to_string(),
            &uuid_from_hash(rng::mix(h2), rng::mix(h1)).to_string(),
            e.at_ms,
            (&app.id, &app.name),
            (&user_id, &ident.username, pop),
        )
    }
}

/// Renders a `USER.ACCESS_ALLOWED` event.
#[must_use]
pub fn render_event(
    id: &str,
    correlation: &str,
    at_ms: i64,
    app: (&str, &str),
    user: (&str, &str, &str),
) -> Value {
    serde_json::from_str(&render_event_raw(id, correlation, at_ms, app, user))
        .unwrap_or(Value::Null)
}

/// Renders a `USER.ACCESS_ALLOWED` event as JSON text.
#[must_use]
pub fn render_event_raw(
    id: &str,
    correlation: &str,
    at_ms: i64,
    app: (&str, &str),
    user: (&str, &str, &str),
) -> String {
    let at = fmt_ms(at_ms);
    let mut resource = ObjectWriter::new(200);
    resource.str("type", "USER");
    resource.str("id", user.0);
    resource.str("name", user.1);
    resource.open("population");
    resource.str("id", user.2);
    resource.close();
    let resource = resource.finish();
    let mut w = ObjectWriter::new(800);
    w.str("id", id);
    w.str("recordedAt", &at);
    w.str("createdAt", &at);
    w.str("correlationId", correlation);
    w.open("actors");
    w.open("client");
    w.str("id", app.0);
    w.str("name", app.1);
    w.str("type", "CLIENT");
    w.close();
    w.open("user");
    w.str("id", user.0);
    w.str("name", user.1);
    w.str("type", "USER");
    w.open("population");
    w.str("id", user.2);
    w.close();
    w.close();
    w.close();
    w.open("action");
    w.str("type", "USER.ACCESS_ALLOWED");
    w.str("description", "User Access Allowed");
    w.close();
    w.raw("resources", &format!("[{resource}]"));
    w.open("result");
    w.str("status", "SUCCESS");
    w.str("description", "Passed role access control");
    w.close();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(users: u64) -> Dataset {
        Dataset::new(&TenantSpec::generated("t", users, 5), 1_800_000_000_000)
    }

    #[test]
    fn formats_timestamps_like_pingone() {
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            parse_ms("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
    }

    #[test]
    fn last_signon_is_the_newest_generated_event() {
        let d = dataset(300);
        let mut newest = std::collections::HashMap::new();
        for pos in 0..d.positions() {
            for e in d.slot_events(pos).into_iter().rev() {
                newest.entry(e.user).or_insert(e.at_ms);
            }
        }
        assert!(newest.len() > 100, "only {} users active", newest.len());
        for i in 0..d.users {
            assert_eq!(d.newest_signon(i), newest.get(&i).copied(), "user {i}");
        }
    }

    #[test]
    fn events_respect_access_control_and_order() {
        let d = dataset(200);
        let mut last = i64::MAX;
        let mut count = 0;
        for pos in 0..(14 * d.users) {
            for e in d.slot_events(pos).into_iter().rev() {
                assert!(e.at_ms <= last);
                last = e.at_ms;
                count += 1;
                let app = &d.apps[e.app as usize];
                let groups = d.memberships(e.user);
                assert!(app.weight > 0.0);
                assert!(
                    app.groups.is_empty() || app.groups.iter().any(|g| groups.contains(g)),
                    "event for app without access"
                );
            }
        }
        assert!(
            (200..20_000).contains(&count),
            "{count} events in 14 days for 200 users"
        );
    }
}
