//! Avro values decoded straight into Arrow columns: no `apache_avro::types::Value` per record,
//! no field name per record.
//!
//! A [`Plan`] is compiled once per table and writer schema: for each field of the writer
//! schema, in the writer's order, the table column it fills and how each Avro type becomes the
//! column's Arrow type. A [`Chunk`] holds a table's rows not yet streamed into Parquet, column
//! by column, in Arrow's own layout (values, offsets, validity), and becomes one `RecordBatch`.
//!
//! The conversions are those of the table's column types ([`crate::columns`]): `int` into
//! int, long or date; `long` into long or timestamp (as milliseconds); `timestamp-millis` and
//! `timestamp-micros` into timestamp; `float` and `double` into double; strings, enums and
//! UUIDs into string; bytes and fixed into binary; arrays into lists; records into structs by
//! field name (fields without a struct field are read and dropped); maps into maps (entries
//! sorted by key, the last of equal keys kept); any union branch into the column the union's
//! value goes to; `null` anywhere a null may be. A value of any other type is a
//! [`DecodeError::Mismatch`] when one is met, so one record with it is written with
//! `decode_error`, like a malformed datum: a record is appended whole or not at all.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, Names, ResolvedSchema, UuidSchema};
use deltalake::arrow::array::builder::NullBufferBuilder;
use deltalake::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, BooleanBufferBuilder, Date32Array, Float32Array,
    Float64Array, Int32Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray, new_null_array,
};
use deltalake::arrow::buffer::{Buffer, OffsetBuffer};
use deltalake::arrow::datatypes::{DataType, FieldRef, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;

use crate::columns;

/// Why a record's value could not be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a datum of the writer schema.
    #[error("malformed Avro: {0}")]
    Malformed(&'static str),
    /// A value whose type its column cannot hold.
    #[error(
        "field `{field}`: a value of Avro type {found} does not fit a column of type {expected}"
    )]
    Mismatch {
        /// The top-level field.
        field: String,
        /// The Avro type met.
        found: &'static str,
        /// The column's Arrow type.
        expected: String,
    },
    /// A null where the column's type allows none.
    #[error("field `{0}`: a null where its column allows none")]
    Null(String),
    /// More than 2 GiB of one column in one chunk.
    #[error("field `{0}`: more data than one chunk of a column holds")]
    TooLarge(String),
}

impl DecodeError {
    /// Whether the error says the writer schema does not fit the table (rather than that the
    /// bytes are not Avro, or too many).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Self::Mismatch { .. } | Self::Null(_))
    }

    /// The error with the top-level field it happened in.
    fn in_field(self, name: &str) -> Self {
        match self {
            Self::Mismatch {
                field,
                found,
                expected,
            } if field.is_empty() => Self::Mismatch {
                field: name.to_owned(),
                found,
                expected,
            },
            Self::Null(f) if f.is_empty() => Self::Null(name.to_owned()),
            Self::TooLarge(f) if f.is_empty() => Self::TooLarge(name.to_owned()),
            other => other,
        }
    }
}

type Decoded<T = ()> = Result<T, DecodeError>;

const EOF: DecodeError = DecodeError::Malformed("unexpected end of the datum");
const NOT_UTF8: DecodeError = DecodeError::Malformed("a string that is not UTF-8");

/// Items of one array or map, at most (what `apache_avro` allows, 512 MiB of its values).
const MAX_ITEMS: usize = 16 * 1024 * 1024;

/// The bytes of a datum not read yet.
#[derive(Debug)]
struct Datum<'a>(&'a [u8]);

impl<'a> Datum<'a> {
    #[inline]
    fn varint(&mut self) -> Decoded<u64> {
        let mut value = 0u64;
        for (i, b) in self.0.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        if self.0.len() >= 10 {
            Err(DecodeError::Malformed(
                "a variable-length integer of more than 10 bytes",
            ))
        } else {
            Err(EOF)
        }
    }

    #[inline]
    fn long(&mut self) -> Decoded<i64> {
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    #[inline]
    fn int(&mut self) -> Decoded<i32> {
        i32::try_from(self.long()?).map_err(|_| DecodeError::Malformed("an int out of range"))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.0.len() {
            return Err(EOF);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    #[inline]
    fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let n = usize::try_from(self.long()?)
            .map_err(|_| DecodeError::Malformed("a negative length"))?;
        self.take(n)
    }

    #[inline]
    fn str(&mut self) -> Decoded<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| NOT_UTF8)
    }

    /// A string's bytes, checked to be UTF-8: what a column keeps. Most strings are ASCII,
    /// which `is_ascii` checks two to three times faster than `from_utf8` for the short
    /// strings of these records (about 4 against 9 ns here).
    #[inline]
    fn text(&mut self) -> Decoded<&'a [u8]> {
        let b = self.bytes()?;
        if b.is_ascii() || std::str::from_utf8(b).is_ok() {
            Ok(b)
        } else {
            Err(NOT_UTF8)
        }
    }

    #[inline]
    fn boolean(&mut self) -> Decoded<bool> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(DecodeError::Malformed("a boolean that is neither 0 nor 1")),
        }
    }

    /// The item count of the next block of an array or map (0: the end), `total` items read
    /// before it.
    fn block(&mut self, total: usize) -> Decoded<usize> {
        let n = self.long()?;
        let n = if n < 0 {
            // A negative count is followed by the block's size in bytes.
            self.long()?;
            n.checked_neg()
                .ok_or(DecodeError::Malformed("a block count out of range"))?
        } else {
            n
        };
        let n = usize::try_from(n).map_err(|_| DecodeError::Malformed("a block count"))?;
        if total.saturating_add(n) > MAX_ITEMS {
            return Err(DecodeError::Malformed(
                "more items than an array or map may hold",
            ));
        }
        Ok(n)
    }

    fn uuid(&mut self, kind: &UuidKind) -> Decoded<uuid::Uuid> {
        let bad = |_| DecodeError::Malformed("a UUID that does not parse");
        match kind {
            UuidKind::String => uuid::Uuid::parse_str(self.str()?).map_err(bad),
            UuidKind::Bytes => uuid::Uuid::from_slice(self.bytes()?).map_err(bad),
            UuidKind::Fixed(16) => uuid::Uuid::from_slice(self.take(16)?).map_err(bad),
            UuidKind::Fixed(_) => Err(DecodeError::Malformed("a UUID fixed of size other than 16")),
        }
    }
}

/// How a UUID is written.
#[derive(Debug, Clone)]
enum UuidKind {
    String,
    Bytes,
    Fixed(usize),
}

/// How one Avro value becomes one value of a column.
#[derive(Debug)]
enum Node {
    /// Avro `null`: a null.
    Null,
    Boolean,
    /// `int` or `date` into a 32-bit column.
    Int,
    /// `int` into a 64-bit column.
    IntToLong,
    /// `long` or `timestamp-micros` into a 64-bit column as they are.
    Long,
    /// `long` or `timestamp-millis` into a microsecond timestamp.
    Millis,
    Float,
    FloatToDouble,
    Double,
    String,
    Enum(Vec<String>),
    Uuid(UuidKind),
    Bytes,
    Fixed(usize),
    Array(Box<Node>),
    Map(Box<Node>),
    /// A record into a struct: per Avro field, in the writer's order, the struct field it
    /// fills (or `None`: read and dropped); then the struct fields no Avro field fills.
    Record {
        fields: Vec<(Option<usize>, Node)>,
        missing: Vec<usize>,
    },
    Union(Vec<Node>),
    /// A value read and dropped.
    Skip(Skip),
    /// A value its column cannot hold.
    Mismatch {
        found: &'static str,
        expected: String,
    },
}

/// An Avro schema read and dropped, with the namespace its names resolve in.
#[derive(Debug)]
struct Skip {
    schema: Schema,
    namespace: Option<String>,
}

/// How the records of one writer schema become the rows of one table.
#[derive(Debug)]
pub struct Plan {
    /// Per writer field, in order: its name, the chunk column it fills (`None`: read and
    /// dropped) and how.
    fields: Vec<(String, Option<usize>, Node)>,
    /// Field columns of the table the writer schema has no field for.
    missing: Vec<usize>,
    /// The writer schema's named types, for references.
    names: Names,
}

/// Why a writer schema has no [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a record.
    #[error("not a record")]
    NotARecord,
    /// A name that does not resolve.
    #[error("{0}")]
    Names(String),
}

fn kind(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int => "int",
        Schema::Long => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes => "bytes",
        Schema::String => "string",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Fixed(_) => "fixed",
        Schema::Decimal(_) | Schema::BigDecimal => "decimal",
        Schema::Uuid(_) => "uuid",
        Schema::Date => "date",
        Schema::TimeMillis => "time-millis",
        Schema::TimeMicros => "time-micros",
        Schema::TimestampMillis => "timestamp-millis",
        Schema::TimestampMicros => "timestamp-micros",
        Schema::TimestampNanos => "timestamp-nanos",
        Schema::LocalTimestampMillis => "local-timestamp-millis",
        Schema::LocalTimestampMicros => "local-timestamp-micros",
        Schema::LocalTimestampNanos => "local-timestamp-nanos",
        Schema::Duration(_) => "duration",
        Schema::Ref { .. } => "reference",
    }
}

/// Compiling a plan: the writer schema's names.
struct Compiler<'a> {
    names: &'a Names,
}

impl Compiler<'_> {
    fn resolve(
        &self,
        name: &Name,
        namespace: Option<&str>,
    ) -> Result<(&Schema, Option<String>), PlanError> {
        let full = name.fully_qualified_name(namespace);
        let schema = self.names.get(full.as_ref()).ok_or_else(|| {
            PlanError::Names(format!("type {} is not defined", full.fullname(None)))
        })?;
        Ok((schema, full.namespace().map(str::to_owned)))
    }

    /// How a value of `schema` becomes a value of a column of type `target`.
    fn node(
        &self,
        schema: &Schema,
        namespace: Option<&str>,
        target: &DataType,
    ) -> Result<Node, PlanError> {
        let mismatch = || Node::Mismatch {
            found: kind(schema),
            expected: target.to_string(),
        };
        let micros = matches!(target, DataType::Timestamp(TimeUnit::Microsecond, _));
        Ok(match schema {
            Schema::Null => Node::Null,
            Schema::Boolean if *target == DataType::Boolean => Node::Boolean,
            Schema::Int if matches!(target, DataType::Int32 | DataType::Date32) => Node::Int,
            Schema::Int if *target == DataType::Int64 => Node::IntToLong,
            Schema::Date if *target == DataType::Date32 => Node::Int,
            Schema::Long if *target == DataType::Int64 => Node::Long,
            Schema::Long | Schema::TimestampMillis if micros => Node::Millis,
            Schema::TimestampMicros if micros => Node::Long,
            Schema::Float if *target == DataType::Float32 => Node::Float,
            Schema::Float if *target == DataType::Float64 => Node::FloatToDouble,
            Schema::Double if *target == DataType::Float64 => Node::Double,
            Schema::String if *target == DataType::Utf8 => Node::String,
            Schema::Enum(e) if *target == DataType::Utf8 => Node::Enum(e.symbols.clone()),
            Schema::Uuid(u) if *target == DataType::Utf8 => Node::Uuid(match u {
                UuidSchema::String => UuidKind::String,
                UuidSchema::Bytes => UuidKind::Bytes,
                UuidSchema::Fixed(f) => UuidKind::Fixed(f.size),
            }),
            Schema::Bytes if *target == DataType::Binary => Node::Bytes,
            Schema::Fixed(f) if *target == DataType::Binary => Node::Fixed(f.size),
            Schema::Array(a) => match target {
                DataType::List(item) => Node::Array(Box::new(self.node(
                    &a.items,
                    namespace,
                    item.data_type(),
                )?)),
                _ => mismatch(),
            },
            Schema::Map(m) => match map_entries(target) {
                Some((key, value)) if *key.data_type() == DataType::Utf8 => Node::Map(Box::new(
                    self.node(&m.types, namespace, value.data_type())?,
                )),
                _ => mismatch(),
            },
            Schema::Record(r) => match target {
                DataType::Struct(children) => {
                    let full = r.name.fully_qualified_name(namespace);
                    let inner = full.namespace();
                    let mut fields = Vec::with_capacity(r.fields.len());
                    for f in &r.fields {
                        fields.push(match children.iter().position(|c| c.name() == &f.name) {
                            Some(c) => (
                                Some(c),
                                self.node(&f.schema, inner, children[c].data_type())?,
                            ),
                            None => (
                                None,
                                Node::Skip(Skip {
                                    schema: f.schema.clone(),
                                    namespace: inner.map(str::to_owned),
                                }),
                            ),
                        });
                    }
                    let missing = (0..children.len())
                        .filter(|c| !fields.iter().any(|(f, _)| *f == Some(*c)))
                        .collect();
                    Node::Record { fields, missing }
                }
                _ => mismatch(),
            },
            Schema::Union(u) => Node::Union(
                u.variants()
                    .iter()
                    .map(|v| self.node(v, namespace, target))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Ref { name } => {
                let (resolved, inner) = self.resolve(name, namespace)?;
                self.node(resolved, inner.as_deref(), target)?
            }
            _ => mismatch(),
        })
    }
}

/// The key and value fields of a map type.
fn map_entries(t: &DataType) -> Option<(&FieldRef, &FieldRef)> {
    match t {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
            _ => None,
        },
        _ => None,
    }
}

impl Plan {
    /// The plan of writer schema `schema` for the field columns of `chunk`'s table.
    ///
    /// # Errors
    /// [`PlanError`] when the schema is not a record or names an undefined type.
    pub fn compile(schema: &Schema, chunk: &Chunk) -> Result<Self, PlanError> {
        let Schema::Record(record) = schema else {
            return Err(PlanError::NotARecord);
        };
        let names: Names = ResolvedSchema::try_from(schema)
            .map_err(|e| PlanError::Names(e.to_string()))?
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        let compiler = Compiler { names: &names };
        let namespace = record.name.namespace();
        let mut fields = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            let column = chunk.field_column(&f.name);
            let node = match column {
                Some(c) => {
                    compiler.node(&f.schema, namespace, chunk.schema.field(c).data_type())?
                }
                None => Node::Skip(Skip {
                    schema: f.schema.clone(),
                    namespace: namespace.map(str::to_owned),
                }),
            };
            fields.push((f.name.clone(), column, node));
        }
        let missing = chunk
            .fields
            .iter()
            .copied()
            .filter(|c| !fields.iter().any(|(_, f, _)| *f == Some(*c)))
            .collect();
        Ok(Self {
            fields,
            missing,
            names,
        })
    }
}

/// Reads a whole datum of writer schema `schema`, checking it as `apache_avro` would decode it,
/// and keeps nothing.
///
/// # Errors
/// [`DecodeError::Malformed`].
pub fn validate(schema: &Schema, datum: &[u8]) -> Decoded {
    let names: Names = ResolvedSchema::try_from(schema)
        .map_err(|_| DecodeError::Malformed("a schema whose names do not resolve"))?
        .get_names()
        .iter()
        .map(|(n, s)| (n.clone(), (*s).clone()))
        .collect();
    skip(schema, None, &names, &mut Datum(datum))
}

/// Reads and drops one value of `schema`, checking it as `apache_avro` would decode it.
fn skip(schema: &Schema, namespace: Option<&str>, names: &Names, d: &mut Datum<'_>) -> Decoded {
    match schema {
        Schema::Null => {}
        Schema::Boolean => {
            d.boolean()?;
        }
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            d.int()?;
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => {
            d.long()?;
        }
        Schema::Float => {
            d.take(4)?;
        }
        Schema::Double => {
            d.take(8)?;
        }
        Schema::Bytes | Schema::BigDecimal => {
            d.bytes()?;
        }
        Schema::String => {
            d.text()?;
        }
        Schema::Fixed(f) => {
            d.take(f.size)?;
        }
        Schema::Decimal(dec) => match &dec.inner {
            InnerDecimalSchema::Bytes => {
                d.bytes()?;
            }
            InnerDecimalSchema::Fixed(f) => {
                d.take(f.size)?;
            }
        },
        Schema::Duration(f) => {
            if f.size != 12 {
                return Err(DecodeError::Malformed(
                    "a duration fixed of size other than 12",
                ));
            }
            d.take(12)?;
        }
        Schema::Uuid(u) => {
            d.uuid(&match u {
                UuidSchema::String => UuidKind::String,
                UuidSchema::Bytes => UuidKind::Bytes,
                UuidSchema::Fixed(f) => UuidKind::Fixed(f.size),
            })?;
        }
        Schema::Enum(e) => {
            let i = d.int()?;
            if usize::try_from(i).map_or(true, |i| i >= e.symbols.len()) {
                return Err(DecodeError::Malformed("an enum index out of range"));
            }
        }
        Schema::Array(a) => {
            let mut total = 0;
            loop {
                let n = d.block(total)?;
                if n == 0 {
                    break;
                }
                total += n;
                for _ in 0..n {
                    skip(&a.items, namespace, names, d)?;
                }
            }
        }
        Schema::Map(m) => {
            let mut total = 0;
            loop {
                let n = d.block(total)?;
                if n == 0 {
                    break;
                }
                total += n;
                for _ in 0..n {
                    d.text()?;
                    skip(&m.types, namespace, names, d)?;
                }
            }
        }
        Schema::Union(u) => {
            let branch = union_branch(d, u.variants().len())?;
            skip(&u.variants()[branch], namespace, names, d)?;
        }
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(namespace);
            for f in &r.fields {
                skip(&f.schema, full.namespace(), names, d)?;
            }
        }
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(namespace);
            let resolved = names
                .get(full.as_ref())
                .ok_or(DecodeError::Malformed("a reference to an undefined type"))?;
            skip(resolved, full.namespace(), names, d)?;
        }
    }
    Ok(())
}

#[inline]
fn union_branch(d: &mut Datum<'_>, branches: usize) -> Decoded<usize> {
    usize::try_from(d.long()?)
        .ok()
        .filter(|b| *b < branches)
        .ok_or(DecodeError::Malformed("a union branch out of range"))
}

/// A plan that does not match its column: a bug, reported as a record that cannot be written.
const INTERNAL: DecodeError =
    DecodeError::Malformed("internal: a plan that does not fit its column");

/// What the values of an Avro map are collected in before they are sorted by key.
#[derive(Debug)]
struct Entries {
    keys: Vec<String>,
    values: Column,
}

/// One column's values in Arrow's layout.
#[derive(Debug)]
enum Values {
    /// A type the sink does not write: only nulls.
    Nulls,
    Bool(BooleanBufferBuilder),
    /// Int32 and Date32.
    I32(Vec<i32>),
    /// Int64 and microsecond timestamps.
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Utf8 and Binary.
    Bytes {
        offsets: Vec<i32>,
        data: Vec<u8>,
    },
    List {
        offsets: Vec<i32>,
        item: Box<Column>,
    },
    Struct(Vec<Column>),
    Map {
        offsets: Vec<i32>,
        keys: Box<Column>,
        values: Box<Column>,
        entries: Box<Entries>,
    },
}

/// The rows of one column not yet streamed: values, validity and type.
#[derive(Debug)]
pub struct Column {
    data_type: DataType,
    nullable: bool,
    /// Which rows are not null: no bitmap at all until the first null (setting a bit per
    /// value was a quarter of [`Column::decode`]'s time, bench/RESULTS.md,
    /// session 26).
    valid: NullBufferBuilder,
    values: Values,
}

#[inline]
fn offset(len: usize) -> Decoded<i32> {
    i32::try_from(len).map_err(|_| DecodeError::TooLarge(String::new()))
}

#[inline]
fn push_bytes(offsets: &mut Vec<i32>, data: &mut Vec<u8>, value: &[u8]) -> Decoded {
    let end = offset(data.len() + value.len())?;
    data.extend_from_slice(value);
    offsets.push(end);
    Ok(())
}

fn last(offsets: &[i32]) -> usize {
    offsets
        .last()
        .map_or(0, |o| usize::try_from(*o).unwrap_or(0))
}

fn range(offsets: &[i32], i: usize) -> std::ops::Range<usize> {
    let at = |j: usize| {
        offsets
            .get(j)
            .map_or(0, |o| usize::try_from(*o).unwrap_or(0))
    };
    at(i)..at(i + 1)
}

impl Column {
    /// An empty column of type `t`, with room for `rows` rows (and `bytes` bytes of strings).
    fn new(t: &DataType, nullable: bool, rows: usize, bytes: usize) -> Self {
        let offsets = || {
            let mut o = Vec::with_capacity(rows + 1);
            o.push(0);
            o
        };
        let values = match t {
            DataType::Boolean => Values::Bool(BooleanBufferBuilder::new(rows)),
            DataType::Int32 | DataType::Date32 => Values::I32(Vec::with_capacity(rows)),
            DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Values::I64(Vec::with_capacity(rows))
            }
            DataType::Float32 => Values::F32(Vec::with_capacity(rows)),
            DataType::Float64 => Values::F64(Vec::with_capacity(rows)),
            DataType::Utf8 | DataType::Binary => Values::Bytes {
                offsets: offsets(),
                data: Vec::with_capacity(bytes),
            },
            DataType::List(item) => Values::List {
                offsets: offsets(),
                item: Box::new(Column::new(
                    item.data_type(),
                    item.is_nullable(),
                    rows,
                    bytes,
                )),
            },
            DataType::Struct(fields) => Values::Struct(
                fields
                    .iter()
                    .map(|f| Column::new(f.data_type(), f.is_nullable(), rows, bytes))
                    .collect(),
            ),
            DataType::Map(..) => match map_entries(t) {
                Some((k, v)) => Values::Map {
                    offsets: offsets(),
                    keys: Box::new(Column::new(k.data_type(), k.is_nullable(), rows, bytes)),
                    values: Box::new(Column::new(v.data_type(), v.is_nullable(), rows, bytes)),
                    entries: Box::new(Entries {
                        keys: Vec::new(),
                        values: Column::new(v.data_type(), v.is_nullable(), 0, 0),
                    }),
                },
                None => Values::Nulls,
            },
            _ => Values::Nulls,
        };
        Self {
            data_type: t.clone(),
            nullable,
            valid: NullBufferBuilder::new(rows),
            values,
        }
    }

    /// An empty column like this one, sized for as many rows and bytes as it holds.
    fn fresh(&self) -> Self {
        let bytes = match &self.values {
            Values::Bytes { data, .. } => data.len(),
            _ => 0,
        };
        Self::new(&self.data_type, self.nullable, self.len(), bytes)
    }

    fn len(&self) -> usize {
        self.valid.len()
    }

    /// Appends a null. `masked`: the enclosing struct, list or row is null, so a column that
    /// allows no null takes it too.
    fn push_null(&mut self, masked: bool) -> Decoded {
        if !masked && !self.nullable {
            return Err(DecodeError::Null(String::new()));
        }
        match &mut self.values {
            Values::Nulls => {}
            Values::Bool(b) => b.append(false),
            Values::I32(v) => v.push(0),
            Values::I64(v) => v.push(0),
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::Bytes { offsets, .. }
            | Values::List { offsets, .. }
            | Values::Map { offsets, .. } => offsets.push(offsets.last().copied().unwrap_or(0)),
            Values::Struct(children) => {
                for c in children {
                    c.push_null(true)?;
                }
            }
        }
        self.valid.append_null();
        Ok(())
    }

    fn push_str(&mut self, value: Option<&str>) {
        if let (Some(s), Values::Bytes { offsets, data }) = (value, &mut self.values)
            && push_bytes(offsets, data, s.as_bytes()).is_ok()
        {
            self.valid.append_non_null();
        } else {
            self.push_masked();
        }
    }

    fn push_i32(&mut self, value: Option<i32>) {
        match (value, &mut self.values) {
            (Some(x), Values::I32(v)) => {
                v.push(x);
                self.valid.append_non_null();
            }
            _ => self.push_masked(),
        }
    }

    fn push_i64(&mut self, value: Option<i64>) {
        match (value, &mut self.values) {
            (Some(x), Values::I64(v)) => {
                v.push(x);
                self.valid.append_non_null();
            }
            _ => self.push_masked(),
        }
    }

    fn push_bool(&mut self, value: bool) {
        match &mut self.values {
            Values::Bool(b) => {
                b.append(value);
                self.valid.append_non_null();
            }
            _ => self.push_masked(),
        }
    }

    /// A null the column's type allows or not (a row without values, a column of an
    /// unexpected type): the batch check reports a non-nullable column with nulls.
    fn push_masked(&mut self) {
        let _ = self.push_null(true);
    }

    /// Drops the rows from `len` on (and what they hold in child columns).
    fn truncate(&mut self, len: usize) {
        self.valid.truncate(len);
        match &mut self.values {
            Values::Nulls => {}
            Values::Bool(b) => b.truncate(len),
            Values::I32(v) => v.truncate(len),
            Values::I64(v) => v.truncate(len),
            Values::F32(v) => v.truncate(len),
            Values::F64(v) => v.truncate(len),
            Values::Bytes { offsets, data } => {
                offsets.truncate(len + 1);
                data.truncate(last(offsets));
            }
            Values::List { offsets, item } => {
                offsets.truncate(len + 1);
                item.truncate(last(offsets));
            }
            Values::Struct(children) => {
                for c in children {
                    c.truncate(len);
                }
            }
            Values::Map {
                offsets,
                keys,
                values,
                ..
            } => {
                offsets.truncate(len + 1);
                keys.truncate(last(offsets));
                values.truncate(last(offsets));
            }
        }
    }

    /// Appends row `i` of `src`, a column of the same type.
    fn copy_row(&mut self, src: &Column, i: usize) -> Decoded {
        if !src.valid.is_valid(i) {
            return self.push_null(true);
        }
        match (&mut self.values, &src.values) {
            (Values::Nulls, Values::Nulls) => {}
            (Values::Bool(d), Values::Bool(s)) => d.append(s.get_bit(i)),
            (Values::I32(d), Values::I32(s)) => d.push(*s.get(i).ok_or(INTERNAL)?),
            (Values::I64(d), Values::I64(s)) => d.push(*s.get(i).ok_or(INTERNAL)?),
            (Values::F32(d), Values::F32(s)) => d.push(*s.get(i).ok_or(INTERNAL)?),
            (Values::F64(d), Values::F64(s)) => d.push(*s.get(i).ok_or(INTERNAL)?),
            (
                Values::Bytes { offsets, data },
                Values::Bytes {
                    offsets: so,
                    data: sd,
                },
            ) => push_bytes(offsets, data, sd.get(range(so, i)).ok_or(INTERNAL)?)?,
            (
                Values::List { offsets, item },
                Values::List {
                    offsets: so,
                    item: si,
                },
            ) => {
                for j in range(so, i) {
                    item.copy_row(si, j)?;
                }
                offsets.push(offset(item.len())?);
            }
            (Values::Struct(d), Values::Struct(s)) => {
                for (d, s) in d.iter_mut().zip(s) {
                    d.copy_row(s, i)?;
                }
            }
            (
                Values::Map {
                    offsets,
                    keys,
                    values,
                    ..
                },
                Values::Map {
                    offsets: so,
                    keys: sk,
                    values: sv,
                    ..
                },
            ) => {
                for j in range(so, i) {
                    keys.copy_row(sk, j)?;
                    values.copy_row(sv, j)?;
                }
                offsets.push(offset(keys.len())?);
            }
            _ => return Err(INTERNAL),
        }
        self.valid.append_non_null();
        Ok(())
    }

    /// Decodes one value with `node` and appends it: the strings, numbers and booleans
    /// most fields are (through their unions) here, every other kind in
    /// [`Column::decode_other`], out of line, so that this stays a small function.
    fn decode(&mut self, mut node: &Node, d: &mut Datum<'_>, names: &Names) -> Decoded {
        while let Node::Union(branches) = node {
            node = &branches[union_branch(d, branches.len())?];
        }
        match (node, &mut self.values) {
            (Node::Null, _) => return self.push_null(false),
            (Node::String, Values::Bytes { offsets, data }) => {
                push_bytes(offsets, data, d.text()?)?;
            }
            (Node::Boolean, Values::Bool(b)) => b.append(d.boolean()?),
            (Node::Int, Values::I32(v)) => v.push(d.int()?),
            (Node::IntToLong, Values::I64(v)) => v.push(i64::from(d.int()?)),
            (Node::Long, Values::I64(v)) => v.push(d.long()?),
            (Node::Millis, Values::I64(v)) => v.push(d.long()?.saturating_mul(1000)),
            _ => return self.decode_other(node, d, names),
        }
        self.valid.append_non_null();
        Ok(())
    }

    /// [`Column::decode`] of the kinds of values it leaves out, and of a value its column
    /// cannot hold.
    #[inline(never)]
    fn decode_other(&mut self, node: &Node, d: &mut Datum<'_>, names: &Names) -> Decoded {
        match (node, &mut self.values) {
            (Node::Mismatch { found, expected }, _) => {
                return Err(DecodeError::Mismatch {
                    field: String::new(),
                    found,
                    expected: expected.clone(),
                });
            }
            (Node::Float, Values::F32(v)) => v.push(f32_le(d.take(4)?)?),
            (Node::FloatToDouble, Values::F64(v)) => v.push(f64::from(f32_le(d.take(4)?)?)),
            (Node::Double, Values::F64(v)) => {
                let b: [u8; 8] = d.take(8)?.try_into().map_err(|_| EOF)?;
                v.push(f64::from_le_bytes(b));
            }
            (Node::Enum(symbols), Values::Bytes { offsets, data }) => {
                let symbol = usize::try_from(d.int()?)
                    .ok()
                    .and_then(|i| symbols.get(i))
                    .ok_or(DecodeError::Malformed("an enum index out of range"))?;
                push_bytes(offsets, data, symbol.as_bytes())?;
            }
            (Node::Uuid(kind), Values::Bytes { offsets, data }) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let text = d.uuid(kind)?.hyphenated().encode_lower(&mut text);
                push_bytes(offsets, data, text.as_bytes())?;
            }
            (Node::Bytes, Values::Bytes { offsets, data }) => {
                push_bytes(offsets, data, d.bytes()?)?
            }
            (Node::Fixed(n), Values::Bytes { offsets, data }) => {
                push_bytes(offsets, data, d.take(*n)?)?;
            }
            (Node::Array(items), Values::List { offsets, item }) => {
                let mut total = 0;
                loop {
                    let n = d.block(total)?;
                    if n == 0 {
                        break;
                    }
                    total += n;
                    for _ in 0..n {
                        item.decode(items, d, names)?;
                    }
                }
                offsets.push(offset(item.len())?);
            }
            (
                Node::Map(value),
                Values::Map {
                    offsets,
                    keys,
                    values,
                    entries,
                },
            ) => {
                entries.keys.clear();
                entries.values.truncate(0);
                let mut total = 0;
                loop {
                    let n = d.block(total)?;
                    if n == 0 {
                        break;
                    }
                    total += n;
                    for _ in 0..n {
                        entries.keys.push(d.str()?.to_owned());
                        entries.values.decode(value, d, names)?;
                    }
                }
                // Sorted by key; of equal keys the last one read, as a map keeps it.
                let mut order: Vec<usize> = (0..entries.keys.len()).collect();
                order.sort_by(|a, b| entries.keys[*a].cmp(&entries.keys[*b]).then(b.cmp(a)));
                order.dedup_by(|a, b| entries.keys[*a] == entries.keys[*b]);
                for i in order {
                    keys.push_str(Some(&entries.keys[i]));
                    values.copy_row(&entries.values, i)?;
                }
                offsets.push(offset(keys.len())?);
            }
            (Node::Record { fields, missing }, Values::Struct(children)) => {
                for (target, node) in fields {
                    match (target, node) {
                        (_, Node::Skip(s)) => skip(&s.schema, s.namespace.as_deref(), names, d)?,
                        (Some(c), node) => children
                            .get_mut(*c)
                            .ok_or(INTERNAL)?
                            .decode(node, d, names)?,
                        (None, _) => return Err(INTERNAL),
                    }
                }
                for c in missing {
                    children.get_mut(*c).ok_or(INTERNAL)?.push_null(false)?;
                }
            }
            _ => return Err(INTERNAL),
        }
        self.valid.append_non_null();
        Ok(())
    }

    /// The column as an Arrow array of its type.
    fn finish(self) -> Result<ArrayRef, ArrowError> {
        let Column {
            data_type,
            mut valid,
            values,
            ..
        } = self;
        let len = valid.len();
        let nulls = valid.finish().filter(|n| n.null_count() > 0);
        let wrong =
            || ArrowError::SchemaError(format!("a column of type {data_type} built as another"));
        Ok(match values {
            Values::Nulls => new_null_array(&data_type, len),
            Values::Bool(mut b) => {
                let b = b.finish();
                if b.len() != len {
                    return Err(wrong());
                }
                Arc::new(BooleanArray::new(b, nulls))
            }
            Values::I32(v) => match data_type {
                DataType::Date32 => Arc::new(Date32Array::try_new(v.into(), nulls)?),
                _ => Arc::new(Int32Array::try_new(v.into(), nulls)?),
            },
            Values::I64(v) => match &data_type {
                DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
                    TimestampMicrosecondArray::try_new(v.into(), nulls)?
                        .with_timezone_opt(tz.clone()),
                ),
                _ => Arc::new(Int64Array::try_new(v.into(), nulls)?),
            },
            Values::F32(v) => Arc::new(Float32Array::try_new(v.into(), nulls)?),
            Values::F64(v) => Arc::new(Float64Array::try_new(v.into(), nulls)?),
            Values::Bytes { offsets, data } => {
                let offsets = OffsetBuffer::new(offsets.into());
                let data = Buffer::from_vec(data);
                match data_type {
                    DataType::Binary => Arc::new(BinaryArray::try_new(offsets, data, nulls)?),
                    _ => Arc::new(StringArray::try_new(offsets, data, nulls)?),
                }
            }
            Values::List { offsets, item } => {
                let DataType::List(field) = &data_type else {
                    return Err(wrong());
                };
                Arc::new(ListArray::try_new(
                    field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    item.finish()?,
                    nulls,
                )?)
            }
            Values::Struct(children) => {
                let DataType::Struct(fields) = &data_type else {
                    return Err(wrong());
                };
                let arrays = children
                    .into_iter()
                    .map(Column::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new_with_length(
                    fields.clone(),
                    arrays,
                    nulls,
                    len,
                )?)
            }
            Values::Map {
                offsets,
                keys,
                values,
                ..
            } => {
                let DataType::Map(entries, sorted) = &data_type else {
                    return Err(wrong());
                };
                let DataType::Struct(kv) = entries.data_type() else {
                    return Err(wrong());
                };
                let entries_array =
                    StructArray::try_new(kv.clone(), vec![keys.finish()?, values.finish()?], None)?;
                Arc::new(MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::new(offsets.into()),
                    entries_array,
                    nulls,
                    *sorted,
                )?)
            }
        })
    }
}

#[inline]
fn f32_le(b: &[u8]) -> Decoded<f32> {
    let b: [u8; 4] = b.try_into().map_err(|_| EOF)?;
    Ok(f32::from_le_bytes(b))
}

/// The sink's own columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Key,
    Deleted,
    Topic,
    Partition,
    Offset,
    Timestamp,
    DecodeError,
    Tenant,
    RecordDate,
}

impl Meta {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            columns::KEY => Self::Key,
            columns::DELETED => Self::Deleted,
            columns::TOPIC => Self::Topic,
            columns::PARTITION => Self::Partition,
            columns::OFFSET => Self::Offset,
            columns::TIMESTAMP => Self::Timestamp,
            columns::DECODE_ERROR => Self::DecodeError,
            columns::TENANT => Self::Tenant,
            columns::RECORD_DATE => Self::RecordDate,
            _ => return None,
        })
    }
}

/// Where a record was in Kafka.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// The record's key, when it has one and it is UTF-8.
    pub key: Option<&'a str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its Kafka timestamp in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
}

/// What a record holds.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// A tombstone.
    Deleted,
    /// A value that could not be decoded, and why.
    Undecodable(&'a str),
    /// A datum of writer schema `schema_id`, decoded with `plan`.
    Datum {
        /// Writer schema id.
        schema_id: u32,
        /// The plan of that schema for this table.
        plan: &'a Plan,
        /// The Avro datum, after the wire format's header.
        datum: &'a [u8],
    },
}

/// A table's rows not yet streamed into its data files, column by column.
#[derive(Debug)]
pub struct Chunk {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// The sink's own columns, where they are.
    meta: Vec<(Meta, usize)>,
    /// Every other column: one per Avro field.
    fields: Vec<usize>,
    topic: String,
    rows: usize,
    /// The partition (tenant, day) of the first row.
    partition: Option<(Option<String>, Option<i32>)>,
    /// Whether the rows are of more than one partition.
    mixed: bool,
}

/// A chunk's rows taken to be written.
#[derive(Debug)]
pub struct Filled {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Whether every row is of one partition (tenant, day).
    pub one_partition: bool,
    /// Rows.
    pub rows: usize,
}

impl Chunk {
    /// An empty chunk of the table with `schema`, fed from `topic`, with room for `rows` rows.
    pub fn new(schema: SchemaRef, topic: &str, rows: usize) -> Self {
        let mut meta = Vec::new();
        let mut fields = Vec::new();
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                match Meta::of(f.name()) {
                    Some(m) => meta.push((m, i)),
                    None => fields.push(i),
                }
                Column::new(f.data_type(), f.is_nullable(), rows, rows * 16)
            })
            .collect();
        Self {
            schema,
            columns,
            meta,
            fields,
            topic: topic.to_owned(),
            rows: 0,
            partition: None,
            mixed: false,
        }
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The field column named `name`.
    fn field_column(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .copied()
            .find(|c| self.schema.field(*c).name() == name)
    }

    /// Appends a row; its value's fields are decoded into the field columns. Returns why the
    /// value was written as undecodable (`decode_error`), if it was.
    pub fn push(&mut self, at: &Position<'_>, body: Body<'_>) -> Option<String> {
        let mut error = match body {
            Body::Undecodable(why) => Some(why.to_owned()),
            _ => None,
        };
        match body {
            Body::Datum {
                schema_id,
                plan,
                datum,
            } => {
                if let Err(e) = self.decode(plan, datum) {
                    for c in &self.fields {
                        self.columns[*c].truncate(self.rows);
                    }
                    self.null_fields();
                    error = Some(format!("schema id {schema_id}: {e}"));
                }
            }
            Body::Deleted | Body::Undecodable(_) => self.null_fields(),
        }
        let tenant = at.key.and_then(|k| k.split('/').next());
        let day = at
            .timestamp_ms
            .map(|ms| i32::try_from(ms.div_euclid(86_400_000)).unwrap_or(0));
        for (m, c) in &self.meta {
            let column = &mut self.columns[*c];
            match m {
                Meta::Key => column.push_str(at.key),
                Meta::Deleted => column.push_bool(matches!(body, Body::Deleted)),
                Meta::Topic => column.push_str(Some(&self.topic)),
                Meta::Partition => column.push_i32(Some(at.partition)),
                Meta::Offset => column.push_i64(Some(at.offset)),
                Meta::Timestamp => {
                    column.push_i64(at.timestamp_ms.map(|ms| ms.saturating_mul(1000)))
                }
                Meta::DecodeError => column.push_str(error.as_deref()),
                Meta::Tenant => column.push_str(tenant),
                Meta::RecordDate => column.push_i32(day),
            }
        }
        match &self.partition {
            None => self.partition = Some((tenant.map(str::to_owned), day)),
            Some((t, d)) => self.mixed |= t.as_deref() != tenant || *d != day,
        }
        self.rows += 1;
        error
    }

    /// Whether `datum` decodes with `plan` into this chunk's columns; keeps nothing.
    ///
    /// # Errors
    /// [`DecodeError`].
    pub fn check(&mut self, plan: &Plan, datum: &[u8]) -> Decoded {
        let outcome = self.decode(plan, datum);
        for c in &self.fields {
            self.columns[*c].truncate(self.rows);
        }
        outcome
    }

    fn decode(&mut self, plan: &Plan, datum: &[u8]) -> Decoded {
        let mut d = Datum(datum);
        for (name, column, node) in &plan.fields {
            match (column, node) {
                (_, Node::Skip(s)) => skip(&s.schema, s.namespace.as_deref(), &plan.names, &mut d),
                (Some(c), node) => self
                    .columns
                    .get_mut(*c)
                    .ok_or(INTERNAL)
                    .and_then(|column| column.decode(node, &mut d, &plan.names)),
                (None, _) => Err(INTERNAL),
            }
            .map_err(|e| e.in_field(name))?;
        }
        for c in &plan.missing {
            self.columns.get_mut(*c).ok_or(INTERNAL)?.push_null(true)?;
        }
        Ok(())
    }

    fn null_fields(&mut self) {
        for c in &self.fields {
            self.columns[*c].push_masked();
        }
    }

    /// Drops every row.
    pub fn clear(&mut self) {
        for c in &mut self.columns {
            c.truncate(0);
        }
        self.rows = 0;
        self.partition = None;
        self.mixed = false;
    }

    /// Takes the rows, leaving the chunk empty (sized as it was).
    pub fn take(&mut self) -> Filled {
        let columns = self.columns.iter().map(Column::fresh).collect();
        let filled = Filled {
            schema: self.schema.clone(),
            columns: std::mem::replace(&mut self.columns, columns),
            one_partition: !self.mixed,
            rows: self.rows,
        };
        self.rows = 0;
        self.partition = None;
        self.mixed = false;
        filled
    }
}

impl Filled {
    /// The rows as one record batch in the table's schema.
    ///
    /// # Errors
    /// Arrow's, when a column does not fit its type (a bug: decoding checks each value).
    pub fn batch(self) -> Result<RecordBatch, ArrowError> {
        let arrays = self
            .columns
            .into_iter()
            .map(Column::finish)
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema, arrays)
    }
}

/// Plans per writer schema id, for one table.
pub type Plans = HashMap<u32, Arc<Plan>>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use apache_avro::types::Value;
    use deltalake::arrow::array::Array;
    use deltalake::arrow::datatypes::Schema as ArrowSchema;
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;

    /// The sink's conversion before this module: `apache_avro` values, then Arrow builders
    /// (the oracle the decoder is compared with).
    mod reference {
        use std::sync::Arc;

        use apache_avro::types::Value;
        use deltalake::arrow::array::{
            ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
            Int32Builder, Int64Builder, ListArray, MapArray, StringBuilder, StructArray,
            TimestampMicrosecondBuilder,
        };
        use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer};
        use deltalake::arrow::datatypes::{DataType as ArrowType, TimeUnit};

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
                    let mut records: Vec<Option<&[(String, Value)]>> =
                        Vec::with_capacity(values.len());
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
                                    r.and_then(|r| {
                                        r.iter().find(|(n, _)| n == f.name()).map(|(_, v)| v)
                                    })
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
                    let entries_array =
                        StructArray::new(kv.clone(), vec![key_array, value_array], None);
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
    }

    fn table_schema(avro: &Schema) -> SchemaRef {
        let columns = columns::table_columns(avro).unwrap();
        let arrow: ArrowSchema = (&StructType::try_new(columns).unwrap())
            .try_into_arrow()
            .unwrap();
        Arc::new(arrow)
    }

    /// xorshift64*: deterministic values for any schema.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
        fn text(&mut self) -> String {
            let n = self.below(12);
            (0..n)
                .map(|_| ['a', 'b', 'é', '/', '7', 'Z', '✓'][self.below(7)])
                .collect()
        }
    }

    fn value(schema: &Schema, names: &Names, rng: &mut Rng) -> Value {
        match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(rng.below(2) == 1),
            Schema::Int => Value::Int(rng.next() as i32 >> rng.below(31)),
            Schema::Long => Value::Long(rng.next() as i64 >> rng.below(63)),
            Schema::Float => Value::Float(rng.below(1000) as f32 / 7.0),
            Schema::Double => Value::Double(rng.below(100_000) as f64 / 3.0),
            Schema::String => Value::String(rng.text()),
            Schema::Bytes => Value::Bytes(rng.text().into_bytes()),
            Schema::Fixed(f) => {
                Value::Fixed(f.size, (0..f.size).map(|_| rng.below(256) as u8).collect())
            }
            Schema::Enum(e) => {
                let i = rng.below(e.symbols.len());
                Value::Enum(i as u32, e.symbols[i].clone())
            }
            Schema::Uuid(_) => Value::Uuid(uuid::Uuid::from_u64_pair(rng.next(), rng.next())),
            Schema::Date => Value::Date(rng.below(40_000) as i32),
            Schema::TimestampMillis => {
                Value::TimestampMillis(1_700_000_000_000 + rng.below(1 << 40) as i64)
            }
            Schema::TimestampMicros => Value::TimestampMicros(rng.next() as i64 >> 10),
            Schema::Array(a) => Value::Array(
                (0..rng.below(4))
                    .map(|_| value(&a.items, names, rng))
                    .collect(),
            ),
            Schema::Map(m) => Value::Map(
                (0..rng.below(4))
                    .map(|_| {
                        (
                            ["k", "a", "zz", ""][rng.below(4)].to_owned(),
                            value(&m.types, names, rng),
                        )
                    })
                    .collect(),
            ),
            Schema::Union(u) => {
                let i = rng.below(u.variants().len());
                Value::Union(i as u32, Box::new(value(&u.variants()[i], names, rng)))
            }
            Schema::Record(r) => Value::Record(
                r.fields
                    .iter()
                    .map(|f| (f.name.clone(), value(&f.schema, names, rng)))
                    .collect(),
            ),
            Schema::Ref { name } => value(&names[name], names, rng),
            other => panic!("no test values for {other:?}"),
        }
    }

    fn names_of(schema: &Schema) -> Names {
        ResolvedSchema::try_from(schema)
            .unwrap()
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect()
    }

    /// `v` as Avro of `schema` (also the table tests' records).
    pub(crate) fn encode(schema: &Schema, v: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(v)
            .unwrap()
    }

    /// One row for the oracle.
    struct Row {
        key: Option<String>,
        offset: i64,
        timestamp_ms: Option<i64>,
        body: Option<Result<Vec<(String, Value)>, String>>,
    }

    /// The batch the sink built before (`LakeTable::batch` over `columns::build_array`).
    fn reference_batch(schema: &SchemaRef, topic: &str, rows: &[Row]) -> RecordBatch {
        let arrays = schema
            .fields()
            .iter()
            .map(|column| -> ArrayRef {
                match column.name().as_str() {
                    columns::KEY => Arc::new(StringArray::from_iter(
                        rows.iter().map(|r| r.key.as_deref()),
                    )),
                    columns::DELETED => Arc::new(BooleanArray::from_iter(
                        rows.iter().map(|r| Some(r.body.is_none())),
                    )),
                    columns::TOPIC => {
                        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| topic)))
                    }
                    columns::PARTITION => {
                        Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| 3)))
                    }
                    columns::OFFSET => {
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset)))
                    }
                    columns::TIMESTAMP => Arc::new(
                        TimestampMicrosecondArray::from_iter(
                            rows.iter().map(|r| r.timestamp_ms.map(|ms| ms * 1000)),
                        )
                        .with_timezone("UTC"),
                    ),
                    columns::DECODE_ERROR => {
                        Arc::new(StringArray::from_iter(rows.iter().map(|r| match &r.body {
                            Some(Err(why)) => Some(why.as_str()),
                            _ => None,
                        })))
                    }
                    columns::TENANT => Arc::new(StringArray::from_iter(
                        rows.iter()
                            .map(|r| r.key.as_deref().and_then(|k| k.split('/').next())),
                    )),
                    columns::RECORD_DATE => {
                        Arc::new(Date32Array::from_iter(rows.iter().map(|r| {
                            r.timestamp_ms
                                .map(|ms| i32::try_from(ms.div_euclid(86_400_000)).unwrap())
                        })))
                    }
                    name => {
                        let values: Vec<Option<&Value>> = rows
                            .iter()
                            .map(|r| match &r.body {
                                Some(Ok(fields)) => {
                                    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
                                }
                                _ => None,
                            })
                            .collect();
                        reference::build_array(column.data_type(), &values).unwrap()
                    }
                }
            })
            .collect();
        RecordBatch::try_new(schema.clone(), arrays).unwrap()
    }

    /// `n` random records of writer schema `writer` through the decoder and through the
    /// oracle, into a table of `table`'s columns: equal batches.
    fn same_as_before(table: &Schema, writer: &Schema, n: usize, seed: u64) {
        let schema = table_schema(table);
        let names = names_of(writer);
        let mut rng = Rng(seed);
        let mut chunk = Chunk::new(schema.clone(), "t", 16);
        let plan = Plan::compile(writer, &chunk).unwrap();
        let mut rows = Vec::new();
        for i in 0..n {
            let key = match i % 7 {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!("tenant-{}/k{i}", i % 3)),
            };
            let timestamp_ms = (i % 5 != 0).then(|| 1_700_000_000_000 + i as i64 * 40_000_000);
            let at = Position {
                key: key.as_deref(),
                partition: 3,
                offset: i as i64,
                timestamp_ms,
            };
            let body = if i % 11 == 4 {
                assert_eq!(chunk.push(&at, Body::Deleted), None);
                None
            } else {
                let v = value(writer, &names, &mut rng);
                let datum = encode(writer, v.clone());
                let Value::Record(fields) = v else { panic!() };
                let error = chunk.push(
                    &at,
                    Body::Datum {
                        schema_id: 9,
                        plan: &plan,
                        datum: &datum,
                    },
                );
                assert_eq!(error, None, "record {i}");
                Some(Ok(fields))
            };
            rows.push(Row {
                key,
                offset: i as i64,
                timestamp_ms,
                body,
            });
        }
        let expected = reference_batch(&schema, "t", &rows);
        let batch = chunk.take().batch().unwrap();
        for (c, f) in schema.fields().iter().enumerate() {
            assert_eq!(
                batch.column(c).to_data(),
                expected.column(c).to_data(),
                "column {}",
                f.name()
            );
        }
        assert_eq!(batch, expected);
        assert_eq!(chunk.rows(), 0);
    }

    #[test]
    fn the_contract_schemas_decode_as_before() {
        for (i, text) in [
            schemas::usage::USER_USAGE_SCHEMA,
            schemas::usage::APPLICATION_SCHEMA,
            schemas::usage::APP_USAGE_SCHEMA,
        ]
        .into_iter()
        .enumerate()
        {
            let schema = Schema::parse_str(text).unwrap();
            same_as_before(&schema, &schema, 500, 7 + i as u64);
        }
    }

    /// Every type the sink writes; the second half names types the first half defines.
    const EVERY_TYPE: &str = r#"{"type": "record", "name": "R", "namespace": "n", "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": ["null", "long"]},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y", "Z"]}},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tu", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "a", "type": {"type": "array", "items": ["null", "string"]}},
        {"name": "nested", "type": ["null", {"type": "record", "name": "In", "fields": [
            {"name": "x", "type": "int"},
            {"name": "tags", "type": {"type": "array", "items":
                {"type": "enum", "name": "E2", "symbols": ["P", "Q"]}}},
            {"name": "m", "type": {"type": "map", "values": ["null", {"type": "fixed", "name": "F2", "size": 2}]}}
        ]}]},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "fx2", "type": REF_F},
        {"name": "e2", "type": {"type": "array", "items": REF_E}},
        {"name": "again", "type": {"type": "array", "items": REF_IN}}
    ]}"#;

    /// [`EVERY_TYPE`] as a table can be made of it: no type named twice.
    fn every_type_table() -> Schema {
        Schema::parse_str(
            &EVERY_TYPE
                .replace("REF_F", r#"{"type": "fixed", "name": "G", "size": 3}"#)
                .replace(
                    "REF_E",
                    r#"{"type": "enum", "name": "H", "symbols": ["X", "Y", "Z"]}"#,
                )
                .replace(
                    "REF_IN",
                    r#"{"type": "record", "name": "J", "fields": [
                        {"name": "x", "type": "int"},
                        {"name": "tags", "type": {"type": "array", "items":
                            {"type": "enum", "name": "K", "symbols": ["P", "Q"]}}},
                        {"name": "m", "type": {"type": "map", "values": ["null",
                            {"type": "fixed", "name": "L", "size": 2}]}}]}"#,
                ),
        )
        .unwrap()
    }

    /// [`EVERY_TYPE`] as a writer may send it: references to types defined before.
    fn every_type_writer() -> Schema {
        Schema::parse_str(
            &EVERY_TYPE
                .replace("REF_F", r#""F""#)
                .replace("REF_E", r#""n.E""#)
                .replace("REF_IN", r#""In""#),
        )
        .unwrap()
    }

    #[test]
    fn every_type_decodes_as_before() {
        let table = every_type_table();
        same_as_before(&table, &table, 400, 3);
        same_as_before(&table, &every_type_writer(), 400, 4);
    }

    #[test]
    fn an_older_writer_schema_leaves_new_columns_null_and_a_reserved_field_is_dropped() {
        let table = every_type_table();
        // Fewer fields, another order, a nested record with a field the table lacks and without
        // one it has, and a field named like a sink column (whose value the sink's wins).
        let writer = Schema::parse_str(
            r#"{"type": "record", "name": "R", "namespace": "n", "fields": [
            {"name": "s", "type": ["null", "string"]},
            {"name": "tenant", "type": "string"},
            {"name": "i", "type": "int"},
            {"name": "nested", "type": {"type": "record", "name": "In", "fields": [
                {"name": "extra", "type": {"type": "map", "values": "double"}},
                {"name": "x", "type": "int"},
                {"name": "tags", "type": {"type": "array", "items": {"type": "enum", "name": "E", "symbols": ["Y", "Q"]}}},
                {"name": "m", "type": {"type": "map", "values": ["null", {"type": "fixed", "name": "F", "size": 3}]}}
            ]}}
        ]}"#,
        )
        .unwrap();
        same_as_before(&table, &writer, 200, 5);
    }

    #[test]
    fn a_bad_value_is_a_row_with_decode_error_and_the_next_rows_are_whole() {
        let schema = every_type_writer();
        let table = table_schema(&every_type_table());
        let names = names_of(&schema);
        let mut chunk = Chunk::new(table.clone(), "t", 4);
        let plan = Plan::compile(&schema, &chunk).unwrap();
        let mut rng = Rng(11);
        let mut rows = Vec::new();
        for i in 0..60 {
            let v = value(&schema, &names, &mut rng);
            let datum = encode(&schema, v.clone());
            let at = Position {
                key: Some("a/b"),
                partition: 3,
                offset: i,
                timestamp_ms: Some(5),
            };
            // Every third datum cut short somewhere, possibly inside a list or map.
            let cut = if i % 3 == 1 {
                &datum[..datum.len() * (i as usize % 5) / 6]
            } else {
                &datum[..]
            };
            let error = chunk.push(
                &at,
                Body::Datum {
                    schema_id: 4,
                    plan: &plan,
                    datum: cut,
                },
            );
            let Value::Record(fields) = v else { panic!() };
            let body = match error {
                Some(why) => {
                    assert!(i % 3 == 1, "record {i}: {why}");
                    assert!(why.starts_with("schema id 4: "), "{why}");
                    Some(Err(why))
                }
                None => Some(Ok(fields)),
            };
            rows.push(Row {
                key: Some("a/b".into()),
                offset: i,
                timestamp_ms: Some(5),
                body,
            });
        }
        let failed = rows
            .iter()
            .filter(|r| matches!(r.body, Some(Err(_))))
            .count();
        assert!(failed >= 15, "{failed} cut datums failed");
        let expected = reference_batch(&table, "t", &rows);
        assert_eq!(chunk.take().batch().unwrap(), expected);
    }

    #[test]
    fn a_value_that_does_not_fit_its_column_is_refused_only_when_met() {
        let table = table_schema(&every_type_table());
        let writer = Schema::parse_str(
            r#"{"type": "record", "name": "R", "fields": [
            {"name": "i", "type": ["null", "string"]},
            {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}
        ]}"#,
        )
        .unwrap();
        let mut chunk = Chunk::new(table, "t", 4);
        let plan = Plan::compile(&writer, &chunk).unwrap();
        let at = Position {
            key: None,
            partition: 0,
            offset: 0,
            timestamp_ms: None,
        };
        // null, then a decimal: `i` fits, `d` does not.
        let e = chunk.check(&plan, &[0, 2, 1, 2]).unwrap_err();
        assert!(e.is_mismatch(), "{e}");
        assert_eq!(
            e.to_string(),
            "field `d`: a value of Avro type decimal does not fit a column of type Double"
                .replace("Double", "Float64")
        );
        // A string where an int goes.
        let e = chunk.check(&plan, &[2, 2, b'x']).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("field `i`: a value of Avro type string"),
            "{e}"
        );
        assert_eq!(chunk.rows(), 0);
        let why = chunk.push(
            &at,
            Body::Datum {
                schema_id: 1,
                plan: &plan,
                datum: &[2, 2, b'x'],
            },
        );
        assert!(why.unwrap().starts_with("schema id 1: field `i`"));
        let batch = chunk.take().batch().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert!(batch.column_by_name("i").unwrap().is_null(0));
        assert!(
            batch
                .column_by_name(columns::DECODE_ERROR)
                .unwrap()
                .is_valid(0)
        );
    }

    #[test]
    fn a_map_keeps_the_last_of_equal_keys_in_key_order() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map", "values": "int"}}]}"#,
        )
        .unwrap();
        let table = table_schema(&schema);
        let mut chunk = Chunk::new(table, "t", 4);
        let plan = Plan::compile(&schema, &chunk).unwrap();
        // One block of three entries: b=1, a=2, b=3.
        let datum = [6, 2, b'b', 2, 2, b'a', 4, 2, b'b', 6, 0];
        let at = Position {
            key: None,
            partition: 0,
            offset: 0,
            timestamp_ms: None,
        };
        assert_eq!(
            chunk.push(
                &at,
                Body::Datum {
                    schema_id: 1,
                    plan: &plan,
                    datum: &datum
                }
            ),
            None
        );
        let batch = chunk.take().batch().unwrap();
        let m = batch.column_by_name("m").unwrap();
        let m = m.as_any().downcast_ref::<MapArray>().unwrap();
        let entries = m.value(0);
        let keys = entries
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let values = entries
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        assert_eq!(keys.iter().collect::<Vec<_>>(), [Some("a"), Some("b")]);
        assert_eq!(values.values().to_vec(), [2, 3]);
    }

    #[test]
    fn validate_reads_a_whole_datum() {
        let schema = every_type_writer();
        let names = names_of(&schema);
        let mut rng = Rng(1);
        for _ in 0..50 {
            let datum = encode(&schema, value(&schema, &names, &mut rng));
            assert_eq!(validate(&schema, &datum), Ok(()));
            assert!(validate(&schema, &datum[..datum.len() - 1]).is_err());
        }
        assert!(validate(&schema, &[3]).is_err());
    }

    /// A string that is not UTF-8 fails its record, whether it goes to a column, is skipped,
    /// or is a map's key; the same bytes as valid UTF-8 (ASCII or not) pass.
    #[test]
    fn a_string_that_is_not_utf8_fails_its_record() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "s", "type": "string"},
                {"name": "m", "type": {"type": "map", "values": "long"}}]}"#,
        )
        .unwrap();
        // Avro binary: a string is its length (zigzag varint) and bytes; a map is one block
        // of `n` entries (zigzag n), then 0.
        let datum = |s: &[u8], key: &[u8]| {
            let mut d = vec![u8::try_from(s.len() * 2).unwrap()];
            d.extend_from_slice(s);
            d.extend([2, u8::try_from(key.len() * 2).unwrap()]);
            d.extend_from_slice(key);
            d.extend([2, 0]);
            d
        };
        let bad = [0x61, 0xc3, 0x28];
        for (s, key, ok) in [
            (&b"abc"[..], &b"k"[..], true),
            ("é✓".as_bytes(), "ké".as_bytes(), true),
            (&bad[..], &b"k"[..], false),
            (&b"abc"[..], &bad[..], false),
        ] {
            let d = datum(s, key);
            assert_eq!(validate(&schema, &d).is_ok(), ok, "validate {s:?} {key:?}");
            let mut chunk = Chunk::new(table_schema(&schema), "t", 1);
            let plan = Plan::compile(&schema, &chunk).unwrap();
            let error = chunk.push(
                &Position {
                    key: Some("a/b"),
                    partition: 0,
                    offset: 0,
                    timestamp_ms: None,
                },
                Body::Datum {
                    schema_id: 1,
                    plan: &plan,
                    datum: &d,
                },
            );
            match error {
                None => assert!(ok, "{s:?} {key:?} decoded"),
                Some(why) => {
                    assert!(!ok, "{s:?} {key:?}: {why}");
                    assert!(why.contains("not UTF-8"), "{why}");
                }
            }
            assert_eq!(chunk.take().batch().unwrap().num_rows(), 1);
        }
    }
}
