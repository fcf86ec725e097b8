//! Resuming an SSE stream from `Last-Event-ID` (or `?last_event_id=`), on whichever node the
//! client reconnects to.
//!
//! ```text
//! open: register the subscriptions' interest ─> read the island's positions (live starts
//!       there) ─> first ids carry the client's frontier (from its id)
//! replay: for each partition where the client is behind the live start, the island reads
//!       [client, live) back from Kafka, filtered by the subscriptions, bounded
//!       (`sessions.resume_max_events`, `sessions.resume_max_age_s`, half the queue bytes)
//!       ─> put in front of what arrived live meanwhile, before the socket is attached
//! ```
//! Live records below the live start are skipped for this connection (see
//! `session/frontier.rs`), so the seam has no duplicate and no hole. What cannot be replayed
//! (too old, too many, the log truncated, Kafka unreachable, an id of another system, or no
//! Kafka at all) is announced first by a `rig.replay_gap` event:
//! `{"from": "<the id>", "lost_at_least": N or null, "reason": "..."}`.

use crate::broker::{ReplayRange, ReplayRequest};
use crate::metrics::{ResumeResult, Transport};
use crate::proto::cloudevents::{self, CloudEvent};
use crate::proto::resume::{self, Frontier};
use crate::proto::token::Token;
use crate::route::subscription::Compiled;
use crate::runtime::shard::Shard;
use crate::session::{Slot, Start};
use std::rc::Rc;
use std::time::Duration;

/// How long a replay may take before the stream starts without it (with a gap event).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The queued frames before a replay: `rig.connection.create`, `rig.subscriptions_set`.
const FIRST_FRAMES: usize = 2;

/// Opens the session; with Kafka on, its live start and first frontier come from the island's
/// positions and the client's id.
pub(super) fn open(
    shard: &Rc<Shard>,
    subs: crate::route::subscription::SubscriptionSet,
    session: Option<String>,
    last_id: Option<&str>,
) -> Result<(Slot, Token, Option<Start>), crate::session::Blacklisted> {
    let from = last_id.and_then(resume::parse);
    let positions = shard.globals.broker.as_ref().map(|b| b.positions.clone());
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
    shard
        .sessions
        .borrow_mut()
        .open_at(Transport::Sse, subs, session, &start)
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
    let (Some(start), Some(broker)) = (start, shard.globals.broker.as_ref()) else {
        count(ResumeResult::Gap);
        let reason = "without Kafka, published events are not kept for resuming";
        splice(Some(gap(id, None, reason)), &[], Frontier::new());
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
    let ranges: Vec<ReplayRange> = start
        .live
        .iter()
        .filter_map(|(k, to)| {
            let from = *start.first.get(k)?;
            (from < *to).then(|| ReplayRange {
                topic: k.0.clone(),
                partition: k.1,
                from,
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
    let answer = futures_lite::future::or(async { Some(broker.replay(req).await) }, async {
        glommio::timer::sleep(REPLAY_TIMEOUT).await;
        None
    })
    .await;
    match answer {
        Some(Ok(r)) => {
            let mut events = r.events;
            let mut lost = r.lost;
            // Half the queue's bytes at most, the newest kept.
            let budget = tuning.queue_bytes / 2;
            let mut bytes: usize = events.iter().map(|e| e.json.len() + 64).sum();
            let mut cut = 0;
            while bytes > budget && cut < events.len() {
                bytes -= events[cut].json.len() + 64;
                cut += 1;
            }
            events.drain(..cut);
            lost += cut as u64;
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
