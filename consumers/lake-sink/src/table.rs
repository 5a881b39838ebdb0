//! One Delta table fed by one topic, and how it stays exactly once without Kafka transactions
//! (the kafka-delta-ingest way).
//!
//! Every commit carries, for each Kafka partition it holds rows of, a `txn` action with
//! `appId = <app_id>-<topic>-<partition>` and `version` = the last offset written. So the table
//! itself says where each partition resumes ([`LakeTable::resume_point`]). Before committing,
//! the sink reads the table's latest versions again and compares them with what it held when
//! it started reading the partition: if another instance wrote the partition meanwhile (a
//! rebalance, a zombie), the commit is refused ([`Committed::Stale`]) and the sink rereads from
//! the table's versions. Delta's own put-if-absent on the next log entry makes two racing
//! commits end with one winner, and the loser checks again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructField, Transaction};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::columns::{self, PARTITION_COLUMNS};

/// A failed table operation, with the table's name.
#[derive(Debug, thiserror::Error)]
#[error("table {table}: {action}: {source}")]
pub struct TableError {
    /// The table's name (`users`, ...).
    pub table: String,
    /// What was being done.
    pub action: &'static str,
    /// Delta's error.
    #[source]
    pub source: Box<DeltaTableError>,
}

impl TableError {
    fn new(table: &str, action: &'static str, source: DeltaTableError) -> Self {
        Self {
            table: table.to_owned(),
            action,
            source: Box::new(source),
        }
    }
}

/// One buffered row: a record as read from Kafka, decoded or not.
#[derive(Debug)]
pub struct Row {
    /// The record's key, when it has one and it is UTF-8.
    pub key: Option<String>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its Kafka timestamp in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    /// What the record holds.
    pub body: Body,
}

/// What a record holds.
#[derive(Debug)]
pub enum Body {
    /// A tombstone.
    Deleted,
    /// The fields of a decoded value, with the registry id of its writer schema.
    Fields {
        /// Writer schema id.
        schema_id: u32,
        /// The record's fields in the writer schema's order.
        fields: Vec<(String, Value)>,
    },
    /// A value that could not be decoded, and why.
    Undecodable(String),
}

/// The outcome of [`LakeTable::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Written at this table version.
    Written {
        /// The table version.
        version: u64,
        /// Data files added.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Refused: another writer moved these partitions' versions since they were read.
    Stale(Vec<i32>),
}

/// How many times a commit is tried again after another writer's commit took its version.
const COMMIT_RACES: usize = 20;

/// A Delta table and its writer.
pub struct LakeTable {
    name: String,
    topic: String,
    app_id: String,
    table: DeltaTable,
    writer: RecordBatchWriter,
    schema: SchemaRef,
    /// For each writer schema id, where each field column's value is in its records.
    layouts: HashMap<u32, Arc<Vec<Option<usize>>>>,
}

impl std::fmt::Debug for LakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeTable")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("version", &self.table.version())
            .finish_non_exhaustive()
    }
}

impl LakeTable {
    /// Opens the table at `url`, creating it with the columns of `schema` (the topic's value
    /// schema) when there is none.
    ///
    /// # Errors
    /// [`TableError`] when the location cannot be read or written, or the schema has no
    /// columns ([`columns::table_columns`]).
    pub async fn open(
        name: &str,
        url: &Url,
        storage_options: &BTreeMap<String, String>,
        topic: &str,
        app_id: &str,
        schema: &Schema,
    ) -> Result<Self, TableError> {
        let fail = |action| move |source| TableError::new(name, action, source);
        if url.scheme() == "file"
            && let Ok(dir) = url.to_file_path()
        {
            std::fs::create_dir_all(&dir).map_err(|e| {
                TableError::new(
                    name,
                    "creating its directory",
                    DeltaTableError::Io { source: e },
                )
            })?;
        }
        let options: HashMap<String, String> = storage_options.clone().into_iter().collect();
        let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.with_storage_options(options.clone()).build())
            .map_err(fail("opening"))?;
        match table.load().await {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) => {
                let columns = columns::table_columns(schema).map_err(|e| {
                    TableError::new(
                        name,
                        "deriving columns",
                        DeltaTableError::Generic(e.to_string()),
                    )
                })?;
                let created = table
                    .create()
                    .with_table_name(name)
                    .with_comment(format!("Kafka topic {topic}, written by lake-sink"))
                    .with_columns(columns)
                    .with_partition_columns(PARTITION_COLUMNS)
                    .with_save_mode(SaveMode::Ignore)
                    .await;
                table = match created {
                    Ok(t) => t,
                    // Another instance created it first.
                    Err(_) => {
                        let mut t = deltalake::DeltaTableBuilder::from_url(url.clone())
                            .and_then(|b| b.with_storage_options(options).build())
                            .map_err(fail("opening"))?;
                        t.load().await.map_err(fail("loading after creation"))?;
                        t
                    }
                };
                tracing::info!(table = name, %url, "created the table");
            }
            Err(e) => return Err(fail("loading")(e)),
        }
        let writer = writer_for(&table).map_err(fail("preparing a writer"))?;
        let schema = writer.arrow_schema();
        Ok(Self {
            name: name.to_owned(),
            topic: topic.to_owned(),
            app_id: app_id.to_owned(),
            table,
            writer,
            schema,
            layouts: HashMap::new(),
        })
    }

    fn txn_app_id(&self, partition: i32) -> String {
        txn_app_id(&self.app_id, &self.topic, partition)
    }

    fn fail(&self, action: &'static str) -> impl Fn(DeltaTableError) -> TableError + '_ {
        move |source| TableError::new(&self.name, action, source)
    }

    /// Reads the table's latest version from storage.
    ///
    /// # Errors
    /// [`TableError`] when the log cannot be read.
    pub async fn refresh(&mut self) -> Result<(), TableError> {
        let name = self.name.clone();
        self.table
            .update_incremental(None)
            .await
            .map_err(|source| TableError::new(&name, "reading the log", source))
    }

    /// The last offset of `partition` the table holds, as of the loaded version (`None`: none
    /// yet). Call [`LakeTable::refresh`] first for the latest.
    ///
    /// # Errors
    /// [`TableError`] when the log cannot be read.
    pub async fn resume_point(&mut self, partition: i32) -> Result<Option<i64>, TableError> {
        let snapshot = self
            .table
            .snapshot()
            .map_err(self.fail("reading the snapshot"))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), self.txn_app_id(partition))
            .await
            .map_err(self.fail("reading txn versions"))
    }

    /// The last offset of `partition` in the table's latest version (`None`: none yet).
    ///
    /// # Errors
    /// [`TableError`] when the log cannot be read.
    pub async fn latest_resume_point(&mut self, partition: i32) -> Result<Option<i64>, TableError> {
        let app_id = self.txn_app_id(partition);
        latest_resume_point(&mut self.table, &app_id)
            .await
            .map_err(|source| TableError::new(&self.name, "reading txn versions", source))
    }

    /// Whether the records of writer schema `fields` have columns the table lacks; adds them
    /// (nullable, so nothing is rewritten) and says which.
    ///
    /// # Errors
    /// [`TableError`] when the metadata commit fails.
    pub async fn evolve(&mut self, schema: &Schema) -> Result<Vec<String>, TableError> {
        let wanted = columns::field_columns(schema).map_err(|e| {
            TableError::new(
                &self.name,
                "deriving columns",
                DeltaTableError::Generic(e.to_string()),
            )
        })?;
        let missing: Vec<StructField> = wanted
            .into_iter()
            .filter(|c| self.schema.field_with_name(c.name()).is_err())
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = missing.iter().map(|c| c.name().to_owned()).collect();
        self.refresh().await?;
        let table = self.table.clone();
        self.table = table
            .add_columns()
            .with_fields(missing)
            .await
            .map_err(self.fail("adding columns"))?;
        self.writer =
            RecordBatchWriter::for_table(&self.table).map_err(self.fail("preparing a writer"))?;
        self.schema = self.writer.arrow_schema();
        self.layouts.clear();
        tracing::info!(table = %self.name, columns = ?names, "added columns for a new writer schema");
        Ok(names)
    }

    /// Whether the table has a column for every field of the writer schema.
    pub fn covers(&self, schema: &Schema) -> bool {
        let Schema::Record(r) = schema else {
            return true;
        };
        r.fields
            .iter()
            .all(|f| self.schema.field_with_name(&f.name).is_ok())
    }

    /// Where each of the table's columns is in the records of `schema_id`.
    fn layout(&mut self, schema_id: u32, fields: &[(String, Value)]) -> Arc<Vec<Option<usize>>> {
        let schema = &self.schema;
        self.layouts
            .entry(schema_id)
            .or_insert_with(|| {
                Arc::new(
                    schema
                        .fields()
                        .iter()
                        .map(|c| fields.iter().position(|(n, _)| n == c.name()))
                        .collect(),
                )
            })
            .clone()
    }

    /// The rows as one record batch in the table's schema.
    fn batch(&mut self, rows: &[Row]) -> Result<RecordBatch, TableError> {
        let layouts: Vec<Option<Arc<Vec<Option<usize>>>>> = rows
            .iter()
            .map(|r| match &r.body {
                Body::Fields { schema_id, fields } => Some(self.layout(*schema_id, fields)),
                _ => None,
            })
            .collect();
        let topic = self.topic.clone();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, column) in self.schema.fields().iter().enumerate() {
            let array: ArrayRef = match column.name().as_str() {
                columns::KEY => Arc::new(StringArray::from_iter(
                    rows.iter().map(|r| r.key.as_deref()),
                )),
                columns::DELETED => Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|r| Some(matches!(r.body, Body::Deleted))),
                )),
                columns::TOPIC => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|_| &topic)))
                }
                columns::PARTITION => Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|r| r.partition),
                )),
                columns::OFFSET => {
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset)))
                }
                columns::TIMESTAMP => Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter()
                            .map(|r| r.timestamp_ms.map(|ms| ms.saturating_mul(1000))),
                    )
                    .with_timezone("UTC"),
                ),
                columns::DECODE_ERROR => {
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| match &r.body {
                        Body::Undecodable(why) => Some(why.as_str()),
                        _ => None,
                    })))
                }
                columns::TENANT => Arc::new(StringArray::from_iter(
                    rows.iter()
                        .map(|r| r.key.as_deref().and_then(|k| k.split('/').next())),
                )),
                columns::RECORD_DATE => Arc::new(Date32Array::from_iter(rows.iter().map(|r| {
                    r.timestamp_ms
                        .map(|ms| i32::try_from(ms.div_euclid(86_400_000)).unwrap_or(0))
                }))),
                _ => {
                    let values: Vec<Option<&Value>> = rows
                        .iter()
                        .zip(&layouts)
                        .map(|(r, layout)| match (&r.body, layout) {
                            (Body::Fields { fields, .. }, Some(layout)) => {
                                layout[i].map(|p| &fields[p].1)
                            }
                            _ => None,
                        })
                        .collect();
                    columns::build_array(column.data_type(), &values).map_err(|e| {
                        TableError::new(
                            &self.name,
                            "building a column",
                            DeltaTableError::Generic(format!("column {}: {e}", column.name())),
                        )
                    })?
                }
            };
            // The table's schema may say a column is not nullable where Arrow built it
            // nullable: the writer compares names and types.
            arrays.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| {
            TableError::new(
                &self.name,
                "assembling a batch",
                DeltaTableError::Arrow { source: e },
            )
        })
    }

    /// Streams `rows` into the data files of the current window (nothing is visible until
    /// [`LakeTable::commit`]): rows are turned into Arrow and Parquet as they come, so a window
    /// holds encoded data, not decoded records.
    ///
    /// # Errors
    /// [`TableError`] when a file cannot be written; then [`LakeTable::discard`] the window.
    pub async fn append(&mut self, rows: &[Row]) -> Result<(), TableError> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self.batch(rows)?;
        self.writer
            .write(batch)
            .await
            .map_err(self.fail("writing data files"))
    }

    /// Drops the current window: its files are never committed (their uploads are aborted or
    /// left for vacuum).
    pub fn discard(&mut self) {
        self.writer.reset();
    }

    /// Finishes the window's data files, ready for [`LakeTable::commit`].
    ///
    /// # Errors
    /// [`TableError`] when a file cannot be finished; then [`LakeTable::discard`] the window.
    pub async fn finish(&mut self) -> Result<Vec<Add>, TableError> {
        self.writer
            .flush()
            .await
            .map_err(self.fail("finishing data files"))
    }

    /// Commits the finished files `adds` with the `txn` versions in `ends`
    /// (partition → last offset), if the table's versions of those partitions still equal
    /// `held` (partition → the version read when the partition was positioned). May be called
    /// again with the same files after an error.
    ///
    /// # Errors
    /// [`TableError`] when the log cannot be read or written.
    pub async fn commit(
        &mut self,
        adds: &[Add],
        ends: &BTreeMap<i32, i64>,
        held: &BTreeMap<i32, Option<i64>>,
    ) -> Result<Committed, TableError> {
        let files = adds.len();
        let bytes: u64 = adds
            .iter()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let txns: Vec<Transaction> = ends
            .iter()
            .map(|(p, offset)| {
                Transaction::new_with_last_update(self.txn_app_id(*p), *offset, Some(now))
            })
            .collect();
        let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        for _ in 0..COMMIT_RACES {
            let mut stale = Vec::new();
            for (p, expected) in held {
                if self.resume_point(*p).await? != *expected {
                    stale.push(*p);
                }
            }
            if !stale.is_empty() {
                // The files written above stay unreferenced until `lake-sink maintain` vacuums.
                return Ok(Committed::Stale(stale));
            }
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(PARTITION_COLUMNS.iter().map(|c| (*c).to_owned()).collect()),
                predicate: None,
            };
            let snapshot = self
                .table
                .snapshot()
                .map_err(self.fail("reading the snapshot"))?;
            let attempt = CommitBuilder::from(
                CommitProperties::default()
                    .with_max_retries(0)
                    .with_application_transactions(txns.clone()),
            )
            .with_actions(actions.clone())
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
            match attempt {
                Ok(done) => {
                    let version = done.version();
                    self.refresh().await?;
                    return Ok(Committed::Written {
                        version,
                        files,
                        bytes,
                    });
                }
                Err(e) if is_race(&e) => {
                    tracing::debug!(table = %self.name, error = %e, "another commit took the version: checking again");
                    self.refresh().await?;
                }
                Err(e) => return Err(self.fail("committing")(e)),
            }
        }
        Err(self.fail("committing")(DeltaTableError::Generic(format!(
            "lost the race for the next version {COMMIT_RACES} times in a row"
        ))))
    }

    /// Whether `row` fits the table's columns (a writer schema's first record is checked so,
    /// so that a type change is refused per schema instead of failing a whole commit).
    ///
    /// # Errors
    /// [`TableError`] saying which column does not fit.
    pub fn check(&mut self, row: &Row) -> Result<(), TableError> {
        self.batch(std::slice::from_ref(row)).map(|_| ())
    }
}

/// Rows per Parquet row group: a row group is held in memory until it is complete, so this
/// bounds a window's memory (Parquet's default, 1,048,576 rows, held a whole flush).
pub const ROW_GROUP_ROWS: usize = 65_536;

/// A writer for `table`: Snappy-compressed Parquet in row groups of [`ROW_GROUP_ROWS`].
///
/// # Errors
/// Delta's, when the table's schema cannot be read.
pub fn writer_for(table: &DeltaTable) -> Result<RecordBatchWriter, DeltaTableError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("lake-sink {}", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(RecordBatchWriter::for_table(table)?.with_writer_properties(properties))
}

/// The Delta `txn` application id of one Kafka partition: `<app_id>-<topic>-<partition>`.
pub fn txn_app_id(app_id: &str, topic: &str, partition: i32) -> String {
    format!("{app_id}-{topic}-{partition}")
}

/// The last offset of `app_id`'s partition in `table`'s latest version (`None`: none yet).
///
/// # Errors
/// Delta's, when the log cannot be read.
pub async fn latest_resume_point(
    table: &mut DeltaTable,
    app_id: &str,
) -> Result<Option<i64>, DeltaTableError> {
    table.update_incremental(None).await?;
    table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
}

/// Whether a commit failed only because another writer committed first: its version was
/// taken, or (with no retries allowed) the table moved since the snapshot the commit read.
fn is_race(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::VersionAlreadyExists(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}
