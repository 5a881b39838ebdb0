//! The tenant registry: the compacted tenants topic, keyed by tenant id, whose values are the
//! tenants' settings (a [`TenantFile`] as JSON, the same fields as a `[[tenants]]` entry). A
//! value names where the client secret lives (`client_secret_env`, `client_secret_file`, such as
//! a mounted Kubernetes secret); it never holds the secret. A tombstone removes the tenant.
//!
//! A tenant's partition is Kafka's default for its key, `murmur2(key) % partitions` (what Java
//! clients and librdkafka's `murmur2` partitioner compute), written explicitly: the producer
//! instance that owns the partition runs the tenant, and the file's tenants use the same function
//! over their fixed slots.
//!
//! [`put`], [`remove`] and [`list`] are `producer tenants add|update|remove|list`.

use std::collections::BTreeMap;

use pipeline_io::kafka::{OffRuntimeDrop, RangeReader, ctx};
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, KafkaConfig, TenantFile, validate_tenants};
use crate::kafka::{SinkError, tenants_topic_spec};

/// Version of the tenants topic's values written by this producer.
pub const TENANT_RECORD_VERSION: u32 = 1;

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`, as Kafka's default partitioner puts it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// A tenants topic value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Format version.
    pub version: u32,
    /// The settings, with a secret reference.
    pub tenant: TenantFile,
}

/// Encodes a tenant's settings as a tenants topic value.
///
/// # Errors
/// A description (serializing a plain struct does not fail in practice).
pub fn encode(tenant: &TenantFile) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&TenantRecord {
        version: TENANT_RECORD_VERSION,
        tenant: tenant.clone(),
    })
    .map_err(|e| e.to_string())
}

/// Decodes a tenants topic value.
///
/// # Errors
/// A description when the JSON does not match or the version is unknown.
pub fn decode(bytes: &[u8]) -> Result<TenantFile, String> {
    let record: TenantRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.version != TENANT_RECORD_VERSION {
        return Err(format!("unknown tenant record version {}", record.version));
    }
    Ok(record.tenant)
}

/// A registered tenant, as `list` reads it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The partition its record is on.
    pub partition: i32,
    /// Its settings, or why they cannot be read.
    pub tenant: Result<TenantFile, String>,
}

/// Every tenant on the tenants topic (committed records, to the end of the topic now).
///
/// # Errors
/// [`SinkError::Kafka`] when the topic cannot be read.
pub async fn list(kafka: &KafkaConfig) -> Result<BTreeMap<String, Registered>, SinkError> {
    let group = format!("{}.tenants-reader", kafka.group_id);
    let mut reader = RangeReader::whole_topic(&kafka.client, &group, &kafka.tenants_topic).await?;
    let mut tenants = BTreeMap::new();
    while let Some(m) = reader.next().await? {
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            continue;
        };
        match m.payload() {
            Some(v) => tenants.insert(
                key,
                Registered {
                    partition: m.partition(),
                    tenant: decode(v),
                },
            ),
            None => tenants.remove(&key),
        };
    }
    Ok(tenants)
}

/// Writes each tenant's settings (or, with `None`, its tombstone) to the partition of its key,
/// and waits for every delivery (acknowledged by all in-sync replicas).
///
/// # Errors
/// [`SinkError::Kafka`] when the topic's partitions cannot be read or a record is refused.
pub async fn write(
    kafka: &KafkaConfig,
    records: &[(String, Option<Vec<u8>>)],
) -> Result<(), SinkError> {
    let topic = &kafka.tenants_topic;
    let partitions = pipeline_io::kafka::partitions(&kafka.client, topic).await?;
    let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
    let producer: FutureProducer = kafka
        .client
        .client_config()
        .set("enable.idempotence", "true")
        .create()
        .map_err(ctx(format!("creating a producer for {topic}")))?;
    let producer = OffRuntimeDrop::new(producer);
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key.as_bytes())
            .partition(partition_for(key.as_bytes(), count));
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| ctx(format!("writing tenant `{key}` to {topic}"))(e))?;
        deliveries.push((key, delivery));
    }
    for (key, delivery) in deliveries {
        let failed = match tokio::time::timeout(kafka.client.timeout, delivery).await {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err((e, _)))) => Some(e),
            Ok(Err(_)) => Some(KafkaError::Canceled),
            Err(_) => Some(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        };
        if let Some(e) = failed {
            return Err(ctx(format!("writing tenant `{key}` to {topic}"))(e).into());
        }
    }
    Ok(())
}

/// Why a `producer tenants …` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The tenant file is unreadable or a tenant in it is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// `add` of a tenant that is registered.
    #[error("tenant `{0}` is already registered (change it with `producer tenants update`)")]
    Exists(String),
    /// `update` or `remove` of a tenant that is not registered.
    #[error("tenant `{0}` is not registered (add it with `producer tenants add`)")]
    Missing(String),
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] SinkError),
}

/// A file of `[[tenants]]` entries, as `tenants add|update` read it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    tenants: Vec<TenantFile>,
}

/// Reads a file of `[[tenants]]` entries and validates them as `validate-config` does (the
/// secrets they name must be readable here).
///
/// # Errors
/// [`ConfigError`] naming the file, or every invalid field of every tenant.
pub fn read_tenant_file(
    path: &std::path::Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<TenantFile>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: TenantsFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if file.tenants.is_empty() {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            message: "no [[tenants]] entry".into(),
        });
    }
    validate_tenants(&file.tenants, env)?;
    Ok(file.tenants)
}

/// `tenants add` (`update` false) or `tenants update` (`update` true): every tenant of `tenants`
/// must be absent (resp. present), else nothing is written.
///
/// # Errors
/// [`TenantsError`].
pub async fn put(
    kafka: &KafkaConfig,
    tenants: &[TenantFile],
    update: bool,
) -> Result<(), TenantsError> {
    ensure_registry(kafka).await?;
    let registered = list(kafka).await?;
    for t in tenants {
        match (registered.contains_key(&t.tenant_id), update) {
            (true, false) => return Err(TenantsError::Exists(t.tenant_id.clone())),
            (false, true) => return Err(TenantsError::Missing(t.tenant_id.clone())),
            _ => {}
        }
    }
    let records = tenants
        .iter()
        .map(|t| {
            let value = encode(t).map_err(|e| {
                TenantsError::Invalid(ConfigError::Parse {
                    path: "(tenant record)".into(),
                    message: e,
                })
            })?;
            Ok((t.tenant_id.clone(), Some(value)))
        })
        .collect::<Result<Vec<_>, TenantsError>>()?;
    Ok(write(kafka, &records).await?)
}

/// `tenants remove`: writes the tenant's tombstone.
///
/// # Errors
/// [`TenantsError::Missing`] or Kafka's error.
pub async fn remove(kafka: &KafkaConfig, tenant_id: &str) -> Result<(), TenantsError> {
    ensure_registry(kafka).await?;
    if !list(kafka).await?.contains_key(tenant_id) {
        return Err(TenantsError::Missing(tenant_id.into()));
    }
    Ok(write(kafka, &[(tenant_id.to_owned(), None)]).await?)
}

/// Creates the tenants topic when `create_topics` is on.
async fn ensure_registry(kafka: &KafkaConfig) -> Result<(), SinkError> {
    if kafka.create_topics {
        pipeline_io::kafka::ensure_topics(&kafka.client, &[tenants_topic_spec(kafka)]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_is_kafkas() {
        for (data, hash) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(data), hash, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partitions_are_never_negative() {
        for key in ["21", "foobar", "abc", "tenant-000", ""] {
            let p = partition_for(key.as_bytes(), 6);
            assert!((0..6).contains(&p), "{key}: {p}");
        }
    }

    #[test]
    fn records_round_trip_and_reject_unknown_versions() {
        let text = r#"
            tenant_id = "acme"
            environment_id = "9a6b8d7e-0000-4000-8000-000000000001"
            region = "eu"
            client_id = "c"
            client_secret_env = "ACME_SECRET"
        "#;
        let tenant: TenantFile = toml::from_str(text).expect("tenant");
        let bytes = encode(&tenant).expect("encode");
        let json = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(
            json.contains(r#""client_secret_env":"ACME_SECRET""#),
            "{json}"
        );
        assert!(!json.contains("client_secret_file"), "{json}");
        assert_eq!(decode(&bytes).expect("decode"), tenant);
        assert!(decode(br#"{"version":2,"tenant":{}}"#).is_err());
        assert!(decode(b"nope").is_err());
    }
}
