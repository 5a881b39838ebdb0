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
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructField, Transaction};
use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use indexmap::IndexMap;
use tokio::sync::oneshot;
use url::Url;

use crate::columns::{self, PARTITION_COLUMNS};
use crate::decode::{Body, Chunk, DecodeError, Filled, Plan, PlanError, Plans, Position};

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

/// Rows per record batch streamed into the data files: a table's decoded rows not yet
/// encoded are at most this many, plus as many being encoded.
pub const CHUNK_ROWS: usize = 4096;

/// How a record's value becomes a row.
#[derive(Debug)]
pub enum Prepared {
    /// A tombstone.
    Deleted,
    /// Written with `decode_error`, for this reason.
    Undecodable(String),
    /// Decoded with the plan of its writer schema.
    Datum {
        /// The writer schema's id.
        schema_id: u32,
        /// Its plan for the table's current columns.
        plan: Arc<Plan>,
    },
}

/// A record as read, borrowed from the consumer's message: what [`LakeTable::push`] keeps of
/// it.
#[derive(Debug)]
pub struct Record<'a> {
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value as read (framed in the registry's wire format), `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its Kafka timestamp, in milliseconds.
    pub timestamp_ms: Option<i64>,
    /// How its value becomes a row.
    pub value: Prepared,
}

/// Records read and not decoded yet: per record its position and plan, and its key and Avro
/// datum copied side by side into one buffer, which is reused chunk after chunk. Before, each
/// message was detached (an allocation each for its key, its value and its topic name, its
/// headers parsed), and freed again on the decoder's thread (bench/RESULTS.md,
/// session 26).
#[derive(Debug, Default)]
struct Records {
    heads: Vec<Head>,
    bytes: Vec<u8>,
}

/// The bytes a [`Records`] buffer keeps when emptied: 2 KiB for each of [`CHUNK_ROWS`] records
/// (the benchmark's users take about 400 bytes).
const RECORDS_KEPT_BYTES: usize = 2048 * CHUNK_ROWS;

/// One record of [`Records`]: its bytes are `key` and `datum`, ranges of [`Records::bytes`].
#[derive(Debug)]
struct Head {
    key: Option<std::ops::Range<usize>>,
    datum: std::ops::Range<usize>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    value: Prepared,
}

impl Records {
    fn with_capacity(rows: usize) -> Self {
        Self {
            heads: Vec::with_capacity(rows),
            bytes: Vec::new(),
        }
    }

    fn copy(&mut self, bytes: &[u8]) -> std::ops::Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    fn push(&mut self, record: Record<'_>) {
        let key = record.key.map(|k| self.copy(k));
        // Only a datum's Avro body is decoded; of the other values nothing is kept.
        let datum = match (&record.value, record.payload) {
            (Prepared::Datum { .. }, Some(v)) => {
                self.copy(v.get(schemas::wire::HEADER_LEN..).unwrap_or_default())
            }
            _ => 0..0,
        };
        self.heads.push(Head {
            key,
            datum,
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            value: record.value,
        });
    }

    fn len(&self) -> usize {
        self.heads.len()
    }

    fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Empties it, keeping its memory up to [`RECORDS_KEPT_BYTES`] (a chunk of unusually large
    /// records does not stay the buffer's size for good).
    fn clear(&mut self) {
        self.heads.clear();
        self.bytes.clear();
        self.bytes.shrink_to(RECORDS_KEPT_BYTES);
    }
}

/// Called with the reason when a record's value is written as undecodable (`decode_error`).
pub type OnUndecodable = Arc<dyn Fn(&str) + Send + Sync>;

/// Encoded chunks a table lets wait for its [`Worker`] at once (one being written, one
/// queued): more would only hold more decoded rows.
const ENCODES_IN_FLIGHT: usize = 2;

/// The outcome of a decode job: the chunk back (its buffers are reused), its rows taken, and
/// the records' buffer emptied (reused too).
type Decoded = (Box<Chunk>, Filled, Records);

/// A table's decoding: its chunk waits, with an empty records' buffer for the records read
/// next, or a [`Worker`] decodes records into it.
enum Decoding {
    Idle(Box<Chunk>, Records),
    Busy(oneshot::Receiver<Decoded>),
    /// Between the two (never seen outside a method).
    Gone,
}

impl Decoding {
    /// An empty chunk of `schema`'s columns, fed from `topic`, waiting for records.
    fn fresh(schema: &SchemaRef, topic: &str) -> Self {
        Self::Idle(
            Box::new(Chunk::new(schema.clone(), topic, CHUNK_ROWS)),
            Records::with_capacity(CHUNK_ROWS),
        )
    }
}

/// A job of a [`Worker`] thread.
type Job = Box<dyn FnOnce() + Send>;

/// A thread of a table's own that runs its jobs one at a time: a table has two, one decoding
/// records into rows and one writing rows into Parquet, so that reading, decoding and encoding
/// run side by side (bench/RESULTS.md). Its allocations (decoded columns, Parquet's
/// page, compression and file buffers) stay in one allocator heap and are reused from chunk to
/// chunk; on the blocking pool the chunks went to whichever thread was free, and each thread's
/// heap touched fresh memory.
#[derive(Debug)]
struct Worker {
    name: String,
    /// Room for one queued job beside the one running: a table never has more outstanding
    /// ([`ENCODES_IN_FLIGHT`], one decode at a time), so a hand-over waits at most for the
    /// thread to take the job queued before, once the job running has answered.
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Worker {
    /// Starts thread `name`; it ends when the worker is dropped.
    fn start(name: &str) -> std::io::Result<Self> {
        let (jobs, incoming) = std::sync::mpsc::sync_channel::<Job>(1);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(job) = incoming.recv() {
                    job();
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            jobs,
        })
    }

    /// Hands `job` to the thread, starting a new one if it stopped (a job panicked: that job's
    /// answer never comes, and its window fails). The caller keeps at most one job queued.
    fn run(&mut self, job: Job) -> std::io::Result<()> {
        let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) else {
            return Ok(());
        };
        *self = Self::start(&self.name)?;
        self.jobs
            .send(job)
            .map_err(|_| std::io::Error::other(format!("thread {} stopped", self.name)))
    }
}

/// Decodes `records` into `chunk`, reporting the values written as undecodable.
fn decode_records(chunk: &mut Chunk, records: &Records, undecodable: &OnUndecodable) {
    let bytes =
        |range: &std::ops::Range<usize>| records.bytes.get(range.clone()).unwrap_or_default();
    for head in &records.heads {
        let at = Position {
            key: head
                .key
                .as_ref()
                .and_then(|k| std::str::from_utf8(bytes(k)).ok()),
            partition: head.partition,
            offset: head.offset,
            timestamp_ms: head.timestamp_ms,
        };
        let body = match &head.value {
            Prepared::Deleted => Body::Deleted,
            Prepared::Undecodable(why) => Body::Undecodable(why),
            Prepared::Datum { schema_id, plan } => Body::Datum {
                schema_id: *schema_id,
                plan,
                datum: bytes(&head.datum),
            },
        };
        if let Some(why) = chunk.push(&at, body) {
            undecodable(&why);
        }
    }
}

/// A Delta table and its writer.
pub struct LakeTable {
    name: String,
    topic: String,
    app_id: String,
    table: DeltaTable,
    /// The window's writer; the encoder's jobs take it in turn.
    writer: Arc<tokio::sync::Mutex<RecordBatchWriter>>,
    decoder: Worker,
    encoder: Worker,
    /// Chunks handed to the encoder and not settled yet, oldest first; each answers with its
    /// outcome.
    encodes: std::collections::VecDeque<oneshot::Receiver<Result<(), DeltaTableError>>>,
    schema: SchemaRef,
    /// Whether the table is partitioned by exactly [`PARTITION_COLUMNS`], so that a chunk of
    /// one tenant and day is written as that partition without splitting it.
    own_partitions: bool,
    /// Records read and not handed to the decoder yet.
    records: Records,
    /// The chunk the decoder fills.
    decoding: Decoding,
    /// An empty chunk of the current columns: plans are compiled for it and a writer schema's
    /// sample record checked in it ([`LakeTable::adopt`]).
    template: Chunk,
    undecodable: OnUndecodable,
    /// Writer schemas seen, by id.
    schemas: HashMap<u32, Arc<Schema>>,
    /// How each writer schema's records become rows of the current columns.
    plans: Plans,
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
        undecodable: OnUndecodable,
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
                let stats = columns::stats_columns(&columns);
                let created = table
                    .create()
                    .with_table_name(name)
                    .with_comment(format!("Kafka topic {topic}, written by lake-sink"))
                    .with_configuration_property(
                        TableProperty::DataSkippingStatsColumns,
                        Some(stats),
                    )
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
        let worker = |role: &str| {
            Worker::start(&format!("lake-{role}-{name}")).map_err(|e| {
                TableError::new(
                    name,
                    "starting its threads",
                    DeltaTableError::Io { source: e },
                )
            })
        };
        Ok(Self {
            decoder: worker("decode")?,
            encoder: worker("encode")?,
            encodes: std::collections::VecDeque::new(),
            name: name.to_owned(),
            topic: topic.to_owned(),
            app_id: app_id.to_owned(),
            own_partitions: own_partitions(&table),
            records: Records::with_capacity(CHUNK_ROWS),
            decoding: Decoding::fresh(&schema, topic),
            template: Chunk::new(schema.clone(), topic, 1),
            undecodable,
            table,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            schema,
            schemas: HashMap::new(),
            plans: Plans::new(),
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
        // The window was committed before: nothing written is lost with the old writer.
        let _ = self.settle().await;
        self.records.clear();
        let writer = writer_for(&self.table).map_err(self.fail("preparing a writer"))?;
        self.schema = writer.arrow_schema();
        *self.writer.lock().await = writer;
        self.own_partitions = own_partitions(&self.table);
        self.decoding = Decoding::fresh(&self.schema, &self.topic);
        self.template = Chunk::new(self.schema.clone(), &self.topic, 1);
        self.plans.clear();
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

    /// The plan of writer schema `schema_id` for the current columns, when the schema was
    /// adopted ([`LakeTable::adopt`]).
    pub fn plan(&mut self, schema_id: u32) -> Option<Arc<Plan>> {
        if let Some(plan) = self.plans.get(&schema_id) {
            return Some(plan.clone());
        }
        // The columns changed since: compile again.
        let schema = self.schemas.get(&schema_id)?;
        let plan = Arc::new(Plan::compile(schema, &self.template).ok()?);
        self.plans.insert(schema_id, plan.clone());
        Some(plan)
    }

    /// Compiles the plan of writer schema `schema_id` for the current columns (after
    /// [`LakeTable::evolve`]) and checks that `sample`, one of its records, fits the columns
    /// (so that a type change is refused per schema instead of one record at a time).
    ///
    /// # Errors
    /// Why the schema is refused.
    pub fn adopt(
        &mut self,
        schema_id: u32,
        schema: Arc<Schema>,
        sample: &[u8],
    ) -> Result<Arc<Plan>, AdoptError> {
        let plan = Arc::new(Plan::compile(&schema, &self.template)?);
        // `check` keeps nothing: the template stays empty.
        if let Err(e) = self.template.check(&plan, sample)
            && e.is_mismatch()
        {
            return Err(e.into());
        }
        self.schemas.insert(schema_id, schema);
        self.plans.insert(schema_id, plan.clone());
        Ok(plan)
    }

    /// The Delta table as last loaded or committed.
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// Appends a record to the window; it is decoded into a row when the next chunk is
    /// handed over ([`LakeTable::stream`]).
    pub fn push(&mut self, record: Record<'_>) {
        self.records.push(record);
    }

    /// Records not handed to the decoder yet.
    pub fn pending(&self) -> usize {
        self.records.len()
    }

    /// Waits for the chunk being decoded, if one is, and hands its rows to the encoder
    /// (waiting first for the oldest chunk being encoded when [`ENCODES_IN_FLIGHT`] are).
    ///
    /// # Errors
    /// [`TableError`] when a thread stopped or a chunk could not be written.
    async fn encode_decoded(&mut self) -> Result<(), TableError> {
        let (chunk, filled, records) =
            match std::mem::replace(&mut self.decoding, Decoding::Gone) {
                idle @ Decoding::Idle(..) => {
                    self.decoding = idle;
                    return Ok(());
                }
                Decoding::Busy(answer) => answer.await.map_err(|_| {
                    self.fail("decoding")(DeltaTableError::Generic(
                        "the decoder thread stopped during a chunk".into(),
                    ))
                }),
                Decoding::Gone => Err(self.fail("decoding")(DeltaTableError::Generic(
                    "the chunk was lost".into(),
                ))),
            }
            .inspect_err(|_| {
                // Its window is lost with it: the error makes the sink drop every window.
                self.decoding = Decoding::fresh(&self.schema, &self.topic);
            })?;
        self.decoding = Decoding::Idle(chunk, records);
        if filled.rows == 0 {
            return Ok(());
        }
        while self.encodes.len() >= ENCODES_IN_FLIGHT {
            self.settle_oldest().await?;
        }
        let writer = Arc::clone(&self.writer);
        let own_partitions = self.own_partitions;
        let runtime = tokio::runtime::Handle::current();
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let mut writer = writer.blocking_lock();
            let outcome = runtime.block_on(write_chunk(&mut writer, filled, own_partitions));
            // The receiver is gone only when the table was dropped meanwhile.
            let _ = reply.send(outcome);
        });
        self.encodes.push_back(answer);
        self.encoder.run(job).map_err(|e| {
            TableError::new(
                &self.name,
                "writing data files",
                DeltaTableError::Io { source: e },
            )
        })
    }

    /// Waits for the oldest chunk being encoded.
    async fn settle_oldest(&mut self) -> Result<(), TableError> {
        let Some(answer) = self.encodes.pop_front() else {
            return Ok(());
        };
        let outcome = match answer.await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The job panicked, maybe halfway through a write: a new writer, and the
                // error below makes the sink drop every window.
                let writer = writer_for(&self.table).map_err(self.fail("preparing a writer"))?;
                *self.writer.lock().await = writer;
                Err(DeltaTableError::Generic(
                    "the encoder thread stopped during a write".into(),
                ))
            }
        };
        outcome.map_err(self.fail("writing data files"))
    }

    /// Waits until every chunk handed over is decoded and written; the first error among them.
    async fn settle(&mut self) -> Result<(), TableError> {
        let mut outcome = self.encode_decoded().await;
        while !self.encodes.is_empty() {
            let settled = self.settle_oldest().await;
            if outcome.is_ok() {
                outcome = settled;
            }
        }
        outcome
    }

    /// Hands the records read so far to the decoder, whose rows then go to the encoder and
    /// into the data files of the current window (nothing is visible until
    /// [`LakeTable::commit`]). Reading, decoding and encoding run side by side: the chunk
    /// decoded before is handed to the encoder first. The error of a chunk handed over
    /// before, if one failed.
    ///
    /// # Errors
    /// [`TableError`] when a file could not be written or a thread stopped; then
    /// [`LakeTable::discard`] the window.
    pub async fn stream(&mut self) -> Result<(), TableError> {
        self.encode_decoded().await?;
        if self.records.is_empty() {
            return Ok(());
        }
        let Decoding::Idle(mut chunk, empty) =
            std::mem::replace(&mut self.decoding, Decoding::Gone)
        else {
            return Err(self.fail("decoding")(DeltaTableError::Generic(
                "the chunk was lost".into(),
            )));
        };
        let mut records = std::mem::replace(&mut self.records, empty);
        let undecodable = Arc::clone(&self.undecodable);
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            decode_records(&mut chunk, &records, &undecodable);
            let filled = chunk.take();
            records.clear();
            // The receiver is gone only when the table was dropped meanwhile.
            let _ = reply.send((chunk, filled, records));
        });
        // On failure the job, with the chunk, is dropped: the next call makes a new chunk.
        self.decoding = Decoding::Busy(answer);
        self.decoder
            .run(job)
            .map_err(|e| TableError::new(&self.name, "decoding", DeltaTableError::Io { source: e }))
    }

    /// Drops the current window: its records and rows, and its files, which are never
    /// committed (their uploads are aborted or left for vacuum).
    pub async fn discard(&mut self) {
        let _ = self.settle().await;
        self.writer.lock().await.reset();
        self.records.clear();
    }

    /// Finishes the window's data files, ready for [`LakeTable::commit`].
    ///
    /// # Errors
    /// [`TableError`] when a file cannot be written or finished; then
    /// [`LakeTable::discard`] the window.
    pub async fn finish(&mut self) -> Result<Vec<Add>, TableError> {
        self.stream().await?;
        self.settle().await?;
        let name = self.name.clone();
        self.writer
            .lock()
            .await
            .flush()
            .await
            .map_err(|source| TableError::new(&name, "finishing data files", source))
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
}

/// Why a writer schema is refused.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// No plan: not a record, or an undefined name.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A record of the schema does not fit the columns.
    #[error(transparent)]
    Fit(#[from] DecodeError),
}

/// Whether `table` is partitioned by exactly [`PARTITION_COLUMNS`].
fn own_partitions(table: &DeltaTable) -> bool {
    table.snapshot().is_ok_and(|s| {
        s.metadata()
            .partition_columns()
            .iter()
            .map(String::as_str)
            .eq(PARTITION_COLUMNS)
    })
}

/// Writes a chunk: as one partition when all its rows are of one tenant and day (no split,
/// no copy), else through the writer's own split.
async fn write_chunk(
    writer: &mut RecordBatchWriter,
    filled: Filled,
    own_partitions: bool,
) -> Result<(), DeltaTableError> {
    let one = own_partitions && filled.one_partition;
    let batch = filled
        .batch()
        .map_err(|source| DeltaTableError::Arrow { source })?;
    if !one {
        return writer.write(batch).await;
    }
    let mut values = IndexMap::new();
    for name in PARTITION_COLUMNS {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| DeltaTableError::Generic(format!("no partition column {name}")))?;
        let value = ScalarExt::from_array(column.as_ref(), 0)
            .ok_or_else(|| DeltaTableError::Generic(format!("partition column {name}")))?;
        values.insert(name.to_owned(), value);
    }
    writer
        .write_partition(batch, &values, WriteMode::Default)
        .await
        .map(|_| ())
}

/// Rows per Parquet row group: a row group is held in memory until it is complete, so this
/// bounds a window's memory (Parquet's default, 1,048,576 rows, held a whole flush).
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Bytes per Parquet data page, and the dictionary size after which a column chunk falls
/// back to plain encoding: 64 KiB instead of Parquet's 1 MiB. Each column's page is encoded
/// and compressed in buffers of this size, which the allocator reuses instead of touching
/// fresh memory for every page (fewer page faults, about 15 MB less peak RSS; bench/RESULTS.md).
pub const PAGE_BYTES: usize = 64 * 1024;

/// A writer for `table`: Parquet compressed with zstd at level 1, in row groups of
/// [`ROW_GROUP_ROWS`] and pages of [`PAGE_BYTES`], with statistics per column chunk for the
/// columns Delta keeps statistics of ([`statistics_columns`]), no dictionary for the
/// [`UNIQUE_COLUMNS`], and the [`delta_columns`] delta-encoded.
///
/// # Errors
/// Delta's, when the table's schema cannot be read.
pub fn writer_for(table: &DeltaTable) -> Result<RecordBatchWriter, DeltaTableError> {
    let writer = RecordBatchWriter::for_table(table)?;
    let mut properties = WriterProperties::builder()
        // zstd 1 (the default level): the benchmark's tables take 15.7 MB instead of Snappy's
        // 25.0 MB, at the same speed and with 10–15 MB less peak RSS (bench/RESULTS.md); every
        // Delta reader reads zstd.
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES)
        // Minimum and maximum per column chunk (what Delta's file statistics are made of), not
        // per page as well: comparing every value of every page cost more than it gave.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("lake-sink {}", env!("CARGO_PKG_VERSION")));
    for column in UNIQUE_COLUMNS {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    match statistics_columns(table) {
        Some(columns) => {
            properties = properties.set_statistics_enabled(EnabledStatistics::None);
            for column in columns {
                properties =
                    properties.set_column_statistics_enabled(column, EnabledStatistics::Chunk);
            }
        }
        None => {
            for column in UNRANKED_COLUMNS {
                properties = properties.set_column_statistics_enabled(
                    ColumnPath::from(column),
                    EnabledStatistics::None,
                );
            }
        }
    }
    for column in delta_columns(&writer.arrow_schema()) {
        let path = ColumnPath::from(column);
        properties = properties
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(path, Compression::UNCOMPRESSED);
    }
    Ok(writer.with_writer_properties(properties.build()))
}

/// The columns of `table`'s property `delta.dataSkippingStatsColumns` (as Delta's kernel parses
/// it: nested columns, backquoted names), the only ones Delta keeps statistics of when it is
/// set (the sink sets it on the tables it creates: [`columns::ORDERED_COLUMNS`]); `None` when
/// it is not set (a table created before that, or by another writer): then every column but
/// the [`UNRANKED_COLUMNS`] has statistics, of which Delta keeps the first 32 columns'.
fn statistics_columns(table: &DeltaTable) -> Option<Vec<ColumnPath>> {
    let snapshot = table.snapshot().ok()?;
    let columns = snapshot
        .table_config()
        .data_skipping_stats_columns
        .as_ref()?;
    Some(
        columns
            .iter()
            .map(|c| ColumnPath::new(c.path().to_vec()))
            .collect(),
    )
}

/// The columns written with Parquet's `DELTA_BINARY_PACKED` encoding and not compressed: every
/// top-level 64-bit integer and timestamp column (offsets, times). Their values are close to one
/// another, so the packed differences take fewer bits than zstd leaves of the plain values: the
/// benchmark's tables take 14,963 KB instead of 15,693 KB, and zstd has a fifth less data to
/// compress (bench/RESULTS.md, session 24).
fn delta_columns(schema: &deltalake::arrow::datatypes::Schema) -> Vec<&str> {
    use deltalake::arrow::datatypes::DataType;
    schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..)))
        .map(|f| f.name().as_str())
        .collect()
}

/// String columns whose values are (nearly) all different, written without a dictionary:
/// interning each value only to give the dictionary up after its first 1 MB. A name no table
/// has changes nothing. (Offsets and times have none either: they are [`delta_columns`].)
const UNIQUE_COLUMNS: [&str; 5] = [
    "record_key",
    "user_id",
    "username",
    "email",
    "last_activity_id",
];

/// String columns of unique values in no particular order (ids, names, addresses), written
/// without statistics: a file's minimum and maximum of random ids span nearly the whole range,
/// so they skip no file, and comparing every value for them was 11 % of the encoding
/// (bench/RESULTS.md). Time and offset columns keep theirs.
const UNRANKED_COLUMNS: [&str; 5] = [
    "record_key",
    "user_id",
    "username",
    "email",
    "last_activity_id",
];

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets and times are written delta-encoded and uncompressed, other columns as before,
    /// and Parquet's own reader reads every value back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_and_times_are_delta_encoded_and_read_back_equal() {
        use deltalake::arrow::array::{Array, AsArray};
        use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-delta"));
        let url = Url::from_directory_path(&dir).unwrap();
        let schema = Arc::new(
            Schema::parse_str(
                r#"{"type": "record", "name": "T", "fields": [
                    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                    {"name": "n", "type": "long"},
                    {"name": "s", "type": "string"}]}"#,
            )
            .unwrap(),
        );
        let mut table = open_table(&url, &schema).await;
        let datum = |i: i64| {
            let value = apache_avro::types::Value::Record(vec![
                (
                    "at".into(),
                    apache_avro::types::Value::TimestampMillis(1_765_000_000_000 + i * 7),
                ),
                ("n".into(), apache_avro::types::Value::Long(i * i)),
                (
                    "s".into(),
                    apache_avro::types::Value::String(format!("v{i}")),
                ),
            ]);
            schemas::wire::encode(1, &crate::decode::tests::encode(&schema, value))
        };
        let plan = table
            .adopt(1, schema.clone(), &datum(0)[schemas::wire::HEADER_LEN..])
            .unwrap();
        let rows = 10_000_i64;
        for i in 0..rows {
            let payload = datum(i);
            table.push(datum_at(&payload, i, &plan));
            if table.pending() >= CHUNK_ROWS {
                table.stream().await.unwrap();
            }
        }
        let adds = table.finish().await.unwrap();
        assert_eq!(adds.len(), 1);
        let file = std::fs::File::open(dir.join(&adds[0].path)).unwrap();

        let reader = SerializedFileReader::new(file.try_clone().unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            let name = column.column_path().string();
            let delta = column
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED);
            let expected = ["kafka_offset", "kafka_timestamp", "at", "n"].contains(&name.as_str());
            assert_eq!(
                delta,
                expected,
                "{name}: {:?}",
                column.encodings().collect::<Vec<_>>()
            );
            if expected {
                assert_eq!(column.compression(), Compression::UNCOMPRESSED, "{name}");
            } else if name == "s" {
                assert!(
                    matches!(column.compression(), Compression::ZSTD(_)),
                    "{name}"
                );
            }
        }

        let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (mut n, mut at, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        for batch in &batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            n.extend(
                column("n")
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
            at.extend(
                column("at")
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
            let offset = column("kafka_offset");
            assert_eq!(offset.null_count(), 0);
            offsets.extend(offset.as_primitive::<Int64Type>().values().iter().copied());
        }
        assert_eq!(n, (0..rows).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(
            at,
            (0..rows)
                .map(|i| (1_765_000_000_000 + i * 7) * 1000)
                .collect::<Vec<_>>()
        );
        assert_eq!(offsets, (0..rows).collect::<Vec<_>>());
        drop(table);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Record `offset` of partition 0, key `tenant/key`, whose value `payload` decodes with
    /// `plan` (writer schema id 1).
    fn datum_at<'a>(payload: &'a [u8], offset: i64, plan: &Arc<Plan>) -> Record<'a> {
        Record {
            key: Some(b"tenant/key"),
            payload: Some(payload),
            partition: 0,
            offset,
            timestamp_ms: Some(1_765_000_000_000),
            value: Prepared::Datum {
                schema_id: 1,
                plan: plan.clone(),
            },
        }
    }

    /// A records' buffer keeps each record's key and Avro body (its wire header dropped),
    /// nothing of a tombstone's or an undecodable value's, and, emptied, at most
    /// [`RECORDS_KEPT_BYTES`] of memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_keep_keys_and_bodies_and_give_big_buffers_back() {
        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-records"));
        let url = Url::from_directory_path(&dir).unwrap();
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "T", "fields": [{"name": "s", "type": "string"}]}"#,
        )
        .unwrap();
        let mut table = open_table(&url, &schema).await;
        let sample = crate::decode::tests::encode(
            &schema,
            apache_avro::types::Value::Record(vec![(
                "s".into(),
                apache_avro::types::Value::String("abc".into()),
            )]),
        );
        let plan = table.adopt(1, Arc::new(schema), &sample).unwrap();
        let datum = |payload| Record {
            key: Some(b"t/1"),
            payload: Some(payload),
            partition: 2,
            offset: 7,
            timestamp_ms: Some(9),
            value: Prepared::Datum {
                schema_id: 1,
                plan: plan.clone(),
            },
        };
        let mut records = Records::with_capacity(4);
        let framed = schemas::wire::encode(1, &sample);
        records.push(datum(&framed));
        records.push(Record {
            key: None,
            payload: None,
            partition: 2,
            offset: 8,
            timestamp_ms: None,
            value: Prepared::Deleted,
        });
        records.push(Record {
            key: Some(b"t/2"),
            payload: Some(b"junk"),
            partition: 2,
            offset: 9,
            timestamp_ms: Some(10),
            value: Prepared::Undecodable("not framed".into()),
        });
        assert_eq!(records.len(), 3);
        let bytes = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &records.bytes[r]);
        let heads = &records.heads;
        assert_eq!(bytes(&heads[0].key), Some(&b"t/1"[..]));
        assert_eq!(&records.bytes[heads[0].datum.clone()], &sample[..]);
        assert_eq!(
            (heads[0].partition, heads[0].offset, heads[0].timestamp_ms),
            (2, 7, Some(9))
        );
        assert_eq!(bytes(&heads[1].key), None);
        assert!(heads[1].datum.is_empty());
        assert_eq!(bytes(&heads[2].key), Some(&b"t/2"[..]));
        assert!(heads[2].datum.is_empty());
        assert_eq!(records.bytes.len(), 3 + sample.len() + 3);

        records.clear();
        assert!(records.is_empty() && records.bytes.is_empty());
        let kept = records.bytes.capacity();
        assert!(kept > 0, "an ordinary chunk's memory is kept");
        let big = schemas::wire::encode(1, &vec![0; 3 * RECORDS_KEPT_BYTES]);
        records.push(datum(&big));
        assert!(records.bytes.capacity() >= 3 * RECORDS_KEPT_BYTES);
        records.clear();
        assert!(records.bytes.capacity() <= RECORDS_KEPT_BYTES);
        drop(table);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The statistics of a file written into a table: per column, whether its Parquet column
    /// chunk has a minimum and maximum; and the columns of its Delta `add` action's
    /// `minValues`.
    async fn statistics(
        url: &Url,
        stats_property: Option<&str>,
    ) -> (Vec<(String, bool)>, Vec<String>) {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "T", "fields": [
                {"name": "n", "type": "long"},
                {"name": "s", "type": "string"},
                {"name": "sync_id", "type": "string"},
                {"name": "observed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#,
        )
        .unwrap();
        if let Some(property) = stats_property {
            // Made by another writer, with the operator's choice of columns (or none).
            std::fs::create_dir_all(url.to_file_path().unwrap()).unwrap();
            let mut create = deltalake::DeltaTableBuilder::from_url(url.clone())
                .unwrap()
                .build()
                .unwrap()
                .create()
                .with_columns(columns::table_columns(&schema).unwrap())
                .with_partition_columns(PARTITION_COLUMNS);
            if !property.is_empty() {
                create = create.with_configuration_property(
                    TableProperty::DataSkippingStatsColumns,
                    Some(property),
                );
            }
            create.await.unwrap();
        }
        let mut table = open_table(url, &schema).await;
        let plan = {
            let datum = crate::decode::tests::encode(&schema, record(0));
            table.adopt(1, Arc::new(schema.clone()), &datum).unwrap()
        };
        fn record(i: i64) -> apache_avro::types::Value {
            use apache_avro::types::Value;
            Value::Record(vec![
                ("n".into(), Value::Long(i)),
                ("s".into(), Value::String(format!("v{i}"))),
                ("sync_id".into(), Value::String("sync-1".into())),
                (
                    "observed_at".into(),
                    Value::TimestampMillis(1_765_000_000_000 + i),
                ),
            ])
        }
        for i in 0..100 {
            let payload =
                schemas::wire::encode(1, &crate::decode::tests::encode(&schema, record(i)));
            table.push(datum_at(&payload, i, &plan));
        }
        let adds = table.finish().await.unwrap();
        assert_eq!(adds.len(), 1);
        let dir = url.to_file_path().unwrap();
        let reader = deltalake::parquet::file::reader::SerializedFileReader::new(
            std::fs::File::open(dir.join(&adds[0].path)).unwrap(),
        )
        .unwrap();
        use deltalake::parquet::file::reader::FileReader;
        let chunks = reader
            .metadata()
            .row_group(0)
            .columns()
            .iter()
            .map(|c| {
                let has = c.statistics().is_some_and(|s| s.min_bytes_opt().is_some());
                (c.column_path().string(), has)
            })
            .collect();
        let stats: serde_json::Value =
            serde_json::from_str(adds[0].stats.as_deref().unwrap()).unwrap();
        let mut delta: Vec<String> = stats["minValues"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        delta.sort();
        (chunks, delta)
    }

    /// The columns with Parquet statistics among `chunks`.
    fn with_statistics(chunks: &[(String, bool)]) -> Vec<&str> {
        chunks
            .iter()
            .filter(|(_, has)| *has)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// A table the sink creates keeps statistics (Parquet's and Delta's) for the columns that
    /// follow the write order only, and says so in `delta.dataSkippingStatsColumns`; a table
    /// whose property names other columns gets theirs; a table without it gets every column's
    /// but the unranked ones'.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statistics_are_kept_for_the_columns_the_table_names() {
        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-stats"));
        let url = |name: &str| Url::from_directory_path(dir.join(name)).unwrap();

        let (chunks, delta) = statistics(&url("created"), None).await;
        let ordered = [
            "kafka_partition",
            "kafka_offset",
            "kafka_timestamp",
            "sync_id",
            "observed_at",
        ];
        assert_eq!(with_statistics(&chunks), ordered);
        let mut sorted = ordered.map(str::to_owned).to_vec();
        sorted.sort();
        assert_eq!(delta, sorted);
        let table = deltalake::open_table(url("created")).await.unwrap();
        assert_eq!(
            table
                .snapshot()
                .unwrap()
                .metadata()
                .configuration()
                .get("delta.dataSkippingStatsColumns")
                .map(String::as_str),
            Some("kafka_partition,kafka_offset,kafka_timestamp,sync_id,observed_at")
        );

        let (chunks, delta) = statistics(&url("named"), Some("n, `s`")).await;
        assert_eq!(with_statistics(&chunks), ["n", "s"]);
        assert_eq!(delta, ["n", "s"]);

        let (chunks, _) = statistics(&url("unnamed"), Some("")).await;
        let without: Vec<&str> = chunks
            .iter()
            .filter(|(_, has)| !*has)
            .map(|(name, _)| name.as_str())
            .collect();
        // `decode_error` is null in every row: no minimum or maximum to keep.
        assert_eq!(without, ["record_key", "decode_error"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A table of one string field at `dir`, opened as one sink instance (app id `test`).
    async fn instance(url: &Url) -> LakeTable {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "T", "fields": [{"name": "s", "type": "string"}]}"#,
        )
        .unwrap();
        open_table(url, &schema).await
    }

    /// Table `t` of topic `topic` at `url` for `schema`, as sink `test` opens it.
    async fn open_table(url: &Url, schema: &Schema) -> LakeTable {
        LakeTable::open(
            "t",
            url,
            &BTreeMap::new(),
            "topic",
            "test",
            schema,
            Arc::new(|_| {}),
        )
        .await
        .unwrap()
    }

    /// Writes tombstones at `offsets` of `partition` into `table`'s window and finishes its
    /// files (nothing committed).
    async fn window(
        table: &mut LakeTable,
        partition: i32,
        offsets: std::ops::Range<i64>,
    ) -> Vec<Add> {
        for offset in offsets {
            let key = format!("tenant/{offset}");
            table.push(Record {
                key: Some(key.as_bytes()),
                payload: None,
                partition,
                offset,
                timestamp_ms: Some(1_765_000_000_000),
                value: Prepared::Deleted,
            });
        }
        table.finish().await.unwrap()
    }

    /// The paths and row counts of the files in the table's latest version.
    async fn live_files(table: &mut LakeTable) -> Vec<(String, usize)> {
        use futures::TryStreamExt;
        table.refresh().await.unwrap();
        let mut files: Vec<(String, usize)> = table
            .table
            .get_active_add_actions_by_partitions(&[])
            .map_ok(|f| (f.path().into_owned(), f.num_records().unwrap_or(usize::MAX)))
            .try_collect()
            .await
            .unwrap();
        files.sort();
        files
    }

    /// The exactly-once guard: an instance whose partition another instance wrote since it
    /// read the partition's version (a zombie after a rebalance) has its commit refused, and
    /// nothing of its window becomes visible; read again from the table's new version, it
    /// commits the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_refused_when_another_instance_moved_the_partition() {
        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-stale"));
        let url = Url::from_directory_path(&dir).unwrap();
        let mut zombie = instance(&url).await;
        let mut owner = instance(&url).await;
        assert_eq!(zombie.resume_point(0).await.unwrap(), None);
        assert_eq!(owner.resume_point(0).await.unwrap(), None);
        let held = BTreeMap::from([(0, None)]);

        // Both read partition 0 from its start; the owner commits offsets 0-49 first.
        let zombie_adds = window(&mut zombie, 0, 0..100).await;
        let owner_adds = window(&mut owner, 0, 0..50).await;
        let written = owner
            .commit(&owner_adds, &BTreeMap::from([(0, 49)]), &held)
            .await
            .unwrap();
        assert!(
            matches!(
                written,
                Committed::Written {
                    version: 1,
                    files: 1,
                    ..
                }
            ),
            "{written:?}"
        );
        // The same commit again (the sink retries a commit whose outcome it did not learn, say
        // a storage timeout after the log entry was written): refused, not written twice.
        let again = owner
            .commit(&owner_adds, &BTreeMap::from([(0, 49)]), &held)
            .await
            .unwrap();
        assert_eq!(again, Committed::Stale(vec![0]));

        // The zombie still holds "no version yet": refused, whatever its loaded version says.
        let refused = zombie
            .commit(&zombie_adds, &BTreeMap::from([(0, 99)]), &held)
            .await
            .unwrap();
        assert_eq!(refused, Committed::Stale(vec![0]));
        let files = live_files(&mut zombie).await;
        assert_eq!(
            files,
            vec![(owner_adds[0].path.clone(), 50)],
            "only the owner's window is in the table"
        );
        assert_eq!(zombie.latest_resume_point(0).await.unwrap(), Some(49));

        // Read again from offset 50, as the sink does after a refusal: it commits the rest.
        zombie.discard().await;
        let rest = window(&mut zombie, 0, 50..100).await;
        let written = zombie
            .commit(
                &rest,
                &BTreeMap::from([(0, 99)]),
                &BTreeMap::from([(0, Some(49))]),
            )
            .await
            .unwrap();
        assert!(
            matches!(written, Committed::Written { version: 2, .. }),
            "{written:?}"
        );
        let rows: usize = live_files(&mut owner).await.iter().map(|(_, n)| n).sum();
        assert_eq!(rows, 100, "offsets 0-99 once each");
        assert_eq!(owner.latest_resume_point(0).await.unwrap(), Some(99));
        drop((zombie, owner));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The resumer answers from the table the sink opened and handed over at start, and
    /// reads it forward first: what another instance committed after the hand-over is in its
    /// answer, not the adopted table's stale version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_resumer_reads_an_adopted_table_forward() {
        use crate::assign::{Resumer, Source};
        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-adopt"));
        let url = Url::from_directory_path(&dir).unwrap();
        let opened = instance(&url).await;
        let mut other = instance(&url).await;
        let resumer = Resumer::start(
            vec![Source {
                topic: "topic".into(),
                url: url.clone(),
            }],
            HashMap::new(),
            "test".into(),
        )
        .unwrap();
        resumer.adopt("topic", opened.delta().clone());
        let adds = window(&mut other, 0, 0..50).await;
        let written = other
            .commit(
                &adds,
                &BTreeMap::from([(0, 49)]),
                &BTreeMap::from([(0, None)]),
            )
            .await
            .unwrap();
        assert!(matches!(written, Committed::Written { version: 1, .. }));

        let wanted = vec![("topic".to_owned(), 0), ("topic".to_owned(), 1)];
        let points = tokio::task::spawn_blocking(move || resumer.resume_points(wanted))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(points[&("topic".to_owned(), 0)], Some(49));
        assert_eq!(points[&("topic".to_owned(), 1)], None);
        drop((opened, other));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two instances committing different partitions from the same loaded version: the one
    /// that loses the race for the next log entry checks its partitions again and commits at
    /// the version after; both windows are in the table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_loses_the_race_for_a_version_commits_at_the_next() {
        let dir = std::env::temp_dir().join(test_harness::unique_name("lake-race"));
        let url = Url::from_directory_path(&dir).unwrap();
        let mut first = instance(&url).await;
        let mut second = instance(&url).await;
        let a = window(&mut first, 0, 0..10).await;
        let b = window(&mut second, 1, 0..20).await;
        let written = first
            .commit(&a, &BTreeMap::from([(0, 9)]), &BTreeMap::from([(0, None)]))
            .await
            .unwrap();
        assert!(
            matches!(written, Committed::Written { version: 1, .. }),
            "{written:?}"
        );
        // `second` still has version 0 loaded: its first attempt at version 1 is refused by
        // the log store, and it commits at version 2.
        let written = second
            .commit(&b, &BTreeMap::from([(1, 19)]), &BTreeMap::from([(1, None)]))
            .await
            .unwrap();
        assert!(
            matches!(written, Committed::Written { version: 2, .. }),
            "{written:?}"
        );
        let files = live_files(&mut first).await;
        assert_eq!(files.iter().map(|(_, n)| n).sum::<usize>(), 30);
        assert_eq!(first.latest_resume_point(0).await.unwrap(), Some(9));
        assert_eq!(first.latest_resume_point(1).await.unwrap(), Some(19));
        drop((first, second));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A job that panics ends its thread; its answer never comes, and the next job runs on a
    /// new thread of the same name.
    #[test]
    fn a_worker_runs_the_job_after_a_panicking_one_on_a_new_thread() {
        let mut worker = Worker::start("lake-test-worker").unwrap();
        let (reply, answer) = std::sync::mpsc::channel::<String>();
        let (unwound, unwinding) = std::sync::mpsc::channel::<()>();
        worker
            .run(Box::new(move || {
                let _dropped_when_unwound = unwound;
                panic!("a job that fails");
            }))
            .unwrap();
        assert!(unwinding.recv().is_err(), "the job was expected to panic");
        let mut tries = 0;
        loop {
            let reply = reply.clone();
            worker
                .run(Box::new(move || {
                    let name = std::thread::current().name().map(str::to_owned);
                    let _ = reply.send(name.unwrap_or_default());
                }))
                .unwrap();
            match answer.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(name) => {
                    assert_eq!(name, "lake-test-worker");
                    break;
                }
                // Handed to the dying thread before it stopped: the job is lost, like the
                // panicking one; the next hand-over starts a new thread.
                Err(_) => {
                    tries += 1;
                    assert!(tries < 3, "no job ran after the panic");
                }
            }
        }
    }
}
