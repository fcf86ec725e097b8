//! SSE driver: after the response head, every wake-up drains the session's queue (up to one
//! write's worth) into one chunk and one `sendmsg` straight from the queued frames
//! (coalescing). While a write is blocked on a client that stopped reading, new events wait in
//! the bounded queue; when that overflows, the session is closed by the slow-consumer policy
//! and this driver drops the socket. Nothing is kept while idle.

use super::{drained, write_or_close, write_parts, Parts};
use crate::proto::http1;
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use crate::session::{CloseReason, Drain, Frame};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::rc::Rc;

enum Wake {
    Out(Drain),
    /// The client closed the connection or it failed.
    ClientGone,
}

/// Waits for the client to close; anything it sends on an event stream is read and dropped.
pub(super) async fn client_gone(stream: &mut TcpStream) {
    // Small: it lives in every idle connection's task, and SSE clients send nothing.
    let mut sink = [0u8; 16];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

pub async fn run(shard: Rc<Shard>, mut stream: TcpStream, head: Vec<u8>, slot: u32, token: Token) {
    // The response head goes out with the first events; after that `lead` holds chunk lines.
    let mut lead = head;
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        frames.clear();
        let watch_client = lead.is_empty();
        let wake = future::or(
            async { Wake::Out(drained(&shard, slot, &token, &mut frames).await) },
            async {
                if watch_client {
                    client_gone(&mut stream).await;
                    Wake::ClientGone
                } else {
                    future::pending().await
                }
            },
        )
        .await;
        let closing = match wake {
            Wake::Out(Drain::Data) => false,
            // Killed: what was queued (`rig.session_killed`) goes out, then the last chunk.
            Wake::Out(Drain::Close(CloseReason::Shutdown | CloseReason::Killed)) => true,
            // Slow consumer: its socket is full anyway; drop it.
            Wake::Out(Drain::Close(CloseReason::SlowConsumer)) | Wake::Out(Drain::Gone) => break,
            Wake::ClientGone => break,
        };
        let len: usize = frames.iter().map(|f| f.len()).sum();
        if len > 0 {
            http1::chunk_line(&mut lead, len);
        }
        let tail: &[u8] = match (len > 0, closing) {
            (true, false) => b"\r\n",
            (true, true) => b"\r\n0\r\n\r\n",
            (false, true) => http1::LAST_CHUNK,
            (false, false) => b"",
        };
        let parts = Parts {
            lead: &lead,
            frames: &frames,
            tail,
        };
        if closing {
            let _ = Box::pin(write_parts(&mut stream, &parts)).await;
            break;
        }
        if !parts.is_empty()
            && !Box::pin(write_or_close(&shard, &mut stream, parts, slot, &token)).await
        {
            break;
        }
        lead.clear();
        // Neither the head's allocation nor a burst's frame list is kept by an idle stream.
        lead.shrink_to(16);
        if frames.capacity() > 16 {
            frames = Vec::new();
        }
    }
    shard.sessions.borrow_mut().close(slot, &token);
    let _ = stream.close().await;
}
