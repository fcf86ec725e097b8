//! SSE ids that let a client resume on any node, sans-I/O.
//!
//! An event read from Kafka goes out with the id `topic/partition/offset;FRONTIER`. The part
//! before `;` is where the event is in the log. FRONTIER says, for every source partition the
//! shard knew when it sent the event, the offset below which every record the connection
//! wanted had already been sent: a reconnecting client's `Last-Event-ID` therefore names a
//! complete position, and the node it reaches re-reads exactly what came after it. A single
//! `topic/partition/offset` could not: records of other partitions interleave arbitrarily.
//!
//! FRONTIER is `TOPIC:O0.O1.O2,TOPIC:...`: each topic by an 8-hex-digit hash of its name
//! (FNV-1a 32, so ids stay short whatever the names), then its partitions' offsets in base 36
//! by partition number, `_` for a partition not known. The event's own partition may be behind
//! in FRONTIER: the event's offset + 1 counts for it.
//!
//! The id ends with `;SINCE`, a time in base-36 milliseconds: the event's record timestamp (or
//! the moment a RIG event's id was made). A partition the id does not name at all (its node
//! learned of it later: a reader that started late, a topic or partition added, a node reading
//! more topics) brought the client nothing before SINCE; the resume reads it from SINCE on.
//! Ids without SINCE (an older build's) resume such partitions at the live position.

use std::collections::BTreeMap;
use std::fmt::Write;

/// FNV-1a (32 bit) of a topic name: the key of its partitions in a frontier.
pub fn topic_hash(topic: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn base36(mut n: u64, out: &mut String) {
    if n == 0 {
        out.push('0');
        return;
    }
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// For each partition of each topic (by name), the next offset a connection has not been sent.
pub type Frontier = BTreeMap<(std::sync::Arc<str>, i32), i64>;

/// Appends FRONTIER (without the leading `;`).
pub fn encode_frontier(f: &Frontier, out: &mut String) {
    let mut by_topic: BTreeMap<u32, Vec<Option<i64>>> = BTreeMap::new();
    for ((topic, partition), offset) in f {
        if *partition < 0 || *partition > 4096 {
            continue;
        }
        let v = by_topic.entry(topic_hash(topic)).or_default();
        let p = *partition as usize;
        if v.len() <= p {
            v.resize(p + 1, None);
        }
        v[p] = Some(*offset);
    }
    for (i, (hash, offsets)) in by_topic.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{hash:08x}:");
        for (j, o) in offsets.iter().enumerate() {
            if j > 0 {
                out.push('.');
            }
            match o {
                Some(o) if *o >= 0 => base36(*o as u64, out),
                _ => out.push('_'),
            }
        }
    }
}

/// A parsed Kafka resume id: the event's position and the frontier by topic hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeId {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// (topic hash, partition) -> next offset.
    pub frontier: BTreeMap<(u32, i32), i64>,
    /// SINCE: partitions the id does not name are resumed from their first record at or
    /// after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

impl ResumeId {
    /// Where to start reading `topic`/`partition` again, if the id says.
    pub fn start(&self, topic: &str, partition: i32) -> Option<i64> {
        let f = self.frontier.get(&(topic_hash(topic), partition)).copied();
        if self.partition >= 0 && topic == self.topic && partition == self.partition {
            return Some(f.unwrap_or(0).max(self.offset + 1));
        }
        f
    }
}

/// The id of a RIG event (`rig.connection.create`, `rig.subscriptions_set`) on a stream that
/// can resume: no position of its own, only the frontier.
pub const NO_POSITION: &str = "@";

/// The id of such an event carrying exactly the frontier `f`, made at `now_ms`:
/// `@;FRONTIER;SINCE`.
pub fn frontier_id(f: &Frontier, now_ms: i64) -> String {
    let mut id = String::with_capacity(64);
    id.push_str(NO_POSITION);
    id.push(';');
    encode_frontier(f, &mut id);
    push_since(now_ms, &mut id);
    id
}

/// Appends `;SINCE` (nothing for a negative time: a record without a timestamp).
pub fn push_since(ms: i64, out: &mut String) {
    if ms >= 0 {
        out.push(';');
        base36(ms as u64, out);
    }
}

/// Merges two frontiers (the larger offset of each partition) into FRONTIER.
pub fn encode_merged(a: &Frontier, b: &Frontier, out: &mut String) {
    let mut m = a.clone();
    for (k, v) in b {
        let e = m.entry(k.clone()).or_insert(*v);
        *e = (*e).max(*v);
    }
    encode_frontier(&m, out);
}

/// Parses `topic/partition/offset[;FRONTIER[;SINCE]]` or `@;FRONTIER[;SINCE]`; None for
/// anything else (an HTTP-published event's id, another system's id). Bounded: an id longer
/// than 64 KiB is refused.
pub fn parse(id: &str) -> Option<ResumeId> {
    if id.len() > 64 * 1024 {
        return None;
    }
    let (pos, rest) = id.split_once(';').unwrap_or((id, ""));
    let (frontier, since_ms) = match rest.split_once(';') {
        None => (rest, None),
        Some((f, since)) => {
            if since.is_empty() || since.len() > 13 {
                return None;
            }
            (
                f,
                Some(i64::from_str_radix(since, 36).ok().filter(|t| *t >= 0)?),
            )
        }
    };
    let (topic, partition, offset) = if pos == NO_POSITION {
        if !id.contains(';') {
            return None;
        }
        ("", -1, -1)
    } else {
        let (rest, offset) = pos.rsplit_once('/')?;
        let (topic, partition) = rest.rsplit_once('/')?;
        let partition: i32 = partition.parse().ok().filter(|p| *p >= 0)?;
        let offset: i64 = offset.parse().ok().filter(|o| *o >= 0)?;
        if topic.is_empty() {
            return None;
        }
        (topic, partition, offset)
    };
    let mut map = BTreeMap::new();
    for part in frontier.split(',').filter(|p| !p.is_empty()) {
        let (hash, offsets) = part.split_once(':')?;
        if hash.len() != 8 {
            return None;
        }
        let hash = u32::from_str_radix(hash, 16).ok()?;
        for (p, o) in offsets.split('.').enumerate() {
            if p > 4096 {
                return None;
            }
            if o == "_" {
                continue;
            }
            if o.is_empty() || o.len() > 13 {
                return None;
            }
            let o = i64::from_str_radix(o, 36).ok()?;
            map.insert((hash, p as i32), o);
        }
    }
    Some(ResumeId {
        topic: topic.to_string(),
        partition,
        offset,
        frontier: map,
        since_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn round_trip_and_start_positions() {
        let mut f = Frontier::new();
        f.insert((Arc::from("rig"), 0), 10);
        f.insert((Arc::from("rig"), 2), 36);
        f.insert((Arc::from("other"), 0), 0);
        let mut id = String::from("rig/1/7;");
        encode_frontier(&f, &mut id);
        let r = parse(&id).unwrap();
        assert_eq!((r.topic.as_str(), r.partition, r.offset), ("rig", 1, 7));
        assert_eq!(r.start("rig", 0), Some(10));
        assert_eq!(r.start("rig", 1), Some(8), "the event's own partition");
        assert_eq!(r.start("rig", 2), Some(36));
        assert_eq!(r.start("rig", 3), None);
        assert_eq!(r.start("other", 0), Some(0));
        assert!(id.contains(".10"), "base 36: {id}");
        assert_eq!(r.since_ms, None, "an older build's id");
        push_since(1_764_600_000_123, &mut id);
        let r = parse(&id).unwrap();
        assert_eq!(r.since_ms, Some(1_764_600_000_123));
        assert_eq!(r.start("rig", 2), Some(36));
        let r = parse(&frontier_id(&f, 36)).unwrap();
        assert_eq!((r.since_ms, r.start("other", 0)), (Some(36), Some(0)));
    }

    #[test]
    fn foreign_ids_are_not_resume_ids() {
        for bad in [
            "",
            "42",
            "abc-123",
            "rig/x/1",
            "/1/2",
            "rig/1/2;zz:1",
            "rig/1/2;0000000g:1",
            "rig/-1/2",
            "rig/1/2;;",
            "rig/1/2;;-5",
            "@;;x!",
            "@;;zzzzzzzzzzzzzz",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        // A plain position (a client of the previous format) still resumes its partition.
        assert_eq!(parse("a/b/3/9").unwrap().topic, "a/b");
        assert!(parse("@").is_none());
        let r = parse("@;").unwrap();
        assert!(r.frontier.is_empty() && r.start("rig", 0).is_none());
    }

    proptest! {
        #[test]
        fn any_frontier_round_trips(entries in proptest::collection::btree_map((0u8..3, 0i32..20), 0i64..i64::MAX / 2, 0..30)) {
            let topics = ["rig", "ai.flowx.x", "t/with/slashes"];
            let f: Frontier = entries.iter().map(|((t, p), o)| ((Arc::from(topics[*t as usize]), *p), *o)).collect();
            let mut id = String::from("rig/0/1;");
            encode_frontier(&f, &mut id);
            let r = parse(&id).unwrap();
            for ((t, p), o) in &f {
                let want = if &**t == "rig" && *p == 0 { (*o).max(2) } else { *o };
                prop_assert_eq!(r.start(t, *p), Some(want));
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }
}
