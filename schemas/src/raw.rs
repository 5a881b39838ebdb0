//! The raw event envelope (`avro/raw_event.avsc`): one PingOne observation, JSON kept verbatim.
//!
//! The producer builds a [`RawEvent`] per entity, activity or sync marker and writes it with
//! [`RawEvent::to_avro_datum`]; the transformer reads it back with [`RawEvent::from_avro_datum`].
//! See `schemas/README.md` for what each `kind` carries.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::SchemaError;

/// The Avro schema of the raw event envelope, as registered in the schema registry.
pub const RAW_EVENT_SCHEMA: &str = include_str!("../avro/raw_event.avsc");

/// The parsed raw event schema, parsed once per process.
///
/// # Panics
/// Never at run time for a released build: the schema file is compiled in and a unit test parses it.
pub fn raw_event_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        #[allow(clippy::expect_used)]
        Schema::parse_str(RAW_EVENT_SCHEMA)
            .expect("raw_event.avsc is valid Avro (checked by tests)")
    })
}

/// A writer for [`raw_event_schema`], built once. Values are built from typed fields, so
/// per-call validation (the slow part of apache-avro's writer) is off; tests check round trips.
fn raw_event_writer() -> Result<&'static GenericDatumWriter<'static>, SchemaError> {
    static WRITER: OnceLock<GenericDatumWriter<'static>> = OnceLock::new();
    if let Some(writer) = WRITER.get() {
        return Ok(writer);
    }
    let writer = GenericDatumWriter::builder(raw_event_schema())
        .validate(false)
        .build()?;
    Ok(WRITER.get_or_init(|| writer))
}

/// The values of [`RawEvent::kind`] that this version knows. Readers must skip other values.
pub mod kind {
    /// A snapshot sync of a tenant begins.
    pub const SYNC_STARTED: &str = "sync_started";
    /// A snapshot sync of a tenant completed: every entity of the sync was written before it.
    pub const SYNC_COMPLETED: &str = "sync_completed";
    /// A user (one element of `_embedded.users`).
    pub const USER: &str = "user";
    /// A group (one element of `_embedded.groups`).
    pub const GROUP: &str = "group";
    /// An application (one element of `_embedded.applications`).
    pub const APPLICATION: &str = "application";
    /// A member of a group that decides application access; `entity_id` is `<groupId>/<userId>`.
    pub const GROUP_MEMBERSHIP: &str = "group_membership";
    /// An audit activity (one element of `_embedded.activities`).
    pub const ACTIVITY: &str = "activity";
    /// PingOne's sign-on counts of one application (one element of
    /// `_embedded.applicationSignons`, verbatim): `entity_id` is the application id, no sync id.
    pub const APPLICATION_SIGNONS: &str = "application_signons";
    /// Stands in for an entity or activity too big for one raw record
    /// ([`crate::topics::MAX_RECORD_BYTES`]): `entity_id` and `sync_id` are those of the
    /// original; the payload is an [`super::Oversized`].
    pub const OVERSIZED: &str = "oversized";
}

/// SHA-256 of `bytes` in lowercase hex: the `sha256` of an [`Oversized`] marker (of the
/// PingOne JSON) and of a cut dead letter's `original_sha256` header.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The payload of an `oversized` marker: what the original was, and how to recognise it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Oversized {
    /// The `kind` the original would have had (`user`, `group`, `application`,
    /// `group_membership` or `activity`).
    pub kind: String,
    /// The PingOne id of the original (as in its `entity_id`).
    pub entity_id: String,
    /// Bytes of the original PingOne JSON.
    pub size: u64,
    /// SHA-256 of the original PingOne JSON, lowercase hex.
    pub sha256: String,
    /// The record limit it exceeded ([`crate::topics::MAX_RECORD_BYTES`] when written).
    pub limit: u64,
}

/// One raw observation of PingOne, as written on the raw topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Operator-chosen tenant id; also the record key.
    pub tenant_id: String,
    /// PingOne environment id (a UUID).
    pub environment_id: String,
    /// PingOne region code (`com`, `ca`, `eu`, `asia`, `com.au`, `sg`).
    pub region: String,
    /// What the event describes; one of [`kind`], or a newer kind readers skip.
    pub kind: String,
    /// PingOne id of the entity; `None` for sync markers.
    pub entity_id: Option<String>,
    /// The snapshot sync this event belongs to; `None` for activities.
    pub sync_id: Option<String>,
    /// When the producer received the data, in milliseconds since the Unix epoch.
    pub observed_at_ms: i64,
    /// The PingOne JSON verbatim, or the marker JSON for sync markers.
    pub payload: String,
    /// Version of the producer that wrote the event.
    pub producer_version: String,
}

impl RawEvent {
    /// Encodes the event as an Avro datum (no wire-format header) of [`raw_event_schema`].
    ///
    /// # Errors
    /// [`SchemaError::Avro`] if the value does not match the schema (a bug, not bad input).
    pub fn to_avro_datum(&self) -> Result<Vec<u8>, SchemaError> {
        let opt = |v: &Option<String>| match v {
            Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let record = Value::Record(vec![
            ("tenant_id".into(), Value::String(self.tenant_id.clone())),
            (
                "environment_id".into(),
                Value::String(self.environment_id.clone()),
            ),
            ("region".into(), Value::String(self.region.clone())),
            ("kind".into(), Value::String(self.kind.clone())),
            ("entity_id".into(), opt(&self.entity_id)),
            ("sync_id".into(), opt(&self.sync_id)),
            (
                "observed_at".into(),
                Value::TimestampMillis(self.observed_at_ms),
            ),
            ("payload".into(), Value::String(self.payload.clone())),
            (
                "producer_version".into(),
                Value::String(self.producer_version.clone()),
            ),
        ]);
        Ok(raw_event_writer()?.write_value_to_vec(record)?)
    }

    /// Decodes an Avro datum written with `writer_schema` (the raw event schema of any
    /// compatible version) into a [`RawEvent`]. A writer schema with the current fields, in
    /// their order and with their types (whatever its docs), is read directly from the bytes, the
    /// transformer's hot path; any other goes through apache-avro's schema resolution.
    ///
    /// # Errors
    /// [`SchemaError::Avro`] for bytes that are not a datum of `writer_schema`, and
    /// [`SchemaError::Field`] when a field is missing or of the wrong type,
    /// [`SchemaError::TrailingBytes`] when bytes follow the datum.
    pub fn from_avro_datum(writer_schema: &Schema, bytes: &[u8]) -> Result<Self, SchemaError> {
        let mut event = RawEvent::default();
        event.read_avro_datum(writer_schema, bytes)?;
        Ok(event)
    }

    /// As [`RawEvent::from_avro_datum`], into `self`, reusing its strings' allocations: how a
    /// consumer decodes one event after another without allocating for each. On error, `self`
    /// holds a mix of old and new fields.
    ///
    /// # Errors
    /// As [`RawEvent::from_avro_datum`].
    pub fn read_avro_datum(
        &mut self,
        writer_schema: &Schema,
        mut bytes: &[u8],
    ) -> Result<(), SchemaError> {
        if same_layout(writer_schema) {
            return decode_direct_into(bytes, self);
        }
        let reader = GenericDatumReader::builder(writer_schema)
            .reader_schema(raw_event_schema())
            .build()?;
        let value = reader.read_value(&mut bytes)?;
        crate::expect_end(bytes)?;
        *self = Self::from_value(value)?;
        Ok(())
    }

    fn from_value(value: Value) -> Result<Self, SchemaError> {
        let Value::Record(fields) = value else {
            return Err(SchemaError::Field {
                field: "<record>",
                reason: "not a record",
            });
        };
        let mut event = RawEvent {
            tenant_id: String::new(),
            environment_id: String::new(),
            region: String::new(),
            kind: String::new(),
            entity_id: None,
            sync_id: None,
            observed_at_ms: 0,
            payload: String::new(),
            producer_version: String::new(),
        };
        for (name, value) in fields {
            match name.as_str() {
                "tenant_id" => event.tenant_id = string("tenant_id", value)?,
                "environment_id" => event.environment_id = string("environment_id", value)?,
                "region" => event.region = string("region", value)?,
                "kind" => event.kind = string("kind", value)?,
                "entity_id" => event.entity_id = optional_string("entity_id", value)?,
                "sync_id" => event.sync_id = optional_string("sync_id", value)?,
                "observed_at" => {
                    event.observed_at_ms = match value {
                        Value::TimestampMillis(v) | Value::Long(v) => v,
                        _ => {
                            return Err(SchemaError::Field {
                                field: "observed_at",
                                reason: "not a timestamp",
                            });
                        }
                    }
                }
                "payload" => event.payload = string("payload", value)?,
                "producer_version" => event.producer_version = string("producer_version", value)?,
                _ => {}
            }
        }
        Ok(event)
    }
}

/// The current schema's fields in order: (name, type) with `S` string, `O` `["null","string"]`,
/// `T` long or timestamp-millis.
const LAYOUT: [(&str, u8); 9] = [
    ("tenant_id", b'S'),
    ("environment_id", b'S'),
    ("region", b'S'),
    ("kind", b'S'),
    ("entity_id", b'O'),
    ("sync_id", b'O'),
    ("observed_at", b'T'),
    ("payload", b'S'),
    ("producer_version", b'S'),
];

/// Whether datums written with `writer` are laid out as [`LAYOUT`]: then [`decode_direct`]
/// reads them exactly as schema resolution would.
fn same_layout(writer: &Schema) -> bool {
    let Schema::Record(record) = writer else {
        return false;
    };
    record.fields.len() == LAYOUT.len()
        && record.fields.iter().zip(LAYOUT).all(|(f, (name, ty))| {
            f.name == name
                && match (ty, &f.schema) {
                    (b'S', Schema::String) | (b'T', Schema::Long | Schema::TimestampMillis) => true,
                    (b'O', Schema::Union(u)) => {
                        matches!(u.variants(), [Schema::Null, Schema::String])
                    }
                    _ => false,
                }
        })
}

/// Reads Avro binary (specification "Binary Encoding") in [`LAYOUT`].
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn long(&mut self, field: &'static str) -> Result<i64, SchemaError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or(SchemaError::Field {
                field,
                reason: "datum ends inside a number",
            })?;
            self.0 = rest;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                #[allow(clippy::cast_possible_wrap)]
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(SchemaError::Field {
            field,
            reason: "number longer than 10 bytes",
        })
    }

    fn str(&mut self, field: &'static str) -> Result<&str, SchemaError> {
        let len = usize::try_from(self.long(field)?).map_err(|_| SchemaError::Field {
            field,
            reason: "negative string length",
        })?;
        if len > self.0.len() {
            return Err(SchemaError::Field {
                field,
                reason: "datum ends inside a string",
            });
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        // SIMD validation: the payload (a whole PingOne object as JSON) is most of each event,
        // and `std::str::from_utf8` was 2.9 % of the transformer's samples.
        simdutf8::basic::from_utf8(bytes).map_err(|_| SchemaError::Field {
            field,
            reason: "string is not UTF-8",
        })
    }

    /// Reads a string into `into`, reusing its allocation.
    fn string_into(&mut self, field: &'static str, into: &mut String) -> Result<(), SchemaError> {
        let s = self.str(field)?;
        into.clear();
        into.push_str(s);
        Ok(())
    }

    /// Reads an optional string into `into`, reusing its allocation.
    fn optional_string_into(
        &mut self,
        field: &'static str,
        into: &mut Option<String>,
    ) -> Result<(), SchemaError> {
        match self.long(field)? {
            0 => {
                *into = None;
                Ok(())
            }
            1 => {
                let s = self.str(field)?;
                match into {
                    Some(into) => {
                        into.clear();
                        into.push_str(s);
                    }
                    None => *into = Some(s.to_owned()),
                }
                Ok(())
            }
            _ => Err(SchemaError::Field {
                field,
                reason: "union branch out of range",
            }),
        }
    }
}

/// Decodes a datum laid out as [`LAYOUT`] into `event`, reusing its strings' allocations.
/// On error, `event` holds a mix of old and new fields.
fn decode_direct_into(bytes: &[u8], event: &mut RawEvent) -> Result<(), SchemaError> {
    let mut r = Reader(bytes);
    r.string_into("tenant_id", &mut event.tenant_id)?;
    r.string_into("environment_id", &mut event.environment_id)?;
    r.string_into("region", &mut event.region)?;
    r.string_into("kind", &mut event.kind)?;
    r.optional_string_into("entity_id", &mut event.entity_id)?;
    r.optional_string_into("sync_id", &mut event.sync_id)?;
    event.observed_at_ms = r.long("observed_at")?;
    r.string_into("payload", &mut event.payload)?;
    r.string_into("producer_version", &mut event.producer_version)?;
    crate::expect_end(r.0)
}

fn string(field: &'static str, value: Value) -> Result<String, SchemaError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(SchemaError::Field {
            field,
            reason: "not a string",
        }),
    }
}

fn optional_string(field: &'static str, value: Value) -> Result<Option<String>, SchemaError> {
    match value {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            other => string(field, other).map(Some),
        },
        Value::Null => Ok(None),
        other => string(field, other).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawEvent {
        RawEvent {
            tenant_id: "acme".into(),
            environment_id: "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f".into(),
            region: "eu".into(),
            kind: kind::USER.into(),
            entity_id: Some("u-1".into()),
            sync_id: None,
            observed_at_ms: 1_795_000_000_123,
            payload: r#"{"id":"u-1","username":"ada"}"#.into(),
            producer_version: "0.1.0".into(),
        }
    }

    #[test]
    fn round_trips_through_avro() {
        let event = sample();
        let bytes = event.to_avro_datum().unwrap();
        let back = RawEvent::from_avro_datum(raw_event_schema(), &bytes).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn strings_are_checked_for_utf8_wherever_the_bad_byte_is() {
        // Multi-byte characters and a payload longer than one SIMD block pass unchanged.
        let mut event = sample();
        event.payload = format!(r#"{{"id":"u-1","name":"Zoë 日本 {}"}}"#, "x".repeat(200));
        let bytes = event.to_avro_datum().unwrap();
        assert_eq!(
            RawEvent::from_avro_datum(raw_event_schema(), &bytes).unwrap(),
            event
        );
        // One invalid byte at the start, in the middle or at the end of the payload, or in
        // the tenant id, is refused as a string that is not UTF-8.
        let payload_at = bytes
            .windows(event.payload.len())
            .position(|w| w == event.payload.as_bytes())
            .unwrap();
        let tenant_at = bytes.windows(4).position(|w| w == b"acme").unwrap();
        let end = payload_at + event.payload.len() - 1;
        for at in [payload_at, payload_at + 100, end, tenant_at] {
            let mut bad = bytes.clone();
            bad[at] = 0xff;
            let err = RawEvent::from_avro_datum(raw_event_schema(), &bad).unwrap_err();
            assert!(err.to_string().contains("not UTF-8"), "byte {at}: {err}");
        }
    }

    #[test]
    fn rejects_truncated_bytes() {
        let bytes = sample().to_avro_datum().unwrap();
        let err = RawEvent::from_avro_datum(raw_event_schema(), &bytes[..bytes.len() / 2]);
        assert!(err.is_err());
    }

    /// A datum with garbage after it is not one datum of the schema (it used to be accepted).
    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = sample().to_avro_datum().unwrap();
        bytes.extend_from_slice(b"garbage");
        let err = RawEvent::from_avro_datum(raw_event_schema(), &bytes).unwrap_err();
        assert!(matches!(err, SchemaError::TrailingBytes(7)), "{err}");
        assert_eq!(err.to_string(), "7 bytes after the avro datum");
    }

    /// The direct reader against apache-avro's resolution of the same bytes: equal events for
    /// many shapes, the same verdict (error or not) for every cut and corruption, and the direct
    /// path really taken for the current schema and not for another layout.
    #[test]
    fn the_direct_reader_equals_schema_resolution() {
        let generic = |bytes: &[u8]| -> Result<RawEvent, SchemaError> {
            let mut rest = bytes;
            let reader = GenericDatumReader::builder(raw_event_schema())
                .reader_schema(raw_event_schema())
                .build()?;
            let value = reader.read_value(&mut rest)?;
            crate::expect_end(rest)?;
            RawEvent::from_value(value)
        };
        assert!(same_layout(raw_event_schema()));
        let mut events = vec![sample()];
        for i in 0..200_i64 {
            let mut e = sample();
            e.tenant_id = "t".repeat(usize::try_from(i % 7).unwrap());
            e.entity_id = (i % 3 != 0).then(|| format!("é-{i}"));
            e.sync_id = (i % 2 == 0).then(|| "s".repeat(usize::try_from(i).unwrap()));
            e.observed_at_ms = i.pow(7) * if i % 2 == 0 { -1 } else { 1 };
            e.payload = "x".repeat(usize::try_from(i * 13).unwrap());
            events.push(e);
        }
        let decode_direct = |bytes: &[u8]| {
            let mut e = RawEvent::default();
            decode_direct_into(bytes, &mut e).map(|()| e)
        };
        // One event reused for every decode, as the live loop does: nothing of the previous
        // event may remain (an entity id after none, shorter strings after longer ones).
        let mut reused = RawEvent::default();
        for e in events.iter().rev() {
            let bytes = e.to_avro_datum().unwrap();
            reused.read_avro_datum(raw_event_schema(), &bytes).unwrap();
            assert_eq!(&reused, e);
        }
        for e in &events {
            let bytes = e.to_avro_datum().unwrap();
            assert_eq!(&decode_direct(&bytes).unwrap(), e);
            assert_eq!(&generic(&bytes).unwrap(), e);
            for cut in 0..bytes.len() {
                assert!(decode_direct(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            for at in 0..bytes.len().min(40) {
                let mut bad = bytes.clone();
                bad[at] ^= 0xff;
                assert_eq!(
                    decode_direct(&bad).ok(),
                    generic(&bad).ok(),
                    "byte {at} flipped"
                );
            }
        }
        // Another layout (a field added) is resolved, not read directly.
        let mut json: serde_json::Value = serde_json::from_str(RAW_EVENT_SCHEMA).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "x", "type": "string", "default": ""}));
        let wider = Schema::parse_str(&json.to_string()).unwrap();
        assert!(!same_layout(&wider));
    }

    #[test]
    fn oversized_payloads_round_trip_as_documented() {
        let o: Oversized = serde_json::from_str(
            r#"{"kind":"user","entity_id":"u-1","size":1153433,"sha256":"ab","limit":1032192}"#,
        )
        .unwrap();
        assert_eq!((o.kind.as_str(), o.size), (kind::USER, 1_153_433));
        assert_eq!(
            serde_json::from_str::<Oversized>(&serde_json::to_string(&o).unwrap()).unwrap(),
            o
        );
    }
}
