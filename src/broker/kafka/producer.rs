//! Produce requests from the publish endpoints. Each request is answered only after the
//! broker acknowledged the record (or failed within `CB_KAFKA_PRODUCE_TIMEOUT_MS`). Keyed
//! records go to the partition Kafka's Java producer would pick (murmur2); unkeyed ones are
//! spread round-robin.

use super::Ctx;
use crate::broker::{ProduceError, ProduceJob, ProduceRecord};
use crate::proto::kafka_record::partition_for_key;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Partition lists are re-read after this long, so added partitions are used.
const TOPIC_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cache {
    topics: HashMap<String, (Instant, Vec<i32>)>,
    clients: HashMap<(String, i32), Arc<PartitionClient>>,
}

pub(super) async fn serve(ctx: Arc<Ctx>, jobs: async_channel::Receiver<ProduceJob>) {
    let cache = Arc::new(Mutex::new(Cache::default()));
    let next = Arc::new(AtomicUsize::new(0));
    while let Ok(job) = jobs.recv().await {
        let (ctx, cache, next) = (ctx.clone(), cache.clone(), next.clone());
        let (record, reply) = job.split();
        tokio::spawn(async move {
            let started = Instant::now();
            let client = ctx.client.get();
            // Whether the time ran out at the broker (not at the schema registry).
            let at_broker = std::sync::atomic::AtomicBool::new(false);
            let mut unanswered = false;
            let outcome = match tokio::time::timeout(ctx.kafka.produce_timeout, async {
                let record = avro_encoded(&ctx, record).await?;
                at_broker.store(true, Ordering::Relaxed);
                produce(&client, &cache, &next, record).await
            })
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    unanswered = at_broker.load(Ordering::Relaxed);
                    Err(ProduceError::Unavailable(format!(
                        "no acknowledgement within {} ms",
                        ctx.kafka.produce_timeout.as_millis()
                    )))
                }
            };
            match &outcome {
                Ok(_) => {
                    ctx.metrics.produced.inc();
                    ctx.metrics.up.set(1);
                    ctx.metrics.observe_produce(started.elapsed());
                }
                Err(ProduceError::Unavailable(e)) => {
                    ctx.metrics.produce_unavailable.inc();
                    ctx.metrics.broker_lost();
                    tracing::warn!(error = %e, "publish not acknowledged by Kafka (whose fault: broker or network)");
                }
                Err(ProduceError::Rejected(e)) => {
                    ctx.metrics.produce_rejected.inc();
                    tracing::warn!(error = %e, "publish refused by Kafka");
                }
                Err(ProduceError::Invalid(_)) => ctx.metrics.produce_rejected.inc(),
            }
            reply.send(outcome);
            if unanswered {
                // The connections it used may be silently dead: the next publish opens new ones.
                {
                    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                    c.clients.clear();
                    c.topics.clear();
                }
                ctx.client.renew(&ctx.kafka, &ctx.metrics, &client).await;
            }
        });
    }
}

/// A record asked to be Avro (`avro_subject`): its CloudEvent in the binary mode, `data`
/// encoded with the subject's latest schema. Others unchanged.
async fn avro_encoded(ctx: &Ctx, mut r: ProduceRecord) -> Result<ProduceRecord, ProduceError> {
    let Some(subject) = r.avro_subject.take() else {
        return Ok(r);
    };
    let registry = ctx.registry.as_ref().ok_or_else(|| {
        ProduceError::Unavailable("no schema registry (KAFKA_SCHEMA_REGISTRY_HOST)".into())
    })?;
    let event: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&r.value)
        .map_err(|e| ProduceError::Invalid(format!("not a JSON object: {e}")))?;
    let (id, schema) = registry.latest(&subject).await?;
    let (data, headers) = crate::proto::avro::binary_parts(&event);
    r.value = crate::proto::avro::encode(&schema, id, &data).map_err(|e| {
        ProduceError::Invalid(format!("data {e} (registry subject {subject:?}, id {id})"))
    })?;
    // The event's own attributes replace any header of the same name the record had.
    r.headers
        .retain(|(k, _)| !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)));
    r.headers.extend(headers);
    Ok(r)
}

fn classify(topic: &str, e: KafkaError) -> ProduceError {
    match e {
        KafkaError::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition,
            ..
        } => ProduceError::Rejected(format!("topic {topic:?} does not exist")),
        KafkaError::ServerError {
            protocol_error,
            error_message,
            ..
        } => ProduceError::Rejected(format!(
            "{protocol_error}{}",
            error_message.map(|m| format!(": {m}")).unwrap_or_default()
        )),
        other => ProduceError::Unavailable(other.to_string()),
    }
}

async fn partitions(
    client: &Client,
    cache: &Mutex<Cache>,
    topic: &str,
) -> Result<Vec<i32>, ProduceError> {
    if let Some((at, p)) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .topics
        .get(topic)
    {
        if at.elapsed() < TOPIC_TTL {
            return Ok(p.clone());
        }
    }
    let topics = client.list_topics().await.map_err(|e| classify(topic, e))?;
    let Some(t) = topics.into_iter().find(|t| t.name == topic) else {
        return Err(ProduceError::Rejected(format!(
            "topic {topic:?} does not exist"
        )));
    };
    let p: Vec<i32> = t.partitions.into_iter().collect();
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .topics
        .insert(topic.to_string(), (Instant::now(), p.clone()));
    Ok(p)
}

async fn produce(
    client: &Client,
    cache: &Mutex<Cache>,
    next: &AtomicUsize,
    r: ProduceRecord,
) -> Result<(i32, i64), ProduceError> {
    let parts = partitions(client, cache, &r.topic).await?;
    if parts.is_empty() {
        return Err(ProduceError::Rejected(format!(
            "topic {:?} has no partitions",
            r.topic
        )));
    }
    let partition = match &r.key {
        Some(k) => partition_for_key(k, parts.len() as i32),
        None => parts[next.fetch_add(1, Ordering::Relaxed) % parts.len()],
    };
    let key = (r.topic.clone(), partition);
    let cached = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clients
        .get(&key)
        .cloned();
    let pc = match cached {
        Some(pc) => pc,
        None => {
            let pc = Arc::new(
                client
                    .partition_client(r.topic.clone(), partition, UnknownTopicHandling::Error)
                    .await
                    .map_err(|e| classify(&r.topic, e))?,
            );
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clients
                .insert(key, pc.clone());
            pc
        }
    };
    let record = Record {
        key: r.key,
        value: Some(r.value),
        headers: r.headers.into_iter().collect(),
        timestamp: chrono::Utc::now(),
    };
    let offsets = pc
        .produce(vec![record], Compression::NoCompression)
        .await
        .map_err(|e| classify(&r.topic, e))?;
    Ok((partition, offsets.first().copied().unwrap_or(-1)))
}
