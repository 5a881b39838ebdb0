//! The contract's topic names, defined once: the raw topic the producer writes, and the
//! normalized topics the transformer writes under a prefix (`usage.` by default; a replay may
//! write under another).

/// The raw event topic (producer → transformer).
pub const RAW_TOPIC: &str = "pingone.raw.v1";

/// The producer's compacted checkpoint topic.
pub const PRODUCER_CHECKPOINT_TOPIC: &str = "pingone.producer.checkpoints.v1";

/// The producer's compacted tenants topic (key = tenant id, value = its settings as JSON).
pub const PRODUCER_TENANTS_TOPIC: &str = "pingone.producer.tenants.v1";

/// `max.message.bytes` of every topic the pipeline creates, and `message.max.bytes` of every
/// Kafka client it runs: 1 MiB. One number everywhere, so that a record one client may write
/// another can always copy (the dead-letter topic holds a raw record verbatim).
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// The most a writer puts in one record (key + value + header keys and values): the rest of
/// [`MAX_MESSAGE_BYTES`] is room for the batch and record framing. A raw entity over it becomes
/// an `oversized` marker; a dead letter over it is truncated.
pub const MAX_RECORD_BYTES: usize = MAX_MESSAGE_BYTES - 16 * 1024;

/// The default prefix of the normalized topics.
pub const OUTPUT_PREFIX: &str = "usage.";

/// The normalized topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTopics {
    /// User usage metadata (compacted), `<prefix>users.v1`.
    pub users: String,
    /// Applications (compacted), `<prefix>applications.v1`.
    pub applications: String,
    /// Application usage per user (compacted), `<prefix>app_usage.v1`.
    pub app_usage: String,
    /// PingOne's sign-on counts per application and period (compacted),
    /// `<prefix>app_signons.v1`.
    pub app_signons: String,
    /// Raw events that could not be normalized (not compacted), `<prefix>deadletter.v1`.
    pub dead_letter: String,
    /// The transformer's internal checkpoints of syncs in progress (compacted),
    /// `<prefix>transformer-state.v1`.
    pub state: String,
}

impl OutputTopics {
    /// The names for `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            users: format!("{prefix}users.v1"),
            applications: format!("{prefix}applications.v1"),
            app_usage: format!("{prefix}app_usage.v1"),
            app_signons: format!("{prefix}app_signons.v1"),
            dead_letter: format!("{prefix}deadletter.v1"),
            state: format!("{prefix}transformer-state.v1"),
        }
    }
}

impl Default for OutputTopics {
    fn default() -> Self {
        Self::new(OUTPUT_PREFIX)
    }
}
