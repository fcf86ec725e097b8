//! The shard's tick: heartbeats for idle streams (`: heartbeat` on SSE, a ping on WebSocket),
//! expiry of abandoned long-poll sessions and of blacklist entries.
//!
//! Each session stamps the tick of its last activity (`OutQueue::touched`). The tick period is
//! an eighth of the heartbeat interval, at most one second, and a stream gets a heartbeat at the
//! first tick a whole interval after its last activity, so an idle stream sees one within the
//! interval (plus timer lateness), never up to two intervals apart. The tick number comes from
//! the monotonic clock, so a shard that was busy and ticks late does not stretch the interval.

use super::registry::Sessions;
use super::{Frame, Slot};
use crate::auth::blacklist::now_ms;
use crate::proto::{sse, ws, Transport};
use std::time::Duration;

/// The longest tick period: the scan of a shard's sessions runs at most this often.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Whole ticks in `d`, rounded up, at least one.
fn ticks(d: Duration, period: Duration) -> u32 {
    (d.as_nanos().div_ceil(period.as_nanos())).clamp(1, u32::MAX as u128) as u32
}

impl Sessions {
    /// How often the shard calls [`Sessions::tick`].
    pub fn tick_period(&self) -> Duration {
        let interval = Duration::from_millis(self.cfg.tuning.sessions.heartbeat_interval_ms);
        (interval / 8).clamp(Duration::from_millis(1), MAX_TICK)
    }

    /// The periodic tick; `elapsed` is the time since the shard started.
    pub fn tick(&mut self, elapsed: Duration) {
        let period = self.tick_period();
        let now = (elapsed.as_nanos() / period.as_nanos()).min(u32::MAX as u128) as u32;
        self.now = now;
        let interval = Duration::from_millis(self.cfg.tuning.sessions.heartbeat_interval_ms);
        let beat_after = ticks(interval, period);
        let lp_timeout = Duration::from_millis(self.cfg.tuning.longpoll.session_timeout_ms);
        let expire_after = ticks(lp_timeout, period);
        let mut idle: Vec<Slot> = Vec::new();
        let mut expired = Vec::new();
        for (slot, s) in self.slab.iter() {
            let quiet = now.wrapping_sub(s.out.touched);
            match s.transport {
                Transport::LongPoll if quiet > expire_after => {
                    expired.push((slot as Slot, s.token))
                }
                Transport::LongPoll => {}
                _ if quiet >= beat_after => idle.push(slot as Slot),
                _ => {}
            }
        }
        if !idle.is_empty() {
            let heartbeat = Frame::from(sse::HEARTBEAT);
            let ping = Frame::from(ws::PING);
            for slot in idle {
                let beat = match self.slab[slot as usize].transport {
                    Transport::Sse => heartbeat.clone(),
                    _ => ping.clone(),
                };
                // A heartbeat is not activity for the idle clean-up.
                let active = self.slab[slot as usize].active;
                self.push(slot, beat);
                if let Some(s) = self.slab.get_mut(slot as usize) {
                    s.active = active;
                }
            }
        }
        if let Some(idle) = self.cfg.sse_idle {
            if now.wrapping_sub(self.last_reap) >= ticks(idle.every, period) {
                self.last_reap = now;
                self.reap_idle(now, ticks(idle.max_idle, period));
            }
        }
        for (slot, token) in expired {
            self.close(slot, &token);
        }
        self.blacklist.expire(now_ms());
    }
}

impl Sessions {
    /// Ends SSE streams with no event for `max_idle` ticks: a `retry:` hint, then the end of
    /// the stream; EventSource reconnects (and resumes from its last id).
    fn reap_idle(&mut self, now: u32, max_idle: u32) {
        let idle: Vec<Slot> = self
            .slab
            .iter()
            .filter(|(_, s)| {
                s.transport == Transport::Sse
                    && s.out.close.is_none()
                    && now.wrapping_sub(s.active) >= max_idle
            })
            .map(|(k, _)| k as Slot)
            .collect();
        for slot in idle {
            self.push(slot, Frame::from(&b"retry: 1000\n\n"[..]));
            self.metrics.idle_closes.inc();
            self.end_stream(slot, super::CloseReason::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EnvMap};
    use crate::metrics::ShardMetrics;
    use crate::route::subscription::SubscriptionSet;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    #[test]
    fn flowx_cleanup_ends_streams_without_events_but_not_for_heartbeats() {
        let mut cfg = Config::load(&EnvMap::new(), None).unwrap();
        cfg.tuning.sessions.heartbeat_interval_ms = 2_000;
        cfg.sse_idle = Some(crate::config::SseIdle {
            every: Duration::from_secs(1),
            max_idle: Duration::from_secs(10),
        });
        let metrics = Arc::new(ShardMetrics::default());
        let mut s = Sessions::new(Arc::new(cfg), 1, 0, metrics.clone());
        let (slot, token) = s
            .open(Transport::Sse, SubscriptionSet::default(), None)
            .unwrap();
        let cx = Context::from_waker(std::task::Waker::noop());
        let mut all = Vec::new();
        let mut closed_at = None;
        for ms in (250..=15_000).step_by(250) {
            s.tick(Duration::from_millis(ms));
            let mut out = Vec::new();
            let p = s.poll_drain(slot, &token, &cx, &mut out);
            all.extend(out.concat());
            if matches!(
                p,
                Poll::Ready(crate::session::Drain::Close(
                    crate::session::CloseReason::Shutdown
                ))
            ) {
                closed_at = Some(ms);
                break;
            }
        }
        let text = String::from_utf8_lossy(&all);
        // Heartbeats went out every 2 s meanwhile, and did not count as activity. (The
        // writer sends the queued `retry:` hint before the last chunk; this test's drain
        // reports the close instead.)
        assert!(text.matches(": heartbeat").count() >= 3, "{text}");
        let at = closed_at.expect("ended");
        assert!((10_000..=12_000).contains(&at), "ended at {at} ms");
        assert_eq!(metrics.idle_closes.get(), 1);
    }

    #[test]
    fn an_idle_stream_beats_within_one_interval() {
        let mut cfg = Config::load(&EnvMap::new(), None).unwrap();
        cfg.tuning.sessions.heartbeat_interval_ms = 15_000;
        let mut s = Sessions::new(Arc::new(cfg), 1, 0, Arc::new(ShardMetrics::default()));
        assert_eq!(s.tick_period(), Duration::from_secs(1));
        // Opened (RIG's events queued) at 0.5 s; drained at once.
        s.tick(Duration::from_millis(500));
        let (slot, token) = s
            .open(Transport::Sse, SubscriptionSet::default(), None)
            .unwrap();
        let cx = Context::from_waker(std::task::Waker::noop());
        let drain = |s: &mut Sessions| {
            let mut out = Vec::new();
            let p = s.poll_drain(slot, &token, &cx, &mut out);
            (p, out.concat())
        };
        assert!(drain(&mut s).1.starts_with(b"id: "));
        let mut beat_at = None;
        for ms in (1_000..=20_000).step_by(1_000) {
            s.tick(Duration::from_millis(ms));
            let (p, out) = drain(&mut s);
            if p.is_ready() {
                assert_eq!(out, sse::HEARTBEAT);
                beat_at = Some(ms);
                break;
            }
        }
        // The last activity was at 0.5 s; before the fix the first beat came at 30 s.
        let at = beat_at.expect("a heartbeat within 20 s");
        let gap = at - 500;
        assert!(
            (14_000..=15_000).contains(&gap),
            "heartbeat {gap} ms after the last event"
        );
        // Not again before another whole interval.
        s.tick(Duration::from_millis(at + 14_000));
        assert!(matches!(drain(&mut s).0, Poll::Pending));
        s.tick(Duration::from_millis(at + 15_000));
        assert_eq!(drain(&mut s).1, sse::HEARTBEAT);
    }
}
