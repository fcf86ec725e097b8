//! The broker island: broker clients built on tokio (rskafka) run here, on their own thread
//! with their own current-thread tokio runtime, never inside a shard (a tokio reactor API
//! called from a glommio task panics). The island talks to shards only through bounded queues:
//! one batch of decoded, field-extracted events per fetch per shard (payloads shared as
//! `Bytes` behind `Arc`), and produce requests the other way with a reply slot. Both channel
//! types are runtime-agnostic (`async-channel`), so each side awaits them on its own executor.

pub mod kafka;

use crate::config::Config;
use crate::metrics::island::IslandMetrics;
use crate::route::Control;
use std::sync::Arc;

/// A record to produce for a publish request.
#[derive(Debug)]
pub struct ProduceRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The broker cannot be reached now: the client should retry (503).
    #[error("Kafka is unreachable: {0}")]
    Unavailable(String),
    /// The broker refused the record (unknown topic, too large...): 502, naming the cause.
    #[error("Kafka refused the event: {0}")]
    Rejected(String),
}

pub(crate) struct ProduceJob {
    pub(crate) record: ProduceRecord,
    pub(crate) reply: async_channel::Sender<Result<(i32, i64), ProduceError>>,
}

/// What shards hold of the island: a way to produce, shareable across threads.
#[derive(Clone)]
pub struct BrokerHandle {
    jobs: async_channel::Sender<ProduceJob>,
    pub publish_topic: String,
    pub control_topic: String,
}

impl BrokerHandle {
    /// Produces one record and resolves after the broker acknowledged it (partition, offset).
    pub async fn produce(&self, record: ProduceRecord) -> Result<(i32, i64), ProduceError> {
        let (tx, rx) = async_channel::bounded(1);
        let job = ProduceJob { record, reply: tx };
        if self.jobs.send(job).await.is_err() {
            return Err(ProduceError::Unavailable(
                "the broker island has stopped".into(),
            ));
        }
        rx.recv().await.unwrap_or_else(|_| {
            Err(ProduceError::Unavailable(
                "the broker island dropped the request".into(),
            ))
        })
    }
}

/// Starts the island when Kafka is configured. `shards` are the per-shard event queues.
pub fn start(
    cfg: Arc<Config>,
    shards: Vec<async_channel::Sender<Control>>,
    metrics: Arc<IslandMetrics>,
) -> Option<BrokerHandle> {
    let kafka = cfg.kafka.clone()?;
    let (jobs_tx, jobs_rx) = async_channel::bounded::<ProduceJob>(1024);
    let handle = BrokerHandle {
        jobs: jobs_tx,
        publish_topic: kafka.publish_topic.clone(),
        control_topic: kafka.control_topic.clone(),
    };
    std::thread::Builder::new()
        .name("cb-island".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the broker island");
            rt.block_on(kafka::run(cfg, kafka, shards, jobs_rx, metrics));
        })
        .expect("spawn the broker island thread");
    Some(handle)
}
