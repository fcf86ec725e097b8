//! Resuming a stream from `Last-Event-ID` (SSE) or `?last_event_id=` (SSE, WebSocket,
//! long-poll), on whichever node the client reconnects to. WebSocket clients learn the ids
//! from the `lasteventid` attribute of each event (when they connected with the parameter, even
//! empty); long-poll clients carry theirs in the `last_event_id` cookie (`proto::longpoll`).
//!
//! ```text
//! settle: a node that has just started first learns where the id's partitions stand (≤ 5 s)
//! open: register the subscriptions' interest ─> read the island's positions (live starts
//!       there) ─> first ids carry the client's frontier (from its id)
//! replay: for each partition where the client is behind the live start, the island reads
//!       [client, live) back from Kafka (a partition the id does not name: from its first
//!       record at or after the id's time), filtered by the subscriptions, bounded
//!       (`sessions.resume_max_events`, `sessions.resume_max_age_s`, half the queue bytes)
//!       ─> put in front of what arrived live meanwhile, before the socket is attached
//! ```
//! Live records below the live start are skipped for this connection (see
//! `session/frontier.rs`), so the seam has no duplicate and no hole. What cannot be replayed
//! (too old, too many, the log truncated, Kafka unreachable, an id of another system, or no
//! Kafka at all) is announced first by a `rig.replay_gap` event:
//! `{"from": "<the id>", "lost_at_least": N or null, "reason": "..."}`.

use crate::broker::local::LocalLog;
use crate::broker::redis::StoreRead;
use crate::broker::{ReplayRange, ReplayRequest, ReplayStart};
use crate::metrics::{ResumeResult, Transport};
use crate::proto::cloudevents::{self, CloudEvent};
use crate::proto::resume::{self, Frontier};
use crate::proto::token::Token;
use crate::route::subscription::Compiled;
use crate::route::Event;
use crate::runtime::shard::Shard;
use crate::session::{Slot, Start};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a replay may take before the stream starts without it (with a gap event).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a resume waits for a node that has just started to learn where its partitions
/// stand (`Positions::settling`); after that it goes ahead, with a gap event for what is
/// still unknown.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The queued frames before a replay: `rig.connection.create`, `rig.subscriptions_set`.
const FIRST_FRAMES: usize = 2;

/// Before `open`: waits while this node is still learning the positions of partitions
/// `last_id` names (it has just started), so the resume replays them instead of reporting them
/// unknown. Polls: it happens only in the first seconds of a node's life.
pub(super) async fn settle(shard: &Rc<Shard>, last_id: &str) {
    let (Some(broker), Some(id)) = (&shard.globals.broker, resume::parse(last_id)) else {
        return;
    };
    let waited = crate::runtime::rt::timeout(SETTLE_TIMEOUT, async {
        while broker.positions.settling(&id) {
            crate::runtime::rt::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if waited.is_none() {
        tracing::debug!(id = %last_id, "resume went ahead with partitions of unknown position");
    }
}

/// Opens the session; with Kafka on (or the node's log of HTTP publishes), its live start and
/// first frontier come from the positions and the client's id. A WebSocket opens here only when
/// it asked for resume ids.
pub(super) fn open(
    shard: &Rc<Shard>,
    transport: Transport,
    subs: crate::route::subscription::SubscriptionSet,
    session: Option<String>,
    last_id: Option<&str>,
) -> Result<(Slot, Token, Option<Start>), crate::session::Blacklisted> {
    let from = last_id.and_then(resume::parse);
    let positions = match (&shard.globals.broker, &shard.globals.local) {
        (Some(b), _) => Some(b.positions.clone()),
        (None, Some(l)) => Some(l.positions.clone()),
        (None, None) => None,
    };
    let start = || {
        let live = positions.as_ref()?.snapshot();
        // The client's position where its id says, else here and now. It may be ahead of
        // this node's (a node that is behind): the floor then holds back what it has.
        let first = live
            .iter()
            .map(|(k, at)| {
                let s = from.as_ref().and_then(|r| r.start(&k.0, k.1));
                (k.clone(), s.unwrap_or(*at))
            })
            .collect();
        Some(Start { live, first })
    };
    shard.sessions.borrow_mut().open_at(
        transport,
        subs,
        session,
        transport == Transport::Ws,
        &start,
    )
}

/// Keeps the newest of `events` that fit in `budget` bytes (a replay takes at most half the
/// connection's queue); returns how many were cut.
fn within_budget(events: &mut Vec<Arc<Event>>, budget: usize) -> u64 {
    let mut bytes: usize = events.iter().map(|e| e.json.len() + 64).sum();
    let mut cut = 0;
    while bytes > budget && cut < events.len() {
        bytes -= events[cut].json.len() + 64;
        cut += 1;
    }
    events.drain(..cut);
    cut as u64
}

fn gap(id: &str, lost: Option<u64>, reason: &str) -> CloudEvent {
    cloudevents::rig_event(
        "rig.replay_gap",
        Some(serde_json::json!({"from": id, "lost_at_least": lost, "reason": reason})),
    )
}

pub(super) async fn replay(
    shard: &Rc<Shard>,
    slot: Slot,
    token: &Token,
    id: &str,
    start: Option<Start>,
    subs: Vec<Compiled>,
) {
    let tuning = shard.cfg().tuning.sessions.clone();
    let count = |r: ResumeResult| shard.metrics.resumes[r as usize].inc();
    let splice = |lead: Option<CloudEvent>,
                  events: &[std::sync::Arc<crate::route::Event>],
                  from: Frontier| {
        let n = shard.sessions.borrow_mut().splice_replay(
            slot,
            token,
            FIRST_FRAMES,
            lead.as_ref(),
            events,
            from,
        );
        shard.metrics.resumed_events.add(n as u64);
    };
    let Some(start) = start else {
        count(ResumeResult::Gap);
        let reason = "events published through Kinesis are not kept for resuming";
        splice(Some(gap(id, None, reason)), &[], Frontier::new());
        return;
    };
    let Some(broker) = shard.globals.broker.as_ref() else {
        let (lead, events, result) = replay_local(shard, id, &start, &subs).await;
        count(result);
        if lead.is_some() || !events.is_empty() {
            splice(lead, &events, start.first);
        }
        return;
    };
    let Some(parsed) = resume::parse(id) else {
        count(ResumeResult::Gap);
        let reason = "not an id this gateway can resume from";
        splice(Some(gap(id, None, reason)), &[], start.first);
        return;
    };
    // Partitions the client had that this node does not read (yet): nothing can be said of
    // what it missed there.
    let known: std::collections::BTreeSet<(u32, i32)> = start
        .live
        .keys()
        .map(|(t, p)| (resume::topic_hash(t), *p))
        .collect();
    let unknown = parsed
        .frontier
        .keys()
        .filter(|k| !known.contains(k))
        .count();
    // A partition the id does not name brought the client nothing (its node learned of it
    // after the id was made): what it got since the id's time is read back, instead of being
    // lost to a start at the live position.
    let ranges: Vec<ReplayRange> = start
        .live
        .iter()
        .filter_map(|(k, to)| {
            let begin = match parsed.since_ms {
                Some(ms) if parsed.start(&k.0, k.1).is_none() => ReplayStart::Since(ms),
                _ => ReplayStart::Offset(*start.first.get(k)?),
            };
            // Nothing to read back below the live position (for a time: an empty partition).
            let lowest = match begin {
                ReplayStart::Offset(from) => from,
                ReplayStart::Since(_) => 0,
            };
            (lowest < *to).then(|| ReplayRange {
                topic: k.0.clone(),
                partition: k.1,
                start: begin,
                to: *to,
            })
        })
        .collect();
    let unknown_gap = || {
        (unknown > 0).then(|| {
            let reason = format!("{unknown} partition(s) of the id are not read by this node");
            gap(id, None, &reason)
        })
    };
    if ranges.is_empty() {
        let lead = unknown_gap();
        count(if lead.is_some() {
            ResumeResult::Gap
        } else {
            ResumeResult::Replayed
        });
        if lead.is_some() {
            splice(lead, &[], start.first);
        }
        return;
    }
    let req = ReplayRequest {
        ranges,
        subs,
        max_events: tuning.resume_max_events.min(tuning.queue_events / 2),
        max_age_ms: tuning.resume_max_age_s.saturating_mul(1000),
    };
    let answer = crate::runtime::rt::timeout(REPLAY_TIMEOUT, broker.replay(req)).await;
    match answer {
        Some(Ok(r)) => {
            let mut events = r.events;
            let lost = r.lost + within_budget(&mut events, tuning.queue_bytes / 2);
            let lead = (lost > 0)
                .then(|| {
                    gap(
                        id,
                        Some(lost),
                        "older than sessions.resume_max_age_s, beyond sessions.resume_max_events, or no longer in the log",
                    )
                })
                .or_else(unknown_gap);
            count(if lost > 0 {
                ResumeResult::Gap
            } else {
                ResumeResult::Replayed
            });
            splice(lead, &events, start.first);
        }
        Some(Err(e)) => {
            count(ResumeResult::Failed);
            let reason = format!("Kafka could not be read: {e}");
            splice(Some(gap(id, None, &reason)), &[], start.first);
        }
        None => {
            count(ResumeResult::Failed);
            let reason = format!("Kafka did not answer within {} s", REPLAY_TIMEOUT.as_secs());
            splice(Some(gap(id, None, &reason)), &[], start.first);
        }
    }
}

/// Without a broker: this node's log from its ring, the rest (older than the ring, or
/// partitions of other nodes' logs the id names) from the Redis store when there is one.
async fn replay_local(
    shard: &Rc<Shard>,
    id: &str,
    start: &Start,
    subs: &[Compiled],
) -> (Option<CloudEvent>, Vec<Arc<Event>>, ResumeResult) {
    let Some(log) = shard.globals.local.as_ref() else {
        return (None, Vec::new(), ResumeResult::Replayed);
    };
    let Some(parsed) = resume::parse(id) else {
        let reason = "not an id this gateway can resume from";
        return (Some(gap(id, None, reason)), Vec::new(), ResumeResult::Gap);
    };
    let tuning = &shard.cfg().tuning.sessions;
    let req = ReplayRequest {
        ranges: Vec::new(),
        subs: subs.to_vec(),
        max_events: tuning.resume_max_events.min(tuning.queue_events / 2),
        max_age_ms: tuning.resume_max_age_s.saturating_mul(1000),
    };
    let sieve = crate::broker::Sieve::new(&req);
    let mut lost = 0u64;
    let mut queues = Vec::new();
    // (topic hash, partition) -> from: what only the store can have.
    let mut from_store: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    // This node's partitions: the live start bounds what the store may add for them.
    let mut live_to: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    for ((topic, partition), to) in &start.live {
        let key = (resume::topic_hash(topic), *partition);
        live_to.insert(key, *to);
        let Some(from) = start.first.get(&(topic.clone(), *partition)).copied() else {
            continue;
        };
        if from >= *to {
            continue;
        }
        let (events, missing) = log.recent.range_partial(topic, *partition, from, *to);
        if missing > 0 {
            from_store.insert(key, from);
        }
        let mut kept = VecDeque::new();
        for e in events {
            sieve.keep(e, &mut kept, &mut lost);
        }
        queues.push(kept);
    }
    // Another node's log (or a restarted node's): only the store has it.
    for (key, from) in parsed
        .frontier
        .iter()
        .filter(|(k, _)| !live_to.contains_key(k))
    {
        from_store.insert(*key, *from);
    }
    if !parsed.topic.is_empty() && LocalLog::is_log(&parsed.topic) {
        let key = (resume::topic_hash(&parsed.topic), parsed.partition);
        if !live_to.contains_key(&key) {
            let f = from_store.entry(key).or_insert(parsed.offset + 1);
            *f = (*f).max(parsed.offset + 1);
        }
    }
    let mut unknown = false;
    let mut reason = String::new();
    if !from_store.is_empty() {
        match &log.redis {
            None => unknown = true,
            Some(store) => {
                let read = store.read(StoreRead {
                    subs: subs.to_vec(),
                    from: from_store.clone(),
                    max_events: req.max_events,
                    oldest_ms: (crate::auth::blacklist::now_ms() as i64)
                        .saturating_sub(req.max_age_ms as i64),
                });
                let answer = crate::runtime::rt::timeout(REPLAY_TIMEOUT, read).await;
                match answer {
                    Some(Ok(a)) => {
                        unknown |= a.truncated;
                        // The ring's events of this node's partitions are taken already; the
                        // store's copies of them, and anything at or past the live start,
                        // are not needed.
                        let have: std::collections::HashSet<(u32, i32, i64)> = queues
                            .iter()
                            .flatten()
                            .filter_map(|e| e.pos.as_ref())
                            .map(|p| (resume::topic_hash(&p.topic), p.partition, p.offset))
                            .collect();
                        let mut kept = VecDeque::new();
                        for e in a.events {
                            let Some(p) = &e.pos else { continue };
                            let key = (resume::topic_hash(&p.topic), p.partition);
                            if live_to.get(&key).is_some_and(|to| p.offset >= *to)
                                || have.contains(&(key.0, key.1, p.offset))
                            {
                                continue;
                            }
                            kept.push_back(e);
                        }
                        queues.push(kept);
                    }
                    Some(Err(e)) => {
                        unknown = true;
                        reason = format!("the Redis replay store could not be read: {e}");
                    }
                    None => {
                        unknown = true;
                        reason = format!(
                            "the Redis replay store did not answer within {} s",
                            REPLAY_TIMEOUT.as_secs()
                        );
                    }
                }
            }
        }
    }
    let mut merged = Vec::new();
    crate::broker::merge_by_time(&mut queues, &mut merged);
    if merged.len() > req.max_events {
        lost += (merged.len() - req.max_events) as u64;
        merged.drain(..merged.len() - req.max_events);
    }
    lost += within_budget(&mut merged, tuning.queue_bytes / 2);
    if reason.is_empty() && unknown {
        reason = if log.redis.is_some() {
            "older than the replay store keeps (EVENTS_REDIS_TTLHOURS, CB_REDIS_MAX_PER_KEY)".into()
        } else {
            "older than this node's replay ring holds, or published on another node (no Redis replay store)".into()
        };
    }
    if reason.is_empty() && lost > 0 {
        reason = "older than sessions.resume_max_age_s or beyond sessions.resume_max_events".into();
    }
    let lead =
        (!reason.is_empty()).then(|| gap(id, (lost > 0 && !unknown).then_some(lost), &reason));
    let result = match (&lead, reason.starts_with("the Redis")) {
        (None, _) => ResumeResult::Replayed,
        (Some(_), true) => ResumeResult::Failed,
        (Some(_), false) => ResumeResult::Gap,
    };
    (lead, merged, result)
}
