//! Long-poll sessions: no socket of their own, so their queue is read as a ring of the last
//! `longpoll.buffer_events` events, by sequence number. A poll asks for the events after the
//! last one it saw; when there are none it parks (the caller holds it up to `longpoll.hold_ms`).

use super::registry::Sessions;
use super::Slot;
use bytes::Bytes;
use std::task::{Context, Poll};

/// A poll's answer: the events, the sequence number of the newest, the resume id.
pub type Answer = (Vec<Bytes>, u64, Option<String>);

impl Sessions {
    /// Events with sequence numbers after `after` (None = from the start), or, when there are
    /// none, Pending with the waker stored (without a context: Ready with none). Returns the
    /// events, the sequence number of the newest event (the next `last_event_id`) and, where
    /// events can be resumed, the resume id of everything answered so far (everything queued
    /// is answered, so the shard's frontier is exact); None when the session is gone.
    pub fn poll_longpoll(
        &mut self,
        slot: Slot,
        after: Option<u64>,
        cx: Option<&Context<'_>>,
    ) -> Poll<Option<Answer>> {
        let now = self.now;
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return Poll::Ready(None);
        };
        let empty = crate::proto::resume::Frontier::new();
        let resume = self.resumable.then(|| {
            self.fr
                .id_with_floor(None, s.floor.as_deref().unwrap_or(&empty))
        });
        let q = &mut s.out;
        q.touched = now;
        let first_seq = q.next_seq - q.items.len() as u64;
        // Ids are "seq of the last event seen"; events after it start at after + 1. An id older
        // than the ring returns what is left (RIG returns nothing; both lost the dropped ones).
        let start = match after {
            None => first_seq,
            Some(a) => (a + 1).max(first_seq),
        };
        let last = q.next_seq.saturating_sub(1);
        if start < q.next_seq {
            let skip = (start - first_seq) as usize;
            // Replies may cross shards: copy out of the shard-local frames.
            let events: Vec<Bytes> = q
                .items
                .iter()
                .skip(skip)
                .map(|i| Bytes::copy_from_slice(&i.frame))
                .collect();
            return Poll::Ready(Some((events, last, resume)));
        }
        match cx {
            Some(cx) => {
                q.park(cx);
                Poll::Pending
            }
            None => Poll::Ready(Some((Vec::new(), last, resume))),
        }
    }
}
