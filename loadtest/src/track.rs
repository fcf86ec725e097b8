//! Per-connection sequence tracking: received, duplicates, reordering and gaps, with a bounded
//! set of missing sequence numbers.

use std::collections::BTreeSet;

/// Missing sequence numbers remembered per connection; a larger gap is only counted.
pub const MAX_MISSING: usize = 4096;

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
    /// Arrived after a higher sequence number (filled a gap).
    pub reordered: u64,
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

    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
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
            self.reordered += 1;
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
        (0..10).for_each(|s| t.observe(s));
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
            t.observe(s);
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
        t.observe(MAX_MISSING as u64 + 100);
        assert_eq!(t.gaps(), MAX_MISSING as u64 + 100);
        assert_eq!(t.untracked, 100);
        t.observe(5);
        assert_eq!(t.reordered, 1);
    }

    #[test]
    fn floating_start() {
        let mut t = SeqTracker::starting_anywhere();
        for s in [50, 51, 53, 52] {
            t.observe(s);
        }
        assert_eq!((t.unique, t.reordered, t.gaps()), (4, 1, 0));
    }
}
