//! Pure normalization: PingOne JSON (the `payload` of a raw event) to the usage-metadata
//! records of [`schemas::usage`]. No I/O and no state, so every rule is covered by table tests.
//!
//! [`user`] and [`application`] return the record itself with every field that comes from the
//! JSON filled and the others (tenant, environment, sync id, access groups, counts, provenance)
//! left at their defaults: the processor, which knows them, sets those.
//!
//! Rules for odd input, applied everywhere:
//! - an absent key, a JSON `null` or a value of another type gives `None` (never an error),
//!   except for ids, which are required;
//! - booleans also accept the strings `"true"` / `"false"` (any case);
//! - strings also accept numbers (written as JSON writes them);
//! - times must be RFC 3339; anything else gives `None`;
//! - enum-like strings (`account.status`, `verifyStatus`, …) are kept verbatim, even values this
//!   version has never seen;
//! - unknown keys are ignored (the raw topic keeps the JSON).

use schemas::usage::{Application, UserUsage};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::json::{Bail, Key, Leaf, Obj, Pick, Scan};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why a payload could not be normalized; the raw event goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The payload is not JSON.
    #[error("payload is not valid json: {0}")]
    InvalidJson(String),
    /// The payload is JSON but not an object.
    #[error("payload is not a json object")]
    NotAnObject,
    /// A required field is absent, empty or not a string.
    #[error("required field `{0}` is missing or not a non-empty string")]
    MissingField(&'static str),
    /// The envelope's `entity_id` names another entity than the payload.
    #[error("entity_id `{entity_id}` does not match payload id `{payload_id}`")]
    EntityMismatch {
        /// `entity_id` of the raw event.
        entity_id: String,
        /// `id` inside the payload.
        payload_id: String,
    },
    /// A required envelope field is absent.
    #[error("raw event field `{0}` is required for this kind")]
    MissingEnvelope(&'static str),
    /// The `entity_id` of a group membership is not `<groupId>/<userId>`.
    #[error("group_membership entity_id `{0}` is not `<groupId>/<userId>`")]
    BadMembershipId(String),
    /// The envelope's tenant id is empty or contains `/` (it starts every output key).
    #[error("tenant_id `{0}` is empty or contains `/`")]
    BadTenant(String),
    /// A time that decides the output is not RFC 3339.
    #[error("field `{field}` is not an rfc 3339 time: `{value}`")]
    BadTime {
        /// JSON path of the field.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// Parses a payload into a JSON object.
///
/// # Errors
/// [`NormalizeError::InvalidJson`] or [`NormalizeError::NotAnObject`].
pub fn parse_object(payload: &str) -> Result<Map<String, Value>, NormalizeError> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NormalizeError::NotAnObject),
        Err(e) => Err(NormalizeError::InvalidJson(e.to_string())),
    }
}

/// Follows a dotted path (`"account.status"`) through nested objects.
fn at<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A string at `path`: strings verbatim, numbers as JSON writes them, anything else `None`.
pub fn string_at(obj: &Map<String, Value>, path: &str) -> Option<String> {
    match at(obj, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean at `path`: JSON booleans, or the strings `true` / `false` in any case.
pub fn bool_at(obj: &Map<String, Value>, path: &str) -> Option<bool> {
    match at(obj, path)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 string, sub-millisecond digits dropped
/// toward the past (floor, as Avro's `timestamp-millis` counts: 1969-12-31T23:59:59.9999Z is
/// -1, not 0).
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Some(ms) = utc_time_ms(s) {
        return Some(ms);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// The form PingOne writes, `YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z`, read directly (the `time`
/// crate's RFC 3339 parser was 3 % of the transformer's profile); `None` for anything else,
/// which [`parse_time_ms`] leaves to the `time` crate. The tests compare both on generated
/// times.
fn utc_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        mo0,
        mo1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        mi0,
        mi1,
        b':',
        s0,
        s1,
        rest @ ..,
    ] = b
    else {
        return None;
    };
    let num = |digits: &[u8]| {
        digits.iter().try_fold(0_i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let year = num(&[*y0, *y1, *y2, *y3])?;
    let month = num(&[*mo0, *mo1])?;
    let day = num(&[*d0, *d1])?;
    let hour = num(&[*h0, *h1])?;
    let minute = num(&[*mi0, *mi1])?;
    let second = num(&[*s0, *s1])?;
    let millis = match rest {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            num(fraction)?;
            // The first three digits, as milliseconds; the others are dropped (the floor).
            (0..3).fold(0, |ms, i| {
                ms * 10 + fraction.get(i).map_or(0, |&c| i64::from(c - b'0'))
            })
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days from 1970-01-01 of the proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// An RFC 3339 time at `path` in milliseconds since the Unix epoch; `None` when absent or odd.
pub fn time_at(obj: &Map<String, Value>, path: &str) -> Option<i64> {
    match at(obj, path)? {
        Value::String(s) => parse_time_ms(s),
        _ => None,
    }
}

fn required_id(obj: &Map<String, Value>, path: &'static str) -> Result<String, NormalizeError> {
    required(at(obj, path).and_then(Value::as_str), path).map(str::to_owned)
}

/// A required id: a string that is not blank; else [`NormalizeError::MissingField`] `field`.
fn required<'a>(id: Option<&'a str>, field: &'static str) -> Result<&'a str, NormalizeError> {
    id.filter(|s| !s.trim().is_empty())
        .ok_or(NormalizeError::MissingField(field))
}

fn check_entity(entity_id: Option<&str>, payload_id: &str) -> Result<(), NormalizeError> {
    match entity_id {
        Some(e) if e != payload_id => Err(NormalizeError::EntityMismatch {
            entity_id: e.to_owned(),
            payload_id: payload_id.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The fields of a PingOne user that normalization reads, borrowed from the payload
/// ([`crate::json`]); every other field is skipped unparsed.
#[derive(Debug, Default)]
struct UserFields<'a> {
    not_object: bool,
    id: Leaf<'a>,
    username: Leaf<'a>,
    email: Leaf<'a>,
    enabled: Leaf<'a>,
    mfa_enabled: Leaf<'a>,
    user_type: Leaf<'a>,
    verify_status: Leaf<'a>,
    created_at: Leaf<'a>,
    updated_at: Leaf<'a>,
    name: Obj<'a>,
    address: Obj<'a>,
    account: Obj<'a>,
    lifecycle: Obj<'a>,
    population: Obj<'a>,
    identity_provider: Obj<'a>,
    last_sign_on: Obj<'a>,
}

/// Where a user's field goes in [`UserFields`]: a value, or the fields a [`Pick`] reads of a
/// nested object.
enum Slot<'a> {
    Leaf(for<'u> fn(&'u mut UserFields<'a>) -> &'u mut Leaf<'a>),
    Obj(Pick, for<'u> fn(&'u mut UserFields<'a>) -> &'u mut Obj<'a>),
}

/// The slot of a user's top-level `key`; `None` for the fields normalization does not read.
/// Both readers of a user (the scan and the `serde_json` path) go through this one table.
fn user_slot<'a>(key: &str) -> Option<Slot<'a>> {
    Some(match key {
        "id" => Slot::Leaf(|u| &mut u.id),
        "username" => Slot::Leaf(|u| &mut u.username),
        "email" => Slot::Leaf(|u| &mut u.email),
        "enabled" => Slot::Leaf(|u| &mut u.enabled),
        "mfaEnabled" => Slot::Leaf(|u| &mut u.mfa_enabled),
        "type" => Slot::Leaf(|u| &mut u.user_type),
        "verifyStatus" => Slot::Leaf(|u| &mut u.verify_status),
        "createdAt" => Slot::Leaf(|u| &mut u.created_at),
        "updatedAt" => Slot::Leaf(|u| &mut u.updated_at),
        "name" => Slot::Obj(NAME, |u| &mut u.name),
        "address" => Slot::Obj(ADDRESS, |u| &mut u.address),
        "account" => Slot::Obj(ACCOUNT, |u| &mut u.account),
        "lifecycle" => Slot::Obj(STATUS, |u| &mut u.lifecycle),
        "population" => Slot::Obj(ID, |u| &mut u.population),
        "identityProvider" => Slot::Obj(IDENTITY_PROVIDER, |u| &mut u.identity_provider),
        "lastSignOn" => Slot::Obj(AT, |u| &mut u.last_sign_on),
        _ => return None,
    })
}

// The fields read from each nested object of a user (`UserFields`).
const NAME: Pick = Pick::new(&["formatted", "given", "family"]);
const ADDRESS: Pick = Pick::new(&["locality", "region"]);
const ACCOUNT: Pick = Pick::new(&["canAuthenticate", "status"]);
const STATUS: Pick = Pick::new(&["status"]);
const ID: Pick = Pick::new(&["id"]);
const IDENTITY_PROVIDER: Pick = Pick::new(&["type", "id"]);
const AT: Pick = Pick::new(&["at"]);

impl<'a> UserFields<'a> {
    /// The fields of a user read by the fast [`Scan`]; what it bails on is read through
    /// `serde_json` (the [`Deserialize`] below), which reads the same fields.
    fn scan(payload: &'a str) -> Result<Self, Bail> {
        let mut u = UserFields::default();
        let mut s = Scan::new(payload);
        s.object(|key, s| {
            match user_slot(key) {
                Some(Slot::Leaf(field)) => *field(&mut u) = s.leaf()?,
                Some(Slot::Obj(pick, field)) => *field(&mut u) = s.pick(pick)?,
                None => s.skip()?,
            }
            Ok(())
        })?;
        s.end()?;
        Ok(u)
    }
}

impl<'de> Deserialize<'de> for UserFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = UserFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PingOne user object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut u = UserFields::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match user_slot(&key) {
                        Some(Slot::Leaf(field)) => *field(&mut u) = map.next_value()?,
                        Some(Slot::Obj(pick, field)) => {
                            *field(&mut u) = map.next_value_seed(pick)?
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(u)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Self::not_object())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Self::not_object())
            }
        }
        impl UserVisitor {
            fn not_object<'a>() -> UserFields<'a> {
                UserFields {
                    not_object: true,
                    ..UserFields::default()
                }
            }
        }
        d.deserialize_any(UserVisitor)
    }
}

/// Normalizes one element of `_embedded.users` (the JSON text): a [`UserUsage`] with the fields
/// taken from the JSON; the envelope, access group and provenance fields are left at their
/// defaults. A field of an unexpected type is absent, never an error.
///
/// # Errors
/// Invalid JSON, JSON that is not an object, a missing or empty `id`, or an `entity_id` that
/// names another user.
pub fn user(payload: &str, entity_id: Option<&str>) -> Result<UserUsage, NormalizeError> {
    let mut user = UserUsage::default();
    user_into(payload, entity_id, &mut user)?;
    Ok(user)
}

/// As [`user`], written over `out` (every field: the envelope's are reset to their defaults),
/// reusing its strings' allocations: the processor normalizes user after user into one record.
/// On an error `out` holds no particular value.
///
/// # Errors
/// As [`user`].
pub fn user_into(
    payload: &str,
    entity_id: Option<&str>,
    out: &mut UserUsage,
) -> Result<(), NormalizeError> {
    let u = match UserFields::scan(payload) {
        Ok(u) => u,
        Err(Bail) => {
            serde_json::from_str(payload).map_err(|e| NormalizeError::InvalidJson(e.to_string()))?
        }
    };
    user_from_fields(&u, entity_id, out)
}

/// `text` into `slot`, reusing the string already there.
pub(crate) fn put(slot: &mut Option<String>, text: Option<&str>) {
    match (slot.as_mut(), text) {
        (Some(s), Some(t)) => t.clone_into(s),
        (None, Some(t)) => *slot = Some(t.to_owned()),
        (_, None) => *slot = None,
    }
}

/// [`user_into`] from the fields read.
fn user_from_fields(
    u: &UserFields<'_>,
    entity_id: Option<&str>,
    out: &mut UserUsage,
) -> Result<(), NormalizeError> {
    if u.not_object {
        return Err(NormalizeError::NotAnObject);
    }
    let id = required(u.id.as_str(), "id")?;
    check_entity(entity_id, id)?;
    let time = |l: &Leaf<'_>| l.as_str().and_then(parse_time_ms);
    let name = |key| u.name.get(key).text().filter(|s| !s.trim().is_empty());
    // Every field, named: a field added to the schema fails to compile here until it is set.
    let UserUsage {
        tenant_id,
        environment_id,
        user_id,
        username,
        email,
        display_name,
        can_authenticate,
        locality,
        mfa_enabled,
        region,
        status,
        enabled,
        lifecycle_status,
        user_type,
        verify_status,
        population_id,
        identity_provider_type,
        identity_provider_id,
        last_sign_on_at,
        created_at,
        updated_at,
        access_group_ids,
        sync_id,
        source_topic,
        source_partition,
        source_offset,
        observed_at,
    } = out;
    tenant_id.clear();
    environment_id.clear();
    id.clone_into(user_id);
    put(username, u.username.text());
    put(email, u.email.text());
    match (name("formatted"), name("given"), name("family")) {
        (Some(formatted), _, _) => put(display_name, Some(formatted)),
        (None, Some(given), Some(family)) => {
            let s = display_name.get_or_insert_with(String::new);
            s.clear();
            s.push_str(given);
            s.push(' ');
            s.push_str(family);
        }
        (None, Some(one), None) | (None, None, Some(one)) => put(display_name, Some(one)),
        (None, None, None) => *display_name = None,
    }
    *can_authenticate = u.account.get("canAuthenticate").flag();
    put(locality, u.address.get("locality").text());
    *mfa_enabled = u.mfa_enabled.flag();
    put(region, u.address.get("region").text());
    put(status, u.account.get("status").text());
    *enabled = u.enabled.flag();
    put(lifecycle_status, u.lifecycle.get("status").text());
    put(user_type, u.user_type.text());
    put(verify_status, u.verify_status.text());
    put(population_id, u.population.get("id").text());
    put(
        identity_provider_type,
        u.identity_provider.get("type").text(),
    );
    put(identity_provider_id, u.identity_provider.get("id").text());
    *last_sign_on_at = time(u.last_sign_on.get("at"));
    *created_at = time(&u.created_at);
    *updated_at = time(&u.updated_at);
    access_group_ids.clear();
    *sync_id = None;
    source_topic.clear();
    *source_partition = 0;
    *source_offset = 0;
    *observed_at = 0;
    Ok(())
}

/// Normalizes one element of `_embedded.applications`: an [`Application`] with the fields taken
/// from the JSON; the envelope, `authorized_user_count` and provenance fields are left at their
/// defaults.
///
/// `access_control_group_type` is `ANY_GROUP` / `ALL_GROUPS` (or an unseen value, kept), and
/// `None` when there is no group rule (also for a rule that lists no groups).
///
/// # Errors
/// A missing or empty `id`, or an `entity_id` that names another application.
pub fn application(
    obj: &Map<String, Value>,
    entity_id: Option<&str>,
) -> Result<Application, NormalizeError> {
    let application_id = required_id(obj, "id")?;
    check_entity(entity_id, &application_id)?;
    let group_ids: Vec<String> = at(obj, "accessControl.group.groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| g.get("id").and_then(Value::as_str))
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let group_type = string_at(obj, "accessControl.group.type");
    // A rule without groups restricts nothing we can evaluate: treat it as no group rule.
    let (group_type, group_ids) = if group_ids.is_empty() {
        (None, Vec::new())
    } else {
        (
            Some(group_type.unwrap_or_else(|| "ANY_GROUP".to_owned())),
            group_ids,
        )
    };
    Ok(Application {
        application_id,
        name: string_at(obj, "name"),
        app_type: string_at(obj, "type"),
        protocol: string_at(obj, "protocol"),
        enabled: bool_at(obj, "enabled"),
        access_control_role_type: string_at(obj, "accessControl.role.type"),
        access_control_group_type: group_type,
        access_control_group_ids: group_ids,
        ..Application::default()
    })
}

/// Whether a user who is a member of `member_of` (sorted) may use an application with this
/// group rule. No rule: everyone; `ALL_GROUPS`: every listed group; otherwise (`ANY_GROUP` or an
/// unseen type): at least one listed group.
pub fn may_use(group_type: Option<&str>, group_ids: &[String], member_of: &[String]) -> bool {
    match group_type {
        None => true,
        Some(_) if group_ids.is_empty() => true,
        Some("ALL_GROUPS") => group_ids.iter().all(|g| member_of.binary_search(g).is_ok()),
        Some(_) => group_ids.iter().any(|g| member_of.binary_search(g).is_ok()),
    }
}

/// Splits a group membership's `entity_id` (`<groupId>/<userId>`).
///
/// # Errors
/// [`NormalizeError::BadMembershipId`] when either side is empty or the `/` is missing.
pub fn membership(entity_id: Option<&str>) -> Result<(String, String), NormalizeError> {
    let id = entity_id.ok_or(NormalizeError::MissingEnvelope("entity_id"))?;
    match id.split_once('/') {
        Some((g, u)) if !g.is_empty() && !u.is_empty() && !u.contains('/') => {
            Ok((g.to_owned(), u.to_owned()))
        }
        _ => Err(NormalizeError::BadMembershipId(id.to_owned())),
    }
}

/// What an audit activity means for the usage records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// `USER.ACCESS_ALLOWED`: a user was let into an application.
    Access {
        /// Activity id (for deduplication and provenance).
        activity_id: String,
        /// `actors.client.id`.
        application_id: String,
        /// `actors.client.name`.
        application_name: Option<String>,
        /// `actors.user.id`.
        user_id: String,
        /// `recordedAt` in milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// `USER.DELETED`: the user is gone from PingOne.
    UserDeleted {
        /// Activity id.
        activity_id: String,
        /// The deleted user's id.
        user_id: String,
    },
    /// `APPLICATION.DELETED`: the application is gone from PingOne.
    ApplicationDeleted {
        /// Activity id.
        activity_id: String,
        /// The deleted application's id.
        application_id: String,
    },
    /// Any other action type: read, counted, no output.
    Other {
        /// Activity id.
        activity_id: String,
        /// `action.type`, when present.
        action_type: Option<String>,
    },
}

/// A `USER.ACCESS_ALLOWED` activity from what was read of it: the client's and the user's ids
/// (strings), `recordedAt` and the client's name.
fn access(
    activity_id: String,
    [client_id, user_id]: [Option<&str>; 2],
    recorded: Option<String>,
    application_name: Option<String>,
) -> Result<Activity, NormalizeError> {
    let application_id = required(client_id, "actors.client.id")?.to_owned();
    let user_id = required(user_id, "actors.user.id")?.to_owned();
    let recorded = recorded.ok_or(NormalizeError::MissingField("recordedAt"))?;
    let at_ms = parse_time_ms(&recorded).ok_or(NormalizeError::BadTime {
        field: "recordedAt",
        value: recorded,
    })?;
    Ok(Activity::Access {
        activity_id,
        application_id,
        application_name,
        user_id,
        at_ms,
    })
}

/// The id of the first `resources[]` element whose `type` is `resource_type` (any case).
fn resource_id(obj: &Map<String, Value>, resource_type: &str) -> Option<String> {
    obj.get("resources")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(resource_type))
        })
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// One period of PingOne's sign-on count of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignonPeriod {
    /// `startDate`, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// `endDate`, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// `signons`.
    pub signons: i64,
    /// `partial` (absent: false).
    pub partial: bool,
}

/// Reads one element of `_embedded.applicationSignons`: the application id (`id`, or
/// `application.id`) and its periods (`authentication`, a list of periods or one period).
///
/// # Errors
/// A missing application id, no `authentication`, or a period without a readable `startDate`,
/// `endDate` (after its start) or a non-negative integer `signons`.
pub fn application_signons(
    obj: &Map<String, Value>,
    entity_id: Option<&str>,
) -> Result<(String, Vec<SignonPeriod>), NormalizeError> {
    let app = required_id(obj, "id").or_else(|_| required_id(obj, "application.id"))?;
    check_entity(entity_id, &app)?;
    let periods: Vec<&Map<String, Value>> = match obj.get("authentication") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(one)) => vec![one],
        _ => return Err(NormalizeError::MissingField("authentication")),
    };
    let time = |p: &Map<String, Value>, key: &str, field: &'static str| match p.get(key) {
        Some(Value::String(s)) => parse_time_ms(s).ok_or_else(|| NormalizeError::BadTime {
            field,
            value: s.clone(),
        }),
        _ => Err(NormalizeError::MissingField(field)),
    };
    periods
        .into_iter()
        .map(|p| {
            let start_ms = time(p, "startDate", "authentication.startDate")?;
            let end_ms = time(p, "endDate", "authentication.endDate")?;
            let signons = p
                .get("signons")
                .and_then(Value::as_i64)
                .filter(|n| *n >= 0)
                .ok_or(NormalizeError::MissingField("authentication.signons"))?;
            if end_ms <= start_ms {
                return Err(NormalizeError::BadTime {
                    field: "authentication.endDate",
                    value: format!("{end_ms} ms, not after startDate"),
                });
            }
            Ok(SignonPeriod {
                start_ms,
                end_ms,
                signons,
                partial: p.get("partial").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|periods| (app, periods))
}

/// Classifies one element of `_embedded.activities`.
///
/// The deleted entity of `USER.DELETED` / `APPLICATION.DELETED` is the `resources[]` element of
/// type `USER` / `APPLICATION` (the actor is whoever deleted it); when no such resource is
/// listed, `actors.user.id` / `actors.client.id` is used.
///
/// # Errors
/// A missing activity `id`; for accesses a missing client id, user id or readable `recordedAt`;
/// for deletes no id of the deleted entity.
pub fn activity(
    obj: &Map<String, Value>,
    entity_id: Option<&str>,
) -> Result<Activity, NormalizeError> {
    let activity_id = required_id(obj, "id")?;
    check_entity(entity_id, &activity_id)?;
    let action_type = string_at(obj, "action.type");
    match action_type.as_deref() {
        Some("USER.ACCESS_ALLOWED") => access(
            activity_id,
            [
                at(obj, "actors.client.id").and_then(Value::as_str),
                at(obj, "actors.user.id").and_then(Value::as_str),
            ],
            string_at(obj, "recordedAt"),
            string_at(obj, "actors.client.name"),
        ),
        Some("USER.DELETED") => {
            let user_id = resource_id(obj, "USER")
                .or_else(|| string_at(obj, "actors.user.id"))
                .ok_or(NormalizeError::MissingField("resources[type=USER].id"))?;
            Ok(Activity::UserDeleted {
                activity_id,
                user_id,
            })
        }
        Some("APPLICATION.DELETED") => {
            let application_id = resource_id(obj, "APPLICATION")
                .or_else(|| string_at(obj, "actors.client.id"))
                .ok_or(NormalizeError::MissingField(
                    "resources[type=APPLICATION].id",
                ))?;
            Ok(Activity::ApplicationDeleted {
                activity_id,
                application_id,
            })
        }
        _ => Ok(Activity::Other {
            activity_id,
            action_type,
        }),
    }
}

/// What the fast path reads of an activity; deletes, which look into `resources[]`, are left
/// to [`activity`].
#[derive(Debug, Default)]
struct ActivityFields<'a> {
    id: Leaf<'a>,
    recorded_at: Leaf<'a>,
    action: Obj<'a>,
    client: Obj<'a>,
    user: Obj<'a>,
}

const ACTION: Pick = Pick::new(&["type"]);
const CLIENT: Pick = Pick::new(&["id", "name"]);

impl<'a> ActivityFields<'a> {
    fn scan(payload: &'a str) -> Result<Self, Bail> {
        let mut f = ActivityFields::default();
        let mut s = Scan::new(payload);
        s.object(|key, s| {
            match key {
                "id" => f.id = s.leaf()?,
                "recordedAt" => f.recorded_at = s.leaf()?,
                "action" => f.action = s.pick(ACTION)?,
                "actors" => {
                    // A repeated `actors` replaces the earlier one whole, as in a parsed map.
                    f.client = CLIENT.empty();
                    f.user = ID.empty();
                    if s.at_object() {
                        s.object(|key, s| {
                            match key {
                                "client" => f.client = s.pick(CLIENT)?,
                                "user" => f.user = s.pick(ID)?,
                                _ => s.skip()?,
                            }
                            Ok(())
                        })?;
                    } else {
                        s.skip()?;
                    }
                }
                _ => s.skip()?,
            }
            Ok(())
        })?;
        s.end()?;
        Ok(f)
    }

    /// [`activity`] of these fields; `None` for deletes, which look into `resources[]`.
    fn classify(&self, entity_id: Option<&str>) -> Option<Result<Activity, NormalizeError>> {
        let action_type = self.action.get("type").string();
        match action_type.as_deref() {
            Some("USER.DELETED" | "APPLICATION.DELETED") => None,
            _ => Some(self.read(entity_id, action_type)),
        }
    }

    /// [`Self::classify`] of an access or another action.
    fn read(
        &self,
        entity_id: Option<&str>,
        action_type: Option<String>,
    ) -> Result<Activity, NormalizeError> {
        let activity_id = required(self.id.as_str(), "id")?.to_owned();
        check_entity(entity_id, &activity_id)?;
        if action_type.as_deref() != Some("USER.ACCESS_ALLOWED") {
            return Ok(Activity::Other {
                activity_id,
                action_type,
            });
        }
        access(
            activity_id,
            [self.client.get("id").as_str(), self.user.get("id").as_str()],
            self.recorded_at.string(),
            self.client.get("name").string(),
        )
    }
}

/// [`activity`] of an activity's JSON text. Accesses and other actions are read by the fast
/// [`Scan`]; deletes and whatever the scan bails on are parsed into a map first.
///
/// # Errors
/// As [`parse_object`] and [`activity`].
pub fn activity_payload(
    payload: &str,
    entity_id: Option<&str>,
) -> Result<Activity, NormalizeError> {
    match ActivityFields::scan(payload)
        .ok()
        .and_then(|f| f.classify(entity_id))
    {
        Some(classified) => classified,
        None => activity(&parse_object(payload)?, entity_id),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    fn full_user() -> Value {
        json!({
            "_links": {"self": {"href": "https://api.pingone.eu/v1/environments/e/users/u-1"}},
            "id": "u-1",
            "environment": {"id": "e"},
            "population": {"id": "p-1"},
            "username": "ada",
            "email": "ada@example.com",
            "name": {"given": "Ada", "family": "Lovelace", "formatted": "Ada King"},
            "address": {"locality": "London", "region": "Greater London", "countryCode": "GB"},
            "enabled": true,
            "mfaEnabled": true,
            "lifecycle": {"status": "ACCOUNT_OK"},
            "account": {"canAuthenticate": false, "status": "LOCKED", "lockedAt": "2026-11-01T00:00:00Z"},
            "verifyStatus": "NOT_INITIATED",
            "type": "Contractor",
            "identityProvider": {"type": "SAML", "id": "idp-9"},
            "lastSignOn": {"at": "2026-11-20T10:00:00.123Z", "remoteIp": "10.0.0.1"},
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-11-20T10:00:00+01:00",
            "costCenter": "custom attribute, ignored"
        })
    }

    #[test]
    fn user_with_every_field() {
        let u = user(&full_user().to_string(), Some("u-1")).unwrap();
        assert_eq!(
            u,
            UserUsage {
                user_id: "u-1".into(),
                username: Some("ada".into()),
                email: Some("ada@example.com".into()),
                display_name: Some("Ada King".into()),
                can_authenticate: Some(false),
                locality: Some("London".into()),
                mfa_enabled: Some(true),
                region: Some("Greater London".into()),
                status: Some("LOCKED".into()),
                enabled: Some(true),
                lifecycle_status: Some("ACCOUNT_OK".into()),
                user_type: Some("Contractor".into()),
                verify_status: Some("NOT_INITIATED".into()),
                population_id: Some("p-1".into()),
                identity_provider_type: Some("SAML".into()),
                identity_provider_id: Some("idp-9".into()),
                last_sign_on_at: Some(1_795_168_800_123),
                created_at: Some(1_767_225_600_000),
                updated_at: Some(1_795_165_200_000),
                ..UserUsage::default()
            }
        );
    }

    #[test]
    fn sub_millisecond_digits_round_toward_the_past() {
        for (time, ms) in [
            ("1970-01-01T00:00:00.0009Z", Some(0)),
            ("1969-12-31T23:59:59.9999Z", Some(-1)),
            ("1900-01-01T00:00:00.0001Z", Some(-2_208_988_800_000)),
            ("2026-11-20T10:00:00.1239+01:00", Some(1_795_165_200_123)),
            ("yesterday", None),
        ] {
            assert_eq!(parse_time_ms(time), ms, "{time}");
        }
    }

    /// The direct reading of PingOne's form of time against the `time` crate's, on every
    /// kind of date (leap days, centuries, the epoch's both sides) and on near misses.
    #[test]
    fn utc_times_read_directly_equal_the_time_crates() {
        let by_time_crate = |s: &str| {
            OffsetDateTime::parse(s, &Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok())
        };
        let mut seed: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut direct, mut cases) = (0, 0);
        for _ in 0..200_000 {
            let year = [next(10_000), 1900 + next(200), 2000, 2100, 1600, 1969, 1970]
                [usize::try_from(next(7)).unwrap()];
            let fraction = match next(5) {
                0 => String::new(),
                1 => format!(".{:03}", next(1000)),
                2 => format!(".{}", next(10)),
                3 => format!(".{:09}", next(1_000_000_000)),
                _ => format!(".{:010}", next(10_000_000_000)),
            };
            let mut s = format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
                next(14),
                next(33),
                next(25),
                next(61),
                next(62)
            );
            // Near misses: another character somewhere, or another ending.
            match next(8) {
                0 => {
                    let at = usize::try_from(next(s.len() as u64)).unwrap();
                    let c = [b'x', b'-', b':', b' ', b'9', b'T', b'z', b'+']
                        [usize::try_from(next(8)).unwrap()];
                    let mut bytes = s.into_bytes();
                    bytes[at] = c;
                    s = String::from_utf8(bytes).unwrap();
                }
                1 => {
                    s.pop();
                    s.push_str(
                        ["+01:00", "-23:59", "z", "", "+00:00"][usize::try_from(next(5)).unwrap()],
                    );
                }
                _ => {}
            }
            cases += 1;
            if utc_time_ms(&s).is_some() {
                direct += 1;
            }
            assert_eq!(parse_time_ms(&s), by_time_crate(&s), "{s}");
        }
        assert!(direct * 4 > cases, "read directly: {direct} of {cases}");
        // Leap days are read directly where they exist, and not where they do not.
        for (s, direct) in [
            ("2024-02-29T00:00:00Z", true),
            ("2000-02-29T23:59:59.999Z", true),
            ("1600-02-29T12:00:00Z", true),
            ("2100-02-29T00:00:00Z", false),
            ("2023-02-29T00:00:00Z", false),
            ("2023-04-31T00:00:00Z", false),
        ] {
            assert_eq!(utc_time_ms(s).is_some(), direct, "{s}");
        }
    }

    /// One row per odd input: (what, JSON, check).
    #[test]
    fn user_table() {
        type Check = fn(&UserUsage) -> bool;
        let rows: Vec<(&str, Value, Check)> = vec![
            ("only id", json!({"id": "u"}), |u| {
                *u == UserUsage {
                    user_id: "u".into(),
                    ..UserUsage::default()
                }
            }),
            (
                "nulls are absent",
                json!({"id": "u", "mfaEnabled": null, "address": null, "account": {"status": null}}),
                |u| u.mfa_enabled.is_none() && u.locality.is_none() && u.status.is_none(),
            ),
            (
                "string booleans",
                json!({"id": "u", "mfaEnabled": "TRUE", "enabled": "false", "account": {"canAuthenticate": "True"}}),
                |u| {
                    u.mfa_enabled == Some(true)
                        && u.enabled == Some(false)
                        && u.can_authenticate == Some(true)
                },
            ),
            (
                "wrong types are absent",
                json!({"id": "u", "mfaEnabled": 1, "address": "Main St", "account": [1], "type": {"x": 1}}),
                |u| {
                    u.mfa_enabled.is_none()
                        && u.locality.is_none()
                        && u.can_authenticate.is_none()
                        && u.user_type.is_none()
                },
            ),
            (
                "unseen enum values kept",
                json!({"id": "u", "account": {"status": "SUSPENDED"}, "verifyStatus": "PENDING", "lifecycle": {"status": "NEW"}}),
                |u| {
                    u.status.as_deref() == Some("SUSPENDED")
                        && u.verify_status.as_deref() == Some("PENDING")
                        && u.lifecycle_status.as_deref() == Some("NEW")
                },
            ),
            (
                "numbers as strings",
                json!({"id": "u", "type": 7, "address": {"region": 12.5}}),
                |u| u.user_type.as_deref() == Some("7") && u.region.as_deref() == Some("12.5"),
            ),
            (
                "bad times are absent",
                json!({"id": "u", "lastSignOn": {"at": "yesterday"}, "createdAt": 12345, "updatedAt": "2026-13-01T00:00:00Z"}),
                |u| u.last_sign_on_at.is_none() && u.created_at.is_none() && u.updated_at.is_none(),
            ),
            (
                "given and family when no formatted name",
                json!({"id": "u", "name": {"given": "Grace", "family": "Hopper"}}),
                |u| u.display_name.as_deref() == Some("Grace Hopper"),
            ),
            (
                "family only",
                json!({"id": "u", "name": {"family": "Hopper", "formatted": ""}}),
                |u| u.display_name.as_deref() == Some("Hopper"),
            ),
            (
                "unicode survives",
                json!({"id": "u", "username": "zoë", "address": {"locality": "Zürich"}}),
                |u| u.username.as_deref() == Some("zoë") && u.locality.as_deref() == Some("Zürich"),
            ),
        ];
        for (what, json, check) in rows {
            let u = user(&json.to_string(), None).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(check(&u), "{what}: {u:?}");
        }
    }

    /// The `Value`-based reading that [`user`] replaced (it parsed every payload into an owned
    /// map): the reference its borrowing reads must equal.
    fn reference_user(payload: &str, entity_id: Option<&str>) -> Result<UserUsage, NormalizeError> {
        let obj = parse_object(payload)?;
        let user_id = required_id(&obj, "id")?;
        check_entity(entity_id, &user_id)?;
        let display_name = string_at(&obj, "name.formatted")
            .filter(|s| !s.trim().is_empty())
            .or_else(|| {
                let parts: Vec<String> = ["name.given", "name.family"]
                    .iter()
                    .filter_map(|p| string_at(&obj, p))
                    .filter(|s| !s.trim().is_empty())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            });
        let s = |p| string_at(&obj, p);
        let b = |p| bool_at(&obj, p);
        Ok(UserUsage {
            user_id,
            username: s("username"),
            email: s("email"),
            display_name,
            can_authenticate: b("account.canAuthenticate"),
            locality: s("address.locality"),
            mfa_enabled: b("mfaEnabled"),
            region: s("address.region"),
            status: s("account.status"),
            enabled: b("enabled"),
            lifecycle_status: s("lifecycle.status"),
            user_type: s("type"),
            verify_status: s("verifyStatus"),
            population_id: s("population.id"),
            identity_provider_type: s("identityProvider.type"),
            identity_provider_id: s("identityProvider.id"),
            last_sign_on_at: time_at(&obj, "lastSignOn.at"),
            created_at: time_at(&obj, "createdAt"),
            updated_at: time_at(&obj, "updatedAt"),
            ..UserUsage::default()
        })
    }

    /// Thousands of generated users with every read field given values of every JSON type
    /// (escaped strings, numbers, floats, booleans in both forms, null, objects, arrays, odd
    /// times), repeated keys and non-objects: the borrowing reader equals the `Value` reading.
    #[test]
    fn user_reads_equal_the_value_reading() {
        let values = [
            r#""plain""#,
            r#""esc\"aped \u00e9 \n""#,
            r#""""#,
            r#"" ""#,
            r#""TRUE""#,
            r#""false""#,
            "true",
            "false",
            "null",
            "0",
            "-7",
            "12.5",
            "1e3",
            "18446744073709551616",
            "[1, {\"a\": 2}]",
            "{\"at\": \"2026-11-20T10:00:00Z\", \"status\": \"OK\", \"id\": \"x\"}",
            r#""2026-11-20T10:00:00.123+01:00""#,
            r#""2026-13-01T00:00:00Z""#,
        ];
        let top = [
            "id",
            "username",
            "email",
            "enabled",
            "mfaEnabled",
            "type",
            "verifyStatus",
            "createdAt",
            "updatedAt",
            "name",
            "address",
            "account",
            "lifecycle",
            "population",
            "identityProvider",
            "lastSignOn",
            "_links",
            "custom",
        ];
        let nested = [
            "formatted",
            "given",
            "family",
            "locality",
            "region",
            "canAuthenticate",
            "status",
            "id",
            "type",
            "at",
            "other",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap()
        };
        let mut checked = 0;
        for _ in 0..4000 {
            let mut fields = vec![format!("\"id\": \"u-{}\"", next(3))];
            for _ in 0..next(12) {
                let key = top[next(top.len())];
                let value = if next(2) == 0 {
                    let inner: Vec<String> = (0..next(4))
                        .map(|_| {
                            format!(
                                "\"{}\": {}",
                                nested[next(nested.len())],
                                values[next(values.len())]
                            )
                        })
                        .collect();
                    format!("{{{}}}", inner.join(", "))
                } else {
                    values[next(values.len())].to_owned()
                };
                fields.push(format!("\"{key}\": {value}"));
            }
            let payload = format!("{{{}}}", fields.join(", "));
            let entity = ["u-0", "u-1"].get(next(3)).copied();
            assert_eq!(
                user(&payload, entity),
                reference_user(&payload, entity),
                "{payload}"
            );
            checked += 1;
        }
        for odd in [
            "[1, 2]",
            "\"s\"",
            "7",
            "null",
            "{\"id\": ",
            "{} x",
            "{\"id\": \"a\" \"b\": 1}",
        ] {
            assert_eq!(user(odd, None), reference_user(odd, None), "{odd}");
        }
        assert_eq!(checked, 4000);
    }

    #[test]
    fn user_errors() {
        let rows: Vec<(&str, Value, Option<&str>, NormalizeError)> = vec![
            (
                "no id",
                json!({"username": "x"}),
                None,
                NormalizeError::MissingField("id"),
            ),
            (
                "empty id",
                json!({"id": " "}),
                None,
                NormalizeError::MissingField("id"),
            ),
            (
                "numeric id",
                json!({"id": 5}),
                None,
                NormalizeError::MissingField("id"),
            ),
            (
                "other entity",
                json!({"id": "a"}),
                Some("b"),
                NormalizeError::EntityMismatch {
                    entity_id: "b".into(),
                    payload_id: "a".into(),
                },
            ),
        ];
        for (what, json, entity, err) in rows {
            assert_eq!(user(&json.to_string(), entity), Err(err), "{what}");
        }
    }

    #[test]
    fn parse_object_rejects_non_objects() {
        assert!(matches!(
            parse_object("{not json"),
            Err(NormalizeError::InvalidJson(_))
        ));
        assert_eq!(parse_object("[1,2]"), Err(NormalizeError::NotAnObject));
        assert_eq!(parse_object("\"s\""), Err(NormalizeError::NotAnObject));
        assert!(parse_object("{\"id\":\"x\"}").is_ok());
    }

    #[test]
    fn application_table() {
        let oidc = json!({
            "id": "a-1", "name": "Payroll", "type": "WEB_APP", "protocol": "OPENID_CONNECT",
            "enabled": true, "clientId": "a-1", "grantTypes": ["AUTHORIZATION_CODE"],
            "accessControl": {"role": {"type": "ADMIN_USERS_ONLY"},
                              "group": {"type": "ALL_GROUPS", "groups": [{"id": "g2"}, {"id": "g1"}]}}
        });
        let a = application(&obj(oidc), Some("a-1")).unwrap();
        assert_eq!(a.access_control_group_type.as_deref(), Some("ALL_GROUPS"));
        assert_eq!(
            a.access_control_group_ids,
            vec!["g2".to_owned(), "g1".to_owned()]
        );
        assert_eq!(
            a.access_control_role_type.as_deref(),
            Some("ADMIN_USERS_ONLY")
        );
        assert_eq!(a.protocol.as_deref(), Some("OPENID_CONNECT"));

        let open = application(
            &obj(json!({"id": "a-2", "protocol": "SAML", "type": "NEW_KIND"})),
            None,
        )
        .unwrap();
        assert_eq!(open.access_control_group_type, None);
        assert!(open.access_control_group_ids.is_empty());
        assert_eq!(open.app_type.as_deref(), Some("NEW_KIND"));
        assert_eq!(open.enabled, None);

        let empty_rule =
            json!({"id": "a-3", "accessControl": {"group": {"type": "ANY_GROUP", "groups": []}}});
        assert_eq!(
            application(&obj(empty_rule), None)
                .unwrap()
                .access_control_group_type,
            None
        );

        let untyped = json!({"id": "a-4", "accessControl": {"group": {"groups": [{"id": "g"}, {"name": "no id"}]}}});
        let a = application(&obj(untyped), None).unwrap();
        assert_eq!(a.access_control_group_type.as_deref(), Some("ANY_GROUP"));
        assert_eq!(a.access_control_group_ids, vec!["g".to_owned()]);

        assert_eq!(
            application(&obj(json!({"name": "x"})), None),
            Err(NormalizeError::MissingField("id"))
        );
    }

    #[test]
    fn may_use_table() {
        let g = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let rows = [
            (None, g(&[]), g(&[]), true),
            (Some("ANY_GROUP"), g(&["a", "b"]), g(&["b"]), true),
            (Some("ANY_GROUP"), g(&["a", "b"]), g(&["c"]), false),
            (
                Some("ALL_GROUPS"),
                g(&["a", "b"]),
                g(&["a", "b", "c"]),
                true,
            ),
            (Some("ALL_GROUPS"), g(&["a", "b"]), g(&["a"]), false),
            (Some("SOME_NEW_RULE"), g(&["a"]), g(&["a"]), true),
            (Some("ALL_GROUPS"), g(&[]), g(&[]), true),
        ];
        for (ty, groups, member, expected) in rows {
            assert_eq!(
                may_use(ty, &groups, &member),
                expected,
                "{ty:?} {groups:?} {member:?}"
            );
        }
    }

    #[test]
    fn membership_ids() {
        assert_eq!(membership(Some("g/u")), Ok(("g".into(), "u".into())));
        for bad in ["g", "/u", "g/", "g/u/x", ""] {
            assert_eq!(
                membership(Some(bad)),
                Err(NormalizeError::BadMembershipId(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            membership(None),
            Err(NormalizeError::MissingEnvelope("entity_id"))
        );
    }

    #[test]
    fn activity_table() {
        let access = json!({
            "id": "act-1", "recordedAt": "2026-11-20T10:00:00.000Z", "createdAt": "2026-11-20T10:00:00.010Z",
            "action": {"type": "USER.ACCESS_ALLOWED", "description": "User Access Allowed"},
            "actors": {"client": {"id": "app-1", "name": "Payroll", "type": "CLIENT"},
                       "user": {"id": "u-1", "name": "ada", "type": "USER", "population": {"id": "p"}}},
            "resources": [{"type": "USER", "id": "u-1"}],
            "result": {"status": "SUCCESS"}
        });
        assert_eq!(
            activity(&obj(access.clone()), Some("act-1")).unwrap(),
            Activity::Access {
                activity_id: "act-1".into(),
                application_id: "app-1".into(),
                application_name: Some("Payroll".into()),
                user_id: "u-1".into(),
                at_ms: 1_795_168_800_000,
            }
        );
        let mut no_user = access.clone();
        no_user["actors"]["user"] = Value::Null;
        assert_eq!(
            activity(&obj(no_user), None),
            Err(NormalizeError::MissingField("actors.user.id"))
        );
        let mut bad_time = access.clone();
        bad_time["recordedAt"] = json!("soon");
        assert!(matches!(
            activity(&obj(bad_time), None),
            Err(NormalizeError::BadTime { .. })
        ));

        let deleted = json!({"id": "act-2", "action": {"type": "USER.DELETED"},
            "actors": {"user": {"id": "admin"}}, "resources": [{"type": "USER", "id": "u-9"}]});
        assert_eq!(
            activity(&obj(deleted), None).unwrap(),
            Activity::UserDeleted {
                activity_id: "act-2".into(),
                user_id: "u-9".into()
            }
        );
        let app_deleted = json!({"id": "act-3", "action": {"type": "APPLICATION.DELETED"},
            "resources": [{"type": "application", "id": "app-9"}]});
        assert_eq!(
            activity(&obj(app_deleted), None).unwrap(),
            Activity::ApplicationDeleted {
                activity_id: "act-3".into(),
                application_id: "app-9".into()
            }
        );
        let nothing_deleted = json!({"id": "act-4", "action": {"type": "APPLICATION.DELETED"}});
        assert!(activity(&obj(nothing_deleted), None).is_err());
        let other = json!({"id": "act-5", "action": {"type": "SESSION.CREATED"}});
        assert_eq!(
            activity(&obj(other), None).unwrap(),
            Activity::Other {
                activity_id: "act-5".into(),
                action_type: Some("SESSION.CREATED".into())
            }
        );
        assert_eq!(
            activity(&obj(json!({"action": {}})), None),
            Err(NormalizeError::MissingField("id"))
        );
    }

    /// The serde_json path alone, which the fast scan must agree with.
    fn user_by_serde(payload: &str, entity_id: Option<&str>) -> Result<UserUsage, NormalizeError> {
        let u: UserFields<'_> = serde_json::from_str(payload)
            .map_err(|e| NormalizeError::InvalidJson(e.to_string()))?;
        let mut user = UserUsage::default();
        user_from_fields(&u, entity_id, &mut user)?;
        Ok(user)
    }

    /// A small deterministic generator (xorshift), so that a failure replays.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
        fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
            options[self.below(options.len())]
        }
        /// A JSON value of any kind, including what the scan leaves to serde_json: escapes,
        /// numbers of every form, deep nesting, invalid text.
        fn value(&mut self, depth: usize) -> String {
            let kinds = if depth > 3 { 9 } else { 12 };
            match self.below(kinds) {
                0 => format!(
                    "\"{}\"",
                    self.pick(&[
                        "Ada",
                        "",
                        " ",
                        "ACCOUNT_OK",
                        "true",
                        "FALSE",
                        "2026-11-20T10:00:00.123Z",
                        "2026-13-01T00:00:00Z",
                        "Zoë ✓",
                        "日本"
                    ])
                ),
                1 => format!(
                    "\"{}\"",
                    self.pick(&[
                        "a\\\"b",
                        "\\u00e9t\\u00e9",
                        "tab\\there",
                        "\\ud83d\\ude00",
                        "\\ud800",
                        "bad\\x",
                        "line\nbreak",
                        "\\/"
                    ])
                ),
                2 => self
                    .pick(&[
                        "0",
                        "-1",
                        "42",
                        "3.25",
                        "-0.5",
                        "1e3",
                        "2E-2",
                        "01",
                        "1.",
                        "-",
                        "12345678901234567890",
                        "1.5e400",
                        &"9".repeat(320),
                    ])
                    .to_owned(),
                3 => self
                    .pick(&["true", "false", "null", "tru", "nul", "True"])
                    .to_owned(),
                4 => "{}".to_owned(),
                5 => "[]".to_owned(),
                6 => "\"u-1\"".to_owned(),
                7 => format!("[{}, {}]", self.value(depth + 1), self.value(depth + 1)),
                8 => self.pick(&["\"x\"", "\"y\""]).to_owned(),
                _ => {
                    let keys = [
                        "id",
                        "at",
                        "status",
                        "given",
                        "family",
                        "formatted",
                        "locality",
                        "region",
                        "canAuthenticate",
                        "type",
                        "name",
                        "x",
                        "client",
                        "user",
                    ];
                    let n = self.below(4);
                    let fields: Vec<String> = (0..n)
                        .map(|_| format!("\"{}\": {}", self.pick(&keys), self.value(depth + 1)))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }
            }
        }
        /// An object with some of `keys`, each with a generated value, repeated keys possible.
        fn object(&mut self, keys: &[&str], typical: &Value) -> String {
            let mut fields = Vec::new();
            for key in keys {
                let n = match self.below(10) {
                    0 => 0,
                    1 => 2,
                    _ => 1,
                };
                for _ in 0..n {
                    let value = if self.below(10) == 0 {
                        self.value(0)
                    } else {
                        typical
                            .get(key)
                            .map_or_else(|| self.value(0), Value::to_string)
                    };
                    let ws = self.pick(&["", " ", "\n\t", "\r\n "]);
                    fields.push(format!("{ws}\"{key}\"{ws}:{ws}{value}{ws}"));
                }
            }
            // Shuffle so that order and repeats vary.
            for i in (1..fields.len()).rev() {
                let j = self.below(i + 1);
                fields.swap(i, j);
            }
            let mut text = format!("{{{}}}", fields.join(","));
            // Sometimes break the text: cut it, or add a stray character or trailing garbage.
            match self.below(12) {
                0 if !text.is_empty() => {
                    let mut cut = self.below(text.len());
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                }
                1 => {
                    let mut at = self.below(text.len());
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.insert_str(
                        at,
                        self.pick(&["\"", "\\", "{", "}", ",", ":", "\u{1}", "e", " ", "]"]),
                    );
                }
                2 => text.push_str(self.pick(&[" x", "{}", "\n", ",", " \t"])),
                3 => text = self.value(0),
                _ => {}
            }
            text
        }
    }

    #[test]
    fn the_fast_scan_reads_users_as_serde_json_does() {
        let typical = full_user();
        let keys = [
            "_links",
            "id",
            "environment",
            "population",
            "username",
            "email",
            "name",
            "address",
            "enabled",
            "mfaEnabled",
            "lifecycle",
            "account",
            "verifyStatus",
            "type",
            "identityProvider",
            "lastSignOn",
            "createdAt",
            "updatedAt",
            "costCenter",
        ];
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut scanned, mut cases) = (0, 0);
        let mut recycled = UserUsage {
            tenant_id: "left over".into(),
            sync_id: Some("left over".into()),
            access_group_ids: vec!["left over".into()],
            source_offset: 7,
            ..UserUsage::default()
        };
        for _ in 0..20_000 {
            let payload = g.object(&keys, &typical);
            let entity = g.pick(&["u-1", "u-2"]);
            let entity = (g.below(2) == 0).then_some(entity);
            cases += 1;
            if UserFields::scan(&payload).is_ok() {
                scanned += 1;
            }
            let expected = user_by_serde(&payload, entity);
            assert_eq!(user(&payload, entity), expected, "payload: {payload}");
            // Written over the record of earlier payloads, nothing of theirs is left.
            let into = user_into(&payload, entity, &mut recycled).map(|()| recycled.clone());
            assert_eq!(into, expected, "payload over earlier ones: {payload}");
        }
        // Nesting within serde_json's limit of 128, beyond it, and deep enough to overflow the
        // stack of a scan without a depth limit.
        for depth in [60, 100, 200, 100_000] {
            let payload = format!(
                "{{\"id\": \"u-1\", \"x\": {}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                user(&payload, None),
                user_by_serde(&payload, None),
                "depth {depth}"
            );
        }
        assert!(
            UserFields::scan(&format!("{{\"x\": {}{}}}", "[".repeat(60), "]".repeat(60))).is_ok()
        );
        assert_both_paths_taken(scanned, cases);
    }

    #[test]
    fn the_fast_scan_reads_activities_as_a_parsed_map_does() {
        let typical = json!({
            "id": "act-1", "recordedAt": "2026-11-20T10:00:00.000Z",
            "action": {"type": "USER.ACCESS_ALLOWED"},
            "actors": {"client": {"id": "app-1", "name": "Payroll"}, "user": {"id": "u-1", "name": "ada"}},
            "resources": [{"type": "USER", "id": "u-9"}, {"type": "APPLICATION", "id": "app-9"}],
            "result": {"status": "SUCCESS"}
        });
        let keys = [
            "id",
            "recordedAt",
            "action",
            "actors",
            "resources",
            "result",
        ];
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let (mut scanned, mut cases) = (0, 0);
        for _ in 0..20_000 {
            let mut payload = g.object(&keys, &typical);
            // Vary the action type and the actors' shape in place.
            let action = g.pick(&[
                "USER.ACCESS_ALLOWED",
                "USER.DELETED",
                "APPLICATION.DELETED",
                "USER.UPDATED",
                "user.access_allowed",
            ]);
            payload = payload.replacen("USER.ACCESS_ALLOWED", action, 1);
            if g.below(4) == 0 {
                payload = payload.replacen("\"client\"", "\"user\"", 1);
            }
            let entity = (g.below(2) == 0).then_some("act-1");
            cases += 1;
            if ActivityFields::scan(&payload)
                .ok()
                .and_then(|f| f.classify(entity))
                .is_some()
            {
                scanned += 1;
            }
            let by_map = parse_object(&payload).and_then(|obj| activity(&obj, entity));
            assert_eq!(
                activity_payload(&payload, entity),
                by_map,
                "payload: {payload}"
            );
        }
        assert_both_paths_taken(scanned, cases);
    }

    /// A comparison of the scan with the serde_json path means something only if the scan read
    /// a good share of the generated payloads itself, and bailed to serde_json on some.
    fn assert_both_paths_taken(scanned: usize, cases: usize) {
        assert!(
            scanned * 3 > cases,
            "the scan read {scanned} of {cases} payloads"
        );
        assert!(
            scanned < cases,
            "the scan bailed on none of {cases} payloads"
        );
    }
}
