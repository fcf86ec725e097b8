//! One task per source partition.
//!
//! ```text
//! resolve start offset ──> fetch ──> decode once ──> one batch to every shard ──> fetch ...
//!                            │ error: log (rate-limited), back off, retry from the same offset
//!                            │ no answer within fetch wait + CB_KAFKA_REQUEST_TIMEOUT_MS: as an
//!                            │   error, and the partition's connection is opened again
//!                            │ after any failure, the record last read is looked up again: gone
//!                            │   or different means the broker lost its log: read the new one
//!                            │ offset out of range (log truncated or broker lost data): earliest
//!                            └ a shard queue full: `send` waits, so this partition stops being
//!                              fetched until that shard drains (back-pressure, no buffering)
//! ```

use super::{bounded, CallError, Ctx};
use crate::broker::RateLimitedLog;
use crate::broker::Tracked;
use crate::config::kafka::{KafkaConfig, RecordMapping, StartOffset};
use crate::metrics::island::{TopicStats, AGE_BUCKETS};
use crate::proto::control;
use crate::proto::kafka_record::{self, RecordView};
use crate::proxy::reply;
use crate::proxy::table::CompiledApi;
use crate::route::{Control, Event, Pos};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound of one fetch response; a single larger record still comes whole (KIP-74).
const FETCH_MAX_BYTES: i32 = 4 << 20;

fn is_out_of_range(e: &CallError) -> bool {
    matches!(
        e,
        CallError::Broker(KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        })
    )
}

/// The first offset to read. For `latest`, ListOffsets is not enough: some brokers (Tansu)
/// answer the last batch's base offset + 1 instead of the high watermark, so an empty fetch
/// there supplies the real high watermark.
async fn start_offset(
    pc: &PartitionClient,
    start: StartOffset,
    limit: Duration,
) -> Result<i64, CallError> {
    match start {
        StartOffset::Earliest => bounded(limit, pc.get_offset(OffsetAt::Earliest)).await,
        StartOffset::Latest => {
            let listed = bounded(limit, pc.get_offset(OffsetAt::Latest)).await?;
            match bounded(limit, pc.fetch_records(listed, 1..1024, 0)).await {
                Ok((_, hw)) => Ok(listed.max(hw)),
                Err(e) if is_out_of_range(&e) => Ok(listed),
                Err(e) => Err(e),
            }
        }
    }
}

/// Where the partition's log starts now (0 when the broker does not say in time).
async fn earliest(pc: &PartitionClient, limit: Duration) -> i64 {
    bounded(limit, pc.get_offset(OffsetAt::Earliest))
        .await
        .unwrap_or(0)
}

/// The partition's client (its own connection to the partition's leader), retried with
/// backoff until it opens.
async fn open(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    errors: &mut RateLimitedLog,
) -> PartitionClient {
    let mut backoff = Duration::from_millis(200);
    loop {
        let client = ctx.client.get();
        let opened = bounded(
            ctx.kafka.request_timeout,
            client.partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry),
        )
        .await;
        match opened {
            Ok(pc) => return pc,
            Err(e) => {
                if errors.allow().is_some() {
                    tracing::warn!(topic = %topic, partition, error = %e, "cannot open partition (whose fault: broker or network)");
                }
                if matches!(e, CallError::Timeout(_)) {
                    ctx.client.renew(&ctx.kafka, &ctx.metrics, &client).await;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether the partitions of `topic` take part in resumes (sources do; control and response
/// topics do not).
pub(super) fn tracks(kafka: &KafkaConfig, topic: &str) -> bool {
    topic != kafka.control_topic && !kafka.is_response(topic)
}

/// Reads `topic`/`partition` for as long as the node runs; `created_later`: the partition was
/// not there at the node's first listing (it is read from its start).
pub(super) async fn run(ctx: Arc<Ctx>, topic: String, partition: i32, created_later: bool) {
    let stats = ctx.metrics.topic(&topic);
    // The lag series appears once the reader knows where it starts: with `latest`, a record
    // written before that is not this reader's, and tests (and operators) take the series as
    // "this partition is being read".
    let mut lag = None;
    let mapping = ctx.kafka.mapping_for(&topic).cloned();
    let max_bytes = ctx.kafka.message_max_bytes;
    let fetch_wait_ms = ctx.kafka.fetch_wait.as_millis() as i32;
    // Blacklist entries and API definitions must reach a node that starts after they were
    // written; responses are for requests waiting now.
    let control = topic == ctx.kafka.control_topic;
    let responses = !control && ctx.kafka.is_response(&topic);
    let start = if control {
        StartOffset::Earliest
    } else if responses {
        StartOffset::Latest
    } else if created_later {
        StartOffset::Earliest
    } else {
        ctx.kafka.start
    };
    let topic_arc: Arc<str> = Arc::from(topic.as_str());
    // Source partitions take part in resumes; control and response topics do not.
    let mut tracked =
        tracks(&ctx.kafka, &topic).then(|| Tracked::new(&ctx.positions, &topic_arc, partition));
    let mut errors = RateLimitedLog::default();
    let mut bad_records = RateLimitedLog::default();
    let mut backoff = Duration::from_millis(200);
    let limit = ctx.kafka.request_timeout;
    let fetch_limit = ctx.kafka.fetch_wait + limit;
    let mut pc: Option<PartitionClient> = None;
    let mut offset: Option<i64> = None;
    let mut down_since: Option<Instant> = None;
    // The offset and timestamp of the last record read, looked up again after a failure
    // (while `down_since` is set).
    let mut last: Option<(i64, i64)> = None;
    let mut outages = ctx.metrics.outages();
    loop {
        if pc.is_none() {
            pc = Some(open(&ctx, &topic, partition, &mut errors).await);
        }
        let p = pc.as_ref().expect("opened above");
        let at = match offset {
            Some(o) => o,
            None => match start_offset(p, start, limit).await {
                Ok(o) => {
                    offset = Some(o);
                    lag.get_or_insert_with(|| ctx.metrics.partition(&topic, partition));
                    if let Some(t) = &mut tracked {
                        t.advance(o);
                        if !t.progress(&ctx.shards, o).await {
                            return;
                        }
                    }
                    o
                }
                Err(e) => {
                    ctx.metrics.broker_lost();
                    if errors.allow().is_some() {
                        tracing::warn!(topic = %topic, partition, error = %e, "cannot read start offset (whose fault: broker or network)");
                    }
                    if matches!(e, CallError::Timeout(_)) {
                        pc = None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        // Another part of the node found Kafka unreachable: this reader may not have seen
        // an error of its own (rskafka retries a call across a reconnect), yet be talking to
        // a broker that came back without its log.
        let seen = ctx.metrics.outages();
        if seen != outages {
            outages = seen;
            down_since.get_or_insert_with(Instant::now);
        }
        // Back after a failure: a broker that lost its log (restarted empty, or the topic
        // recreated) may already hold more records than our position, which offsets alone
        // cannot tell from the old log; the record last read can.
        let last_gone = match last {
            Some((o, ts)) if down_since.is_some() && o + 1 == at => {
                bounded(fetch_limit, p.fetch_records(o, 1..FETCH_MAX_BYTES, 0))
                    .await
                    .map(|(records, _)| {
                        !records
                            .iter()
                            .any(|r| r.offset == o && r.record.timestamp.timestamp_millis() == ts)
                    })
            }
            _ => Ok(false),
        };
        let fetched = match last_gone {
            Ok(true) => {
                let earliest = earliest(p, limit).await;
                stats.log_resets.inc();
                tracing::warn!(topic = %topic, partition, offset = at - 1, earliest,
                    "the record last read is gone from the partition (the broker lost its log, or the topic was recreated); reading the new log from its start");
                offset = Some(earliest.max(0));
                last = None;
                continue;
            }
            Ok(false) => {
                bounded(
                    fetch_limit,
                    p.fetch_records(at, 1..FETCH_MAX_BYTES, fetch_wait_ms),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match fetched {
            // Kafka was found unreachable while this fetch waited and rskafka retried it
            // across a reconnect: its records may come from a new log. Dropped and fetched
            // again once the record last read has been looked up (above).
            Ok(_) if ctx.metrics.outages() != outages && last.is_some() => continue,
            // Asked past the end of the partition's log: the broker answers with no records
            // (rather than out-of-range) when the log was lost or the topic recreated, and a
            // reader waiting for its old position would wait silently forever.
            Ok((records, high_watermark))
                if records.is_empty() && high_watermark >= 0 && at > high_watermark =>
            {
                let earliest = earliest(p, limit).await;
                stats.log_resets.inc();
                tracing::warn!(topic = %topic, partition, offset = at, high_watermark, earliest,
                    "the partition's log ends below the position already read (lost by the broker, or the topic was recreated); reading the new log from its start");
                offset = Some(earliest.min(high_watermark).max(0));
                last = None;
            }
            Ok((records, high_watermark)) => {
                ctx.metrics.up.set(1);
                backoff = Duration::from_millis(200);
                if let Some(since) = down_since.take() {
                    tracing::info!(topic = %topic, partition, offset = at, down_ms = since.elapsed().as_millis() as u64,
                        "Kafka reachable again; resuming where it stopped");
                }
                let mut next = at;
                // The age of a source record, from one clock reading per fetch: what the
                // producer and the broker added to an event's latency before this node had it.
                let fetched_ms = crate::auth::blacklist::now_ms();
                let mut events = Vec::with_capacity(records.len());
                let mut controls = Vec::new();
                let mut replies = Vec::new();
                prefetch_schemas(
                    &ctx,
                    records
                        .iter()
                        .map(|r| (&r.record.headers, r.record.value.as_deref())),
                )
                .await;
                for r in records {
                    if r.offset < at {
                        continue; // compressed batches may start before the requested offset
                    }
                    next = r.offset + 1;
                    last = Some((r.offset, r.record.timestamp.timestamp_millis()));
                    if r.record.approximate_size() > max_bytes {
                        stats.too_large.inc();
                        if let Some(n) = bad_records.allow() {
                            tracing::warn!(topic = %topic, partition, offset = r.offset, bytes = r.record.approximate_size(),
                                limit = max_bytes, suppressed = n, "record over KAFKA_MESSAGE_MAX_BYTES skipped");
                        }
                        continue;
                    }
                    if control {
                        match r.record.value.as_deref().and_then(control::decode) {
                            Some(c) => match control_message(&ctx, c) {
                                Ok(c) => controls.push(c),
                                Err(e) => {
                                    stats.failed.inc();
                                    if let Some(n) = bad_records.allow() {
                                        tracing::warn!(topic = %topic, partition, offset = r.offset, error = %e, suppressed = n,
                                            "control record skipped (whose fault: the node that wrote it)");
                                    }
                                }
                            },
                            None => stats.failed.inc(),
                        }
                        continue;
                    }
                    if responses {
                        if let Some((shard, reply)) = reply_for_us(&ctx, &r.record, &stats) {
                            replies.push((shard, reply));
                        }
                        continue;
                    }
                    let ts = r.record.timestamp.timestamp_millis();
                    // A record without a timestamp (-1, old message format) has no age; one
                    // from a clock ahead of ours counts as 0.
                    if let Ok(ts_ms) = u64::try_from(ts) {
                        let age = Duration::from_millis(fetched_ms.saturating_sub(ts_ms));
                        stats.age.observe(&AGE_BUCKETS, age);
                    }
                    let headers: Vec<(&str, &[u8])> = r
                        .record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect();
                    let view = RecordView {
                        topic: &topic,
                        partition,
                        offset: r.offset,
                        key: r.record.key.as_deref(),
                        value: r.record.value.as_deref(),
                        headers: &headers,
                        timestamp_ms: ts,
                    };
                    if let Some(ev) = to_event(
                        &ctx,
                        &view,
                        &topic_arc,
                        mapping.as_ref(),
                        &stats,
                        &mut bad_records,
                    ) {
                        events.push(ev);
                    }
                }
                if let Some(lag) = &lag {
                    lag.lag.set((high_watermark - next).max(0) as u64);
                }
                offset = Some(next);
                for (shard, reply) in replies {
                    if ctx.shards[shard].send(reply).await.is_err() {
                        return;
                    }
                }
                for c in controls {
                    for shard in &ctx.shards {
                        if shard.send(c.clone()).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(t) = &tracked {
                    t.advance(next);
                    ctx.recent.push(&topic_arc, partition, at, next, &events);
                }
                if !dispatch(&ctx, events).await {
                    return; // the shards are gone: shutting down
                }
                if let Some(t) = &mut tracked {
                    if !t.progress(&ctx.shards, next).await {
                        return;
                    }
                }
            }
            Err(e) if is_out_of_range(&e) => {
                let earliest = earliest(p, limit).await;
                tracing::warn!(topic = %topic, partition, offset = at, earliest,
                    "offset out of range (log truncated, or the broker lost its data); continuing from the earliest offset");
                offset = Some(earliest);
                last = None;
            }
            Err(e) => {
                ctx.metrics.broker_lost();
                stats.fetch_failures.inc();
                down_since.get_or_insert_with(Instant::now);
                if let Some(n) = errors.allow() {
                    tracing::warn!(topic = %topic, partition, offset = at, error = %e, suppressed = n,
                        retry_in_ms = backoff.as_millis() as u64, "fetch failed (whose fault: broker or network)");
                }
                // Unanswered: the connection may be dead without knowing it; open a new one.
                if matches!(e, CallError::Timeout(_)) {
                    pc = None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A source record as an event, or None (counted and logged) when it cannot be one.
pub(super) fn to_event(
    ctx: &Ctx,
    view: &RecordView,
    topic: &Arc<str>,
    mapping: Option<&RecordMapping>,
    stats: &TopicStats,
    bad_records: &mut RateLimitedLog,
) -> Option<Arc<Event>> {
    // Avro (by RIG's rule): the datum as JSON, then read like any record.
    let content_type = view
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| *v);
    let (json, headers);
    let avro_view;
    let view = match crate::proto::avro::record_schema_id(content_type, view.value) {
        None => view,
        Some(id) => {
            let decoded = match ctx.registry.as_ref() {
                None => Err(AvroRecordError::NoRegistry),
                Some(r) => match r.get(id) {
                    None => Err(AvroRecordError::NoSchema(id)),
                    Some(schema) => {
                        crate::proto::avro::decode(&schema, view.value.unwrap_or_default())
                            .map_err(|e| AvroRecordError::Datum(id, e))
                    }
                },
            };
            match decoded {
                Ok(v) => {
                    json = serde_json::to_vec(&v).unwrap_or_default();
                    // Binary mode (ce_ headers): the datum is `data`, as JSON.
                    let binary = view
                        .headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("ce_specversion"));
                    headers = view
                        .headers
                        .iter()
                        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
                        .copied()
                        .chain(binary.then_some(("content-type", &b"application/json"[..])))
                        .collect::<Vec<_>>();
                    avro_view = RecordView {
                        topic: view.topic,
                        partition: view.partition,
                        offset: view.offset,
                        key: view.key,
                        value: Some(&json),
                        headers: &headers,
                        timestamp_ms: view.timestamp_ms,
                    };
                    &avro_view
                }
                Err(e) => {
                    stats.failed.inc();
                    if let Some(n) = bad_records.allow() {
                        tracing::warn!(topic = %view.topic, partition = view.partition, offset = view.offset, error = %e, suppressed = n,
                            "record skipped (whose fault: {})", e.whose());
                    }
                    return None;
                }
            }
        }
    };
    match kafka_record::decode(view, mapping) {
        Ok(ce) => {
            stats.consumed.inc();
            let ev = Event::from_cloudevent(&ce, view.position(), &ctx.cfg.extractors);
            Some(Arc::new(ev.with_pos(Pos {
                topic: topic.clone(),
                partition: view.partition,
                offset: view.offset,
                timestamp_ms: view.timestamp_ms,
            })))
        }
        Err(e) => {
            stats.failed.inc();
            if let Some(n) = bad_records.allow() {
                tracing::warn!(topic = %view.topic, partition = view.partition, offset = view.offset, error = %e, suppressed = n,
                    "record skipped (whose fault: the producer)");
            }
            None
        }
    }
}

/// Fetches the Avro schemas the records name that are not known yet, before they are decoded
/// (decoding itself does no I/O).
pub(super) async fn prefetch_schemas<'a>(
    ctx: &Ctx,
    records: impl Iterator<
        Item = (
            &'a std::collections::BTreeMap<String, Vec<u8>>,
            Option<&'a [u8]>,
        ),
    >,
) {
    let Some(registry) = ctx.registry.as_ref() else {
        return;
    };
    let ids: Vec<u32> = records
        .filter_map(|(headers, value)| {
            let ct = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_slice());
            crate::proto::avro::record_schema_id(ct, value)
        })
        .collect();
    if !ids.is_empty() {
        registry.ensure(ids).await;
    }
}

/// Hands events to the shards that want them (see [`crate::broker::fan_out`]).
pub(super) async fn dispatch(ctx: &Ctx, events: Vec<Arc<Event>>) -> bool {
    crate::broker::fan_out(&ctx.shards, &ctx.interest, events, || {
        ctx.metrics.unwanted.inc()
    })
    .await
}

/// Why an Avro record could not be read.
#[derive(Debug, thiserror::Error)]
enum AvroRecordError {
    #[error("an Avro record, and no KAFKA_SCHEMA_REGISTRY_HOST")]
    NoRegistry,
    #[error("Avro schema {0} is not available from the registry")]
    NoSchema(u32),
    #[error("Avro schema {0}: {1}")]
    Datum(u32, crate::proto::avro::AvroError),
}

impl AvroRecordError {
    /// Who has to act, for the log line.
    fn whose(&self) -> &'static str {
        match self {
            AvroRecordError::NoRegistry => "this gateway's configuration",
            AvroRecordError::NoSchema(_) => "the schema registry",
            AvroRecordError::Datum(..) => "the producer",
        }
    }
}

/// A control record as shards apply it (an API definition is compiled here, once).
fn control_message(ctx: &Ctx, rec: control::ControlRecord) -> Result<Control, String> {
    Ok(match rec {
        control::ControlRecord::Blacklist { session, until_ms } => Control::Blacklist {
            session: session.into(),
            until_ms,
        },
        control::ControlRecord::Api(doc) => {
            let env = &ctx.cfg.proxy.env;
            let api = CompiledApi::compile(doc, &|k| env.get(k).cloned())?;
            Control::Api(Arc::new(api))
        }
    })
}

/// A response record for a request parked on this node: which shard, and the message. Records
/// for other nodes are theirs (every node reads every response); malformed ones are counted.
fn reply_for_us(
    ctx: &Ctx,
    record: &rskafka::record::Record,
    stats: &crate::metrics::island::TopicStats,
) -> Option<(usize, Control)> {
    let headers = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()));
    let body = record.value.clone().unwrap_or_default();
    if let Some(ask) = reply::parse_presence_ask(headers.clone(), &body) {
        // Every other node's question; any shard answers for the node.
        return match ask {
            Ok(a) if a.reply_to.node != ctx.node => {
                stats.consumed.inc();
                let shard = usize::from(a.reply_to.shard) % ctx.shards.len().max(1);
                Some((shard, Control::PresenceAsk(Arc::new(a))))
            }
            Ok(_) => None,
            Err(_) => {
                stats.failed.inc();
                None
            }
        };
    }
    if let Some(fwd) = reply::parse_forwarded(headers.clone(), &body) {
        // A subscriptions PUT for a connection: ours if its token names this node.
        let owner = fwd.ok().and_then(|f| {
            let t = crate::proto::token::Token::decode(&f.connection)?;
            (t.node == ctx.node && usize::from(t.shard) < ctx.shards.len())
                .then(|| (usize::from(t.shard), Control::Forward(Arc::new(f))))
        });
        if owner.is_some() {
            stats.consumed.inc();
        }
        return owner;
    }
    match reply::parse(headers, body, reply::Carrier::Kafka) {
        Ok(r) if r.token.node != ctx.node => None,
        Ok(r) if usize::from(r.token.shard) >= ctx.shards.len() => {
            ctx.metrics.replies_dropped.inc();
            None
        }
        Ok(r) => {
            stats.consumed.inc();
            Some((usize::from(r.token.shard), Control::Reply(Arc::new(r))))
        }
        Err(_) => {
            stats.failed.inc();
            None
        }
    }
}
