//! One session's outbound queue: bounded in events and bytes, with the slow-consumer policy
//! applied when a push would overflow it (`close`: the session ends; `drop_oldest`: the oldest
//! frames go and the SSE client is told how many). The shard's writer (`conn/writer.rs`)
//! takes one write's worth at a time; a long-poll session reads it as a ring instead
//! (`longpoll.rs`).
//!
//! Write states of a stream session:
//! ```text
//! idle ──push──> dirty (in the shard's write list) ──writer: all sent──> idle
//!                  │ writer: socket full ──> stalled (the rest waits in `lead` until the
//!                  │                          shard's watcher reports room) ──> dirty
//!                  │ writer: send failed, or a slow consumer ──> removed
//!                  └ closing (killed, shutdown): last bytes sent ──> removed
//! ```

#[cfg(test)]
use super::Drain;
use super::{CloseReason, Frame};
use crate::config::{SlowConsumer, Tuning};
use crate::metrics::{DropReason, ShardMetrics};
use crate::proto::{sse, Transport};
use std::collections::VecDeque;
#[cfg(test)]
use std::task::Poll;
use std::task::{Context, Waker};

/// Bytes drained into one write at most (more stay queued for the next write).
const MAX_WRITE: usize = 64 * 1024;
/// Frames drained into one write at most: each is one `iovec` of a `sendmsg`, and Linux takes
/// at most 1,024.
const MAX_FRAMES: usize = 512;

/// A queued frame and the events it carries: several for a batch frame, one for a single
/// event, a RIG event or a heartbeat.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) frame: Frame,
    pub(super) events: u32,
}

/// The queued items: the oldest inline, the rest on the heap. At one event at a time a stream
/// holds one item between `deliver` and the writer; inline it shares the session's cache lines,
/// which a pass in slot order finds prefetched. In a heap ring it cost a cache miss per
/// delivery (the ring was written in `deliver`, evicted by the other sessions' before the
/// writer read it) and an allocation and a free. Invariant: `rest` is empty while `first` is.
#[derive(Debug, Default)]
pub(super) struct Items {
    first: Option<Item>,
    rest: VecDeque<Item>,
}

impl Items {
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn push_back(&mut self, i: Item) {
        if self.first.is_none() {
            self.first = Some(i);
        } else {
            self.rest.push_back(i);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Item> {
        let f = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(f)
    }

    /// Inserts at `at` (at most `len()`).
    fn insert(&mut self, at: usize, i: Item) {
        if at == 0 {
            if let Some(old) = self.first.replace(i) {
                self.rest.push_front(old);
            }
        } else {
            self.rest.insert(at - 1, i);
        }
    }

    fn get_mut(&mut self, at: usize) -> Option<&mut Item> {
        match at {
            0 => self.first.as_mut(),
            _ => self.rest.get_mut(at - 1),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Item> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Empties the queue and gives its heap ring back: an idle connection keeps none (idle
    /// memory per connection is what bounds a host).
    fn release(&mut self) {
        *self = Items::default();
    }
}

#[derive(Debug, Default)]
pub(super) struct OutQueue {
    pub(super) items: Items,
    pub(super) bytes: usize,
    /// Events queued, which `queue_events` bounds (a batch frame holds several).
    pub(super) events: u32,
    /// Sequence number the next pushed item gets (long-poll ids).
    pub(super) next_seq: u64,
    /// A held long-poll request, parked until an event arrives.
    waker: Option<Waker>,
    pub(super) close: Option<CloseReason>,
    /// Events dropped by drop-oldest since the last drain, announced to SSE clients.
    gap: u64,
    /// The shard tick of the last activity: for streams the last push (heartbeats are due when
    /// nothing was queued for an interval), for long-poll the last poll (expiry).
    pub(super) touched: u32,
    /// In the shard's list of sessions to write.
    pub(super) dirty: bool,
    /// The socket was full: what is left waits in `lead` until the shard's watcher reports
    /// room; the writer leaves the session alone meanwhile.
    pub(super) stalled: bool,
    /// Bytes that go out before any queued frame: the response head, WebSocket pongs, or what
    /// a write left unsent when the socket filled up. Empty (no allocation) most of the time.
    pub(super) lead: Vec<u8>,
}

impl OutQueue {
    pub(super) fn new(now: u32) -> OutQueue {
        OutQueue {
            touched: now,
            ..OutQueue::default()
        }
    }

    pub(super) fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub(super) fn park(&mut self, cx: &Context<'_>) {
        self.waker = Some(cx.waker().clone());
    }

    /// Asks the session to end; its driver sees it on the next poll.
    pub(super) fn close(&mut self, reason: CloseReason) {
        self.close = Some(reason);
        self.wake();
    }

    /// Puts frames (carrying `events` events in all) after the first `after` queued items:
    /// a resumed stream's replay, in front of what arrived live meanwhile. The queue bound is
    /// not applied (the replay is bounded by `sessions.resume_max_events`, at most half of it).
    pub(super) fn insert_at(&mut self, after: usize, frames: Vec<Frame>, events: u32) {
        let at = after.min(self.items.len());
        let n = frames.len() as u32;
        for (i, frame) in frames.into_iter().enumerate() {
            self.bytes += frame.len();
            self.items.insert(at + i, Item { frame, events: 1 });
        }
        // A lead frame (the gap notice) counts as no event.
        self.events += events;
        if n > events {
            if let Some(item) = self.items.get_mut(at) {
                item.events = 0;
            }
        }
    }

    fn pop(&mut self) -> Option<Item> {
        let old = self.items.pop_front()?;
        self.bytes -= old.frame.len();
        self.events -= old.events;
        Some(old)
    }

    /// Appends a frame carrying `events` events under the slow-consumer policy; false if it
    /// was not queued. `now` is the shard's tick.
    pub(super) fn push(
        &mut self,
        frame: Frame,
        events: u32,
        t: Transport,
        limits: &Tuning,
        metrics: &ShardMetrics,
        now: u32,
    ) -> bool {
        if self.close.is_some() {
            return false;
        }
        let over = |q: &OutQueue| {
            q.events as usize + events as usize > limits.sessions.queue_events
                || q.bytes + frame.len() > limits.sessions.queue_bytes
        };
        if t == Transport::LongPoll {
            // The long-poll buffer is a ring: the oldest event falls out.
            if self.items.len() >= limits.longpoll.buffer_events && self.pop().is_some() {
                metrics.dropped(t, DropReason::SlowConsumer, 1);
            }
        } else {
            if over(self) {
                match limits.sessions.slow_consumer {
                    SlowConsumer::Close => {
                        let lost = (self.events + events) as u64;
                        self.items.release();
                        self.bytes = 0;
                        self.events = 0;
                        metrics.slow_consumer_closes[t as usize].inc();
                        metrics.dropped(t, DropReason::SlowConsumer, lost);
                        self.close(CloseReason::SlowConsumer);
                        return false;
                    }
                    SlowConsumer::DropOldest => {
                        while !self.items.is_empty() && over(self) {
                            let old = self.pop().expect("not empty");
                            self.gap += old.events as u64;
                            metrics.dropped(t, DropReason::SlowConsumer, old.events as u64);
                        }
                    }
                }
            }
            self.touched = now;
        }
        self.bytes += frame.len();
        self.events += events;
        self.items.push_back(Item { frame, events });
        self.next_seq += 1;
        if t == Transport::LongPoll {
            // A held poll answers now; streams are written by the shard's writer instead.
            self.wake();
        }
        true
    }

    /// Moves one write's worth into `out` (at most about MAX_WRITE bytes in at most
    /// MAX_FRAMES frames; everything when the session was killed), the SSE gap note first.
    pub(super) fn take(&mut self, t: Transport, out: &mut Vec<Frame>) {
        if self.gap > 0 && t == Transport::Sse {
            let mut note = Vec::new();
            sse::comment(
                &mut note,
                &format!("{} events dropped (slow consumer)", self.gap),
            );
            out.push(Frame::from(note));
        }
        self.gap = 0;
        let all = self.close == Some(CloseReason::Killed);
        let mut bytes = 0;
        while all || (bytes < MAX_WRITE && out.len() < MAX_FRAMES) {
            let Some(i) = self.pop() else { break };
            bytes += i.frame.len();
            out.push(i.frame);
        }
        if self.items.is_empty() {
            self.items.release();
        }
    }

    /// Whether the writer has something to send: queued frames, a gap note, lead bytes, or
    /// the closing bytes of a killed or shut-down stream.
    pub(super) fn has_output(&self) -> bool {
        !self.items.is_empty()
            || self.gap > 0
            || !self.lead.is_empty()
            || matches!(
                self.close,
                Some(CloseReason::Killed | CloseReason::Shutdown)
            )
    }

    /// Moves what is queued into `out` (one write's worth), or registers the waker and
    /// returns Pending; Close once the session must end. The writer uses [`OutQueue::take`];
    /// this is the same seen from a task that waits for output (the unit tests).
    #[cfg(test)]
    pub(super) fn drain(
        &mut self,
        t: Transport,
        cx: &Context<'_>,
        out: &mut Vec<Frame>,
    ) -> Poll<Drain> {
        if let Some(r) = self.close {
            if r == CloseReason::Killed {
                self.take(t, out);
            }
            return Poll::Ready(Drain::Close(r));
        }
        if self.items.is_empty() && self.gap == 0 {
            self.park(cx);
            return Poll::Pending;
        }
        self.take(t, out);
        Poll::Ready(Drain::Data)
    }
}
