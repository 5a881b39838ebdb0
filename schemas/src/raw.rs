//! The raw event envelope (`avro/raw_event.avsc`): one PingOne observation, JSON kept verbatim.

/// The Avro schema of the raw event envelope, as registered in the schema registry.
pub const RAW_EVENT_SCHEMA: &str = include_str!("../avro/raw_event.avsc");
