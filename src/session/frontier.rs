//! The shard's resume frontier: for each Kafka source partition, the offset below which every
//! record this shard's connections wanted has been queued to them. It moves with each event
//! delivered and with the island's progress messages (which also cover records nobody here
//! wanted). SSE ids carry it (`proto::resume`), encoded once per event for every connection.
//!
//! A connection opened (or resumed) while the shard's frontier is behind the island's
//! positions gets a floor: the positions it starts from. Until the shard's frontier has passed
//! the floor everywhere, records below it are not delivered to that connection (they precede
//! its start, or its replay already carried them) and its ids carry frontier ⊔ floor.

use crate::proto::resume::{self, Frontier};
use crate::route::{Event, Progress};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(super) struct Frontiers {
    pub(super) shard: Frontier,
    /// FRONTIER of `shard`, valid while `cache_ok`; events of `stale` (the one partition moved
    /// since it was encoded) may still use it, as their own offset counts for it.
    cache: String,
    cache_ok: bool,
    stale: Option<(Arc<str>, i32)>,
}

impl Frontiers {
    /// Names partitions `0..n` of the node's own log at offset 0 before anything is published.
    /// An id that does not name a partition resumes it at the live position, so a partition
    /// left out of ids made before its first `Progress` reached this shard (shards start, and
    /// tell, in no fixed order) would lose what it got while the client was away.
    pub(super) fn name_log(&mut self, topic: &Arc<str>, n: usize) {
        for p in 0..n {
            self.raise(topic, p as i32, 0);
        }
    }

    pub(super) fn progress(&mut self, p: &Progress) {
        self.raise(&p.topic, p.partition, p.next);
    }

    fn raise(&mut self, topic: &Arc<str>, partition: i32, next: i64) {
        let key = (topic.clone(), partition);
        let e = self.shard.entry(key).or_insert(-1);
        if next > *e {
            *e = next;
            match &self.stale {
                None if self.cache_ok => self.stale = Some((topic.clone(), partition)),
                Some((t, p)) if **t == **topic && *p == partition => {}
                _ => self.cache_ok = false,
            }
        }
    }

    /// The SSE id of `e` for connections without a floor: its position and the frontier before
    /// it. None for events without a position (HTTP publishes).
    pub(super) fn id(&mut self, e: &Event) -> Option<String> {
        let pos = e.pos.as_ref()?;
        let fresh = self.cache_ok
            && self
                .stale
                .as_ref()
                .is_none_or(|(t, p)| **t == *pos.topic && *p == pos.partition);
        if !fresh {
            self.cache.clear();
            resume::encode_frontier(&self.shard, &mut self.cache);
            self.cache_ok = true;
            self.stale = None;
        }
        let mut id = position_id(pos);
        id.push_str(&self.cache);
        resume::push_since(pos.timestamp_ms, &mut id);
        Some(id)
    }

    /// After `e` went to every connection that takes it.
    pub(super) fn advance(&mut self, e: &Event) {
        if let Some(pos) = &e.pos {
            self.raise(&pos.topic, pos.partition, pos.offset + 1);
        }
    }

    /// The id of `e` (or of a RIG event, `e` None) for a connection with `floor`.
    pub(super) fn id_with_floor(&self, e: Option<&Event>, floor: &Frontier) -> String {
        let pos = e.and_then(|e| e.pos.as_ref());
        let mut id = match pos {
            Some(pos) => position_id(pos),
            None => {
                let mut id = String::with_capacity(64);
                id.push_str(resume::NO_POSITION);
                id.push(';');
                id
            }
        };
        resume::encode_merged(&self.shard, floor, &mut id);
        let since = pos.map_or_else(
            || crate::auth::blacklist::now_ms() as i64,
            |p| p.timestamp_ms,
        );
        resume::push_since(since, &mut id);
        id
    }

    /// Whether a connection with `floor` must skip `e` (it is below where the connection
    /// started in its partition).
    pub(super) fn below(e: &Event, floor: &Frontier) -> bool {
        e.pos.as_ref().is_some_and(|p| {
            floor
                .get(&(p.topic.clone(), p.partition))
                .is_some_and(|f| p.offset < *f)
        })
    }

    /// True once the shard's frontier is at or past `floor` everywhere: the floor can go.
    pub(super) fn passed(&self, floor: &Frontier) -> bool {
        floor
            .iter()
            .all(|(k, f)| self.shard.get(k).is_some_and(|s| s >= f))
    }
}

/// `topic/partition/offset;`, the start of an event's id (its frontier follows). Built by hand,
/// not with format!: an id is made for every event a shard delivers.
pub(super) fn position_id(pos: &crate::route::Pos) -> String {
    let mut id = String::with_capacity(64);
    id.push_str(&pos.topic);
    id.push('/');
    id.push_str(itoa::Buffer::new().format(pos.partition));
    id.push('/');
    id.push_str(itoa::Buffer::new().format(pos.offset));
    id.push(';');
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Pos;

    fn ev(topic: &Arc<str>, partition: i32, offset: i64) -> Event {
        Event {
            event_type: "t".into(),
            id: "x".into(),
            json: bytes::Bytes::from_static(b"{}"),
            fields: Default::default(),
            pos: Some(Pos {
                topic: topic.clone(),
                partition,
                offset,
                timestamp_ms: 1_700_000_000_000 + offset,
            }),
        }
    }

    #[test]
    fn ids_carry_the_frontier_before_each_event() {
        let t: Arc<str> = Arc::from("rig");
        let mut f = Frontiers::default();
        f.progress(&Progress {
            topic: t.clone(),
            partition: 1,
            next: 5,
        });
        let a = ev(&t, 0, 3);
        let id = f.id(&a).unwrap();
        f.advance(&a);
        let r = resume::parse(&id).unwrap();
        assert_eq!((r.start("rig", 0), r.start("rig", 1)), (Some(4), Some(5)));
        // Same partition again: the cached frontier still holds.
        let b = ev(&t, 0, 4);
        let id = f.id(&b).unwrap();
        f.advance(&b);
        assert_eq!(resume::parse(&id).unwrap().start("rig", 0), Some(5));
        // Another partition: partition 0 has moved on.
        let c = ev(&t, 1, 9);
        let id = f.id(&c).unwrap();
        let r = resume::parse(&id).unwrap();
        assert_eq!((r.start("rig", 0), r.start("rig", 1)), (Some(5), Some(10)));
        // Partitions the id does not name are resumed from the event's time.
        assert_eq!(r.start("rig", 2), None);
        assert_eq!(r.since_ms, Some(1_700_000_000_009));
    }

    #[test]
    fn ids_name_every_partition_of_the_nodes_log_before_any_progress() {
        let t: Arc<str> = Arc::from("~0000abcd");
        let mut f = Frontiers::default();
        f.name_log(&t, 3);
        let a = ev(&t, 0, 0);
        let r = resume::parse(&f.id(&a).unwrap()).unwrap();
        assert_eq!(
            (r.start(&t, 0), r.start(&t, 1), r.start(&t, 2)),
            (Some(1), Some(0), Some(0))
        );
    }

    #[test]
    fn floors_skip_and_pass() {
        let t: Arc<str> = Arc::from("rig");
        let mut floor = Frontier::new();
        floor.insert((t.clone(), 0), 10);
        assert!(Frontiers::below(&ev(&t, 0, 9), &floor));
        assert!(!Frontiers::below(&ev(&t, 0, 10), &floor));
        assert!(!Frontiers::below(&ev(&t, 1, 0), &floor));
        let mut f = Frontiers::default();
        assert!(!f.passed(&floor));
        let before = crate::auth::blacklist::now_ms() as i64;
        let r = resume::parse(&f.id_with_floor(None, &floor)).unwrap();
        assert_eq!(r.start("rig", 0), Some(10));
        assert!(r.since_ms.is_some_and(|t| t >= before), "{r:?}");
        let r = resume::parse(&f.id_with_floor(Some(&ev(&t, 0, 12)), &floor)).unwrap();
        assert_eq!(r.since_ms, Some(1_700_000_000_012));
        f.advance(&ev(&t, 0, 9));
        assert!(f.passed(&floor));
    }
}
