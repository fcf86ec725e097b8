//! What the SSE and WebSocket connection tasks share: waiting for the writer to hand the
//! session back, and writing what a full socket left unsent.

use super::write::{write_parts, Parts};
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use crate::session::Signal;
use futures_lite::future;
use glommio::net::TcpStream;

/// What a stream's connection task does next on the writer's behalf.
pub(super) enum Step {
    /// The socket was full: write these bytes, waiting for room, then hand back.
    Flush(Vec<u8>),
    /// The stream is over (its last bytes sent, a slow consumer, a failed write, gone).
    End,
}

/// Waits until the writer hands the session to its connection task.
pub(super) async fn next_step(shard: &Shard, slot: u32, token: &Token) -> Step {
    let signal =
        future::poll_fn(|cx| shard.sessions.borrow_mut().poll_signal(slot, token, cx)).await;
    match signal {
        Signal::Stalled => Step::Flush(shard.sessions.borrow_mut().stalled_bytes(slot, token)),
        Signal::Finished | Signal::End => Step::End,
    }
}

/// Writes a stalled session's bytes, waiting for the socket to take them, unless the session
/// must end first (a slow consumer overflowing meanwhile); then the writer takes over again.
/// False if the stream should end.
pub(super) async fn flush(
    shard: &Shard,
    stream: &mut TcpStream,
    bytes: Vec<u8>,
    slot: u32,
    token: &Token,
) -> bool {
    let parts = Parts {
        lead: &bytes,
        frames: &[],
        tail: &[],
    };
    let wrote = future::or(async { write_parts(stream, &parts).await.is_ok() }, async {
        future::poll_fn(|cx| shard.sessions.borrow_mut().poll_ending(slot, token, cx)).await;
        false
    })
    .await;
    if wrote {
        shard.sessions.borrow_mut().unstall(slot, token);
    }
    wrote
}
