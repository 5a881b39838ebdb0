//! From Avro to Delta: the table's columns derived from a topic's Avro schema, and Arrow arrays
//! built from decoded records for the columns the table has.
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

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer};
use deltalake::arrow::datatypes::{DataType as ArrowType, TimeUnit};
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

/// The value under any union branch.
fn plain(value: &Value) -> &Value {
    match value {
        Value::Union(_, inner) => plain(inner),
        v => v,
    }
}

/// A value that does not fit its column: the record does not match the table's type.
#[derive(Debug, thiserror::Error)]
#[error("a value of {found} does not fit a column of type {expected}")]
pub struct Mismatch {
    /// The column's Arrow type.
    pub expected: String,
    /// The Avro value kind.
    pub found: String,
}

fn mismatch(expected: &ArrowType, found: &Value) -> Mismatch {
    let found = format!("{found:?}");
    Mismatch {
        expected: expected.to_string(),
        found: found.chars().take(40).collect(),
    }
}

/// An Arrow array of type `t` holding `values` (`None` and Avro null become null).
///
/// # Errors
/// [`Mismatch`] when a value does not fit the type.
pub fn build_array(t: &ArrowType, values: &[Option<&Value>]) -> Result<ArrayRef, Mismatch> {
    macro_rules! primitive {
        ($builder:ty, |$v:ident| $convert:expr) => {{
            let mut b = <$builder>::with_capacity(values.len());
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => b.append_null(),
                    Some($v) => b.append_value($convert.ok_or_else(|| mismatch(t, $v))?),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    let array = match t {
        ArrowType::Boolean => primitive!(BooleanBuilder, |v| match v {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }),
        ArrowType::Int32 => primitive!(Int32Builder, |v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }),
        ArrowType::Int64 => primitive!(Int64Builder, |v| match v {
            Value::Long(i) => Some(*i),
            Value::Int(i) => Some(i64::from(*i)),
            _ => None,
        }),
        ArrowType::Float32 => primitive!(Float32Builder, |v| match v {
            Value::Float(f) => Some(*f),
            _ => None,
        }),
        ArrowType::Float64 => primitive!(Float64Builder, |v| match v {
            Value::Double(f) => Some(*f),
            Value::Float(f) => Some(f64::from(*f)),
            _ => None,
        }),
        ArrowType::Date32 => primitive!(Date32Builder, |v| match v {
            Value::Date(d) | Value::Int(d) => Some(*d),
            _ => None,
        }),
        ArrowType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(values.len());
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::TimestampMillis(ms) | Value::Long(ms)) => {
                        b.append_value(ms.saturating_mul(1000));
                    }
                    Some(Value::TimestampMicros(us)) => b.append_value(*us),
                    Some(v) => return Err(mismatch(t, v)),
                }
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone())) as ArrayRef
        }
        ArrowType::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::String(s) | Value::Enum(_, s)) => b.append_value(s),
                    Some(Value::Uuid(u)) => b.append_value(u.to_string()),
                    Some(v) => return Err(mismatch(t, v)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
        ArrowType::Binary => {
            let mut b = BinaryBuilder::with_capacity(values.len(), values.len() * 16);
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::Bytes(x) | Value::Fixed(_, x)) => b.append_value(x),
                    Some(v) => return Err(mismatch(t, v)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }
        ArrowType::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            let mut valid = Vec::with_capacity(values.len());
            let mut children: Vec<Option<&Value>> = Vec::new();
            offsets.push(0i32);
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => valid.push(false),
                    Some(Value::Array(items)) => {
                        valid.push(true);
                        children.extend(items.iter().map(Some));
                    }
                    Some(v) => return Err(mismatch(t, v)),
                }
                offsets.push(i32::try_from(children.len()).map_err(|_| Mismatch {
                    expected: t.to_string(),
                    found: "more than 2^31 items".into(),
                })?);
            }
            let child = build_array(item.data_type(), &children)?;
            Arc::new(ListArray::new(
                item.clone(),
                OffsetBuffer::new(offsets.into()),
                child,
                nulls(valid),
            )) as ArrayRef
        }
        ArrowType::Struct(fields) => {
            let mut valid = Vec::with_capacity(values.len());
            let mut records: Vec<Option<&[(String, Value)]>> = Vec::with_capacity(values.len());
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => {
                        valid.push(false);
                        records.push(None);
                    }
                    Some(Value::Record(r)) => {
                        valid.push(true);
                        records.push(Some(r));
                    }
                    Some(v) => return Err(mismatch(t, v)),
                }
            }
            let children = fields
                .iter()
                .map(|f| {
                    let column: Vec<Option<&Value>> = records
                        .iter()
                        .map(|r| {
                            r.and_then(|r| r.iter().find(|(n, _)| n == f.name()).map(|(_, v)| v))
                        })
                        .collect();
                    build_array(f.data_type(), &column)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::new(fields.clone(), children, nulls(valid))) as ArrayRef
        }
        ArrowType::Map(entries, sorted) => {
            let ArrowType::Struct(kv) = entries.data_type() else {
                return Err(Mismatch {
                    expected: t.to_string(),
                    found: "a map without entries".into(),
                });
            };
            let mut offsets = vec![0i32];
            let mut valid = Vec::with_capacity(values.len());
            let (mut keys, mut vals): (Vec<Value>, Vec<&Value>) = (Vec::new(), Vec::new());
            for value in values {
                match value.map(plain) {
                    None | Some(Value::Null) => valid.push(false),
                    Some(Value::Map(m)) => {
                        valid.push(true);
                        let mut pairs: Vec<_> = m.iter().collect();
                        pairs.sort_by(|a, b| a.0.cmp(b.0));
                        for (k, v) in pairs {
                            keys.push(Value::String(k.clone()));
                            vals.push(v);
                        }
                    }
                    Some(v) => return Err(mismatch(t, v)),
                }
                offsets.push(i32::try_from(keys.len()).unwrap_or(i32::MAX));
            }
            let key_refs: Vec<Option<&Value>> = keys.iter().map(Some).collect();
            let val_refs: Vec<Option<&Value>> = vals.into_iter().map(Some).collect();
            let key_array = build_array(kv[0].data_type(), &key_refs)?;
            let value_array = build_array(kv[1].data_type(), &val_refs)?;
            let entries_array = StructArray::new(kv.clone(), vec![key_array, value_array], None);
            Arc::new(MapArray::new(
                entries.clone(),
                OffsetBuffer::new(offsets.into()),
                entries_array,
                nulls(valid),
                *sorted,
            )) as ArrayRef
        }
        other => {
            return Err(Mismatch {
                expected: other.to_string(),
                found: "a column type the sink does not write".into(),
            });
        }
    };
    Ok(array)
}

/// A validity buffer, `None` when every entry is valid.
fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Field, Fields};

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

    #[test]
    fn values_fill_typed_arrays_with_nulls_where_absent() {
        let ts = ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let v = [
            Value::Union(1, Box::new(Value::TimestampMillis(1_700_000_000_123))),
            Value::Union(0, Box::new(Value::Null)),
        ];
        let a = build_array(&ts, &[Some(&v[0]), Some(&v[1]), None]).unwrap();
        let a = a.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(a.value(0), 1_700_000_000_123_000);
        assert!(a.is_null(1) && a.is_null(2));

        let day = Fields::from(vec![
            Field::new("day", ArrowType::Date32, true),
            Field::new("count", ArrowType::Int32, true),
        ]);
        let t = ArrowType::List(Arc::new(Field::new(
            "element",
            ArrowType::Struct(day),
            true,
        )));
        let rec = |d, c| {
            Value::Record(vec![
                ("day".into(), Value::Date(d)),
                ("count".into(), Value::Int(c)),
            ])
        };
        let list = Value::Array(vec![rec(19_000, 3), rec(19_001, 4)]);
        let a = build_array(&t, &[Some(&list), None]).unwrap();
        let a = a.as_list::<i32>();
        assert_eq!(a.value_length(0), 2);
        assert!(a.is_null(1));
        assert!(build_array(&ArrowType::Int32, &[Some(&Value::String("x".into()))]).is_err());
    }
}
