//! Shard discovery and one reading task per shard (see the module diagram in `mod.rs`).
//!
//! Resharding: a shard starts only once its parents are done, so records of one partition
//! key keep their order across a split or merge. A child of a parent this node read to its
//! end starts at `TRIM_HORIZON` (everything since the split); a child of a parent that was
//! already closed when this node came up starts where the node starts (`CB_KINESIS_START`).

use super::checkpoint::SHARD_END;
use super::Ctx;
use crate::broker::aws::aws_error;
use crate::broker::RateLimitedLog;
use crate::config::kinesis::KinesisStart;
use crate::proto::kafka_record::{self, RecordView};
use crate::proxy::reply;
use crate::route::{Control, Event};
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
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
    let mut errors = RateLimitedLog::default();
    let mut missing_logged: HashSet<String> = HashSet::new();
    // Stream name -> this node's enhanced fan-out consumer ARN.
    let mut consumers: HashMap<String, String> = HashMap::new();
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
                // Enhanced fan-out for consumed streams when configured (replies are few: polled).
                let consumer = match (&ctx.kinesis.efo_consumer, *responses) {
                    (Some(name), false) => match consumers.get(stream) {
                        Some(arn) => Some(arn.clone()),
                        None => match register(&ctx, stream, name).await {
                            Ok(arn) => {
                                consumers.insert(stream.clone(), arn.clone());
                                Some(arn)
                            }
                            Err(e) => {
                                ctx.metrics.up.set(0);
                                if let Some(n) = errors.allow() {
                                    tracing::warn!(stream = %stream, consumer = %name, error = %e, suppressed = n,
                                        "cannot register the Kinesis enhanced fan-out consumer; retrying");
                                }
                                break;
                            }
                        },
                    },
                    _ => None,
                };
                running.insert(key);
                tracing::info!(stream = %stream, shard = %s.id, fan_out = consumer.is_some(), "consuming Kinesis shard");
                tokio::spawn(read_shard(
                    ctx.clone(),
                    stream.clone(),
                    s.id.clone(),
                    *responses,
                    from_horizon,
                    finished.clone(),
                    wake.clone(),
                    consumer,
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

/// Registers (or finds) this node's enhanced fan-out consumer of `stream` and waits until it
/// is active; its ARN.
async fn register(ctx: &Ctx, stream: &str, name: &str) -> Result<String, String> {
    use aws_sdk_kinesis::types::ConsumerStatus;
    let summary = ctx
        .client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| aws_error(&e))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|d| d.stream_arn().to_string())
        .ok_or("no stream ARN in DescribeStreamSummary")?;
    let registered = ctx
        .client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await;
    if let Err(e) = registered {
        // Registered before (by this node's previous run): look it up below.
        if !e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception())
        {
            return Err(aws_error(&e));
        }
    }
    for _ in 0..120 {
        let d = ctx
            .client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| aws_error(&e))?;
        if let Some(c) = d.consumer_description() {
            if c.consumer_status() == &ConsumerStatus::Active {
                tracing::info!(stream = %stream, consumer = %name, "Kinesis enhanced fan-out consumer active");
                return Ok(c.consumer_arn().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "consumer {name} of {stream} did not become active within 60 s"
    ))
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
#[derive(Clone)]
enum Position {
    After(String),
    Latest,
    TrimHorizon,
}

/// Why no shard iterator: `rejected` when Kinesis refused the position itself (the stream or
/// the sequence number unknown to it), not when it could not be asked.
struct IteratorError {
    rejected: bool,
    message: String,
}

/// Whether Kinesis answered with one of the error `codes`.
fn answered<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>, codes: &[&str]) -> bool
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| codes.contains(&c))
}

/// Kinesis refuses a sequence number from a deleted and recreated stream (InvalidArgument;
/// mocks say ResourceNotFound); either also means a missing stream, which `Reader::lost`
/// tells apart.
const POSITION_REJECTED: &[&str] = &["InvalidArgumentException", "ResourceNotFoundException"];
const NOT_FOUND: &[&str] = &["ResourceNotFoundException"];

async fn iterator(
    ctx: &Ctx,
    stream: &str,
    shard: &str,
    at: &Position,
) -> Result<String, IteratorError> {
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
    let out = req.send().await.map_err(|e| IteratorError {
        rejected: answered(&e, POSITION_REJECTED),
        message: aws_error(&e),
    })?;
    out.shard_iterator()
        .map(str::to_string)
        .ok_or_else(|| IteratorError {
            rejected: false,
            message: "no shard iterator in the answer".to_string(),
        })
}

/// What a shard task carries from batch to batch, whichever way records arrive.
struct Reader {
    ctx: Arc<Ctx>,
    stream: String,
    shard: String,
    responses: bool,
    stats: Arc<crate::metrics::kinesis::StreamStats>,
    /// Created at the first answer, so its presence in the metrics means "reading".
    age: Option<Arc<crate::metrics::Counter>>,
    mapping: Option<crate::config::kafka::RecordMapping>,
    errors: RateLimitedLog,
    bad: RateLimitedLog,
    /// The last record read (where to resume after an error or a renewed subscription).
    last_seq: Option<String>,
    checkpointed: Option<String>,
    last_checkpoint: Instant,
    read_any: bool,
}

impl Reader {
    fn checkpoints(&self) -> Option<&super::checkpoint::Table> {
        self.ctx.checkpoints.as_ref().filter(|_| !self.responses)
    }

    /// Decodes and routes one batch; false once the shards are gone (shutting down).
    async fn batch(&mut self, records: &[Record], behind_ms: Option<i64>) -> bool {
        self.ctx.metrics.up.set(1);
        let (ctx, stream, shard) = (&self.ctx, &self.stream, &self.shard);
        self.age
            .get_or_insert_with(|| ctx.metrics.shard_age(stream, shard))
            .set(behind_ms.unwrap_or(0).max(0) as u64);
        let mut events = Vec::with_capacity(records.len());
        let mut replies = Vec::new();
        for r in records {
            self.read_any = true;
            self.last_seq = Some(r.sequence_number().to_string());
            let data = r.data().as_ref();
            if self.responses {
                if let Some(reply) = reply_for_us(&self.ctx, data) {
                    replies.push(reply);
                }
                continue;
            }
            let view = RecordView {
                topic: &self.stream,
                partition: 0,
                offset: 0,
                key: r.partition_key().map(str::as_bytes),
                value: Some(data),
                headers: &[],
                timestamp_ms: r
                    .approximate_arrival_timestamp()
                    .map_or(0, |t| t.to_millis().unwrap_or(0)),
            };
            match kafka_record::decode(&view, self.mapping.as_ref()) {
                Ok(ce) => {
                    self.stats.received.inc();
                    let id = format!("{}/{}/{}", self.stream, self.shard, r.sequence_number());
                    events.push(Arc::new(Event::from_cloudevent(
                        &ce,
                        id,
                        &self.ctx.cfg.extractors,
                    )));
                }
                Err(e) => {
                    self.stats.failed.inc();
                    if let Some(n) = self.bad.allow() {
                        tracing::warn!(stream = %self.stream, shard = %self.shard, sequence = r.sequence_number(),
                            error = %e, suppressed = n, "Kinesis record skipped (whose fault: the producer)");
                    }
                }
            }
        }
        for (shard_idx, reply) in replies {
            if self.ctx.shards[shard_idx].send(reply).await.is_err() {
                return false;
            }
        }
        deliver(&self.ctx, events).await
    }

    /// Writes the checkpoint when one is due (at most once a second) or `now`.
    async fn checkpoint(&mut self, now: bool) {
        let Some(seq) = self.last_seq.clone() else {
            return;
        };
        let due = now || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        if !due || self.checkpointed.as_ref() == Some(&seq) {
            return;
        }
        let Some(t) = self.checkpoints() else {
            return;
        };
        match t.put(&self.stream, &self.shard, &seq).await {
            Ok(()) => self.checkpointed = Some(seq),
            Err(e) => {
                if let Some(n) = self.errors.allow() {
                    tracing::warn!(stream = %self.stream, shard = %self.shard, error = %e, suppressed = n,
                        "cannot write the Kinesis checkpoint (whose fault: DynamoDB or the network)");
                }
            }
        }
        self.last_checkpoint = Instant::now();
    }

    /// Where to continue after an interruption: after the last record read, else `start`.
    fn resume(&self, start: &Position) -> Position {
        match &self.last_seq {
            Some(seq) => Position::After(seq.clone()),
            None => start.clone(),
        }
    }

    /// Kinesis refused to start after `position`'s sequence number: when the shard is listed
    /// (the stream exists), the number is from a stream that was deleted and created again
    /// (or lost its data), and waiting would wait forever: counted, logged, and true, so the
    /// caller reads the new stream from its start. False while the stream is missing (an
    /// outage: retry as usual).
    async fn lost(&mut self, position: &Position) -> bool {
        let Position::After(seq) = position else {
            return false;
        };
        match list_shards(&self.ctx, &self.stream).await {
            Ok(shards) if shards.iter().any(|s| s.id == self.shard) => {
                self.stats.resets.inc();
                tracing::warn!(stream = %self.stream, shard = %self.shard, sequence = %seq,
                    "the shard's position is not in the stream any more (the stream was created again, or lost its data); reading it from its oldest record");
                self.last_seq = None;
                true
            }
            _ => false,
        }
    }
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
    consumer: Option<String>,
) {
    let mut r = Reader {
        stats: ctx.metrics.stream(&stream),
        age: None,
        mapping: ctx
            .cfg
            .kafka
            .as_ref()
            .and_then(|k| k.mapping_for(&stream))
            .cloned(),
        ctx: ctx.clone(),
        stream: stream.clone(),
        shard: shard.clone(),
        responses,
        errors: RateLimitedLog::default(),
        bad: RateLimitedLog::default(),
        last_seq: None,
        checkpointed: None,
        last_checkpoint: Instant::now(),
        read_any: false,
    };
    let done = |read_while_open: bool| {
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((stream.clone(), shard.clone()), read_while_open);
        wake.notify_one();
    };
    let mut backoff = Duration::from_millis(200);

    // Where to start: this node's checkpoint, else the configured start (responses: the tip,
    // they are for requests waiting now).
    let start = loop {
        let saved = match r.checkpoints() {
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
                r.checkpointed = Some(seq.clone());
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
                if let Some(n) = r.errors.allow() {
                    tracing::warn!(stream = %stream, shard = %shard, error = %e, suppressed = n,
                        "cannot read the Kinesis checkpoint (whose fault: DynamoDB or the network); retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let ended = match &consumer {
        Some(arn) => subscribe_loop(&mut r, arn, &start).await,
        None => poll_loop(&mut r, &start).await,
    };
    if !ended {
        return; // shutting down
    }
    // Closed by a split or merge and read to its end.
    r.checkpoint(true).await;
    if let Some(t) = r.checkpoints() {
        let _ = t.put(&stream, &shard, SHARD_END).await;
    }
    tracing::info!(stream = %stream, shard = %shard, "Kinesis shard read to its end");
    done(r.read_any || !matches!(start, Position::Latest));
}

/// Polling with GetRecords until the shard ends (true) or the shards are gone (false).
async fn poll_loop(r: &mut Reader, start: &Position) -> bool {
    let ctx = r.ctx.clone();
    let (stream, shard) = (r.stream.clone(), r.shard.clone());
    let mut backoff = Duration::from_millis(200);
    let mut position = start.clone();
    let mut it: Option<String> = None;
    loop {
        let current = match it.take() {
            Some(i) => i,
            None => match iterator(&ctx, &stream, &shard, &position).await {
                Ok(i) => i,
                Err(e) => {
                    if e.rejected && r.lost(&position).await {
                        position = Position::TrimHorizon;
                        continue;
                    }
                    ctx.metrics.up.set(0);
                    if let Some(n) = r.errors.allow() {
                        tracing::warn!(stream = %stream, shard = %shard, error = %e.message, suppressed = n,
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
                    position = r.resume(start);
                    continue;
                }
                if svc.is_some_and(|s| {
                    s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception()
                }) {
                    r.stats.throttled.inc();
                    it = Some(current);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                ctx.metrics.up.set(0);
                if let Some(n) = r.errors.allow() {
                    tracing::warn!(stream = %stream, shard = %shard, error = %aws_error(&e), suppressed = n,
                        retry_in_ms = backoff.as_millis() as u64,
                        "Kinesis GetRecords failed (whose fault: Kinesis or the network); clients stay connected");
                }
                position = r.resume(start);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if !r.batch(out.records(), out.millis_behind_latest()).await {
            return false;
        }
        let Some(next) = out.next_shard_iterator().map(str::to_string) else {
            return true;
        };
        r.checkpoint(false).await;
        if out.records().is_empty() {
            tokio::time::sleep(Duration::from_millis(ctx.kinesis.poll_idle_ms)).await;
        } else {
            // 5 reads per second per shard, shared by every reader of it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        it = Some(next);
    }
}

/// Enhanced fan-out: `SubscribeToShard` with this node's registered consumer; Kinesis pushes
/// records over one HTTP connection per shard and ends each subscription after 5 minutes,
/// when it is renewed from the continuation sequence number. True when the shard ended.
async fn subscribe_loop(r: &mut Reader, consumer_arn: &str, start: &Position) -> bool {
    use aws_sdk_kinesis::types::{StartingPosition, SubscribeToShardEventStream};
    let ctx = r.ctx.clone();
    let (stream, shard) = (r.stream.clone(), r.shard.clone());
    let mut backoff = Duration::from_millis(200);
    let mut position = start.clone();
    let mut consumer_arn = consumer_arn.to_string();
    loop {
        let starting = match &position {
            Position::After(seq) => StartingPosition::builder()
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            Position::Latest => StartingPosition::builder().r#type(ShardIteratorType::Latest),
            Position::TrimHorizon => {
                StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon)
            }
        };
        let starting = match starting.build() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot build a Kinesis starting position");
                return false;
            }
        };
        let sub = ctx
            .client
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id(&shard)
            .starting_position(starting)
            .send()
            .await;
        let mut out = match sub {
            Ok(o) => o,
            Err(e) => {
                if answered(&e, POSITION_REJECTED) && r.lost(&position).await {
                    position = Position::TrimHorizon;
                    continue;
                }
                if answered(&e, NOT_FOUND) {
                    if let Some(arn) = registered_anew(&ctx, &stream, &shard, &consumer_arn).await {
                        consumer_arn = arn;
                        continue;
                    }
                }
                // ResourceInUse: the previous subscription is still closing; LimitExceeded:
                // one subscription per consumer and shard per 5 s. Both pass with time.
                ctx.metrics.up.set(0);
                if let Some(n) = r.errors.allow() {
                    tracing::warn!(stream = %stream, shard = %shard, error = %aws_error(&e), suppressed = n,
                        "Kinesis SubscribeToShard failed (whose fault: Kinesis or the network); retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        loop {
            match out.event_stream.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev))) => {
                    if !r.batch(ev.records(), Some(ev.millis_behind_latest())).await {
                        return false;
                    }
                    // No continuation (null on the wire): the shard is closed and read to its
                    // end, and the event names its children.
                    let next = ev.continuation_sequence_number();
                    if next.is_empty() {
                        return true;
                    }
                    if r.last_seq.is_none() {
                        position = Position::After(next.to_string());
                    }
                    r.checkpoint(false).await;
                }
                Ok(Some(_)) => {}
                // The subscription's 5 minutes are over (or the connection ended): renew it.
                Ok(None) => break,
                Err(e) => {
                    // An error inside the stream carries no code() of its own: its variant.
                    let gone = e
                        .as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception());
                    if gone {
                        if let Some(arn) =
                            registered_anew(&ctx, &stream, &shard, &consumer_arn).await
                        {
                            consumer_arn = arn;
                            break;
                        }
                    }
                    if let Some(n) = r.errors.allow() {
                        tracing::warn!(stream = %stream, shard = %shard, error = %aws_error(&e), suppressed = n,
                            "Kinesis subscription broke off (whose fault: Kinesis or the network); renewing");
                    }
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
        if r.last_seq.is_some() {
            position = r.resume(start);
        }
    }
}

/// Kinesis does not know the enhanced fan-out consumer `current` (consumers belong to a
/// stream's ARN, so they are gone with a stream deleted and created again): registers it
/// anew and returns its new ARN, or None when it is not that (the same ARN, or no answer).
/// Without this the shard would never be read again.
async fn registered_anew(ctx: &Ctx, stream: &str, shard: &str, current: &str) -> Option<String> {
    let name = ctx.kinesis.efo_consumer.as_deref()?;
    let arn = match register(ctx, stream, name).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(stream = %stream, consumer = %name, error = %e,
                "Kinesis does not know the enhanced fan-out consumer and it cannot be registered again (whose fault: Kinesis or the network); retrying");
            return None;
        }
    };
    if arn == current {
        tracing::debug!(stream = %stream, consumer = %name, "the enhanced fan-out consumer is still registered");
        return None;
    }
    tracing::warn!(stream = %stream, shard = %shard, consumer = %name,
        "the enhanced fan-out consumer was gone (the stream was created again?); registered it anew");
    Some(arn)
}

/// Hands events to the shards that want them (see [`crate::broker::fan_out`]).
async fn deliver(ctx: &Ctx, events: Vec<Arc<Event>>) -> bool {
    crate::broker::fan_out(&ctx.shards, &ctx.interest, events, || {}).await
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
