//! From Avro to Delta: the table's columns derived from a topic's Avro schema ([`crate::decode`]
//! fills them from records).
//!
//! Every table has the sink's own columns ([`META_COLUMNS`]: the record's key, the tombstone
//! flag, where the record was in Kafka, and the text of a value that could not be decoded),
//! then one column per Avro field, then the two partition columns `tenant` (the key's first
//! `/`-separated part) and `record_date` (the UTC day of the record's Kafka timestamp).
//! Field columns are nullable whatever Avro says, because a tombstone has no value.
//!
//! Types: boolean, int, long, float, double, string, enum (as string), bytes and fixed (as
//! binary), `date` (date), `timestamp-millis` and `timestamp-micros` (timestamp, UTC),
//! arrays, records (structs), maps with string keys, and unions of `null` with one type.

use apache_avro::Schema;
use deltalake::kernel::{ArrayType, DataType, MapType, StructField, StructType};

/// The record's key (UTF-8), null when the record has none.
pub const KEY: &str = "record_key";
/// True for a tombstone (a record with no value: the key was deleted).
pub const DELETED: &str = "deleted";
/// The topic the record was read from.
pub const TOPIC: &str = "kafka_topic";
/// Its partition.
pub const PARTITION: &str = "kafka_partition";
/// Its offset.
pub const OFFSET: &str = "kafka_offset";
/// Its Kafka timestamp.
pub const TIMESTAMP: &str = "kafka_timestamp";
/// Why its value could not be decoded (then every field column is null); null otherwise.
pub const DECODE_ERROR: &str = "decode_error";
/// Partition column: the tenant, the key's first `/`-separated part.
pub const TENANT: &str = "tenant";
/// Partition column: the UTC day of the record's Kafka timestamp.
pub const RECORD_DATE: &str = "record_date";

/// The sink's own columns, first in every table.
pub const META_COLUMNS: [&str; 7] = [
    KEY,
    DELETED,
    TOPIC,
    PARTITION,
    OFFSET,
    TIMESTAMP,
    DECODE_ERROR,
];
/// The partition columns, last in every table.
pub const PARTITION_COLUMNS: [&str; 2] = [TENANT, RECORD_DATE];

/// An Avro schema the sink cannot turn into columns.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// The top-level schema is not a record.
    #[error("the value schema is not an Avro record")]
    NotARecord,
    /// A field's name is one of the sink's own columns.
    #[error("Avro field `{0}` has the name of one of the sink's own columns")]
    Reserved(String),
    /// A type without a Delta counterpart here.
    #[error("Avro field `{field}`: {what} has no column type in the sink")]
    Unsupported {
        /// The field.
        field: String,
        /// The type.
        what: String,
    },
}

/// The table's columns for a topic whose values have `schema`: the sink's own, one per field,
/// the partition columns.
///
/// # Errors
/// [`ColumnError`] when the schema is not a record, uses a reserved name or an unsupported
/// type.
pub fn table_columns(schema: &Schema) -> Result<Vec<StructField>, ColumnError> {
    let mut columns = vec![
        StructField::nullable(KEY, DataType::STRING),
        StructField::new(DELETED, DataType::BOOLEAN, false),
        StructField::new(TOPIC, DataType::STRING, false),
        StructField::new(PARTITION, DataType::INTEGER, false),
        StructField::new(OFFSET, DataType::LONG, false),
        StructField::nullable(TIMESTAMP, DataType::TIMESTAMP),
        StructField::nullable(DECODE_ERROR, DataType::STRING),
    ];
    columns.extend(field_columns(schema)?);
    columns.push(StructField::nullable(TENANT, DataType::STRING));
    columns.push(StructField::nullable(RECORD_DATE, DataType::DATE));
    Ok(columns)
}

/// The columns whose values follow the order records are written in, where present: where
/// the record was in Kafka, and the pipeline's own provenance fields (the sync, the raw event's
/// position, when the transformer observed it). A table the sink creates keeps Delta
/// statistics (minimum and maximum per file) for these only (table property
/// `delta.dataSkippingStatsColumns`): they are what lets a reader skip files ("rows written
/// since", "this sync"). The other columns' values (ids, names, per-user times, statuses) come
/// in no order, so every file spans nearly their whole range and skips nothing, while
/// comparing every value for them was about a tenth of the sink's time (bench/RESULTS.md,
/// session 26).
pub const ORDERED_COLUMNS: [&str; 7] = [
    PARTITION,
    OFFSET,
    TIMESTAMP,
    "sync_id",
    "source_partition",
    "source_offset",
    "observed_at",
];

/// The [`ORDERED_COLUMNS`] among `columns`, as the value of the table property
/// `delta.dataSkippingStatsColumns`.
pub fn stats_columns(columns: &[StructField]) -> String {
    ORDERED_COLUMNS
        .iter()
        .filter(|name| columns.iter().any(|c| c.name() == **name))
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

/// One nullable column per field of the record `schema`.
///
/// # Errors
/// As [`table_columns`].
pub fn field_columns(schema: &Schema) -> Result<Vec<StructField>, ColumnError> {
    let Schema::Record(record) = schema else {
        return Err(ColumnError::NotARecord);
    };
    record
        .fields
        .iter()
        .map(|f| {
            if META_COLUMNS.contains(&f.name.as_str())
                || PARTITION_COLUMNS.contains(&f.name.as_str())
            {
                return Err(ColumnError::Reserved(f.name.clone()));
            }
            Ok(StructField::nullable(
                &f.name,
                delta_type(&f.name, &f.schema)?.0,
            ))
        })
        .collect()
}

/// The Delta type of an Avro schema, and whether Avro allows null there.
fn delta_type(field: &str, schema: &Schema) -> Result<(DataType, bool), ColumnError> {
    let unsupported = |what: &str| ColumnError::Unsupported {
        field: field.to_owned(),
        what: what.to_owned(),
    };
    let t = match schema {
        Schema::Boolean => DataType::BOOLEAN,
        Schema::Int => DataType::INTEGER,
        Schema::Long => DataType::LONG,
        Schema::Float => DataType::FLOAT,
        Schema::Double => DataType::DOUBLE,
        Schema::String | Schema::Enum(_) | Schema::Uuid(_) => DataType::STRING,
        Schema::Bytes | Schema::Fixed(_) => DataType::BINARY,
        Schema::Date => DataType::DATE,
        Schema::TimestampMillis | Schema::TimestampMicros => DataType::TIMESTAMP,
        Schema::Array(a) => {
            let (item, nullable) = delta_type(field, &a.items)?;
            DataType::Array(Box::new(ArrayType::new(item, nullable)))
        }
        Schema::Map(m) => {
            let (value, nullable) = delta_type(field, &m.types)?;
            DataType::Map(Box::new(MapType::new(DataType::STRING, value, nullable)))
        }
        Schema::Record(r) => {
            let fields = r
                .fields
                .iter()
                .map(|f| {
                    let (t, nullable) = delta_type(field, &f.schema)?;
                    Ok(StructField::new(&f.name, t, nullable))
                })
                .collect::<Result<Vec<_>, ColumnError>>()?;
            DataType::Struct(Box::new(
                StructType::try_new(fields).map_err(|e| unsupported(&e.to_string()))?,
            ))
        }
        Schema::Union(u) => {
            let mut others = u.variants().iter().filter(|s| !matches!(s, Schema::Null));
            match (others.next(), others.next()) {
                (Some(only), None) => return Ok((delta_type(field, only)?.0, true)),
                _ => return Err(unsupported("a union of several non-null types")),
            }
        }
        other => return Err(unsupported(&format!("{other:?}"))),
    };
    Ok((t, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_schemas_become_columns() {
        for text in [
            schemas::usage::USER_USAGE_SCHEMA,
            schemas::usage::APPLICATION_SCHEMA,
            schemas::usage::APP_USAGE_SCHEMA,
        ] {
            let schema = Schema::parse_str(text).unwrap();
            let columns = table_columns(&schema).unwrap();
            let Schema::Record(r) = &schema else { panic!() };
            assert_eq!(columns.len(), r.fields.len() + META_COLUMNS.len() + 2);
        }
        let users = Schema::parse_str(schemas::usage::USER_USAGE_SCHEMA).unwrap();
        let columns = table_columns(&users).unwrap();
        let of = |name: &str| {
            columns
                .iter()
                .find(|c| c.name() == name)
                .unwrap()
                .data_type()
                .clone()
        };
        assert_eq!(of("last_sign_on_at"), DataType::TIMESTAMP);
        assert_eq!(of("source_partition"), DataType::INTEGER);
        assert_eq!(
            of("access_group_ids"),
            DataType::Array(Box::new(ArrayType::new(DataType::STRING, false)))
        );
    }

    #[test]
    fn reserved_names_and_odd_unions_are_refused() {
        let reserved =
            r#"{"type":"record","name":"R","fields":[{"name":"deleted","type":"string"}]}"#;
        assert!(matches!(
            table_columns(&Schema::parse_str(reserved).unwrap()),
            Err(ColumnError::Reserved(_))
        ));
        let union =
            r#"{"type":"record","name":"R","fields":[{"name":"x","type":["int","string"]}]}"#;
        assert!(matches!(
            table_columns(&Schema::parse_str(union).unwrap()),
            Err(ColumnError::Unsupported { .. })
        ));
    }
}
