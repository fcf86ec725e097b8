//! Streams after their handshake: an SSE stream once its response head is chosen, a WebSocket
//! once upgraded. The connection's task hands the socket to the shard and ends, so an idle
//! stream costs its session and nothing else: no task, no buffer, no armed read. The shard's
//! writer (`writer.rs`) sends its output; this module's watcher, one task per shard, learns
//! from the shard's epoll set what the clients do:
//!
//! - a client that leaves (or whose connection fails): its session is removed (the socket
//!   closes with it);
//! - an SSE client sending anything: read and dropped (SSE clients send nothing);
//! - a WebSocket client's frames, read here: pings get pongs (queued ahead of events), pongs
//!   are ignored, a close is echoed, any data frame gets RIG's close (1000, "This WebSocket
//!   endpoint cannot be used for two-way communication.") and a protocol error 1002;
//! - room on a socket that was full: the writer takes the session back.
//!
//! The watcher looks every `IDLE_LOOK` (leavers are noticed within that; their sessions hold
//! no more than an idle one meanwhile, and a write to them fails first anyway), and every
//! `STALLED_LOOK` while a socket is full, so a slow client resumes promptly.

use super::socket::{self, Epoll, Parts, Recv, SendNow};
use crate::proto::token::Token;
use crate::proto::ws::{self, ClientFrame};
use crate::proto::Transport;
use crate::runtime::shard::Shard;
use crate::session::{stream_key, Slot};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

const TWO_WAY: &str = "This WebSocket endpoint cannot be used for two-way communication.";
/// Largest whole control frame: 2 header + 4 mask + 125 payload, with room for a 64-bit length.
const MAX_CONTROL_FRAME: usize = 2 + 8 + 4 + 125;
/// How often the watcher looks while no socket is full.
const IDLE_LOOK: Duration = Duration::from_millis(100);
/// How often it looks while one is.
const STALLED_LOOK: Duration = Duration::from_millis(2);

/// The shard's epoll set of stream sockets.
pub struct Streams {
    epoll: Epoll,
}

impl Streams {
    pub fn new() -> io::Result<Streams> {
        Ok(Streams {
            epoll: Epoll::new()?,
        })
    }

    /// The writer found a socket full: report when it has room.
    pub(super) fn wait_for_room(&self, fd: std::os::fd::RawFd, token: &Token) {
        let _ = self.epoll.want_room(fd, stream_key(token), true);
    }
}

/// Hands an upgraded connection to the shard: its socket now belongs to the session, written
/// by the writer and watched by epoll; `early` is what the client sent after the handshake.
pub(super) fn adopt(
    shard: &Shard,
    stream: super::tls::ClientStream,
    head: Vec<u8>,
    mut early: Vec<u8>,
    slot: Slot,
    token: Token,
    address: Option<crate::session::address::AddressSlot>,
) {
    let (stream, tls) = stream.into_parts();
    let tls = tls.map(|(t, plain)| {
        early.extend_from_slice(&plain);
        t
    });
    // The socket leaves the runtime's epoll for the shard's own.
    let Ok(sock) = stream.into_owned_fd() else {
        shard.sessions.borrow_mut().close(slot, &token);
        return;
    };
    let fd = sock.as_raw_fd();
    // A client that stops reading then holds little kernel memory, and the slow-consumer
    // policy sees it soon (its queue here fills instead of the kernel's buffer).
    socket::cap_send_buffer(fd, shard.globals.cfg.tuning.sessions.socket_send_buffer);
    if shard.streams.epoll.add(fd, stream_key(&token)).is_err()
        || !shard
            .sessions
            .borrow_mut()
            .attach(slot, &token, sock, head, tls)
    {
        shard.sessions.borrow_mut().close(slot, &token);
        return;
    }
    if let Some(a) = address {
        shard.sessions.borrow_mut().hold_address(slot, &token, a);
    }
    if !early.is_empty() {
        if let Some(input) = shard.sessions.borrow_mut().input(slot, &token) {
            input.extend_from_slice(&early);
        }
        ws_frames(shard, slot, &token, fd);
    }
}

/// The shard's watcher: what clients did since the last look.
pub async fn watch(shard: Rc<Shard>) {
    loop {
        let wait = if shard.sessions.borrow().stalled() > 0 {
            STALLED_LOOK
        } else {
            IDLE_LOOK
        };
        crate::runtime::rt::sleep(wait).await;
        shard.streams.epoll.ready(|r| {
            let Some((slot, token, fd, transport)) = shard.sessions.borrow().by_key(r.key) else {
                return;
            };
            if r.writable {
                let _ = shard.streams.epoll.want_room(fd, r.key, false);
                shard.sessions.borrow_mut().unstall(slot, &token);
            }
            if r.readable || r.gone {
                match transport {
                    Transport::Ws => {
                        if read_ws(&shard, slot, &token, fd) {
                            ws_frames(&shard, slot, &token, fd);
                        }
                    }
                    _ => drain_sse(&shard, slot, &token, fd),
                }
            }
        });
    }
}

/// Reads (and drops) what an SSE client sent; removes its session when it left.
fn drain_sse(shard: &Shard, slot: Slot, token: &Token, fd: std::os::fd::RawFd) {
    let mut sink = [0u8; 512];
    loop {
        match socket::recv_now(fd, &mut sink) {
            Recv::Data(n) => {
                // Over TLS the records are still opened: a close_notify ends the stream.
                if !open_tls(shard, slot, token, &sink[..n], None) {
                    return;
                }
            }
            Recv::Empty => return,
            Recv::Closed => {
                shard.sessions.borrow_mut().close(slot, token);
                return;
            }
        }
    }
}

/// Reads a WebSocket client's bytes into its session's input, up to one control frame's worth
/// at a time. False when the client left (the session is then removed).
fn read_ws(shard: &Shard, slot: Slot, token: &Token, fd: std::os::fd::RawFd) -> bool {
    let mut chunk = [0u8; MAX_CONTROL_FRAME];
    loop {
        let mut sessions = shard.sessions.borrow_mut();
        let Some(input) = sessions.input(slot, token) else {
            return false;
        };
        let room = MAX_CONTROL_FRAME.saturating_sub(input.len()).max(1);
        let full = input.len() >= MAX_CONTROL_FRAME;
        drop(sessions);
        if full {
            return true;
        }
        match socket::recv_now(fd, &mut chunk[..room]) {
            Recv::Data(n) => {
                if !open_tls(shard, slot, token, &chunk[..n], Some(4096)) {
                    return false;
                }
            }
            Recv::Empty => return true,
            Recv::Closed => {
                shard.sessions.borrow_mut().close(slot, token);
                return false;
            }
        }
    }
}

/// What a stream client sent: plain bytes go to the session's input (`keep`: a WebSocket's,
/// up to that many bytes; None: dropped), TLS records are opened first. False when the
/// client closed (its session is removed).
fn open_tls(shard: &Shard, slot: Slot, token: &Token, wire: &[u8], keep: Option<usize>) -> bool {
    let mut sessions = shard.sessions.borrow_mut();
    let mut plain = Vec::new();
    let reply = match sessions.tls(slot, token) {
        None => {
            plain.extend_from_slice(wire);
            Vec::new()
        }
        Some(tls) => match crate::session::tls::open(tls, wire, &mut plain, keep.unwrap_or(4096)) {
            crate::session::tls::Opened::Data { reply } => reply,
            crate::session::tls::Opened::Closed => {
                sessions.close(slot, token);
                return false;
            }
        },
    };
    if !reply.is_empty() {
        sessions.send_wire(slot, token, &reply);
    }
    if keep.is_some() {
        if let Some(input) = sessions.input(slot, token) {
            input.extend_from_slice(&plain);
        }
    }
    true
}

/// Acts on the whole frames a WebSocket client's input holds.
fn ws_frames(shard: &Shard, slot: Slot, token: &Token, fd: std::os::fd::RawFd) {
    loop {
        let decoded = {
            let mut sessions = shard.sessions.borrow_mut();
            let Some(input) = sessions.input(slot, token) else {
                return;
            };
            match ws::decode_client_frame(input) {
                Ok(Some((frame, used))) => {
                    input.drain(..used);
                    if input.is_empty() {
                        *input = Vec::new();
                    }
                    Ok(frame)
                }
                Ok(None) => return,
                Err(e) => Err(e),
            }
        };
        let close = match decoded {
            Ok(ClientFrame::Ping(payload)) => {
                let mut pong = Vec::new();
                ws::encode_frame(&mut pong, ws::OpCode::Pong, &payload);
                shard.sessions.borrow_mut().send_first(slot, token, &pong);
                continue;
            }
            Ok(ClientFrame::Pong) => continue,
            // Echo the client's code, as RFC 6455 5.5.1 asks.
            Ok(ClientFrame::Close { code, .. }) => (code.unwrap_or(1000), ""),
            Ok(ClientFrame::Data { .. }) => (1000, TWO_WAY),
            Err(e) => (e.close_code(), "Protocol error."),
        };
        end_ws(shard, slot, token, fd, close);
        return;
    }
}

/// The client ends a WebSocket: what a full socket left unsent goes first (a frame is never
/// cut), then the close frame, as far as the socket takes them now; then the socket closes.
fn end_ws(shard: &Shard, slot: Slot, token: &Token, fd: std::os::fd::RawFd, close: (u16, &str)) {
    let mut sessions = shard.sessions.borrow_mut();
    let close_frame = ws::close_frame(close.0, close.1);
    let Some((wire, sock)) = sessions.take_socket(slot, token, &close_frame) else {
        return;
    };
    let parts = Parts {
        lead: &wire,
        frames: &[],
        tail: &[],
    };
    // The client is leaving: a socket too full for the close frame just closes.
    let _: SendNow = socket::send_now(fd, &parts);
    sessions.close(slot, token);
    drop(sock);
}
