//! `MAX_CONNECTIONS_PER_MINUTE`: new SSE, WebSocket and long-poll sessions per node in a fixed
//! one-minute window, as RIG's (ExRated) bucket. Shared by all shards through two atomics; it
//! is touched once per new connection, never per event.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ConnectionRate {
    window: AtomicU64,
    count: AtomicU64,
}

impl ConnectionRate {
    /// Counts one connection at `now_secs`; false when the minute's budget is spent.
    pub fn admit(&self, now_secs: u64, limit: u64) -> bool {
        let minute = now_secs / 60;
        let seen = self.window.load(Relaxed);
        if seen != minute
            && self
                .window
                .compare_exchange(seen, minute, Relaxed, Relaxed)
                .is_ok()
        {
            self.count.store(0, Relaxed);
        }
        self.count.fetch_add(1, Relaxed) < limit
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionRate;

    #[test]
    fn fixed_minute_window() {
        let r = ConnectionRate::default();
        assert!(r.admit(120, 2) && r.admit(121, 2));
        assert!(!r.admit(179, 2));
        assert!(r.admit(180, 2), "a new minute starts a new budget");
    }
}
