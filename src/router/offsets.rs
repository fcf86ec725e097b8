//! Which input offsets may be committed: a message's offset is done when every output of it
//! was acknowledged (an integration topic, the retry topic or S3); the commit point of a
//! partition is the lowest offset still in flight (or one past the highest done), so a crash
//! or a rebalance re-reads everything not yet delivered and loses nothing. Sans-I/O.

use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Default)]
pub struct Offsets {
    parts: HashMap<(String, i32), Part>,
    /// Partitions the group gave this consumer. A message of any other partition (one fetched
    /// before a revocation and handed out after it) is not processed: its new owner reads it,
    /// and counting it here would move a later commit past messages never read.
    assigned: HashSet<(String, i32)>,
}

#[derive(Debug, Default)]
struct Part {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset seen (done or not).
    next: i64,
}

impl Offsets {
    /// The group gave this consumer a partition: its bookkeeping starts afresh.
    pub fn assign(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.parts.remove(&key);
        self.assigned.insert(key);
    }

    /// The group took a partition away: forget it (messages of it still in flight finish, but
    /// no longer count; its new owner re-reads from the last commit).
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.parts.remove(&key);
        self.assigned.remove(&key);
    }

    /// A message was read and its outputs start; false when its partition is not this
    /// consumer's (then it must not be processed).
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let key = (topic.to_string(), partition);
        if !self.assigned.contains(&key) {
            return false;
        }
        let p = self.parts.entry(key).or_default();
        p.in_flight.insert(offset);
        p.next = p.next.max(offset + 1);
        true
    }

    /// Every output of the message was acknowledged.
    pub fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_string(), partition)) {
            p.in_flight.remove(&offset);
        }
    }

    /// The offset to commit for a partition (Kafka's "next to read"), if any was seen.
    pub fn commit_point(&self, topic: &str, partition: i32) -> Option<i64> {
        let p = self.parts.get(&(topic.to_string(), partition))?;
        Some(p.in_flight.first().copied().unwrap_or(p.next))
    }

    /// Every partition's commit point.
    pub fn commit_points(&self) -> Vec<(String, i32, i64)> {
        self.parts
            .iter()
            .map(|((t, p), part)| {
                (
                    t.clone(),
                    *p,
                    part.in_flight.first().copied().unwrap_or(part.next),
                )
            })
            .collect()
    }

    /// Messages read but not delivered yet.
    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_undelivered_message() {
        let mut o = Offsets::default();
        assert_eq!(o.commit_point("t", 0), None);
        assert!(!o.start("t", 0, 9), "not assigned: not processed");
        o.assign("t", 0);
        for off in 10..15 {
            assert!(o.start("t", 0, off));
        }
        assert_eq!(o.commit_point("t", 0), Some(10));
        o.done("t", 0, 11);
        o.done("t", 0, 12);
        assert_eq!(o.commit_point("t", 0), Some(10), "10 is still in flight");
        o.done("t", 0, 10);
        assert_eq!(o.commit_point("t", 0), Some(13));
        o.done("t", 0, 13);
        o.done("t", 0, 14);
        assert_eq!(o.commit_point("t", 0), Some(15), "one past the last read");
        assert_eq!(o.in_flight(), 0);
        o.assign("t", 1);
        o.start("t", 1, 3);
        assert_eq!(o.commit_points().len(), 2);
        o.revoke("t", 1);
        assert_eq!(o.commit_points().len(), 1);
        assert!(
            !o.start("t", 1, 4),
            "a message fetched before the revocation is skipped"
        );
        // Assigned again later: no stale "next" from before.
        o.assign("t", 1);
        assert_eq!(o.commit_point("t", 1), None);
        o.start("t", 1, 2);
        o.done("t", 1, 2);
        assert_eq!(o.commit_point("t", 1), Some(3));
    }
}
