//! `tenant_source = "topic"`: producer instances share the tenants of the tenants topic through
//! a Kafka consumer group, the way Kafka Connect spreads source tasks. Kafka assigns the
//! partitions (cooperative-sticky); this module never coordinates anything itself.
//!
//! For each partition it is assigned, an instance runs one [`crate::slot`]: one transactional
//! producer (`<prefix>.<partition>`, which fences the previous owner) shared by every tenant of
//! the partition. The consumer reads each assigned partition from its beginning (no offsets are
//! ever committed, and the topic is compacted), so it learns the partition's tenants, then keeps
//! following it: a tenant added, changed or removed with `producer tenants …` takes effect
//! within a poll.
//!
//! Before a partition is given up (revoked, or lost after a session timeout), its tenants stop and
//! its writer closes; whoever takes it next fences that writer anyway, so an instance that stalls
//! can never write beside the new owner.
//!
//! librdkafka is polled on a thread of its own; rebalances and records reach the async side over
//! a bounded channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pipeline_io::kafka::{KafkaCallError, ctx};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, KafkaConfig};
use crate::registry::{self, partition_for};
use crate::slot::{self, Shared, TenantChange};

/// How long a revoke waits for the partition's tenants to stop before letting it go (the next
/// owner fences the writer in any case).
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// Changes queued for one partition.
const CHANGES: usize = 256;

/// What the polling thread reports.
#[derive(Debug)]
enum Event {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>, std::sync::mpsc::SyncSender<()>),
    Record {
        partition: i32,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
}

struct TenantsContext {
    topic: String,
    events: mpsc::Sender<Event>,
}

impl TenantsContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        pipeline_io::kafka::partitions_in(tpl, &self.topic)
    }
}

impl ClientContext for TenantsContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::error!(%error, reason, "kafka client error (tenants topic consumer)");
    }
}

impl ConsumerContext for TenantsContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = self.partitions(tpl);
            let lost = consumer.assignment_lost();
            tracing::info!(partitions = ?ps, lost, "tenant partitions revoked");
            let (ack, stopped) = std::sync::mpsc::sync_channel(1);
            if self.events.blocking_send(Event::Revoked(ps, ack)).is_ok()
                && stopped.recv_timeout(REVOKE_WAIT).is_err()
            {
                tracing::warn!(
                    "revoked tenant partitions still stopping; the next owner fences them"
                );
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = self.partitions(tpl);
                tracing::info!(partitions = ?ps, "tenant partitions assigned");
                let _ = self.events.blocking_send(Event::Assigned(ps));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// The consumer's settings: the group, cooperative assignment, no offsets ever committed.
fn consumer_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut c = kafka.client.client_config();
    c.set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "500");
    // A dead instance's tenants move after the session timeout; librdkafka heartbeats from its
    // own thread, so 10 s (not Kafka's 45 s) is safe.
    if !kafka
        .client
        .librdkafka_options
        .contains_key("session.timeout.ms")
    {
        c.set("session.timeout.ms", "10000");
    }
    c
}

/// A partition this instance runs.
#[derive(Debug)]
struct OwnedSlot {
    changes: mpsc::Sender<TenantChange>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl OwnedSlot {
    async fn stop(self) {
        self.cancel.cancel();
        drop(self.changes);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "partition task failed");
        }
    }
}

/// Runs this instance's share of the tenants topic until `shutdown`.
///
/// # Errors
/// [`KafkaCallError`] when the consumer cannot be created or subscribe.
pub async fn run(
    shared: Shared,
    env: impl Fn(&str) -> Option<String>,
    shutdown: CancellationToken,
) -> Result<(), KafkaCallError> {
    let kafka = Arc::clone(&shared.kafka);
    let (tx, mut events) = mpsc::channel(1024);
    let consumer: BaseConsumer<TenantsContext> = consumer_config(&kafka)
        .create_with_context(TenantsContext {
            topic: kafka.tenants_topic.clone(),
            events: tx.clone(),
        })
        .map_err(ctx(format!(
            "creating the consumer of {}",
            kafka.tenants_topic
        )))?;
    consumer
        .subscribe(&[&kafka.tenants_topic])
        .map_err(ctx(format!("subscribing to {}", kafka.tenants_topic)))?;
    tracing::info!(group = %kafka.group_id, topic = %kafka.tenants_topic, partitions = shared.slots,
        "joining the producer group");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("tenants-consumer".into())
            .spawn(move || poll(&consumer, &tx, &stop))
            .map_err(|e| KafkaCallError {
                context: format!("starting the tenants consumer thread: {e}"),
                source: rdkafka::error::KafkaError::Canceled,
            })?
    };
    let mut slots: BTreeMap<i32, OwnedSlot> = BTreeMap::new();
    let mut stopping = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop.store(true, Ordering::Release);
                for (_, s) in std::mem::take(&mut slots) {
                    s.stop().await;
                }
                continue;
            }
        };
        match event {
            None => break,
            Some(Event::Assigned(ps)) if !stopping => {
                for p in ps {
                    let (changes, rx) = mpsc::channel(CHANGES);
                    let cancel = shutdown.child_token();
                    let task = tokio::spawn(slot::run(shared.clone(), p, rx, cancel.clone()));
                    slots.insert(
                        p,
                        OwnedSlot {
                            changes,
                            cancel,
                            task,
                        },
                    );
                }
            }
            Some(Event::Assigned(_)) => {}
            Some(Event::Revoked(ps, ack)) => {
                let leaving: Vec<OwnedSlot> = ps.iter().filter_map(|p| slots.remove(p)).collect();
                for s in leaving {
                    s.stop().await;
                }
                let _ = ack.send(());
            }
            Some(Event::Record {
                partition,
                key,
                value,
            }) => {
                let Some(slot) = slots.get(&partition) else {
                    continue;
                };
                if let Some(change) = change_of(&shared, partition, key, value, &env)
                    && slot.changes.send(change).await.is_err()
                {
                    tracing::warn!(partition, "tenant change for a partition that stopped");
                }
            }
        }
    }
    let _ = tokio::task::spawn_blocking(move || poller.join()).await;
    Ok(())
}

/// Polls until `stop`, forwarding records; the rebalance callbacks run inside `poll`. Closing
/// the consumer at the end leaves the group, revoking what it owned.
fn poll(consumer: &BaseConsumer<TenantsContext>, events: &mpsc::Sender<Event>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let event = Event::Record {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                };
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "reading the tenants topic"),
        }
    }
    consumer.unsubscribe();
    // Let the revoke of the unsubscribe run its callback.
    let _ = consumer.poll(Duration::from_millis(100));
}

/// What a tenants topic record asks of its partition: `None` (logged and counted) when it is
/// unreadable, invalid here, or on a partition its key does not hash to.
fn change_of(
    shared: &Shared,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<TenantChange> {
    let metrics = &shared.metrics;
    let Some(id) = key.and_then(|k| String::from_utf8(k).ok()) else {
        metrics.error("-", "tenant_record");
        tracing::error!(
            partition,
            "tenants topic record without a UTF-8 key, ignored"
        );
        return None;
    };
    let home = partition_for(id.as_bytes(), shared.slots);
    if home != partition {
        metrics.error(&id, "tenant_record");
        tracing::error!(tenant = %id, partition, expected = home,
            "tenant record on a partition its key does not hash to (written by another tool?), ignored; write it with `producer tenants update`");
        return None;
    }
    let Some(value) = value else {
        tracing::info!(tenant = %id, partition, "tenant removed");
        return Some(TenantChange::Remove(id));
    };
    let file = match registry::decode(&value) {
        Ok(f) if f.tenant_id == id => f,
        Ok(f) => {
            metrics.error(&id, "tenant_record");
            tracing::error!(tenant = %id, named = %f.tenant_id, "tenant record names another tenant than its key; tenant stopped");
            return Some(TenantChange::Remove(id));
        }
        Err(reason) => {
            metrics.error(&id, "tenant_record");
            tracing::error!(tenant = %id, %reason, "unreadable tenant record; tenant stopped");
            return Some(TenantChange::Remove(id));
        }
    };
    match config::validate_tenants(std::slice::from_ref(&file), env) {
        Ok(mut valid) => valid.pop().map(|t| {
            tracing::info!(tenant = %id, partition, "tenant settings read");
            TenantChange::Upsert(Box::new(t))
        }),
        Err(e) => {
            metrics.error(&id, "tenant_config");
            tracing::error!(tenant = %id, error = %e, "tenant settings invalid on this instance (is its secret mounted here?); tenant stopped");
            Some(TenantChange::Remove(id))
        }
    }
}
