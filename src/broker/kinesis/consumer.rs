//! Shard discovery and one reading task per shard (see the module diagram in `mod.rs`).
//!
//! Resharding: a shard starts only once its parents are done, so records of one partition
//! key keep their order across a split or merge. A child of a parent this node read to its
//! end starts at `TRIM_HORIZON` (everything since the split); a child of a parent that was
//! already closed when this node came up starts where the node starts (`CB_KINESIS_START`).

use super::checkpoint::{aws_error, SHARD_END};
use super::Ctx;
use crate::config::kinesis::KinesisStart;
use crate::proto::kafka_record::{self, RecordView};
use crate::proxy::reply;
use crate::route::{Control, Event};
use aws_sdk_kinesis::types::ShardIteratorType;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most this many records per GetRecords (the API's maximum is 10,000).
const GET_LIMIT: i32 = 1000;
/// Checkpoints are written at most this often per shard (and at a shard's end).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// What became of shards this process read to their end: whether their children start at
/// `TRIM_HORIZON` (the parent was read while open) or at the configured start.
type Finished = Arc<Mutex<HashMap<(String, String), bool>>>;

struct RateLimitedLog(Option<Instant>, u64);

impl RateLimitedLog {
    fn allow(&mut self) -> Option<u64> {
        if self
            .0
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            self.1 += 1;
            return None;
        }
        self.0 = Some(Instant::now());
        Some(std::mem::take(&mut self.1))
    }
}

/// Lists the shards of every stream periodically and starts the ones that are ready.
pub(super) async fn discover(ctx: Arc<Ctx>) {
    let finished: Finished = Arc::default();
    let mut running: HashSet<(String, String)> = HashSet::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut streams: Vec<(String, bool)> = ctx
        .kinesis
        .streams
        .iter()
        .map(|s| (s.clone(), false))
        .collect();
    // The response stream is read by every node whatever the streams consumed.
    if !streams
        .iter()
        .any(|(s, _)| *s == ctx.kinesis.response_stream)
    {
        streams.push((ctx.kinesis.response_stream.clone(), true));
    }
    let mut errors = RateLimitedLog(None, 0);
    let mut missing_logged: HashSet<String> = HashSet::new();
    loop {
        for (stream, responses) in &streams {
            let shards = match list_shards(&ctx, stream).await {
                Ok(s) => {
                    ctx.metrics.up.set(1);
                    missing_logged.remove(stream);
                    s
                }
                Err(ListError::NotFound) => {
                    if missing_logged.insert(stream.clone()) {
                        if *responses {
                            // Only `response_from: kinesis` endpoints need it.
                            tracing::info!(stream = %stream, "Kinesis response stream not found; checking again periodically");
                        } else {
                            tracing::warn!(stream = %stream, "Kinesis stream not found; checking again periodically");
                        }
                    }
                    continue;
                }
                Err(ListError::Other(e)) => {
                    ctx.metrics.up.set(0);
                    if let Some(n) = errors.allow() {
                        tracing::warn!(stream = %stream, error = %e, suppressed = n,
                            "listing Kinesis shards failed (whose fault: Kinesis or the network); clients stay connected");
                    }
                    continue;
                }
            };
            let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
            let done = finished.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for s in &shards {
                let key = (stream.clone(), s.id.clone());
                if running.contains(&key) {
                    continue;
                }
                // Parents still listed and not read to their end hold their children back.
                let mut from_horizon = false;
                let mut ready = true;
                for p in s.parents.iter().filter(|p| listed.contains(p.as_str())) {
                    match done.get(&(stream.clone(), p.clone())) {
                        Some(read_while_open) => from_horizon |= *read_while_open,
                        None => ready = false,
                    }
                }
                if !ready {
                    continue;
                }
                running.insert(key);
                tracing::info!(stream = %stream, shard = %s.id, "consuming Kinesis shard");
                tokio::spawn(read_shard(
                    ctx.clone(),
                    stream.clone(),
                    s.id.clone(),
                    *responses,
                    from_horizon,
                    finished.clone(),
                    wake.clone(),
                ));
            }
        }
        // A shard that ends wakes this loop so its children start without waiting.
        let _ = tokio::time::timeout(
            Duration::from_millis(ctx.kinesis.shard_refresh_ms),
            wake.notified(),
        )
        .await;
    }
}

struct ShardInfo {
    id: String,
    parents: Vec<String>,
}

enum ListError {
    NotFound,
    Other(String),
}

async fn list_shards(ctx: &Ctx, stream: &str) -> Result<Vec<ShardInfo>, ListError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let req = ctx.client.list_shards();
        let req = match &next {
            Some(t) => req.next_token(t),
            None => req.stream_name(stream),
        };
        let page = req.send().await.map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                ListError::NotFound
            } else {
                ListError::Other(aws_error(&e))
            }
        })?;
        for s in page.shards() {
            out.push(ShardInfo {
                id: s.shard_id().to_string(),
                parents: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_string)
                    .collect(),
            });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// Where a shard's reading starts.
enum Position {
    After(String),
    Latest,
    TrimHorizon,
}

async fn iterator(ctx: &Ctx, stream: &str, shard: &str, at: &Position) -> Result<String, String> {
    let req = ctx
        .client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let req = match at {
        Position::After(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        Position::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
        Position::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req.send().await.map_err(|e| aws_error(&e))?;
    out.shard_iterator()
        .map(str::to_string)
        .ok_or_else(|| "no shard iterator in the answer".to_string())
}

#[allow(clippy::too_many_arguments)]
async fn read_shard(
    ctx: Arc<Ctx>,
    stream: String,
    shard: String,
    responses: bool,
    from_horizon: bool,
    finished: Finished,
    wake: Arc<tokio::sync::Notify>,
) {
    let stats = ctx.metrics.stream(&stream);
    let age = ctx.metrics.shard_age(&stream, &shard);
    let mapping = ctx
        .cfg
        .kafka
        .as_ref()
        .and_then(|k| k.mapping_for(&stream))
        .map(|m| m.event_type.clone());
    let mut errors = RateLimitedLog(None, 0);
    let mut bad = RateLimitedLog(None, 0);
    let mut backoff = Duration::from_millis(200);
    let done = |read_while_open: bool| {
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((stream.clone(), shard.clone()), read_while_open);
        wake.notify_one();
    };

    // Where to start: this node's checkpoint, else the configured start (responses: the tip,
    // they are for requests waiting now).
    let checkpoints = ctx.checkpoints.as_ref().filter(|_| !responses);
    let mut position = loop {
        let saved = match checkpoints {
            None => Ok(None),
            Some(t) => t.get(&stream, &shard).await,
        };
        match saved {
            Ok(Some(c)) if c == SHARD_END => {
                done(true);
                return;
            }
            Ok(Some(seq)) => {
                // Resuming: give frontends that reconnect after a restart time to come back
                // before the backlog is delivered (nobody would receive it otherwise).
                tokio::time::sleep(Duration::from_millis(ctx.kinesis.resume_delay_ms)).await;
                break Position::After(seq);
            }
            Ok(None) if responses => break Position::Latest,
            Ok(None) if from_horizon => break Position::TrimHorizon,
            Ok(None) => {
                break match ctx.kinesis.start {
                    KinesisStart::Latest => Position::Latest,
                    KinesisStart::TrimHorizon => Position::TrimHorizon,
                }
            }
            Err(e) => {
                if let Some(n) = errors.allow() {
                    tracing::warn!(stream = %stream, shard = %shard, error = %e, suppressed = n,
                        "cannot read the Kinesis checkpoint (whose fault: DynamoDB or the network); retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut last_seq: Option<String> = None;
    let mut last_checkpoint = Instant::now();
    let mut checkpointed: Option<String> = None;
    let mut read_any = false;
    let mut it: Option<String> = None;
    loop {
        let current = match it.take() {
            Some(i) => i,
            None => match iterator(&ctx, &stream, &shard, &position).await {
                Ok(i) => i,
                Err(e) => {
                    ctx.metrics.up.set(0);
                    if let Some(n) = errors.allow() {
                        tracing::warn!(stream = %stream, shard = %shard, error = %e, suppressed = n,
                            "cannot get a Kinesis shard iterator (whose fault: Kinesis or the network)");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let got = ctx
            .client
            .get_records()
            .shard_iterator(&current)
            .limit(GET_LIMIT)
            .send()
            .await;
        let out = match got {
            Ok(o) => o,
            Err(e) => {
                let svc = e.as_service_error();
                if svc.is_some_and(|s| s.is_expired_iterator_exception()) {
                    // A new iterator after the last record read (or where we started).
                    if let Some(seq) = &last_seq {
                        position = Position::After(seq.clone());
                    }
                    continue;
                }
                if svc.is_some_and(|s| {
                    s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception()
                }) {
                    stats.throttled.inc();
                    it = Some(current);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                ctx.metrics.up.set(0);
                if let Some(n) = errors.allow() {
                    tracing::warn!(stream = %stream, shard = %shard, error = %aws_error(&e), suppressed = n,
                        retry_in_ms = backoff.as_millis() as u64,
                        "Kinesis GetRecords failed (whose fault: Kinesis or the network); clients stay connected");
                }
                if let Some(seq) = &last_seq {
                    position = Position::After(seq.clone());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        ctx.metrics.up.set(1);
        backoff = Duration::from_millis(200);
        age.set(out.millis_behind_latest().unwrap_or(0).max(0) as u64);
        let records = out.records();
        let mut events = Vec::with_capacity(records.len());
        let mut replies = Vec::new();
        for r in records {
            read_any = true;
            last_seq = Some(r.sequence_number().to_string());
            let data = r.data().as_ref();
            if responses {
                if let Some(reply) = reply_for_us(&ctx, data) {
                    replies.push(reply);
                }
                continue;
            }
            let view = RecordView {
                topic: &stream,
                partition: 0,
                offset: 0,
                key: r.partition_key().map(str::as_bytes),
                value: Some(data),
                headers: &[],
                timestamp_ms: r
                    .approximate_arrival_timestamp()
                    .map_or(0, |t| t.to_millis().unwrap_or(0)),
            };
            match kafka_record::decode(&view, mapping.as_ref()) {
                Ok(ce) => {
                    stats.received.inc();
                    let id = format!("{stream}/{shard}/{}", r.sequence_number());
                    events.push(Arc::new(Event::from_cloudevent(
                        &ce,
                        id,
                        &ctx.cfg.extractors,
                    )));
                }
                Err(e) => {
                    stats.failed.inc();
                    if let Some(n) = bad.allow() {
                        tracing::warn!(stream = %stream, shard = %shard, sequence = r.sequence_number(),
                            error = %e, suppressed = n, "Kinesis record skipped (whose fault: the producer)");
                    }
                }
            }
        }
        for (shard_idx, reply) in replies {
            if ctx.shards[shard_idx].send(reply).await.is_err() {
                return;
            }
        }
        if !deliver(&ctx, events).await {
            return;
        }
        let next = out.next_shard_iterator().map(str::to_string);
        if let (Some(t), Some(seq)) = (checkpoints, &last_seq) {
            let due = last_checkpoint.elapsed() >= CHECKPOINT_EVERY || next.is_none();
            if due && checkpointed.as_ref() != Some(seq) {
                match t.put(&stream, &shard, seq).await {
                    Ok(()) => checkpointed = Some(seq.clone()),
                    Err(e) => {
                        if let Some(n) = errors.allow() {
                            tracing::warn!(stream = %stream, shard = %shard, error = %e, suppressed = n,
                                "cannot write the Kinesis checkpoint (whose fault: DynamoDB or the network)");
                        }
                    }
                }
                last_checkpoint = Instant::now();
            }
        }
        match next {
            None => {
                // Closed by a split or merge and read to its end.
                if let Some(t) = checkpoints {
                    let _ = t.put(&stream, &shard, SHARD_END).await;
                }
                tracing::info!(stream = %stream, shard = %shard, "Kinesis shard read to its end");
                done(read_any || !matches!(position, Position::Latest));
                return;
            }
            Some(n) => {
                if records.is_empty() {
                    tokio::time::sleep(Duration::from_millis(ctx.kinesis.poll_idle_ms)).await;
                } else {
                    // 5 reads per second per shard, shared by every reader of it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                it = Some(n);
            }
        }
    }
}

/// Each shard gets the events it has takers for, in shard order; false once shards are gone.
async fn deliver(ctx: &Ctx, events: Vec<Arc<Event>>) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut per_shard: Vec<Vec<Arc<Event>>> = vec![Vec::new(); ctx.shards.len()];
    for ev in events {
        let wanted = ctx.interest.shards_for(&ev.event_type, &ev.fields);
        for (i, batch) in per_shard.iter_mut().enumerate() {
            if wanted & (1 << i) != 0 {
                batch.push(ev.clone());
            }
        }
    }
    for (shard, batch) in ctx.shards.iter().zip(per_shard) {
        if !batch.is_empty() && shard.send(Control::Events(Arc::new(batch))).await.is_err() {
            return false;
        }
    }
    true
}

/// A record of the response stream for a request parked on this node (see
/// [`reply::parse_envelope`]); other nodes' and malformed ones are skipped.
fn reply_for_us(ctx: &Ctx, data: &[u8]) -> Option<(usize, Control)> {
    let r = reply::parse_envelope(data).ok()?;
    if r.token.node != ctx.node || usize::from(r.token.shard) >= ctx.shards.len() {
        return None;
    }
    Some((usize::from(r.token.shard), Control::Reply(Arc::new(r))))
}
