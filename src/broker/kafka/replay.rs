//! Reading records back for resuming connections: each asked range `[from, to)` of a partition
//! is fetched again, decoded as the live consumer decodes it, filtered by the connection's
//! subscriptions, bounded (the newest `max_events` kept, records older than `max_age_ms`
//! counted lost, at most `SCAN_PER_EVENT` × `max_events` records read per range), and the
//! partitions are merged by record timestamp with each partition's order kept.

use super::consumer::to_event;
use super::Ctx;
use crate::broker::RateLimitedLog;
use crate::broker::{ProduceError, ReplayJob, ReplayRange, ReplayRequest, ReplayStart, Replayed};
use crate::proto::kafka_record::RecordView;
use crate::route::Event;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// Records read per kept event at most: a connection with narrow subscriptions must not make
/// the island read a whole log.
const SCAN_PER_EVENT: u64 = 100;
const FETCH_BYTES: i32 = 4 << 20;

/// Partition clients, kept: opening one costs a metadata round trip, and a reconnect storm
/// asks for the same few partitions thousands of times.
#[derive(Default)]
struct Clients {
    map: std::sync::Mutex<HashMap<crate::broker::PartitionKey, Arc<PartitionClient>>>,
}

impl Clients {
    async fn get(
        &self,
        client: &Client,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        let key = (topic.clone(), partition);
        if let Some(pc) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(pc.clone());
        }
        let pc = Arc::new(
            client
                .partition_client(topic.to_string(), partition, UnknownTopicHandling::Error)
                .await?,
        );
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pc.clone());
        Ok(pc)
    }
}

pub(super) async fn serve(ctx: Arc<Ctx>, jobs: async_channel::Receiver<ReplayJob>) {
    let clients = Arc::new(Clients::default());
    while let Ok(job) = jobs.recv().await {
        let (ctx, clients) = (ctx.clone(), clients.clone());
        tokio::spawn(async move {
            let (req, reply) = job.split();
            let client = ctx.client.get();
            // Bounded like a publish: the resuming client waits for this answer.
            let limit = ctx.kafka.produce_timeout;
            match tokio::time::timeout(limit, replay(&ctx, &client, &clients, req)).await {
                Ok(r) => reply.send(r),
                Err(_) => {
                    reply.send(Err(ProduceError::Unavailable(format!(
                        "no answer within {} ms",
                        limit.as_millis()
                    ))));
                    // Its connections may be silently dead: the next replay opens new ones.
                    clients
                        .map
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                    ctx.client.renew(&ctx.kafka, &ctx.metrics, &client).await;
                }
            }
        });
    }
}

async fn replay(
    ctx: &Ctx,
    client: &Client,
    clients: &Clients,
    req: ReplayRequest,
) -> Result<Replayed, ProduceError> {
    let mut out = Replayed::default();
    let mut per_partition: Vec<VecDeque<Arc<Event>>> = Vec::new();
    for range in &req.ranges {
        let (kept, lost) = read_range(ctx, client, clients, range, &req).await?;
        out.lost += lost;
        per_partition.push(kept);
    }
    let mut merged = Vec::new();
    crate::broker::merge_by_time(&mut per_partition, &mut merged);
    if merged.len() > req.max_events {
        let over = merged.len() - req.max_events;
        out.lost += over as u64;
        merged.drain(..over);
    }
    out.events = merged;
    Ok(out)
}

/// The first offset below `to` whose record is at or after `ms`; None if there is none. The
/// broker's answer is checked against the record it names: Kafka answers the earliest offset
/// with a timestamp at or after `ms` (or -1), but the test broker (Tansu 0.6) answers 0 when
/// every record is older, which would replay the whole log.
async fn since(pc: &PartitionClient, ms: i64, to: i64) -> Result<Option<i64>, KafkaError> {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return Ok(None);
    };
    let at = pc.get_offset(OffsetAt::Timestamp(t)).await?;
    if at < 0 || at >= to {
        return Ok(None);
    }
    let (records, _) = pc.fetch_records(at, 1..FETCH_BYTES, 0).await?;
    // No record at all is not a "none": Tansu also answers nothing for a fetch that starts
    // inside a batch, and the scan copes with that.
    let older = records
        .iter()
        .find(|r| r.offset >= at)
        .is_some_and(|r| r.record.timestamp.timestamp_millis() < ms);
    Ok((!older).then_some(at))
}

/// The wanted records of one range (the newest `max_events`), and how many were lost.
async fn read_range(
    ctx: &Ctx,
    client: &Client,
    clients: &Clients,
    r: &ReplayRange,
    req: &ReplayRequest,
) -> Result<(VecDeque<Arc<Event>>, u64), ProduceError> {
    let unavailable =
        |e: KafkaError| ProduceError::Unavailable(format!("{}/{}: {e}", r.topic, r.partition));
    let pc = clients
        .get(client, &r.topic, r.partition)
        .await
        .map_err(unavailable)?;
    let mut kept: VecDeque<Arc<Event>> = VecDeque::new();
    let mut lost = 0u64;
    let sieve = crate::broker::Sieve::new(req);
    let keep = |ev, kept: &mut VecDeque<Arc<Event>>, lost: &mut u64| sieve.keep(ev, kept, lost);
    let mut at = match r.start {
        ReplayStart::Since(ms) => match since(&pc, ms, r.to).await.map_err(unavailable)? {
            Some(at) => at,
            None => return Ok((kept, lost)),
        },
        ReplayStart::Offset(from) => from,
    };
    if let Some(events) = ctx.recent.range(&r.topic, r.partition, at, r.to) {
        for ev in events {
            keep(ev, &mut kept, &mut lost);
        }
        return Ok((kept, lost));
    }
    let earliest = pc
        .get_offset(OffsetAt::Earliest)
        .await
        .map_err(unavailable)?;
    if matches!(r.start, ReplayStart::Offset(_)) && at < earliest {
        // The log no longer holds them (retention, or a recreated topic).
        lost += (earliest - at) as u64;
        at = earliest;
    }
    let budget = SCAN_PER_EVENT.saturating_mul(req.max_events.max(1) as u64);
    let mut scanned = 0u64;
    let stats = ctx.metrics.topic(&r.topic);
    let mut bad = RateLimitedLog::default();
    let mapping = ctx.kafka.mapping_for(&r.topic).cloned();
    while at < r.to {
        if scanned >= budget {
            lost += (r.to - at) as u64;
            break;
        }
        let records = match pc.fetch_records(at, 1..FETCH_BYTES, 0).await {
            Ok((records, _)) => records,
            Err(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            }) => {
                lost += (r.to - at) as u64;
                break;
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut progressed = false;
        super::consumer::prefetch_schemas(
            ctx,
            records
                .iter()
                .map(|r| (&r.record.headers, r.record.value.as_deref())),
        )
        .await;
        for rec in records {
            if rec.offset < at {
                continue;
            }
            if rec.offset >= r.to {
                at = r.to;
                break;
            }
            at = rec.offset + 1;
            progressed = true;
            scanned += 1;
            let ts = rec.record.timestamp.timestamp_millis();
            let headers: Vec<(&str, &[u8])> = rec
                .record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let view = RecordView {
                topic: &r.topic,
                partition: r.partition,
                offset: rec.offset,
                key: rec.record.key.as_deref(),
                value: rec.record.value.as_deref(),
                headers: &headers,
                timestamp_ms: ts,
            };
            if let Some(ev) = to_event(ctx, &view, &r.topic, mapping.as_ref(), &stats, &mut bad) {
                keep(ev, &mut kept, &mut lost);
            }
        }
        if !progressed {
            // Nothing at `at` although it is below the end the island saw: a hole in the log
            // (compaction, aborted transactions); skip it rather than spin.
            at += 1;
        }
    }
    Ok((kept, lost))
}
