//! Per-connection sequence tracking: received, duplicates, reordering and gaps, with a bounded
//! set of missing sequence numbers.
//!
//! Order is promised only within an ordering stream (a Kafka partition, an HTTP publishing
//! connection): an event arriving after a later one of the *same* stream is reordered, a
//! defect; one arriving after a later event of another stream is only interleaved.

use std::collections::BTreeSet;

/// Missing sequence numbers remembered per connection; a larger gap is only counted.
pub const MAX_MISSING: usize = 4096;
/// Ordering streams told apart; higher stream numbers share the last one.
pub const MAX_STREAMS: usize = 256;

#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Next sequence number expected in order.
    pub next: u64,
    /// Below `next`, not received yet (bounded by [`MAX_MISSING`]).
    missing: BTreeSet<u64>,
    /// Gap members that did not fit into `missing`.
    pub untracked: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Every delivery, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    /// Arrived after a higher sequence number of another stream (filled a gap).
    pub interleaved: u64,
    /// Arrived after a higher sequence number of its own stream.
    pub reordered: u64,
    /// Highest sequence number seen per stream, plus one (0: none yet).
    stream_next: Vec<u64>,
    /// Start from the first sequence number seen (a connection opened mid-stream), rather
    /// than from 0.
    pub floating_start: bool,
}

impl SeqTracker {
    pub fn starting_anywhere() -> Self {
        SeqTracker {
            floating_start: true,
            ..Self::default()
        }
    }

    pub fn observe(&mut self, seq: u64, stream: u32) {
        self.received += 1;
        let st = (stream as usize).min(MAX_STREAMS - 1);
        if self.stream_next.len() <= st {
            self.stream_next.resize(st + 1, 0);
        }
        let in_stream_late = seq < self.stream_next[st];
        self.stream_next[st] = self.stream_next[st].max(seq + 1);
        if self.floating_start && self.received == 1 {
            self.next = seq;
        }
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            let gap = seq - self.next;
            let room = (MAX_MISSING - self.missing.len()) as u64;
            let tracked = gap.min(room);
            self.missing.extend(self.next..self.next + tracked);
            self.untracked += gap - tracked;
            self.next = seq + 1;
            self.unique += 1;
        } else if self.missing.remove(&seq) {
            if in_stream_late {
                self.reordered += 1;
            } else {
                self.interleaved += 1;
            }
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Sequence numbers below `next` never received.
    pub fn gaps(&self) -> u64 {
        self.missing.len() as u64 + self.untracked
    }

    /// Loss against `expected` distinct events.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = SeqTracker::default();
        (0..10).for_each(|s| t.observe(s, 0));
        assert_eq!(
            (t.unique, t.duplicates, t.reordered, t.gaps()),
            (10, 0, 0, 0)
        );
        assert_eq!(t.lost(10), 0);
        assert_eq!(t.lost(12), 2);
    }

    #[test]
    fn reorder_duplicate_loss() {
        let mut t = SeqTracker::default();
        for s in [0, 2, 1, 1, 4, 2, 6] {
            t.observe(s, 0);
        }
        // 1 filled a gap (reordered); the second 1 and second 2 are duplicates; 3 and 5 missing.
        assert_eq!(t.reordered, 1);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.unique, 5);
        assert_eq!(t.gaps(), 2);
        assert_eq!(t.lost(7), 2);
        assert_eq!(t.received, 7);
    }

    #[test]
    fn bounded_gap() {
        let mut t = SeqTracker::default();
        t.observe(MAX_MISSING as u64 + 100, 0);
        assert_eq!(t.gaps(), MAX_MISSING as u64 + 100);
        assert_eq!(t.untracked, 100);
        t.observe(5, 0);
        assert_eq!(t.reordered, 1);
    }

    #[test]
    fn streams_interleave_without_reordering() {
        // Two partitions (even, odd seqs) arriving a partition at a time: interleaved only.
        let mut t = SeqTracker::default();
        for s in [0, 2, 4, 1, 3, 5] {
            t.observe(s, (s % 2) as u32);
        }
        assert_eq!(
            (t.unique, t.interleaved, t.reordered, t.gaps()),
            (6, 2, 0, 0)
        );
        // Within partition 0, 6 before... 8 then 6: reordered.
        t.observe(8, 0);
        t.observe(6, 0);
        assert_eq!((t.reordered, t.interleaved), (1, 2));
    }

    #[test]
    fn floating_start() {
        let mut t = SeqTracker::starting_anywhere();
        for s in [50, 51, 53, 52] {
            t.observe(s, 0);
        }
        assert_eq!((t.unique, t.reordered, t.gaps()), (4, 1, 0));
    }
}
