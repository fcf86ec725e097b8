//! WebSocket driver: server-to-client only, as RIG's. Queued events leave as text frames, all
//! queued frames in one write. From the client, pings are answered with pongs, pongs ignored, a
//! close is echoed; any data frame gets RIG's close (1000, "This WebSocket endpoint cannot be
//! used for two-way communication.") and a protocol error gets 1002. The read buffer never
//! holds more than one control frame (<= 139 bytes) since data frames are refused unread.

use super::{drained, write_or_close, write_parts, Parts};
use crate::proto::ws::{self, ClientFrame, FrameError};
use crate::runtime::shard::Shard;
use crate::session::token::Token;
use crate::session::{CloseReason, Drain, Frame};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::rc::Rc;

const TWO_WAY: &str = "This WebSocket endpoint cannot be used for two-way communication.";
/// Largest whole control frame: 2 header + 4 mask + 125 payload, with room for a 64-bit length.
const MAX_CONTROL_FRAME: usize = 2 + 8 + 4 + 125;
/// Bytes read from the client at a time.
const READ_PIECE: usize = 16;

enum Wake {
    Out(Drain),
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
        // whenever an event wins the race, and bytes must only enter rbuf once really read.
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
    // Bytes to send before the next frames: the 101 head, pongs.
    let mut lead = head;
    let mut rbuf = early;
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        frames.clear();
        let wake = if lead.is_empty() {
            future::or(
                async { Wake::Out(drained(&shard, slot, &token, &mut frames).await) },
                async { Wake::In(next_frame(&mut stream, &mut rbuf).await) },
            )
            .await
        } else {
            Wake::Out(Drain::Data)
        };
        let close = match wake {
            Wake::Out(Drain::Data) => None,
            Wake::Out(Drain::Close(CloseReason::Shutdown)) => Some((1001, "Server shutting down.")),
            // RIG's close for a blacklisted session, after what was queued.
            Wake::Out(Drain::Close(CloseReason::Killed)) => Some((1000, "Session killed.")),
            Wake::Out(Drain::Close(CloseReason::SlowConsumer)) | Wake::Out(Drain::Gone) => break,
            Wake::In(Ok(None)) => break,
            Wake::In(Ok(Some(ClientFrame::Ping(payload)))) => {
                ws::encode_frame(&mut lead, ws::OpCode::Pong, &payload);
                None
            }
            Wake::In(Ok(Some(ClientFrame::Pong))) => continue,
            Wake::In(Ok(Some(ClientFrame::Close { code, .. }))) => {
                // Echo the client's code, as RFC 6455 5.5.1 asks.
                lead.extend_from_slice(&ws::close_frame(code.unwrap_or(1000), ""));
                let _ = stream.write_all(&lead).await;
                break;
            }
            Wake::In(Ok(Some(ClientFrame::Data { .. }))) => Some((1000, TWO_WAY)),
            Wake::In(Err(e)) => Some((e.close_code(), "Protocol error.")),
        };
        let close_frame = close.map(|(code, reason)| ws::close_frame(code, reason));
        let parts = Parts {
            lead: &lead,
            frames: &frames,
            tail: close_frame.as_deref().unwrap_or_default(),
        };
        if close_frame.is_some() {
            let _ = Box::pin(write_parts(&mut stream, &parts)).await;
            break;
        }
        if !parts.is_empty()
            && !Box::pin(write_or_close(&shard, &mut stream, parts, slot, &token)).await
        {
            break;
        }
        lead = Vec::new();
        if frames.capacity() > 16 {
            frames = Vec::new();
        }
    }
    shard.sessions.borrow_mut().close(slot, &token);
    let _ = stream.close().await;
}
