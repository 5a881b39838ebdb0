//! Where an assigned partition starts reading: at the offset after its table's `txn` version
//! (the beginning when the table has none), set in the assignment itself.
//!
//! A seek after the assignment is not enough: librdkafka fetches the group's committed offset
//! for a newly assigned partition and starts fetching there, possibly after a seek issued
//! meanwhile, and then the partition would resume where the group says instead of where the
//! table says. So the consumer's rebalance callback ([`SinkContext`]) asks the [`Resumer`] for
//! the tables' versions and assigns with those offsets. The callback runs inside the
//! consumer's poll, so the resumer reads the tables on a thread with a runtime of its own and
//! the callback waits for its answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use deltalake::DeltaTable;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::metrics::Metrics;
use crate::table::{latest_resume_point, txn_app_id};

/// A topic partition.
pub type TopicPartition = (String, i32);

/// Each partition's last offset in its table (`None`: none yet).
pub type ResumePoints = HashMap<TopicPartition, Option<i64>>;

/// What the resumer's thread is asked.
enum Request {
    /// The resume points of these partitions, answered on the sender.
    Points(
        Vec<TopicPartition>,
        mpsc::SyncSender<Result<ResumePoints, String>>,
    ),
    /// The table of a topic, as the sink opened it: its first answers then only read the log
    /// entries after it instead of loading the table again.
    Adopt(String, Box<DeltaTable>),
}

/// Reads the tables' `txn` versions on a thread of its own.
#[derive(Debug, Clone)]
pub struct Resumer {
    requests: mpsc::SyncSender<Request>,
}

/// One table the resumer reads: its topic and location.
#[derive(Debug, Clone)]
pub struct Source {
    /// The topic feeding the table.
    pub topic: String,
    /// The table.
    pub url: Url,
}

impl Resumer {
    /// Starts the thread; it ends when the resumer is dropped.
    ///
    /// # Errors
    /// When the thread or its runtime cannot start.
    pub fn start(
        sources: Vec<Source>,
        storage_options: HashMap<String, String>,
        app_id: String,
    ) -> std::io::Result<Self> {
        // Room for one table of each source handed over at start ([`Resumer::adopt`]) and a
        // request for resume points.
        let (requests, incoming) = mpsc::sync_channel::<Request>(sources.len() + 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("lake-resume".into())
            .spawn(move || {
                let mut tables: HashMap<String, DeltaTable> = HashMap::new();
                while let Ok(request) = incoming.recv() {
                    match request {
                        Request::Points(wanted, reply) => {
                            let answer = runtime.block_on(read(
                                &sources,
                                &storage_options,
                                &app_id,
                                &mut tables,
                                &wanted,
                            ));
                            let _ = reply.send(answer);
                        }
                        Request::Adopt(topic, table) => {
                            tables.insert(topic, *table);
                        }
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// Hands the resumer `topic`'s table as the sink opened it (a clone), so that its first
    /// answer for the topic reads only what was committed since instead of loading the whole
    /// log again. Never waits: when the resumer is busy (or gone), it loads the table itself
    /// when first asked, as without this.
    pub fn adopt(&self, topic: &str, table: DeltaTable) {
        let _ = self
            .requests
            .try_send(Request::Adopt(topic.to_owned(), Box::new(table)));
    }

    /// The resume points of `wanted`, or why they could not be read.
    ///
    /// # Errors
    /// The table error's text.
    pub fn resume_points(&self, wanted: Vec<TopicPartition>) -> Result<ResumePoints, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(Request::Points(wanted, reply))
            .map_err(|_| "the resume reader stopped".to_owned())?;
        answer
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| "the resume reader did not answer within 120 s".to_owned())?
    }
}

async fn read(
    sources: &[Source],
    storage_options: &HashMap<String, String>,
    app_id: &str,
    tables: &mut HashMap<String, DeltaTable>,
    wanted: &[TopicPartition],
) -> Result<ResumePoints, String> {
    let mut points = ResumePoints::new();
    for (topic, partition) in wanted {
        let Some(source) = sources.iter().find(|s| &s.topic == topic) else {
            continue;
        };
        if !tables.contains_key(topic) {
            let table = deltalake::DeltaTableBuilder::from_url(source.url.clone())
                .and_then(|b| b.with_storage_options(storage_options.clone()).build())
                .map_err(|e| format!("table of {topic}: {e}"))?;
            tables.insert(topic.clone(), table);
        }
        let Some(table) = tables.get_mut(topic) else {
            continue;
        };
        let point = latest_resume_point(table, &txn_app_id(app_id, topic, *partition))
            .await
            .map_err(|e| format!("table of {topic}: {e}"))?;
        points.insert((topic.clone(), *partition), point);
    }
    Ok(points)
}

/// The consumer's context: assigns each partition at its table's resume point, and tells the
/// loop that the assignment changed.
#[derive(Debug)]
pub struct SinkContext {
    /// Set on every assignment change; the loop clears it.
    pub changed: Arc<AtomicBool>,
    /// The resume points of the current assignment, as assigned.
    pub assigned: Mutex<ResumePoints>,
    /// `None`: every partition from its beginning (the consume-only baseline).
    resumer: Option<Resumer>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl SinkContext {
    /// A context reading resume points with `resumer` (`None`: from the beginning).
    pub fn new(
        resumer: Option<Resumer>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            changed: Arc::new(AtomicBool::new(false)),
            assigned: Mutex::new(ResumePoints::new()),
            resumer,
            metrics,
            shutdown,
        }
    }

    /// The resume points of `wanted`, retried while the storage fails; `None` after a shutdown.
    fn points(&self, wanted: Vec<TopicPartition>) -> Option<ResumePoints> {
        let Some(resumer) = &self.resumer else {
            return Some(wanted.into_iter().map(|tp| (tp, None)).collect());
        };
        let mut pause = Duration::from_millis(500);
        loop {
            match resumer.resume_points(wanted.clone()) {
                Ok(points) => return Some(points),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read where the assigned partitions resume: retrying");
                    self.metrics.failing("storage", e);
                }
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            // The rebalance callback runs inside the poll: nothing else waits on this thread.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }
}

impl ClientContext for SinkContext {
    /// As rdkafka's own, except for partition EOF events: the loop receives those too, and
    /// they only say that a partition was read to its end (`stop_at_end` asks for them).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !pipeline_io::kafka::is_partition_eof(&error) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut assigned = ResumePoints::new();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                match self.points(wanted) {
                    Some(points) => {
                        for ((topic, partition), point) in &points {
                            let offset = point.map_or(Offset::Beginning, |v| Offset::Offset(v + 1));
                            if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
                                tracing::error!(%topic, partition, error = %e, "cannot set a start offset");
                            }
                        }
                        if let Err(e) = base_consumer.assign(tpl) {
                            tracing::error!(error = %e, "assigning the partitions failed");
                        }
                        assigned = points;
                    }
                    None => {
                        let _ = base_consumer.unassign();
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = base_consumer.unassign() {
                    tracing::error!(error = %e, "giving the partitions up failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed: giving every partition up");
                let _ = base_consumer.unassign();
            }
        }
        if let Ok(mut a) = self.assigned.lock() {
            *a = assigned;
        }
        self.changed.store(true, Ordering::SeqCst);
    }
}
