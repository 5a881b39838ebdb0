//! The normalized output topics, both ways: setting them up (topics created, schemas
//! registered), encoding a [`Output`] for its topic, and reading a topic back into typed
//! records ([`read_output`]), which the start-up restore and the license report share.

use pipeline_io::kafka::{
    KafkaCallError, RangeReader, TopicSpec, ensure_topics, partitions, partitions_of,
};
use pipeline_io::registry::{Registry, RegistryError};
use rdkafka::Message;
use schemas::topics::OutputTopics;
use schemas::usage::{AppSignons, AppUsage, Application, UserUsage};
use schemas::{SchemaError, wire};

use crate::config::Config;
use crate::processor::Output;

/// The four normalized topics, each with its record type and schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// `<prefix>users.v1`: [`UserUsage`].
    Users,
    /// `<prefix>applications.v1`: [`Application`].
    Applications,
    /// `<prefix>app_usage.v1`: [`AppUsage`].
    AppUsage,
    /// `<prefix>app_signons.v1`: [`AppSignons`] (no state is kept from it).
    AppSignons,
}

impl OutputKind {
    /// Every kind, in the order the report reads them.
    pub const ALL: [Self; 4] = [
        Self::Users,
        Self::Applications,
        Self::AppUsage,
        Self::AppSignons,
    ];
    /// The kinds the processor's state is restored from, in that order.
    pub const STATE: [Self; 3] = [Self::Users, Self::Applications, Self::AppUsage];

    /// This kind's topic among `topics`.
    pub fn topic(self, topics: &OutputTopics) -> &str {
        match self {
            Self::Users => &topics.users,
            Self::Applications => &topics.applications,
            Self::AppUsage => &topics.app_usage,
            Self::AppSignons => &topics.app_signons,
        }
    }

    /// The Avro schema of this kind's records.
    pub fn schema(self) -> &'static str {
        match self {
            Self::Users => schemas::usage::USER_USAGE_SCHEMA,
            Self::Applications => schemas::usage::APPLICATION_SCHEMA,
            Self::AppUsage => schemas::usage::APP_USAGE_SCHEMA,
            Self::AppSignons => schemas::usage::APP_SIGNONS_SCHEMA,
        }
    }

    /// Decodes a datum written with `writer` into this kind's record.
    ///
    /// # Errors
    /// When the datum does not decode as this kind's record.
    pub fn decode(
        self,
        writer: &apache_avro::Schema,
        datum: &[u8],
    ) -> Result<OutputRecord, SchemaError> {
        Ok(match self {
            Self::Users => OutputRecord::User(UserUsage::from_avro_datum(writer, datum)?),
            Self::Applications => {
                OutputRecord::Application(Application::from_avro_datum(writer, datum)?)
            }
            Self::AppUsage => OutputRecord::AppUsage(AppUsage::from_avro_datum(writer, datum)?),
            Self::AppSignons => {
                OutputRecord::AppSignons(AppSignons::from_avro_datum(writer, datum)?)
            }
        })
    }
}

/// A record read back from an output topic. Short-lived (one per record read, handed to the
/// caller at once), so the size difference between the variants costs nothing worth a box.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum OutputRecord {
    /// From the users topic.
    User(UserUsage),
    /// From the applications topic.
    Application(Application),
    /// From the app usage topic.
    AppUsage(AppUsage),
    /// From the app sign-ons topic.
    AppSignons(AppSignons),
}

/// Schema ids of the output subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaIds {
    /// `<users topic>-value`.
    pub users: u32,
    /// `<applications topic>-value`.
    pub applications: u32,
    /// `<app usage topic>-value`.
    pub app_usage: u32,
    /// `<app sign-ons topic>-value`.
    pub app_signons: u32,
}

/// Registers the four output schemas for `topics` (idempotent, concurrently).
///
/// # Errors
/// Registry errors; `Refused` when a schema is incompatible with what is registered.
pub async fn register_outputs(
    registry: &Registry,
    topics: &OutputTopics,
) -> Result<SchemaIds, RegistryError> {
    let register = |kind: OutputKind| async move {
        let subject = format!("{}-value", kind.topic(topics));
        registry.register(&subject, kind.schema()).await
    };
    let (users, applications, app_usage, app_signons) = tokio::try_join!(
        register(OutputKind::Users),
        register(OutputKind::Applications),
        register(OutputKind::AppUsage),
        register(OutputKind::AppSignons),
    )?;
    Ok(SchemaIds {
        users,
        applications,
        app_usage,
        app_signons,
    })
}

/// Why the outputs could not be set up or read back.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A Kafka call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// A record on an output topic names a schema the registry does not serve.
    #[error(
        "{topic} partition {partition} offset {offset}: {source}; the registry has lost schemas \
         this transformer registered (was its storage reset?)"
    )]
    SchemaLost {
        /// The output topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What the registry said.
        source: RegistryError,
    },
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A topic is not partitioned like the raw topic (fatal: the topics must be recreated).
    #[error(
        "{topic} has {has} partitions but the raw topic has {raw}: the output and state topics \
         are co-partitioned with the raw topic (each record goes to the partition of the raw \
         record it came from), so they need as many partitions; recreate them, or replay into \
         another output_prefix (see transformer/README.md, \"Scaling out\")"
    )]
    Partitions {
        /// The topic.
        topic: String,
        /// Its partition count.
        has: usize,
        /// The raw topic's partition count.
        raw: usize,
    },
}

/// What [`prepare`] sets up before the raw topic is read.
#[derive(Debug)]
pub struct Prepared {
    /// The raw topic's partitions.
    pub raw_partitions: Vec<i32>,
    /// Schema ids of the output subjects.
    pub ids: SchemaIds,
}

/// Creates the output topics `topics` if missing (compacted, as many partitions as the raw
/// topic; the state topic only when `with_state`) and checks that each has as many partitions as
/// the raw topic ([`OutputError::Partitions`]). Returns the raw topic's partitions.
///
/// # Errors
/// Kafka failures, or a topic partitioned unlike the raw topic.
pub async fn prepare_topics(
    config: &Config,
    topics: &OutputTopics,
    with_state: bool,
) -> Result<Vec<i32>, OutputError> {
    let k = &config.kafka;
    let raw_partitions = partitions(&k.client, &k.raw_topic).await?;
    let n = i32::try_from(raw_partitions.len()).unwrap_or(1);
    let spec = |name: &str| TopicSpec::new(name, n, k.output_replication_factor);
    let mut wanted = vec![
        spec(&topics.users).compacted(),
        spec(&topics.applications).compacted(),
        spec(&topics.app_usage).compacted(),
        spec(&topics.app_signons).compacted(),
        spec(&topics.dead_letter),
    ];
    if with_state {
        wanted.push(spec(&topics.state).compacted());
    }
    let created = ensure_topics(&k.client, &wanted).await?;
    // Those just created have the raw topic's partitions: the others are checked.
    let names: Vec<&str> = wanted
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| !created.iter().any(|c| c == name))
        .collect();
    if names.is_empty() {
        return Ok(raw_partitions);
    }
    let raw = raw_partitions.len();
    for (topic, has) in names.iter().zip(partitions_of(&k.client, &names).await?) {
        if has.len() != raw {
            return Err(OutputError::Partitions {
                topic: (*topic).to_owned(),
                has: has.len(),
                raw,
            });
        }
    }
    Ok(raw_partitions)
}

/// [`prepare_topics`] (without the state topic) and the output schemas registered with
/// `registry`, both at once: where a replay starts. (The live loop registers while it joins its
/// group, see `live::Ids`.)
///
/// # Errors
/// Kafka or registry failures.
pub async fn prepare(
    config: &Config,
    registry: &Registry,
    topics: &OutputTopics,
) -> Result<Prepared, OutputError> {
    let (raw_partitions, ids) = tokio::try_join!(prepare_topics(config, topics, false), async {
        Ok(register_outputs(registry, topics).await?)
    })?;
    Ok(Prepared {
        raw_partitions,
        ids,
    })
}

/// The topic an [`Output`] goes to; `None` for [`Output::DeadLetter`].
pub fn kind_of(o: &Output) -> Option<OutputKind> {
    match o {
        Output::User(_) | Output::UserTombstone { .. } => Some(OutputKind::Users),
        Output::Application(_) | Output::ApplicationTombstone { .. } => {
            Some(OutputKind::Applications)
        }
        Output::AppUsage(_) => Some(OutputKind::AppUsage),
        Output::AppSignons(_) => Some(OutputKind::AppSignons),
        Output::DeadLetter { .. } => None,
    }
}

/// Appends the Confluent-framed value of `o` to `out`; `false` (nothing written) for a
/// tombstone or a dead letter.
///
/// # Errors
/// [`SchemaError`] if the record does not match its schema (a bug).
pub fn write_value(o: &Output, ids: SchemaIds, out: &mut Vec<u8>) -> Result<bool, SchemaError> {
    match o {
        Output::User(u) => {
            wire::write_header(ids.users, out);
            u.write_avro_datum(out)?;
        }
        Output::Application(a) => {
            wire::write_header(ids.applications, out);
            a.write_avro_datum(out)?;
        }
        Output::AppUsage(u) => {
            wire::write_header(ids.app_usage, out);
            u.write_avro_datum(out)?;
        }
        Output::AppSignons(r) => {
            wire::write_header(ids.app_signons, out);
            r.write_avro_datum(out)?;
        }
        Output::UserTombstone { .. }
        | Output::ApplicationTombstone { .. }
        | Output::DeadLetter { .. } => return Ok(false),
    }
    Ok(true)
}

/// Reads the output topic of `kind` to its end (`read_committed`) and calls `each` with every
/// record's utf-8 key and its decoded value (`None`: a tombstone). Records without a utf-8 key,
/// not in the wire format or not decodable as `kind` are logged and passed over. Returns how
/// many records were given to `each`.
///
/// # Errors
/// [`OutputError::SchemaLost`] for a record whose schema id the registry does not know; Kafka
/// or transient registry errors.
pub async fn read_output(
    config: &Config,
    registry: &Registry,
    group_id: &str,
    topics: &OutputTopics,
    kind: OutputKind,
    mut each: impl FnMut(&str, Option<OutputRecord>),
) -> Result<u64, OutputError> {
    let topic = kind.topic(topics);
    let reader = RangeReader::whole_topic(&config.kafka.client, group_id, topic).await?;
    read_records(reader, registry, kind, |_, key, record| each(key, record)).await
}

/// The loop of [`read_output`], and of the restore's reads of its assigned partitions.
pub(crate) async fn read_records(
    mut reader: RangeReader,
    registry: &Registry,
    kind: OutputKind,
    mut each: impl FnMut(i32, &str, Option<OutputRecord>),
) -> Result<u64, OutputError> {
    let topic = reader.topic().to_owned();
    let topic = topic.as_str();
    let mut read = 0_u64;
    while let Some(m) = reader.next().await? {
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(%topic, offset = m.offset(), "output record without a utf-8 key passed over");
            continue;
        };
        let Some(value) = m.payload() else {
            read += 1;
            each(m.partition(), key, None);
            continue;
        };
        let (id, datum) = match wire::decode(value) {
            Ok(x) => x,
            Err(error) => {
                tracing::warn!(%topic, offset = m.offset(), %error, "output record not in wire format passed over");
                continue;
            }
        };
        let schema = match registry.schema_by_id(id).await {
            Ok(s) => s,
            Err(source) if source.is_poison() => {
                return Err(OutputError::SchemaLost {
                    topic: topic.to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    source,
                });
            }
            Err(e) => return Err(e.into()),
        };
        match kind.decode(&schema, datum) {
            Ok(record) => {
                read += 1;
                each(m.partition(), key, Some(record));
            }
            Err(error) => {
                tracing::warn!(%topic, offset = m.offset(), %error, "undecodable output record passed over");
            }
        }
    }
    Ok(read)
}
