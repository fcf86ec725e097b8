//! SSE driver. After the response head, the stream belongs to the shard's writer
//! (`writer.rs`), which sends the session's queued events in chunks; this task only holds the
//! socket, keeps one read armed to notice the client leaving (SSE clients send nothing), and
//! steps in when the writer hands the session back: a full socket (write what is left, waiting
//! for room), the stream's end (close it), or a slow consumer or failed write (drop it).
//! Nothing is kept while idle.

use super::stream_task::{self, Step};
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;

enum Wake {
    Session(Step),
    /// The client closed the connection or it failed.
    ClientGone,
}

/// Waits for the client to close; anything it sends on an event stream is read and dropped.
async fn client_gone(stream: &mut TcpStream) {
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
    let attached = shard
        .sessions
        .borrow_mut()
        .attach(slot, &token, stream.as_raw_fd(), head);
    if attached {
        loop {
            let wake = future::or(
                async { Wake::Session(stream_task::next_step(&shard, slot, &token).await) },
                async {
                    client_gone(&mut stream).await;
                    Wake::ClientGone
                },
            )
            .await;
            match wake {
                Wake::Session(Step::Flush(bytes)) => {
                    if !Box::pin(stream_task::flush(&shard, &mut stream, bytes, slot, &token)).await
                    {
                        break;
                    }
                }
                Wake::Session(Step::End) | Wake::ClientGone => break,
            }
        }
    }
    shard.sessions.borrow_mut().close(slot, &token);
    let _ = stream.close().await;
}
