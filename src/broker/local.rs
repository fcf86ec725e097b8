//! Events published over HTTP without a broker, kept for resuming. Each shard's publishes are
//! one partition of the node's own log `~NODE` (the node's random per-process id in 8 hex
//! digits: a restarted node starts a new log), with positions and a ring of recent events
//! exactly like a Kafka source partition's (`Positions`, `Recent`, the same bounds). SSE ids
//! therefore carry these partitions in their frontier, and `api::resume` replays from the ring
//! on this node, or from the Redis store (`broker::redis`) on any node.
//!
//! Order: a shard gives its publishes their offsets in the order it queues them to the other
//! shards (one publish at a time, see `Shard::publish_logged`), so every shard receives each
//! partition in offset order and the frontier logic of Kafka partitions holds unchanged. Once a
//! second a shard whose log moved tells every shard where it stands (`Progress`), so ids move
//! past events other shards' connections took.

use super::redis::RedisStore;
use super::{Positions, Recent, Tracked};
use crate::config::Config;
use crate::route::{Control, Event, Pos};
use std::cell::Cell;
use std::sync::Arc;

pub struct LocalLog {
    pub topic: Arc<str>,
    pub positions: Arc<Positions>,
    pub recent: Arc<Recent>,
    pub redis: Option<RedisStore>,
}

impl LocalLog {
    pub fn new(node: u32, cfg: &Config, redis: Option<RedisStore>) -> LocalLog {
        let ring = &cfg.tuning.sessions;
        LocalLog {
            topic: Arc::from(format!("~{node:08x}").as_str()),
            positions: Arc::new(Positions::default()),
            recent: Arc::new(Recent::new(ring.resume_ring_events, ring.resume_ring_bytes)),
            redis,
        }
    }

    /// Whether `topic` is a node log (this node's or another's): their events exist only in
    /// rings and the Redis store.
    pub fn is_log(topic: &str) -> bool {
        topic.starts_with('~')
    }
}

/// One shard's partition of the node's log.
pub struct LocalPart {
    tracked: Tracked,
    partition: i32,
    /// The offset the next publish gets.
    next: Cell<i64>,
    /// What the last `Progress` said.
    told: Cell<i64>,
}

impl LocalPart {
    pub fn new(log: &LocalLog, shard: usize) -> LocalPart {
        let partition = shard as i32;
        let tracked = Tracked::new(&log.positions, &log.topic, partition);
        tracked.advance(0);
        LocalPart {
            tracked,
            partition,
            next: Cell::new(0),
            // Every shard's frontier names every partition at 0 from the start
            // (`Sessions::with_log`): nothing to tell until something is published.
            told: Cell::new(0),
        }
    }

    /// Gives `e` the next offset, keeps it (ring, Redis) and moves the position, before any
    /// shard is chosen for it: a connection that registers its interest and then reads the
    /// positions either gets it live or has it below its start (the replay's).
    pub fn append(&self, log: &LocalLog, mut e: Event) -> Arc<Event> {
        let offset = self.next.get();
        self.next.set(offset + 1);
        e.pos = Some(Pos {
            topic: log.topic.clone(),
            partition: self.partition,
            offset,
            timestamp_ms: crate::auth::blacklist::now_ms() as i64,
        });
        let e = Arc::new(e);
        log.recent.push(
            &log.topic,
            self.partition,
            offset,
            offset + 1,
            std::slice::from_ref(&e),
        );
        self.tracked.advance(offset + 1);
        if let Some(r) = &log.redis {
            r.keep(e.clone());
        }
        e
    }

    /// The `Progress` to send every shard, if the log moved since the last one.
    pub fn progress(&self, log: &LocalLog) -> Option<Control> {
        let next = self.next.get();
        if next <= self.told.get() {
            return None;
        }
        self.told.set(next);
        Some(Control::Progress(Arc::new(crate::route::Progress {
            topic: log.topic.clone(),
            partition: self.partition,
            next,
        })))
    }
}
