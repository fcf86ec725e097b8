//! The router's pipeline on librdkafka (rdkafka): the ingestion and retry topics consumed in
//! the group `ER_KAFKA_GROUP_ID` (cooperative-sticky), every message routed to the topics of
//! the integrations its application enabled, and the failure chain that drops nothing:
//!
//! ```text
//! ingestion ─> produce to each integration (ER_MAX_RETRIES retries in process)
//!                 └ failed ─> retry topic {"retryCount": 1, "integration", "message"}
//! retry topic ─> produce `message` to `integration` once
//!                 └ failed ─> retryCount < ER_MAX_RETRIES ? retry topic (+1) : S3 <prefix>/<messageId>
//! a write to the retry topic that fails, a message that is not JSON or has no appId ─> S3
//! ```
//!
//! An input offset is committed only when every output of its message was acknowledged (an
//! integration topic, the retry topic or S3): see `offsets.rs`.

use super::offsets::Offsets;
use super::registry::Registry;
use super::s3::Bucket;
use crate::config::router::RouterConfig;
use crate::metrics::router::RouterMetrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::TopicPartitionList;
use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Messages read but not delivered yet, at most (then reading pauses).
const MAX_IN_FLIGHT: usize = 10_000;
const COMMIT_EVERY: Duration = Duration::from_millis(500);

pub struct Ctx {
    pub cfg: RouterConfig,
    pub registry: Rc<Registry>,
    pub producer: FutureProducer,
    pub bucket: Bucket,
    pub metrics: Arc<RouterMetrics>,
    warn_at: std::cell::Cell<Option<Instant>>,
}

impl Ctx {
    /// Problems are logged at most once per 10 s (each is also counted).
    fn warn(&self, what: &str, detail: &str) {
        if self
            .warn_at
            .get()
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.warn_at.set(Some(Instant::now()));
        tracing::warn!(detail, "{what}");
    }
}

fn kafka_config(cfg: &RouterConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("broker.address.family", "v4");
    for (k, v) in &cfg.kafka_props {
        c.set(k, v);
    }
    c
}

pub fn producer(cfg: &RouterConfig) -> Result<FutureProducer, String> {
    kafka_config(cfg)
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| format!("Kafka producer: {e}"))
}

/// Commits and forgets partitions as the group takes them away, in librdkafka's rebalance
/// callback: what was delivered is committed before the new owner starts, and a partition
/// that comes back later starts with fresh bookkeeping (a stale "next offset" would commit
/// past messages this consumer never read).
struct Rebalancing {
    offsets: Arc<Mutex<Offsets>>,
}

impl rdkafka::ClientContext for Rebalancing {}

impl ConsumerContext for Rebalancing {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
            for e in assigned.elements() {
                offsets.assign(e.topic(), e.partition());
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        for e in revoked.elements() {
            if let Some(o) = offsets.commit_point(e.topic(), e.partition()) {
                let _ =
                    tpl.add_partition_offset(e.topic(), e.partition(), rdkafka::Offset::Offset(o));
            }
            offsets.revoke(e.topic(), e.partition());
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit before a rebalance failed; the new owner re-reads those messages");
            }
        }
    }
}

type Group = StreamConsumer<Rebalancing>;

pub async fn run(ctx: Rc<Ctx>, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let cfg = &ctx.cfg;
    let shared = Arc::new(Mutex::new(Offsets::default()));
    let consumer: Group = kafka_config(cfg)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        // Nothing here is transactional; read_committed only adds the broker's last-stable-
        // offset logic, which the test broker gets wrong for a killed idempotent producer's
        // first batch (hidden for minutes).
        .set("isolation.level", "read_uncommitted")
        .create_with_context(Rebalancing {
            offsets: shared.clone(),
        })
        .map_err(|e| format!("Kafka consumer: {e}"))?;
    let consumer = Arc::new(consumer);
    consumer
        .subscribe(&[&cfg.ingestion_topic, &cfg.retry_topic])
        .map_err(|e| format!("subscribe: {e}"))?;
    tracing::info!(group = %cfg.group_id, ingestion = %cfg.ingestion_topic, retry = %cfg.retry_topic,
        "router consuming");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, i32, i64)>();
    let offsets = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some((t, p, o)) = done_rx.recv() => {
                offsets().done(&t, p, o);
                ctx.metrics.in_flight.sub(1);
            }
            _ = tick.tick() => commit(&consumer, &offsets(), CommitMode::Async),
            _ = lag_tick.tick() => record_lag(&ctx, &consumer),
            m = consumer.recv(), if offsets().in_flight() < MAX_IN_FLIGHT => match m {
                Ok(m) => {
                    let m = m.detach();
                    if !offsets().start(m.topic(), m.partition(), m.offset()) {
                        continue; // its partition was revoked meanwhile: the new owner has it
                    }
                    ctx.metrics.in_flight.inc();
                    ctx.metrics.consumed(m.topic()).inc();
                    let (ctx, done) = (ctx.clone(), done_tx.clone());
                    tokio::task::spawn_local(async move {
                        let key = (m.topic().to_string(), m.partition(), m.offset());
                        handle(&ctx, m).await;
                        let _ = done.send(key);
                    });
                }
                Err(e) => {
                    ctx.warn("reading from Kafka failed (whose fault: broker or network); retrying", &e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
    // Shutdown: no more reads; what is in flight gets the flush timeout to finish, then only
    // what was delivered is committed (the rest is read again after the restart).
    let deadline = tokio::time::Instant::now() + cfg.flush_timeout;
    while offsets().in_flight() > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some((t, p, o))) => {
                offsets().done(&t, p, o);
                ctx.metrics.in_flight.sub(1);
            }
            _ => break,
        }
    }
    let _ = ctx.producer.flush(Timeout::After(cfg.flush_timeout));
    commit(&consumer, &offsets(), CommitMode::Sync);
    tracing::info!(
        undelivered = offsets().in_flight(),
        "router stopped; undelivered messages are read again on the next start"
    );
    Ok(())
}

/// Commits each assigned partition up to its first undelivered message.
fn commit(consumer: &Group, offsets: &Offsets, mode: CommitMode) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets.commit_points() {
        if assigned.find_partition(&t, p).is_some() {
            let _ = tpl.add_partition_offset(&t, p, rdkafka::Offset::Offset(o));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::debug!(error = %e, "offset commit failed; the next one covers it");
        }
    }
}

/// Consumer lag per partition, off this thread (`fetch_watermarks` blocks on a broker round
/// trip; here it would stall every message).
fn record_lag(ctx: &Ctx, consumer: &Arc<Group>) {
    let (consumer, metrics) = (consumer.clone(), ctx.metrics.clone());
    tokio::task::spawn_blocking(move || {
        let Ok(pos) = consumer.position() else { return };
        for e in pos.elements() {
            let rdkafka::Offset::Offset(at) = e.offset() else {
                continue;
            };
            if let Ok((_, high)) =
                consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
            {
                metrics.set_lag(e.topic(), e.partition(), high - at);
            }
        }
    });
}

async fn handle(ctx: &Ctx, m: OwnedMessage) {
    let value = m.payload().unwrap_or_default().to_vec();
    let key = m.key().map(<[u8]>::to_vec);
    let headers = m.headers().cloned();
    let fallback_id = format!("{}-{}-{}", m.topic(), m.partition(), m.offset());
    if m.topic() == ctx.cfg.retry_topic {
        return retry(ctx, &value, key.as_deref(), headers, &fallback_id).await;
    }
    let parsed: Option<Value> = serde_json::from_slice(&value).ok();
    let app = parsed
        .as_ref()
        .and_then(|v| v.get("appId"))
        .and_then(Value::as_str);
    let (Some(v), Some(app)) = (parsed.as_ref(), app) else {
        // Not a clickstream message: kept in S3 rather than dropped.
        ctx.warn(
            "message without appId (not JSON, or not a clickstream event) written to S3",
            &fallback_id,
        );
        ctx.bucket
            .put(&format!("unroutable/{fallback_id}"), &value)
            .await;
        ctx.metrics.to_s3.inc();
        return;
    };
    let message_id = v
        .get("messageId")
        .and_then(Value::as_str)
        .map_or(fallback_id, str::to_string);
    let integrations = {
        let mut backoff = Duration::from_millis(200);
        loop {
            match ctx.registry.get(app).await {
                Ok(i) => break i,
                Err(e) => {
                    // The message waits (its offset is not committed): nothing is dropped
                    // while the registry is down.
                    ctx.warn(
                        "registry lookup failed (whose fault: the registry); the message waits",
                        &e.to_string(),
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    };
    let switched_off = |name: &str| {
        v.get("integrations")
            .and_then(|i| i.get(name))
            .and_then(Value::as_bool)
            == Some(false)
    };
    // One integration after the other: librdkafka batches across the many messages in flight,
    // so waiting per message costs latency, not throughput.
    for (name, topic) in integrations.iter() {
        if !switched_off(name) {
            deliver(
                ctx,
                topic,
                &value,
                key.as_deref(),
                headers.clone(),
                v,
                &message_id,
            )
            .await;
        }
    }
}

async fn produce(
    ctx: &Ctx,
    topic: &str,
    value: &[u8],
    key: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
) -> Result<(), String> {
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    ctx.producer
        .send(rec, Timeout::After(ctx.cfg.message_timeout))
        .await
        .map(drop)
        .map_err(|(e, _)| e.to_string())
}

/// One integration: the unchanged message (key, value, headers), retried in process, then
/// handed to the retry topic.
async fn deliver(
    ctx: &Ctx,
    topic: &str,
    value: &[u8],
    key: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
    message: &Value,
    message_id: &str,
) {
    let mut last = String::new();
    for attempt in 0..=ctx.cfg.max_retries {
        match produce(ctx, topic, value, key, headers.clone()).await {
            Ok(()) => {
                ctx.metrics.routed(topic).inc();
                return;
            }
            Err(e) => {
                last = e;
                if attempt < ctx.cfg.max_retries {
                    ctx.metrics.retries.inc();
                }
            }
        }
    }
    ctx.warn(
        "produce to an integration failed after the in-process retries; to the retry topic",
        &format!("{topic}: {last}"),
    );
    to_retry_topic(ctx, 1, topic, message, key, message_id).await;
}

async fn to_retry_topic(
    ctx: &Ctx,
    count: u32,
    integration: &str,
    message: &Value,
    key: Option<&[u8]>,
    message_id: &str,
) {
    let envelope = json!({"retryCount": count, "integration": integration, "message": message});
    let bytes = envelope.to_string().into_bytes();
    for _ in 0..=ctx.cfg.max_retries {
        if produce(ctx, &ctx.cfg.retry_topic, &bytes, key, None)
            .await
            .is_ok()
        {
            ctx.metrics.to_retry_topic.inc();
            return;
        }
    }
    ctx.warn(
        "the retry topic cannot be written either; to S3",
        &ctx.cfg.retry_topic,
    );
    to_s3(ctx, message, message_id).await;
}

async fn to_s3(ctx: &Ctx, message: &Value, message_id: &str) {
    ctx.bucket
        .put(message_id, message.to_string().as_bytes())
        .await;
    ctx.metrics.to_s3.inc();
}

/// A message from the retry topic: one more attempt, then the retry topic again or S3.
async fn retry(
    ctx: &Ctx,
    value: &[u8],
    key: Option<&[u8]>,
    _headers: Option<OwnedHeaders>,
    fallback_id: &str,
) {
    let env: Option<Value> = serde_json::from_slice(value).ok();
    let parts = env.as_ref().and_then(|e| {
        Some((
            e.get("retryCount")?.as_u64()? as u32,
            e.get("integration")?.as_str()?,
            e.get("message")?,
        ))
    });
    let Some((count, integration, message)) = parts else {
        ctx.warn(
            "retry-topic record in an unknown shape written to S3",
            fallback_id,
        );
        ctx.bucket
            .put(&format!("unroutable/{fallback_id}"), value)
            .await;
        ctx.metrics.to_s3.inc();
        return;
    };
    let message_id = message
        .get("messageId")
        .and_then(Value::as_str)
        .unwrap_or(fallback_id)
        .to_string();
    let bytes = message.to_string().into_bytes();
    match produce(ctx, integration, &bytes, key, None).await {
        Ok(()) => ctx.metrics.routed(integration).inc(),
        Err(_) if count < ctx.cfg.max_retries => {
            to_retry_topic(ctx, count + 1, integration, message, key, &message_id).await
        }
        Err(e) => {
            ctx.warn(
                "retries exhausted; the message goes to S3",
                &format!("{integration}: {e}"),
            );
            to_s3(ctx, message, &message_id).await;
        }
    }
}

impl Ctx {
    pub fn new(
        cfg: RouterConfig,
        registry: Rc<Registry>,
        producer: FutureProducer,
        bucket: Bucket,
        metrics: Arc<RouterMetrics>,
    ) -> Ctx {
        Ctx {
            cfg,
            registry,
            producer,
            bucket,
            metrics,
            warn_at: std::cell::Cell::new(None),
        }
    }
}
