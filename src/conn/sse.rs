//! SSE driver: after the response head, every wake-up drains the session's whole queue into
//! one chunk and one write (coalescing). While a write is blocked on a client that stopped
//! reading, new events wait in the bounded queue; when that overflows, the session is closed by
//! the slow-consumer policy and this driver drops the socket. Nothing is kept while idle.

use super::{drained, write_or_close};
use crate::proto::http1;
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use crate::session::{CloseReason, Drain};
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
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

pub async fn run(shard: Rc<Shard>, mut stream: TcpStream, head: Vec<u8>, slot: u32, token: Token) {
    let mut out = head;
    loop {
        let start = out.len();
        out.resize(start + http1::CHUNK_LINE_ROOM, 0);
        let wake = future::or(
            async { Wake::Out(drained(&shard, slot, &token, &mut out).await) },
            async {
                if start == 0 {
                    client_gone(&mut stream).await;
                    Wake::ClientGone
                } else {
                    future::pending().await
                }
            },
        )
        .await;
        let from = match wake {
            Wake::Out(Drain::Data) if out.len() > start + http1::CHUNK_LINE_ROOM => {
                http1::frame_chunk(&mut out, start)
            }
            Wake::Out(Drain::Data) => {
                out.truncate(start);
                continue;
            }
            Wake::Out(Drain::Close(CloseReason::Shutdown | CloseReason::Killed)) => {
                let from = if out.len() > start + http1::CHUNK_LINE_ROOM {
                    http1::frame_chunk(&mut out, start)
                } else {
                    out.truncate(start);
                    0
                };
                out.extend_from_slice(http1::LAST_CHUNK);
                let _ = stream.write_all(&out[from..]).await;
                break;
            }
            // Slow consumer: its socket is full anyway; drop it.
            Wake::Out(Drain::Close(CloseReason::SlowConsumer)) | Wake::Out(Drain::Gone) => break,
            Wake::ClientGone => break,
        };
        // The head (first time) and the drained events go out in one write.
        if !write_or_close(&shard, &mut stream, &out[from..], slot, &token).await {
            break;
        }
        out = Vec::new();
    }
    shard.sessions.borrow_mut().close(slot, &token);
    let _ = stream.close().await;
}
