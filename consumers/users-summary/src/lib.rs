//! Example consumer of the normalized users topic, the starting point for a new one.
//! [`summarize`] reads `<prefix>users.v1` from the beginning to its current end
//! (`read_committed`, offsets never committed), decodes each value with its writer schema fetched
//! from the registry by id into `schemas::usage::UserUsage`, keeps the latest record per key (a
//! tombstone removes the user), and returns one line per tenant:
//!
//! ```text
//! tenant=acme users=1000 can_authenticate=950 mfa_enabled=700 never_signed_on=120
//! ```
//!
//! The binary (`src/main.rs`) prints them. Its Python twin, `consumers/python/users_summary.py`,
//! prints the same lines.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_io::kafka::{ClientSettings, RangeReader};
use pipeline_io::registry::Registry;
use rdkafka::Message;
use schemas::usage::UserUsage;

/// What the summary needs of each user.
struct Facts {
    can_authenticate: bool,
    mfa_enabled: bool,
    signed_on: bool,
}

/// Reads `topic` to its end and returns the summary, one line per tenant.
///
/// # Errors
/// Kafka or registry failures, a record that does not decode, a missing topic.
pub async fn summarize(
    bootstrap_servers: &str,
    registry_url: &str,
    topic: &str,
) -> anyhow::Result<Vec<String>> {
    let registry = Registry::new(registry_url, None, Duration::from_secs(10))?;
    // The project's reader: every partition from the beginning to its end at the start,
    // read_committed, nothing committed.
    let settings = ClientSettings::new(bootstrap_servers, "users-summary-example");
    let mut reader = RangeReader::whole_topic(&settings, "users-summary-example", topic).await?;

    let mut latest: BTreeMap<String, Option<(String, Facts)>> = BTreeMap::new();
    while let Some(message) = reader.next().await? {
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let Some(value) = message.payload() else {
            latest.insert(key, None); // a tombstone: the user was deleted
            continue;
        };
        let (id, datum) = schemas::wire::decode(value)?;
        let user = UserUsage::from_avro_datum(&*registry.schema_by_id(id).await?, datum)?;
        let facts = Facts {
            can_authenticate: user.can_authenticate == Some(true),
            mfa_enabled: user.mfa_enabled == Some(true),
            signed_on: user.last_sign_on_at.is_some(),
        };
        latest.insert(key, Some((user.tenant_id, facts)));
    }

    // tenant -> (users, can_authenticate, mfa_enabled, never_signed_on)
    let mut tenants: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for (tenant, f) in latest.into_values().flatten() {
        let t = tenants.entry(tenant).or_default();
        t[0] += 1;
        t[1] += u64::from(f.can_authenticate);
        t[2] += u64::from(f.mfa_enabled);
        t[3] += u64::from(!f.signed_on);
    }
    Ok(tenants
        .into_iter()
        .map(|(tenant, [users, auth, mfa, never])| {
            format!(
                "tenant={tenant} users={users} can_authenticate={auth} mfa_enabled={mfa} \
                 never_signed_on={never}"
            )
        })
        .collect())
}
