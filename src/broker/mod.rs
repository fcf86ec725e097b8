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
pub mod local;
pub mod nats;
pub mod redis;

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

/// How far the island has handed each source partition to the shards: set before a batch's
/// shards are chosen, so a connection that registers its interest and then reads these gets,
/// for every partition, either the live records from here on or a position its replay covers
/// (the seam of a resume has no gap and no overlap; see `api::resume`).
#[derive(Debug, Default)]
pub struct Positions {
    map: std::sync::Mutex<std::collections::HashMap<PartitionKey, Arc<AtomicI64>>>,
    /// Until the first topic listing (or Kafka found unreachable): which partitions this node
    /// reads is not known yet, so a resume cannot tell "not read here" from "not read yet".
    starting: std::sync::atomic::AtomicBool,
}

/// A source partition: topic and partition number.
pub(crate) type PartitionKey = (Arc<str>, i32);

use std::sync::atomic::{fence, AtomicI64, Ordering};

impl Positions {
    /// Positions of a node whose partitions are still to be listed.
    pub(crate) fn starting() -> Positions {
        let p = Positions::default();
        p.starting.store(true, Ordering::SeqCst);
        p
    }

    /// The partitions are listed (their slots made), or Kafka cannot be reached to list them.
    pub(crate) fn listed(&self) {
        self.starting.store(false, Ordering::SeqCst);
    }

    /// Whether a resume from `id` should wait before it reads the positions: the node is still
    /// listing its partitions, or reads one the id names (any, for an id with a time: those
    /// it does not name are read back from that time) but has no position there yet (its
    /// start offset is being looked up). A resume that went ahead would find the partition
    /// unknown, and the client would get the live end of the log instead of what it missed.
    pub fn settling(&self, id: &crate::proto::resume::ResumeId) -> bool {
        use crate::proto::resume::topic_hash;
        if self.starting.load(Ordering::SeqCst) {
            return true;
        }
        let own = (id.partition >= 0).then(|| (topic_hash(&id.topic), id.partition));
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().any(|((topic, partition), at)| {
            if at.load(Ordering::SeqCst) >= 0 {
                return false;
            }
            let key = (topic_hash(topic), *partition);
            id.since_ms.is_some() || own == Some(key) || id.frontier.contains_key(&key)
        })
    }

    pub(crate) fn slot(&self, topic: &Arc<str>, partition: i32) -> Arc<AtomicI64> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((topic.clone(), partition))
            .or_insert_with(|| Arc::new(AtomicI64::new(-1)))
            .clone()
    }

    /// Every known partition's position, read after the caller's interest was registered.
    pub fn snapshot(&self) -> crate::proto::resume::Frontier {
        fence(Ordering::SeqCst);
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(k, v)| {
                let at = v.load(Ordering::SeqCst);
                (at >= 0).then(|| (k.clone(), at))
            })
            .collect()
    }
}

/// The last records of each source partition, decoded, kept on the island so that a
/// reconnect storm replays from memory instead of reading and decoding the same records once
/// per client. Each partition's ring covers `[from, next)` contiguously (records that could
/// not be decoded leave no event but are covered); bounded in events and bytes
/// (`sessions.resume_ring_events`, `sessions.resume_ring_bytes`).
#[derive(Default)]
pub struct Recent {
    map: std::sync::Mutex<std::collections::HashMap<PartitionKey, Ring>>,
    max_events: usize,
    max_bytes: usize,
}

impl Ring {
    /// The kept events with offsets in `[from, to)`.
    fn between(&self, from: i64, to: i64) -> Vec<Arc<crate::route::Event>> {
        self.events
            .iter()
            .filter(|e| {
                e.pos
                    .as_ref()
                    .is_some_and(|p| p.offset >= from && p.offset < to)
            })
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct Ring {
    events: std::collections::VecDeque<Arc<crate::route::Event>>,
    bytes: usize,
    /// The lowest offset covered, and the next offset after the covered span.
    from: i64,
    next: i64,
}

impl Recent {
    /// After a fetch that covered `[at, next)` and decoded `events`.
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Recent {
        Recent {
            max_events,
            max_bytes,
            ..Recent::default()
        }
    }

    pub(crate) fn push(
        &self,
        topic: &Arc<str>,
        partition: i32,
        at: i64,
        next: i64,
        events: &[Arc<crate::route::Event>],
    ) {
        let (max_events, max_bytes) = (self.max_events, self.max_bytes);
        if max_events == 0 || next <= at {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let ring = map.entry((topic.clone(), partition)).or_default();
        if ring.next != at || ring.events.is_empty() && ring.next == 0 {
            // Not contiguous with what is kept (a restart of the partition's reader, a reset):
            // start over from this fetch.
            *ring = Ring {
                from: at,
                next: at,
                ..Ring::default()
            };
        }
        for e in events {
            ring.bytes += e.json.len();
            ring.events.push_back(e.clone());
        }
        ring.next = next;
        while ring.events.len() > max_events || ring.bytes > max_bytes {
            let Some(old) = ring.events.pop_front() else {
                break;
            };
            ring.bytes -= old.json.len();
            ring.from = old.pos.as_ref().map_or(ring.from, |p| p.offset + 1);
        }
    }

    /// The kept events of `[from, to)`, if the ring covers all of it.
    pub(crate) fn range(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Option<Vec<Arc<crate::route::Event>>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let ring = map.get(&(topic.clone(), partition))?;
        if from < ring.from || to > ring.next {
            return None;
        }
        Some(ring.between(from, to))
    }

    /// The kept events of `[from, to)` from where the ring starts, and how many offsets of
    /// the range lie below it (no longer kept).
    pub(crate) fn range_partial(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        to: i64,
    ) -> (Vec<Arc<crate::route::Event>>, u64) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = map.get(&(topic.clone(), partition)) else {
            return (Vec::new(), to.saturating_sub(from).max(0) as u64);
        };
        let missing = ring.from.min(to).saturating_sub(from).max(0) as u64;
        (ring.between(from, to), missing)
    }

    /// Events and bytes kept, for the metrics.
    pub fn size(&self) -> (usize, usize) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .fold((0, 0), |(n, b), r| (n + r.events.len(), b + r.bytes))
    }
}

/// Merges per-partition queues (each in log order) into `out`: the partition whose next event
/// is oldest goes first, so each partition's order is kept.
pub(crate) fn merge_by_time(
    queues: &mut [std::collections::VecDeque<Arc<crate::route::Event>>],
    out: &mut Vec<Arc<crate::route::Event>>,
) {
    out.reserve(queues.iter().map(|q| q.len()).sum());
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| {
                q.front()
                    .map(|e| (e.pos.as_ref().map_or(0, |p| p.timestamp_ms), i))
            })
            .min();
        let Some((_, i)) = next else { break };
        if let Some(e) = queues[i].pop_front() {
            out.push(e);
        }
    }
}

/// The filter every replay applies: a connection's subscriptions, `max_events` (the newest
/// kept), `max_age_ms` (older ones counted lost).
pub(crate) struct Sieve<'a> {
    subs: &'a [crate::route::subscription::Compiled],
    max_events: usize,
    oldest_ms: i64,
}

impl<'a> Sieve<'a> {
    pub(crate) fn new(req: &'a ReplayRequest) -> Sieve<'a> {
        Sieve {
            subs: &req.subs,
            max_events: req.max_events,
            oldest_ms: (crate::auth::blacklist::now_ms() as i64)
                .saturating_sub(req.max_age_ms as i64),
        }
    }

    /// Keeps `ev` if the connection wants it, counting what is too old or pushed out.
    pub(crate) fn keep(
        &self,
        ev: Arc<crate::route::Event>,
        kept: &mut std::collections::VecDeque<Arc<crate::route::Event>>,
        lost: &mut u64,
    ) {
        if !self
            .subs
            .iter()
            .any(|s| *s.event_type == *ev.event_type && s.matches(&ev.fields))
        {
            return;
        }
        let ts = ev.pos.as_ref().map_or(-1, |p| p.timestamp_ms);
        if ts >= 0 && ts < self.oldest_ms {
            *lost += 1;
            return;
        }
        kept.push_back(ev);
        if kept.len() > self.max_events {
            kept.pop_front();
            *lost += 1;
        }
    }
}

/// One source partition's side of [`Positions`] and of the shards' frontiers.
pub(crate) struct Tracked {
    topic: Arc<str>,
    partition: i32,
    slot: Arc<AtomicI64>,
    told: i64,
    told_at: Option<std::time::Instant>,
}

impl Tracked {
    pub(crate) fn new(positions: &Positions, topic: &Arc<str>, partition: i32) -> Tracked {
        Tracked {
            topic: topic.clone(),
            partition,
            slot: positions.slot(topic, partition),
            told: -1,
            told_at: None,
        }
    }

    /// Before the shards of records up to `next` are chosen.
    pub(crate) fn advance(&self, next: i64) {
        self.slot.store(next, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Where the partition stands (what `advance` last set).
    pub(crate) fn at(&self) -> i64 {
        self.slot.load(Ordering::SeqCst)
    }

    /// After the records were handed over: tells every shard where the partition stands, at
    /// most once a second (and at once the first time), so frontiers move without records.
    pub(crate) async fn progress(
        &mut self,
        shards: &[async_channel::Sender<Control>],
        next: i64,
    ) -> bool {
        let due = self
            .told_at
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if next <= self.told || !due {
            return true;
        }
        self.told = next;
        self.told_at = Some(std::time::Instant::now());
        let p = Arc::new(crate::route::Progress {
            topic: self.topic.clone(),
            partition: self.partition,
            next,
        });
        for s in shards {
            if s.send(Control::Progress(p.clone())).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Each shard gets the events it has takers for (one batch per shard, in the order given);
/// events nobody here wants are counted by `unwanted`. False once the shards are gone
/// (shutting down). Shared by every source on the island.
pub(crate) async fn fan_out(
    shards: &[async_channel::Sender<Control>],
    interest: &crate::route::interest::Interest,
    events: Vec<Arc<crate::route::Event>>,
    unwanted: impl Fn(),
) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut per_shard: Vec<Vec<Arc<crate::route::Event>>> = vec![Vec::new(); shards.len()];
    for ev in events {
        let wanted = interest.shards_for(&ev.event_type, &ev.fields);
        if wanted == 0 {
            unwanted();
            continue;
        }
        for (i, batch) in per_shard.iter_mut().enumerate() {
            if wanted & (1 << i) != 0 {
                batch.push(ev.clone());
            }
        }
    }
    for (shard, batch) in shards.iter().zip(per_shard) {
        if !batch.is_empty() && shard.send(Control::Events(Arc::new(batch))).await.is_err() {
            return false;
        }
    }
    true
}

/// A record to produce for a publish request.
#[derive(Debug)]
pub struct ProduceRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// With `KAFKA_SERIALIZER=avro`: the registry subject `value` (a structured CloudEvent) is
    /// written with, in binary mode (`data` as Avro, the rest as `ce_` headers).
    pub avro_subject: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    /// The broker cannot be reached now: the client should retry (503).
    #[error("Kafka is unreachable: {0}")]
    Unavailable(String),
    /// The broker refused the record (unknown topic, too large...): 502, naming the cause.
    #[error("Kafka refused the event: {0}")]
    Rejected(String),
    /// The event cannot be written as asked (its data does not fit the endpoint's Avro
    /// schema): the client's, 400.
    #[error("the event cannot be encoded: {0}")]
    Invalid(String),
}

impl Blame for ProduceError {
    fn fault(&self) -> Fault {
        match self {
            ProduceError::Invalid(_) => Fault::Client,
            _ => Fault::Upstream,
        }
    }
}

/// (partition, offset) of an acknowledged record.
pub type Produced = Result<(i32, i64), ProduceError>;
pub(crate) type ProduceJob = Job<ProduceRecord, Produced>;

/// Records of one partition to read again for a resuming connection: from `start` up to the
/// offset `to` (exclusive).
#[derive(Debug, Clone)]
pub struct ReplayRange {
    pub topic: Arc<str>,
    pub partition: i32,
    pub start: ReplayStart,
    pub to: i64,
}

/// Where a replayed range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// The offset after the last one the client's id names for this partition.
    Offset(i64),
    /// A partition the id does not name: its first record at or after this time (ms since the
    /// epoch), looked up by the island. Nothing older was the client's to miss.
    Since(i64),
}

/// What a resuming connection missed, read back from Kafka.
#[derive(Debug)]
pub struct ReplayRequest {
    pub ranges: Vec<ReplayRange>,
    /// The connection's subscriptions: only what they match comes back.
    pub subs: Vec<crate::route::subscription::Compiled>,
    /// `sessions.resume_max_events`: the newest this many are kept, the rest counted lost.
    pub max_events: usize,
    /// `sessions.resume_max_age_s`: older records are counted lost.
    pub max_age_ms: u64,
}

#[derive(Debug, Default)]
pub struct Replayed {
    /// In order: each partition's records in log order, partitions merged by timestamp.
    pub events: Vec<Arc<crate::route::Event>>,
    /// Records the connection wanted (or may have: truncated logs) that cannot be replayed.
    pub lost: u64,
}

pub type ReplayAnswer = Result<Replayed, ProduceError>;
pub(crate) type ReplayJob = Job<ReplayRequest, ReplayAnswer>;

/// What shards hold of the Kafka island: a way to produce, shareable across threads.
#[derive(Clone)]
pub struct BrokerHandle {
    produce: Handle<ProduceRecord, Produced>,
    replay: Handle<ReplayRequest, ReplayAnswer>,
    /// Where the island stands in each source partition (resume seams).
    pub positions: Arc<Positions>,
    /// The last records of each source partition, for replays.
    pub recent: Arc<Recent>,
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

    /// Reads records back for a resuming connection.
    pub async fn replay(&self, req: ReplayRequest) -> ReplayAnswer {
        self.replay
            .call(req)
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
    let positions = Arc::new(Positions::starting());
    let ring = &cfg.tuning.sessions;
    let recent = Arc::new(Recent::new(ring.resume_ring_events, ring.resume_ring_bytes));
    let island_recent = recent.clone();
    let (replay, replays) = island::channel("cb-island", 256);
    let island_positions = positions.clone();
    let produce = island::spawn("cb-island", 1024, move |jobs| {
        kafka::run(kafka::Start {
            node,
            cfg,
            kafka,
            shards,
            interest,
            jobs,
            replays,
            metrics,
            positions: island_positions,
            recent: island_recent,
        })
    });
    Some(BrokerHandle {
        produce,
        replay,
        positions,
        recent,
        publish_topic,
        control_topic,
        response_topic,
        log_topic,
    })
}

#[cfg(test)]
mod positions_tests {
    use super::*;

    #[test]
    fn a_resume_with_a_time_waits_for_every_partition_without_a_position() {
        let p = Positions::starting();
        let id = |s: &str| crate::proto::resume::parse(s).unwrap();
        assert!(p.settling(&id("@;")), "not listed yet");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        p.slot(&a, 0).store(5, Ordering::SeqCst);
        p.slot(&b, 0); // listed, start offset still being looked up
        p.listed();
        // An id naming only a/0 does not wait for b/0 unless it has a time (b/0 is then read
        // back from it, and needs a position to read up to).
        assert!(!p.settling(&id("a/0/4;")));
        assert!(p.settling(&id("a/0/4;;1")));
        p.slot(&b, 0).store(0, Ordering::SeqCst);
        assert!(!p.settling(&id("a/0/4;;1")));
    }
}
