//! Long-poll driver. A long-poll session has no socket of its own: each poll is an ordinary
//! request that the shard owning the session serves here, reading the session's ring after the
//! client's `last_event_id` and, when nothing is new, holding the request up to
//! `longpoll.hold_ms` for an event. The wire format (cookies, body) is `proto::longpoll`; the
//! request itself arrives through `api::connect`, forwarded to the owner shard if needed.

use crate::proto::token::Token;
use crate::runtime::shard::Shard;
use crate::session::LookupError;
use futures_lite::future;
use std::task::Poll;
use std::time::Duration;

/// Reads the events after `after` (None: from the start); with `hold`, waits up to the hold
/// time for one when there are none. Returns the events, the newest sequence number and the
/// resume id (see `Sessions::poll_longpoll`).
pub async fn read(
    shard: &Shard,
    token: Token,
    after: Option<u64>,
    hold: bool,
) -> Result<crate::session::LongPollAnswer, LookupError> {
    let slot = shard.sessions.borrow().lookup(&token)?;
    let read = future::poll_fn(|cx| {
        shard
            .sessions
            .borrow_mut()
            .poll_longpoll(slot, after, hold.then_some(cx))
    });
    let hold_for = Duration::from_millis(shard.cfg().tuning.longpoll.hold_ms);
    let got = future::or(read, async {
        crate::runtime::rt::sleep(hold_for).await;
        // Hold over: answer with nothing new (without a context it never waits).
        match shard.sessions.borrow_mut().poll_longpoll(slot, after, None) {
            Poll::Ready(r) => r,
            Poll::Pending => None,
        }
    })
    .await;
    got.ok_or(LookupError::Gone)
}
