//! The normalized usage-metadata records the transformer writes (`avro/user_usage.avsc`,
//! `avro/application.avsc`, `avro/app_usage.avsc`, `avro/app_signons.avsc`) and the Rust types
//! that read and write them.
//!
//! Encoding (`to_avro_datum`, the transformer's hot path) is Avro binary written by hand, about
//! ten times faster than apache-avro's generic writer (`schemas/README.md`, "Encoding speed");
//! the tests check it byte for byte against that writer (`to_avro_datum_generic`, apache-avro's
//! schema-aware serde serializer over the derived `Serialize`, so it repeats no field list).
//! Decoding resolves any compatible writer schema to the current one and reads the result
//! through serde. The compatibility tests at the bottom
//! guard `BACKWARD_TRANSITIVE`: every schema under `avro/history/` must stay readable by the
//! current file, so an incompatible edit fails `cargo test -p schemas`.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::{Deserialize, Serialize};

use crate::SchemaError;

/// The Avro schema of [`UserUsage`], as registered in the schema registry.
pub const USER_USAGE_SCHEMA: &str = include_str!("../avro/user_usage.avsc");
/// The Avro schema of [`Application`], as registered in the schema registry.
pub const APPLICATION_SCHEMA: &str = include_str!("../avro/application.avsc");
/// The Avro schema of [`AppUsage`], as registered in the schema registry.
pub const APP_USAGE_SCHEMA: &str = include_str!("../avro/app_usage.avsc");
/// The Avro schema of [`AppSignons`], as registered in the schema registry.
pub const APP_SIGNONS_SCHEMA: &str = include_str!("../avro/app_signons.avsc");

/// A parsed schema plus a writer for it, built once per process.
struct Compiled {
    schema: &'static Schema,
    writer: GenericDatumWriter<'static>,
}

fn compile(
    cell: &'static OnceLock<Option<Compiled>>,
    text: &'static str,
) -> Option<&'static Compiled> {
    cell.get_or_init(|| {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(text).ok()?));
        let writer = GenericDatumWriter::builder(schema).build().ok()?;
        Some(Compiled { schema, writer })
    })
    .as_ref()
}

macro_rules! schema_fn {
    ($name:ident, $compiled:ident, $text:ident, $what:literal) => {
        fn $compiled() -> Result<&'static Compiled, SchemaError> {
            static CELL: OnceLock<Option<Compiled>> = OnceLock::new();
            compile(&CELL, $text).ok_or(SchemaError::Field {
                field: "<schema>",
                reason: concat!($what, " is not valid Avro"),
            })
        }

        #[doc = concat!("The parsed ", $what, " schema (parsed once per process).")]
        ///
        /// # Errors
        /// [`SchemaError::Field`] if the compiled-in schema does not parse (caught by tests).
        pub fn $name() -> Result<&'static Schema, SchemaError> {
            Ok($compiled()?.schema)
        }
    };
}

schema_fn!(
    user_usage_schema,
    user_usage_compiled,
    USER_USAGE_SCHEMA,
    "user_usage.avsc"
);
schema_fn!(
    application_schema,
    application_compiled,
    APPLICATION_SCHEMA,
    "application.avsc"
);
schema_fn!(
    app_usage_schema,
    app_usage_compiled,
    APP_USAGE_SCHEMA,
    "app_usage.avsc"
);
schema_fn!(
    app_signons_schema,
    app_signons_compiled,
    APP_SIGNONS_SCHEMA,
    "app_signons.avsc"
);

/// Usage metadata of one user (`avro/user_usage.avsc`); see the schema for each field's meaning.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct UserUsage {
    pub tenant_id: String,
    pub environment_id: String,
    pub user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub can_authenticate: Option<bool>,
    pub locality: Option<String>,
    pub mfa_enabled: Option<bool>,
    pub region: Option<String>,
    pub status: Option<String>,
    pub enabled: Option<bool>,
    pub lifecycle_status: Option<String>,
    #[serde(rename = "type")]
    pub user_type: Option<String>,
    pub verify_status: Option<String>,
    pub population_id: Option<String>,
    pub identity_provider_type: Option<String>,
    pub identity_provider_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_sign_on_at: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub created_at: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: Option<i64>,
    pub access_group_ids: Vec<String>,
    pub sync_id: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Milliseconds since the Unix epoch.
    pub observed_at: i64,
}

/// One application and who may use it (`avro/application.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct Application {
    pub tenant_id: String,
    pub environment_id: String,
    pub application_id: String,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub app_type: Option<String>,
    pub protocol: Option<String>,
    pub enabled: Option<bool>,
    pub access_control_role_type: Option<String>,
    pub access_control_group_type: Option<String>,
    pub access_control_group_ids: Vec<String>,
    pub authorized_user_count: i64,
    pub sync_id: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Milliseconds since the Unix epoch.
    pub observed_at: i64,
}

/// Accesses of one UTC day (`DailyAccessCount` in `avro/app_usage.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct DailyAccessCount {
    /// Days since the Unix epoch (UTC).
    pub day: i32,
    /// Accesses recorded on that day.
    pub count: i32,
}

/// How one user used one application (`avro/app_usage.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct AppUsage {
    pub tenant_id: String,
    pub environment_id: String,
    pub application_id: String,
    pub user_id: String,
    pub application_name: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_access_at: i64,
    pub access_count_7d: i32,
    pub access_count_30d: i32,
    pub access_count_90d: i32,
    pub access_count_total: i64,
    pub daily_access_counts: Vec<DailyAccessCount>,
    pub last_activity_id: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Milliseconds since the Unix epoch.
    pub observed_at: i64,
}

/// PingOne's count of sign-ons to one application over one period (`avro/app_signons.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct AppSignons {
    pub tenant_id: String,
    pub environment_id: String,
    pub application_id: String,
    /// Milliseconds since the Unix epoch.
    pub period_start: i64,
    /// Milliseconds since the Unix epoch.
    pub period_end: i64,
    pub signons: i64,
    pub partial: bool,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Milliseconds since the Unix epoch.
    pub observed_at: i64,
}

/// Avro binary encoding written directly (specification "Binary Encoding"): the hot path of
/// the transformer. Field order and union branches follow the `.avsc` files; the tests check
/// that the bytes equal apache-avro's generic writer output.
struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    /// `int` and `long`: zigzag, then base-128 varint.
    fn long(&mut self, v: i64) {
        #[allow(clippy::cast_sign_loss)]
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            #[allow(clippy::cast_possible_truncation)]
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        #[allow(clippy::cast_possible_truncation)]
        self.0.push(z as u8);
    }

    fn string(&mut self, v: &str) {
        self.long(i64::try_from(v.len()).unwrap_or(i64::MAX));
        self.0.extend_from_slice(v.as_bytes());
    }

    /// `["null", "string"]`.
    fn opt_string(&mut self, v: Option<&str>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.string(v);
            }
        }
    }

    /// `["null", "boolean"]`.
    fn boolean(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.boolean(v);
            }
        }
    }

    /// `["null", long]` (also with a logical type).
    fn opt_long(&mut self, v: Option<i64>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.long(v);
            }
        }
    }

    /// An array of strings: one block, then the zero count.
    fn strings(&mut self, v: &[String]) {
        if !v.is_empty() {
            self.long(i64::try_from(v.len()).unwrap_or(i64::MAX));
            for s in v {
                self.string(s);
            }
        }
        self.long(0);
    }
}

fn decode<T: for<'de> Deserialize<'de>>(
    writer_schema: &Schema,
    reader_schema: &Schema,
    mut bytes: &[u8],
) -> Result<T, SchemaError> {
    let reader = GenericDatumReader::builder(writer_schema)
        .reader_schema(reader_schema)
        .build()?;
    let value = reader.read_value(&mut bytes)?;
    crate::expect_end(bytes)?;
    Ok(apache_avro::from_value(&value)?)
}

impl UserUsage {
    /// Encodes the record as an Avro datum (no wire-format header) of [`user_usage_schema`].
    ///
    /// # Errors
    /// None today; kept fallible so that encodings may validate in future versions.
    pub fn to_avro_datum(&self) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(256);
        self.write_avro_datum(&mut out)?;
        Ok(out)
    }

    /// As [`Self::to_avro_datum`], appended to `out` (the transformer writes a batch's
    /// records into one buffer).
    ///
    /// # Errors
    /// As [`Self::to_avro_datum`].
    pub fn write_avro_datum(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        let mut e = Enc(out);
        e.string(&self.tenant_id);
        e.string(&self.environment_id);
        e.string(&self.user_id);
        e.opt_string(self.username.as_deref());
        e.opt_string(self.email.as_deref());
        e.opt_string(self.display_name.as_deref());
        e.opt_bool(self.can_authenticate);
        e.opt_string(self.locality.as_deref());
        e.opt_bool(self.mfa_enabled);
        e.opt_string(self.region.as_deref());
        e.opt_string(self.status.as_deref());
        e.opt_bool(self.enabled);
        e.opt_string(self.lifecycle_status.as_deref());
        e.opt_string(self.user_type.as_deref());
        e.opt_string(self.verify_status.as_deref());
        e.opt_string(self.population_id.as_deref());
        e.opt_string(self.identity_provider_type.as_deref());
        e.opt_string(self.identity_provider_id.as_deref());
        e.opt_long(self.last_sign_on_at);
        e.opt_long(self.created_at);
        e.opt_long(self.updated_at);
        e.strings(&self.access_group_ids);
        e.opt_string(self.sync_id.as_deref());
        e.string(&self.source_topic);
        e.long(i64::from(self.source_partition));
        e.long(self.source_offset);
        e.long(self.observed_at);
        Ok(())
    }

    /// The same datum through apache-avro's generic writer (its schema-aware serde
    /// serializer, fields matched by name): the reference the tests compare
    /// [`Self::to_avro_datum`] with byte for byte, and the baseline of its benchmark.
    ///
    /// # Errors
    /// [`SchemaError`] when apache-avro rejects the value.
    pub fn to_avro_datum_generic(&self) -> Result<Vec<u8>, SchemaError> {
        Ok(user_usage_compiled()?.writer.write_ser_to_vec(self)?)
    }

    /// Decodes a datum written with `writer_schema` (any compatible version of the user usage
    /// schema).
    ///
    /// # Errors
    /// [`SchemaError`] when the bytes are not a datum of `writer_schema` or do not resolve.
    pub fn from_avro_datum(writer_schema: &Schema, bytes: &[u8]) -> Result<Self, SchemaError> {
        decode(writer_schema, user_usage_schema()?, bytes)
    }
}

impl Application {
    /// Encodes the record as an Avro datum (no wire-format header) of [`application_schema`].
    ///
    /// # Errors
    /// None today; kept fallible so that encodings may validate in future versions.
    pub fn to_avro_datum(&self) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(192);
        self.write_avro_datum(&mut out)?;
        Ok(out)
    }

    /// As [`Self::to_avro_datum`], appended to `out` (the transformer writes a batch's
    /// records into one buffer).
    ///
    /// # Errors
    /// As [`Self::to_avro_datum`].
    pub fn write_avro_datum(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        let mut e = Enc(out);
        e.string(&self.tenant_id);
        e.string(&self.environment_id);
        e.string(&self.application_id);
        e.opt_string(self.name.as_deref());
        e.opt_string(self.app_type.as_deref());
        e.opt_string(self.protocol.as_deref());
        e.opt_bool(self.enabled);
        e.opt_string(self.access_control_role_type.as_deref());
        e.opt_string(self.access_control_group_type.as_deref());
        e.strings(&self.access_control_group_ids);
        e.long(self.authorized_user_count);
        e.opt_string(self.sync_id.as_deref());
        e.string(&self.source_topic);
        e.long(i64::from(self.source_partition));
        e.long(self.source_offset);
        e.long(self.observed_at);
        Ok(())
    }

    /// The same datum through apache-avro's generic writer (its schema-aware serde
    /// serializer, fields matched by name): the reference the tests compare
    /// [`Self::to_avro_datum`] with byte for byte, and the baseline of its benchmark.
    ///
    /// # Errors
    /// [`SchemaError`] when apache-avro rejects the value.
    pub fn to_avro_datum_generic(&self) -> Result<Vec<u8>, SchemaError> {
        Ok(application_compiled()?.writer.write_ser_to_vec(self)?)
    }

    /// Decodes a datum written with `writer_schema` (any compatible application schema).
    ///
    /// # Errors
    /// [`SchemaError`] when the bytes are not a datum of `writer_schema` or do not resolve.
    pub fn from_avro_datum(writer_schema: &Schema, bytes: &[u8]) -> Result<Self, SchemaError> {
        decode(writer_schema, application_schema()?, bytes)
    }
}

impl AppUsage {
    /// Encodes the record as an Avro datum (no wire-format header) of [`app_usage_schema`].
    ///
    /// # Errors
    /// None today; kept fallible so that encodings may validate in future versions.
    pub fn to_avro_datum(&self) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(192 + 4 * self.daily_access_counts.len());
        self.write_avro_datum(&mut out)?;
        Ok(out)
    }

    /// As [`Self::to_avro_datum`], appended to `out` (the transformer writes a batch's
    /// records into one buffer).
    ///
    /// # Errors
    /// As [`Self::to_avro_datum`].
    pub fn write_avro_datum(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        let mut e = Enc(out);
        e.string(&self.tenant_id);
        e.string(&self.environment_id);
        e.string(&self.application_id);
        e.string(&self.user_id);
        e.opt_string(self.application_name.as_deref());
        e.long(self.last_access_at);
        e.long(i64::from(self.access_count_7d));
        e.long(i64::from(self.access_count_30d));
        e.long(i64::from(self.access_count_90d));
        e.long(self.access_count_total);
        if !self.daily_access_counts.is_empty() {
            e.long(i64::try_from(self.daily_access_counts.len()).unwrap_or(i64::MAX));
            for d in &self.daily_access_counts {
                e.long(i64::from(d.day));
                e.long(i64::from(d.count));
            }
        }
        e.long(0);
        e.string(&self.last_activity_id);
        e.string(&self.source_topic);
        e.long(i64::from(self.source_partition));
        e.long(self.source_offset);
        e.long(self.observed_at);
        Ok(())
    }

    /// The same datum through apache-avro's generic writer (its schema-aware serde
    /// serializer, fields matched by name): the reference the tests compare
    /// [`Self::to_avro_datum`] with byte for byte, and the baseline of its benchmark.
    ///
    /// # Errors
    /// [`SchemaError`] when apache-avro rejects the value.
    pub fn to_avro_datum_generic(&self) -> Result<Vec<u8>, SchemaError> {
        Ok(app_usage_compiled()?.writer.write_ser_to_vec(self)?)
    }

    /// Decodes a datum written with `writer_schema` (any compatible app usage schema).
    ///
    /// # Errors
    /// [`SchemaError`] when the bytes are not a datum of `writer_schema` or do not resolve.
    pub fn from_avro_datum(writer_schema: &Schema, bytes: &[u8]) -> Result<Self, SchemaError> {
        decode(writer_schema, app_usage_schema()?, bytes)
    }
}

impl AppSignons {
    /// Encodes the record as an Avro datum (no wire-format header) of [`app_signons_schema`].
    ///
    /// # Errors
    /// None today; kept fallible so that encodings may validate in future versions.
    pub fn to_avro_datum(&self) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(160);
        self.write_avro_datum(&mut out)?;
        Ok(out)
    }

    /// As [`Self::to_avro_datum`], appended to `out` (the transformer writes a batch's
    /// records into one buffer).
    ///
    /// # Errors
    /// As [`Self::to_avro_datum`].
    pub fn write_avro_datum(&self, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        let mut e = Enc(out);
        e.string(&self.tenant_id);
        e.string(&self.environment_id);
        e.string(&self.application_id);
        e.long(self.period_start);
        e.long(self.period_end);
        e.long(self.signons);
        e.boolean(self.partial);
        e.string(&self.source_topic);
        e.long(i64::from(self.source_partition));
        e.long(self.source_offset);
        e.long(self.observed_at);
        Ok(())
    }

    /// The same datum through apache-avro's generic writer: the tests' reference.
    ///
    /// # Errors
    /// [`SchemaError`] when apache-avro rejects the value.
    pub fn to_avro_datum_generic(&self) -> Result<Vec<u8>, SchemaError> {
        Ok(app_signons_compiled()?.writer.write_ser_to_vec(self)?)
    }

    /// Decodes a datum written with `writer_schema` (any compatible app sign-ons schema).
    ///
    /// # Errors
    /// [`SchemaError`] when the bytes are not a datum of `writer_schema` or do not resolve.
    pub fn from_avro_datum(writer_schema: &Schema, bytes: &[u8]) -> Result<Self, SchemaError> {
        decode(writer_schema, app_signons_schema()?, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use apache_avro::schema_compatibility::SchemaCompatibility;

    use super::*;

    fn user() -> UserUsage {
        UserUsage {
            tenant_id: "acme".into(),
            environment_id: "env".into(),
            user_id: "u-1".into(),
            username: Some("ada".into()),
            email: None,
            display_name: Some("Ada Lovelace".into()),
            can_authenticate: Some(true),
            locality: Some("London".into()),
            mfa_enabled: Some(false),
            region: None,
            status: Some("SOMETHING_NEW".into()),
            enabled: Some(true),
            lifecycle_status: Some("ACCOUNT_OK".into()),
            user_type: Some("Employee".into()),
            verify_status: Some("ENABLED".into()),
            population_id: None,
            identity_provider_type: Some("PING_ONE".into()),
            identity_provider_id: None,
            last_sign_on_at: Some(1_795_000_000_000),
            created_at: None,
            updated_at: Some(1),
            access_group_ids: vec!["g1".into(), "g2".into()],
            sync_id: Some("s-1".into()),
            source_topic: "pingone.raw.v1".into(),
            source_partition: 3,
            source_offset: 42,
            observed_at: 1_795_000_000_123,
        }
    }

    #[test]
    fn user_round_trips() {
        let u = user();
        let bytes = u.to_avro_datum().unwrap();
        assert_eq!(bytes, u.to_avro_datum_generic().unwrap());
        let bare = UserUsage {
            source_offset: -70_000,
            ..UserUsage::default()
        };
        assert_eq!(
            bare.to_avro_datum().unwrap(),
            bare.to_avro_datum_generic().unwrap()
        );
        let back = UserUsage::from_avro_datum(user_usage_schema().unwrap(), &bytes).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn application_round_trips() {
        let a = Application {
            tenant_id: "acme".into(),
            environment_id: "env".into(),
            application_id: "a-1".into(),
            name: Some("Payroll".into()),
            app_type: Some("WEB_APP".into()),
            protocol: None,
            enabled: Some(false),
            access_control_role_type: None,
            access_control_group_type: Some("ALL_GROUPS".into()),
            access_control_group_ids: vec!["g1".into()],
            authorized_user_count: 17,
            sync_id: Some("s".into()),
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 9,
            observed_at: 5,
        };
        let bytes = a.to_avro_datum().unwrap();
        assert_eq!(bytes, a.to_avro_datum_generic().unwrap());
        let bare = Application {
            authorized_user_count: -1,
            ..Application::default()
        };
        assert_eq!(
            bare.to_avro_datum().unwrap(),
            bare.to_avro_datum_generic().unwrap()
        );
        let back = Application::from_avro_datum(application_schema().unwrap(), &bytes).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn app_usage_round_trips() {
        let u = AppUsage {
            tenant_id: "acme".into(),
            environment_id: "env".into(),
            application_id: "a".into(),
            user_id: "u".into(),
            application_name: Some("Payroll".into()),
            last_access_at: 1_795_000_000_000,
            access_count_7d: 1,
            access_count_30d: 2,
            access_count_90d: 3,
            access_count_total: 4,
            daily_access_counts: vec![
                DailyAccessCount {
                    day: 20_700,
                    count: 1,
                },
                DailyAccessCount {
                    day: 20_770,
                    count: 2,
                },
            ],
            last_activity_id: "act".into(),
            source_topic: "t".into(),
            source_partition: 1,
            source_offset: 2,
            observed_at: 3,
        };
        let bytes = u.to_avro_datum().unwrap();
        assert_eq!(bytes, u.to_avro_datum_generic().unwrap());
        let empty = AppUsage::default();
        assert_eq!(
            empty.to_avro_datum().unwrap(),
            empty.to_avro_datum_generic().unwrap()
        );
        let back = AppUsage::from_avro_datum(app_usage_schema().unwrap(), &bytes).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn app_signons_round_trips() {
        let r = AppSignons {
            tenant_id: "acme".into(),
            environment_id: "env".into(),
            application_id: "a".into(),
            period_start: 1_795_000_000_000,
            period_end: 1_795_086_400_000,
            signons: 4_321,
            partial: true,
            source_topic: "t".into(),
            source_partition: 2,
            source_offset: -3,
            observed_at: 7,
        };
        let bytes = r.to_avro_datum().unwrap();
        assert_eq!(bytes, r.to_avro_datum_generic().unwrap());
        let empty = AppSignons::default();
        assert_eq!(
            empty.to_avro_datum().unwrap(),
            empty.to_avro_datum_generic().unwrap()
        );
        let back = AppSignons::from_avro_datum(app_signons_schema().unwrap(), &bytes).unwrap();
        assert_eq!(back, r);
    }

    fn has_doc_everywhere(value: &serde_json::Value, path: &str) -> Vec<String> {
        let mut missing = Vec::new();
        if let Some(fields) = value.get("fields").and_then(|f| f.as_array()) {
            for field in fields {
                let name = field.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                if field
                    .get("doc")
                    .and_then(|d| d.as_str())
                    .is_none_or(str::is_empty)
                {
                    missing.push(format!("{path}.{name}"));
                }
                if let Some(items) = field.get("type").and_then(|t| t.get("items")) {
                    missing.extend(has_doc_everywhere(items, &format!("{path}.{name}[]")));
                }
            }
        }
        missing
    }

    #[test]
    fn every_field_has_a_doc() {
        for text in [
            USER_USAGE_SCHEMA,
            APPLICATION_SCHEMA,
            APP_USAGE_SCHEMA,
            APP_SIGNONS_SCHEMA,
        ] {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let missing = has_doc_everywhere(&json, "");
            assert!(missing.is_empty(), "fields without doc: {missing:?}");
        }
    }

    /// `BACKWARD_TRANSITIVE`: the current schema must read data written with every earlier
    /// version kept in `avro/history/<name>.v<N>.avsc`.
    fn backward_transitive_violations(name: &str, current: &Schema) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro/history");
        let mut checked = 0;
        let mut violations = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !file.starts_with(&format!("{name}.v")) {
                continue;
            }
            checked += 1;
            let old = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if let Err(e) = SchemaCompatibility::can_read(&old, current) {
                violations.push(format!("{file}: {e}"));
            }
        }
        assert!(checked > 0, "no history for {name} in {}", dir.display());
        violations
    }

    #[test]
    fn current_schemas_read_every_published_version() {
        for (name, schema) in [
            ("user_usage", user_usage_schema().unwrap()),
            ("application", application_schema().unwrap()),
            ("app_usage", app_usage_schema().unwrap()),
            ("app_signons", app_signons_schema().unwrap()),
        ] {
            let violations = backward_transitive_violations(name, schema);
            assert!(
                violations.is_empty(),
                "{name}.avsc breaks BACKWARD_TRANSITIVE: {violations:?}"
            );
        }
    }

    #[test]
    fn the_check_rejects_an_incompatible_edit() {
        // A new required field without a default cannot be filled when reading old data.
        let mut json: serde_json::Value = serde_json::from_str(USER_USAGE_SCHEMA).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
                {"name": "cost_center", "type": "string", "doc": "new and required"}
            ));
        let broken = Schema::parse_str(&json.to_string()).unwrap();
        assert!(!backward_transitive_violations("user_usage", &broken).is_empty());

        // Changing a field's type incompatibly is caught too.
        let mut json: serde_json::Value = serde_json::from_str(APP_USAGE_SCHEMA).unwrap();
        json["fields"][6]["type"] = serde_json::json!("string");
        let broken = Schema::parse_str(&json.to_string()).unwrap();
        assert!(!backward_transitive_violations("app_usage", &broken).is_empty());

        // A compatible edit (a new optional field with a default) passes.
        let mut json: serde_json::Value = serde_json::from_str(APPLICATION_SCHEMA).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
                {"name": "note", "type": ["null", "string"], "default": null, "doc": "optional"}
            ));
        let fine = Schema::parse_str(&json.to_string()).unwrap();
        assert!(backward_transitive_violations("application", &fine).is_empty());
    }
}
