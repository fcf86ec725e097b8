//! WebSocket driver: server-to-client only, as RIG's. After the 101 head, the shard's writer
//! (`writer.rs`) sends queued events as text frames; this task keeps one read armed for the
//! client's frames and steps in when the writer hands the session back (see `sse.rs`). From
//! the client, pings are answered with pongs (queued ahead of events), pongs ignored, a close is
//! echoed; any data frame gets RIG's close (1000, "This WebSocket endpoint cannot be used for
//! two-way communication.") and a protocol error gets 1002. The read buffer never holds more
//! than one control frame (<= 139 bytes) since data frames are refused unread.

use super::stream_task::{self, Step};
use super::write::{write_parts, Parts};
use crate::proto::ws::{self, ClientFrame, FrameError};
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;

const TWO_WAY: &str = "This WebSocket endpoint cannot be used for two-way communication.";
/// Largest whole control frame: 2 header + 4 mask + 125 payload, with room for a 64-bit length.
const MAX_CONTROL_FRAME: usize = 2 + 8 + 4 + 125;
/// Bytes read from the client at a time.
const READ_PIECE: usize = 16;

enum Wake {
    Session(Step),
    In(Result<Option<ClientFrame>, FrameError>),
}

/// Reads until one whole client frame (or a data frame header) is buffered.
async fn next_frame(
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
) -> Result<Option<ClientFrame>, FrameError> {
    loop {
        if let Some((frame, used)) = ws::decode_client_frame(rbuf)? {
            rbuf.drain(..used);
            return Ok(Some(frame));
        }
        // Read into a local chunk, never into rbuf's spare length: this future is dropped
        // whenever the session wins the race, and bytes must only enter rbuf once really read.
        // The chunk is small because it lives in every idle connection's task (clients send
        // only rare control frames; a whole ping takes a few reads).
        let mut chunk = [0u8; READ_PIECE];
        let room = MAX_CONTROL_FRAME
            .saturating_sub(rbuf.len())
            .clamp(1, READ_PIECE);
        match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub async fn run(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    head: Vec<u8>,
    early: Vec<u8>,
    slot: u32,
    token: Token,
) {
    let attached = shard
        .sessions
        .borrow_mut()
        .attach(slot, &token, stream.as_raw_fd(), head);
    if attached {
        converse(&shard, &mut stream, early, slot, &token).await;
    }
    shard.sessions.borrow_mut().close(slot, &token);
    let _ = stream.close().await;
}

/// The session's life after the handshake: the client's frames and the writer's hand-backs,
/// until one side ends it.
async fn converse(shard: &Shard, stream: &mut TcpStream, early: Vec<u8>, slot: u32, token: &Token) {
    let mut rbuf = early;
    loop {
        let wake = future::or(
            async { Wake::Session(stream_task::next_step(shard, slot, token).await) },
            async { Wake::In(next_frame(stream, &mut rbuf).await) },
        )
        .await;
        let close = match wake {
            Wake::Session(Step::Flush(bytes)) => {
                if Box::pin(stream_task::flush(shard, stream, bytes, slot, token)).await {
                    continue;
                }
                break;
            }
            Wake::Session(Step::End) | Wake::In(Ok(None)) => break,
            Wake::In(Ok(Some(ClientFrame::Ping(payload)))) => {
                let mut pong = Vec::new();
                ws::encode_frame(&mut pong, ws::OpCode::Pong, &payload);
                shard.sessions.borrow_mut().send_first(slot, token, &pong);
                continue;
            }
            Wake::In(Ok(Some(ClientFrame::Pong))) => continue,
            // Echo the client's code, as RFC 6455 5.5.1 asks.
            Wake::In(Ok(Some(ClientFrame::Close { code, .. }))) => (code.unwrap_or(1000), ""),
            Wake::In(Ok(Some(ClientFrame::Data { .. }))) => (1000, TWO_WAY),
            Wake::In(Err(e)) => (e.close_code(), "Protocol error."),
        };
        // The client ends it: take the socket back from the writer, finish what a full socket
        // left unsent (never half a frame), then the close frame.
        let rest = shard.sessions.borrow_mut().detach(slot, token);
        let close_frame = ws::close_frame(close.0, close.1);
        let parts = Parts {
            lead: &rest,
            frames: &[],
            tail: &close_frame,
        };
        let _ = Box::pin(write_parts(stream, &parts)).await;
        break;
    }
}
