//! The Kinesis adapter on its own island thread, with the AWS SDK (on tokio, rustls with ring:
//! no second TLS stack). Like Kafka, every node reads every shard of its streams itself and
//! delivers to its own subscribers; with a DynamoDB table it checkpoints per node and shard so
//! a restarted node resumes where it stopped. It also puts records for the proxy's
//! `target: kinesis` and reads the response stream for `response_from: kinesis`.
//!
//! ```text
//! discover (ListShards every shard_refresh_ms) ──> one task per shard whose parents are done
//!   shard task: checkpoint? ──> GetShardIterator ──> GetRecords ──> decode ──> shard queues
//!                 │ throttled: back off (Kinesis allows 5 reads/s per shard, all readers)
//!                 │ expired iterator: a new one after the last sequence number read
//!                 └ shard closed (no next iterator): done; its children start next
//! ```

mod checkpoint;
mod consumer;
mod producer;

use crate::broker::aws::sdk_config;

use crate::config::kinesis::KinesisConfig;
use crate::config::Config;
use crate::metrics::kinesis::KinesisMetrics;
use crate::route::Control;
use crate::runtime::island::{self, Handle, Job};
use std::sync::Arc;

/// A record for the proxy's `target: kinesis`.
#[derive(Debug)]
pub struct PutRecord {
    pub stream: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PutError {
    /// Kinesis cannot be reached or keeps throttling: the client should retry (503).
    #[error("Kinesis is unreachable: {0}")]
    Unavailable(String),
    /// Kinesis refused the record (unknown stream, too large...): 502, naming the cause.
    #[error("Kinesis refused the record: {0}")]
    Rejected(String),
}

/// (shard id, sequence number) of an acknowledged record.
pub type Put = Result<(String, String), PutError>;
pub(crate) type PutJob = Job<PutRecord, Put>;

/// What shards hold of the Kinesis island.
#[derive(Clone)]
pub struct KinesisHandle {
    put: Handle<PutRecord, Put>,
    /// Where `response_from: kinesis` replies are put (every node reads it).
    pub response_stream: String,
}

impl KinesisHandle {
    /// Puts one record; resolves once Kinesis acknowledged it.
    pub async fn put(&self, record: PutRecord) -> Put {
        self.put
            .call(record)
            .await
            .unwrap_or_else(|e| Err(PutError::Unavailable(e.to_string())))
    }
}

/// Everything the island's tasks share.
pub(crate) struct Ctx {
    pub cfg: Arc<Config>,
    pub kinesis: KinesisConfig,
    pub shards: Vec<async_channel::Sender<Control>>,
    pub interest: Arc<crate::route::interest::Interest>,
    pub metrics: Arc<KinesisMetrics>,
    pub node: u32,
    pub client: aws_sdk_kinesis::Client,
    pub checkpoints: Option<checkpoint::Table>,
}

/// Starts the Kinesis island when `KINESIS_ENABLED` is true.
pub fn start(
    node: u32,
    cfg: Arc<Config>,
    shards: Vec<async_channel::Sender<Control>>,
    metrics: Arc<KinesisMetrics>,
    interest: Arc<crate::route::interest::Interest>,
) -> Option<KinesisHandle> {
    let kinesis = cfg.kinesis.clone()?;
    let response_stream = kinesis.response_stream.clone();
    let put = island::spawn("cb-kinesis", 1024, move |jobs| {
        run(node, cfg, kinesis, shards, interest, jobs, metrics)
    });
    Some(KinesisHandle {
        put,
        response_stream,
    })
}

async fn run(
    node: u32,
    cfg: Arc<Config>,
    kinesis: KinesisConfig,
    shards: Vec<async_channel::Sender<Control>>,
    interest: Arc<crate::route::interest::Interest>,
    jobs: async_channel::Receiver<PutJob>,
    metrics: Arc<KinesisMetrics>,
) {
    if kinesis.warn_no_checkpoints {
        tracing::warn!(table = %kinesis.app_name, "Kinesis checkpoints are off: a restarted node starts at CB_KINESIS_START and skips what was put while it was down (RIG's KCL checkpointed). Set CB_KINESIS_CHECKPOINTS=true with DynamoDB access to the table, which must not be the lease table of a RIG still running (set KINESIS_APP_NAME)");
    }
    let sdk = sdk_config(&kinesis.region).await;
    let mut conf = aws_sdk_kinesis::config::Builder::from(&sdk);
    if let Some(e) = &kinesis.endpoint {
        conf = conf.endpoint_url(e);
    }
    let client = aws_sdk_kinesis::Client::from_conf(conf.build());
    // The proxy may produce to another region than the one consumed.
    let put_client = if kinesis.request_region == kinesis.region {
        client.clone()
    } else {
        let sdk = sdk_config(&kinesis.request_region).await;
        let mut conf = aws_sdk_kinesis::config::Builder::from(&sdk);
        if let Some(e) = &kinesis.endpoint {
            conf = conf.endpoint_url(e);
        }
        aws_sdk_kinesis::Client::from_conf(conf.build())
    };
    let checkpoints = if kinesis.checkpoints {
        let sdk = sdk_config(&kinesis.dynamodb_region).await;
        let mut conf = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(e) = &kinesis.dynamodb_endpoint {
            conf = conf.endpoint_url(e);
        }
        Some(checkpoint::Table::new(
            aws_sdk_dynamodb::Client::from_conf(conf.build()),
            kinesis.app_name.clone(),
            kinesis.node_id.clone(),
        ))
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        cfg,
        kinesis,
        shards,
        interest,
        metrics,
        node,
        client,
        checkpoints,
    });
    tokio::spawn(producer::serve(ctx.clone(), put_client, jobs));
    consumer::discover(ctx).await;
}
