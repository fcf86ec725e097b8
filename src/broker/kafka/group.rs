//! Source topics read in a consumer group (FlowX's `KAFKA_CONSUMER_GROUPID_*`,
//! `CB_KAFKA_SOURCE_GROUPS`), with librdkafka: it owns membership, cooperative rebalancing and
//! offset commits, which rskafka lacks.
//!
//! ```text
//! list topics (every CB_KAFKA_TOPIC_REFRESH_MS) ─> subscribe to the names matching the group's
//! patterns ─> recv a record, then whatever else is ready (≤ BATCH) ─> decode once ─> one batch
//! per shard ─> store each partition's next offset (auto-committed every second)
//! ```
//!
//! An offset is stored only after its record was handed to the shards, so a restart re-reads
//! what was not delivered instead of skipping it. One consumer per group id; records of one
//! partition stay in order. The topic list is matched here rather than with librdkafka's own
//! regular expressions, so patterns mean exactly what they mean for the other sources.

use super::consumer::{dispatch, to_event};
use super::Ctx;
use crate::broker::RateLimitedLog;
use crate::config::kafka::{StartOffset, TopicPattern};
use crate::proto::kafka_record::RecordView;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records handed to the shards in one go when they arrive faster than one at a time.
const BATCH: usize = 512;

/// Set when the shards have stopped (SIGTERM): each group consumer commits what it stored and
/// ends, so a restart resumes exactly where this process stopped (auto-commit alone could
/// leave up to its interval uncommitted).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Group consumers that have not committed and ended yet.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Asks every group consumer to commit its stored offsets and waits for them (bounded).
pub(crate) fn commit_and_stop(within: Duration) {
    use std::sync::atomic::Ordering;
    STOP.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + within;
    while RUNNING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts a running group consumer; on drop (however it ends) it is no longer waited for.
struct Running;

impl Running {
    fn new() -> Running {
        RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(super) fn start(ctx: &Arc<Ctx>) {
    let mut by_group: BTreeMap<String, Vec<TopicPattern>> = BTreeMap::new();
    for g in &ctx.kafka.groups {
        by_group
            .entry(g.group.clone())
            .or_default()
            .push(g.topics.clone());
    }
    for (group, patterns) in by_group {
        tokio::spawn(run(ctx.clone(), group, patterns));
    }
}

/// librdkafka's own log and errors, at our levels: a broker that is down is a warning (it
/// retries by itself), at most one line per 10 s per group rather than several per second.
struct Quiet {
    group: String,
    log: std::sync::Mutex<RateLimitedLog>,
}

impl Quiet {
    fn warn(&self, what: &str, msg: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = log.allow() {
            tracing::warn!(group = %self.group, suppressed = n, "librdkafka {what}: {msg} (whose fault: broker or network; it retries)");
        }
    }
}

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => self.warn(fac, msg),
            _ => tracing::debug!(group = %self.group, "librdkafka {fac}: {msg}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.warn(&error.to_string(), reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

type GroupConsumer = StreamConsumer<Quiet>;

fn consumer(ctx: &Ctx, id: &str) -> Result<GroupConsumer, rdkafka::error::KafkaError> {
    let k = &ctx.kafka;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", k.brokers.join(","))
        .set("group.id", id)
        .set("client.id", &k.client_id)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            ctx.kafka.group_commit_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match k.start {
                StartOffset::Latest => "latest",
                StartOffset::Earliest => "earliest",
            },
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "fetch.wait.max.ms",
            k.fetch_wait.as_millis().clamp(1, 30_000).to_string(),
        )
        // A record up to KAFKA_MESSAGE_MAX_BYTES is fetched whole, then counted and skipped
        // if it is over the limit.
        .set(
            "fetch.message.max.bytes",
            k.message_max_bytes.clamp(1 << 20, 1 << 30).to_string(),
        )
        .set(
            "receive.message.max.bytes",
            (k.message_max_bytes.clamp(1 << 20, 1 << 30) * 2 + 4096).to_string(),
        );
    for (key, v) in &k.rdkafka_security {
        cc.set(key, v);
    }
    cc.create_with_context(Quiet {
        group: id.to_string(),
        log: Default::default(),
    })
}

/// The topic names that match the group's patterns, sorted; None when listing failed.
async fn matching(c: &Arc<GroupConsumer>, patterns: &[TopicPattern]) -> Option<Vec<String>> {
    let c = c.clone();
    let all = tokio::task::spawn_blocking(move || {
        c.fetch_metadata(None, Duration::from_secs(5)).map(|md| {
            md.topics()
                .iter()
                .map(|t| t.name().to_string())
                .collect::<Vec<_>>()
        })
    })
    .await
    .ok()?;
    match all {
        Ok(all) => {
            let mut want: Vec<String> = all
                .into_iter()
                .filter(|t| patterns.iter().any(|p| p.matches(t)))
                .collect();
            want.sort();
            Some(want)
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing Kafka topics for a group failed (whose fault: broker or network)");
            None
        }
    }
}

async fn run(ctx: Arc<Ctx>, group: String, patterns: Vec<TopicPattern>) {
    let _running = Running::new();
    let id = ctx.kafka.group_id(&group);
    let c = match consumer(&ctx, &id) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(group = %id, error = %e, "cannot create the group consumer (whose fault: configuration); its topics are not read");
            return;
        }
    };
    let mut subscribed: Vec<String> = Vec::new();
    let mut next_list = Instant::now();
    let mut logged_missing = false;
    let mut errors = RateLimitedLog::default();
    let mut bad = RateLimitedLog::default();
    let mut stats = HashMap::new();
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut tracked: HashMap<(Arc<str>, i32), crate::broker::Tracked> = HashMap::new();
    loop {
        if STOP.load(std::sync::atomic::Ordering::SeqCst) {
            match c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                Ok(()) => tracing::info!(group = %id, "offsets committed on shutdown"),
                // Nothing stored since the last commit is not a failure.
                Err(rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset,
                )) => {}
                Err(e) => {
                    tracing::warn!(group = %id, error = %e, "committing offsets on shutdown failed; a restart re-reads from the last commit")
                }
            }
            return;
        }
        if Instant::now() >= next_list {
            next_list = Instant::now() + ctx.kafka.topic_refresh;
            if let Some(want) = matching(&c, &patterns).await {
                if want.is_empty() && !logged_missing {
                    let p: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
                    tracing::info!(group = %id, patterns = ?p, "no Kafka topic matches the group's topics yet; checking again periodically");
                    logged_missing = true;
                }
                if !want.is_empty() && want != subscribed {
                    let names: Vec<&str> = want.iter().map(String::as_str).collect();
                    match c.subscribe(&names) {
                        Ok(()) => {
                            tracing::info!(group = %id, topics = ?names, "consuming in a group");
                            subscribed = want;
                        }
                        Err(e) => {
                            tracing::warn!(group = %id, error = %e, "subscribing failed; retrying")
                        }
                    }
                }
            }
        }
        let until = next_list.saturating_duration_since(Instant::now());
        if subscribed.is_empty() {
            tokio::time::sleep(until.min(Duration::from_secs(1))).await;
            continue;
        }
        // At most a second between looks at idle partitions: their last position must reach
        // the shards (progress is rate-limited per record batch), or connections opened since
        // would keep their floors.
        let wait = until.min(std::time::Duration::from_secs(1));
        let first = match tokio::time::timeout(wait, c.recv()).await {
            Err(_) => {
                for t in tracked.values_mut() {
                    let at = t.at();
                    if !t.progress(&ctx.shards, at).await {
                        return;
                    }
                }
                continue;
            }
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                ctx.metrics.broker_lost();
                if let Some(n) = errors.allow() {
                    tracing::warn!(group = %id, error = %e, suppressed = n, "group consumer error (whose fault: broker or network); librdkafka retries");
                }
                continue;
            }
        };
        ctx.metrics.up.set(1);
        let mut events = Vec::new();
        let mut next: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
        let mut msg = Some(first);
        let mut taken = 0;
        while let Some(m) = msg.take() {
            taken += 1;
            let topic = m.topic();
            let st = stats
                .entry(topic.to_string())
                .or_insert_with(|| ctx.metrics.topic(topic))
                .clone();
            let topic_arc = topics
                .entry(topic.to_string())
                .or_insert_with(|| Arc::from(topic))
                .clone();
            next.insert((topic_arc.clone(), m.partition()), m.offset() + 1);
            let size = m.payload_len() + m.key().map_or(0, <[u8]>::len);
            if size > ctx.kafka.message_max_bytes {
                st.too_large.inc();
                if let Some(n) = bad.allow() {
                    tracing::warn!(
                        topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        bytes = size,
                        limit = ctx.kafka.message_max_bytes,
                        suppressed = n,
                        "record over KAFKA_MESSAGE_MAX_BYTES skipped"
                    );
                }
            } else {
                let headers: Vec<(&str, &[u8])> = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or(b""))).collect())
                    .unwrap_or_default();
                let view = RecordView {
                    topic,
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    value: m.payload(),
                    headers: &headers,
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                };
                let mapping = ctx.kafka.mapping_for(topic);
                if let Some(registry) = ctx.registry.as_ref() {
                    let ct = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                        .map(|(_, v)| *v);
                    if let Some(id) = crate::proto::avro::record_schema_id(ct, view.value) {
                        registry.ensure([id]).await;
                    }
                }
                let ev = to_event(&ctx, &view, &topic_arc, mapping, &st, &mut bad);
                ctx.recent.push(
                    &topic_arc,
                    m.partition(),
                    m.offset(),
                    m.offset() + 1,
                    ev.as_slice(),
                );
                events.extend(ev);
            }
            if taken < BATCH {
                if let Some(Ok(m)) = futures_lite::future::poll_once(c.recv()).await {
                    msg = Some(m);
                }
            }
        }
        for (key, offset) in &next {
            tracked
                .entry(key.clone())
                .or_insert_with(|| crate::broker::Tracked::new(&ctx.positions, &key.0, key.1))
                .advance(*offset);
        }
        if !dispatch(&ctx, events).await {
            return; // the shards are gone: shutting down
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Some(t) = tracked.get_mut(&(topic.clone(), partition)) {
                if !t.progress(&ctx.shards, offset).await {
                    return;
                }
            }
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        // A partition revoked meanwhile refuses its offset; its new owner re-reads the record.
        if let Err(e) = c.store_offsets(&tpl) {
            tracing::debug!(group = %id, error = %e, "storing offsets failed (partition revoked)");
        }
    }
}
