//! The broker island: clients built on tokio (rskafka today; Kinesis, rdkafka and the AWS SDKs
//! next) and the outbound HTTP client, each on an island thread started by `runtime::island`,
//! never inside a shard. They talk to shards only through bounded queues: one batch of decoded,
//! field-extracted events per fetch per shard (payloads shared as `Bytes` behind `Arc`), and
//! requests the other way through an island `Handle`, each with its reply slot.
//!
//! What shards may use of this module is its root: [`BrokerHandle`], [`ProduceRecord`],
//! [`ProduceError`] and the [`http`] handle's types. Everything under `kafka/` is island code.

pub mod aws;
pub mod dns;
pub mod http;
pub mod kafka;
pub mod kinesis;

use crate::config::Config;
use crate::error::{Blame, Fault};
use crate::metrics::island::IslandMetrics;
use crate::route::Control;
use crate::runtime::island::{self, Handle, Job};
use std::sync::Arc;

/// A problem log line at most once per 10 s per source (a partition, a shard), saying how
/// many were suppressed meanwhile: an outage must not flood the log. Each problem is also
/// counted in the metrics.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// `Some(suppressed since the last line)` when a line may be written now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

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

impl Blame for ProduceError {
    fn fault(&self) -> Fault {
        Fault::Upstream
    }
}

/// (partition, offset) of an acknowledged record.
pub type Produced = Result<(i32, i64), ProduceError>;
pub(crate) type ProduceJob = Job<ProduceRecord, Produced>;

/// What shards hold of the Kafka island: a way to produce, shareable across threads.
#[derive(Clone)]
pub struct BrokerHandle {
    produce: Handle<ProduceRecord, Produced>,
    pub publish_topic: String,
    pub control_topic: String,
    /// Where responses to parked requests (and forwarded requests) travel; every node reads it.
    pub response_topic: String,
    /// `REQUEST_LOG=kafka` writes here.
    pub log_topic: String,
}

impl BrokerHandle {
    /// Produces one record and resolves after the broker acknowledged it (partition, offset).
    pub async fn produce(&self, record: ProduceRecord) -> Produced {
        self.produce
            .call(record)
            .await
            .unwrap_or_else(|e| Err(ProduceError::Unavailable(e.to_string())))
    }
}

/// Starts the Kafka island when Kafka is configured. `shards` are the per-shard event queues.
pub fn start(
    node: u32,
    cfg: Arc<Config>,
    shards: Vec<async_channel::Sender<Control>>,
    metrics: Arc<IslandMetrics>,
    interest: Arc<crate::route::interest::Interest>,
) -> Option<BrokerHandle> {
    let kafka = cfg.kafka.clone()?;
    let (publish_topic, control_topic) = (kafka.publish_topic.clone(), kafka.control_topic.clone());
    let response_topic = kafka.response_topics[0].clone();
    let log_topic = kafka.log_topic.clone();
    let produce = island::spawn("cb-island", 1024, move |jobs| {
        kafka::run(node, cfg, kafka, shards, interest, jobs, metrics)
    });
    Some(BrokerHandle {
        produce,
        publish_topic,
        control_topic,
        response_topic,
        log_topic,
    })
}
