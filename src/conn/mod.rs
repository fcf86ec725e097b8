//! Socket drivers: each owns one accepted socket and its buffers, feeds bytes to `proto/`,
//! hands whole requests to `api/` and carries out what comes back. HTTP/1.1 with keep-alive
//! and pipelining; a request that turns into SSE or WebSocket hands its socket to the shard
//! (`stream.rs`: the writer sends, the watcher reads); long-poll requests are served by
//! `longpoll.rs` on the shard that owns the session.
//!
//! Connection lifecycle:
//! ```text
//! idle ──first byte──> head (bounded by header_timeout_ms, else 408) ──> body ──> handler
//!   ^                                                                      │
//!   └──────────── response written, keep-alive ────────────────────────────┤
//!                                                  SSE / WebSocket: stream until either side ends
//! ```
//! Bad input is answered (400/413/414/431/501/505) and the connection closed; nothing a peer
//! sends can make a buffer grow past the tuning limits.

pub mod longpoll;
mod proxy;
mod socket;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod writer;

use crate::api::{self, Outcome, Resp};
use crate::metrics::Listener;
use crate::proto::http1::{self, BodyKind, BodyReader, HttpError, Limits};
use crate::runtime::rt::{timeout, TcpStream};
use crate::runtime::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tls::ClientStream;

const READ_CHUNK: usize = 4096;

enum ReadErr {
    Eof,
    Timeout,
    Io,
}

/// Reads more bytes into `buf` (at most up to `cap` total), bounded in time; a deadline that
/// has passed is a timeout even if bytes are waiting.
async fn read_more(
    stream: &mut ClientStream,
    buf: &mut Vec<u8>,
    cap: usize,
    within: Duration,
) -> Result<(), ReadErr> {
    if within.is_zero() {
        return Err(ReadErr::Timeout);
    }
    let want = READ_CHUNK.min(cap.saturating_sub(buf.len())).max(1);
    match timeout(within, stream.read_append(buf, want)).await {
        None => Err(ReadErr::Timeout),
        Some(Ok(0)) => Err(ReadErr::Eof),
        Some(Ok(_)) => Ok(()),
        Some(Err(_)) => Err(ReadErr::Io),
    }
}

/// Head limits. On the inbound port a body may be as large as an HTTP target takes (it is
/// streamed there); the gateway's own endpoints check `http.max_body_bytes` after routing.
fn limits(shard: &Shard, which: Listener) -> Limits {
    let h = &shard.cfg().tuning.http;
    let proxied = shard.cfg().tuning.proxy.max_request_body_bytes;
    Limits {
        max_head_bytes: h.max_head_bytes,
        max_headers: h.max_headers,
        max_uri_bytes: h.max_uri_bytes,
        max_body_bytes: match which {
            Listener::Inbound => h
                .max_body_bytes
                .max(usize::try_from(proxied).unwrap_or(usize::MAX)),
            Listener::Api => h.max_body_bytes,
        },
    }
}

/// Why a request body could not be read.
enum BodyErr {
    /// The client's fault: answer this and close.
    Respond(u16, String),
    /// The connection ended.
    Gone,
}

/// Reads a whole request body of at most `max` bytes, within `http.body_timeout_ms` of now,
/// sending `100 Continue` first when the client asked for it.
async fn read_body(
    shard: &Shard,
    stream: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &http1::RequestHead,
    max: usize,
) -> Result<Vec<u8>, BodyErr> {
    let mut body = Vec::new();
    if head.body == BodyKind::None {
        return Ok(body);
    }
    if let BodyKind::Length(n) = head.body {
        if n > max as u64 {
            let e = HttpError::BodyTooLarge { limit: max };
            return Err(BodyErr::Respond(e.status(), e.to_string()));
        }
    }
    let timeout_ms = shard.cfg().tuning.http.body_timeout_ms;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    if head.expect_continue && stream.write_all(http1::CONTINUE_100).await.is_err() {
        return Err(BodyErr::Gone);
    }
    let mut reader = BodyReader::new(head.body, max);
    loop {
        match reader.feed(buf, &mut body) {
            Ok((used, done)) => {
                buf.drain(..used);
                if done {
                    return Ok(body);
                }
            }
            Err(e) => return Err(BodyErr::Respond(e.status(), e.to_string())),
        }
        let within = deadline.saturating_duration_since(Instant::now());
        match read_more(stream, buf, READ_CHUNK * 4, within).await {
            Ok(()) => {}
            Err(ReadErr::Timeout) => {
                let e = HttpError::BadRequest(format!(
                    "request body not received within {timeout_ms} ms"
                ));
                return Err(BodyErr::Respond(408, e.to_string()));
            }
            Err(_) => return Err(BodyErr::Gone),
        }
    }
}

async fn send_error(
    shard: &Shard,
    stream: &mut ClientStream,
    which: Listener,
    status: u16,
    msg: &str,
) {
    shard.metrics.response(which, status);
    let mut headers = vec![("content-type", api::TEXT.to_string())];
    // The request (and its Origin) could not be read: the policy for "no Origin" applies. The
    // internal port is not for browsers and sends no CORS headers at all.
    if which == Listener::Inbound {
        headers.extend(api::cors_headers(shard, None));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bytes = http1::response(status, &headers, msg.as_bytes(), false);
    let _ = stream.write_all(&bytes).await;
    close_lingering(stream).await;
}

/// Closes after a response the client may still be sending to (a refused body, an error
/// mid-request): our side is shut first, then what the client sends is read and dropped
/// until it closes, for at most 1 s and 64 KiB. Closing with unread input would send a
/// reset, and a reset can reach the client before it reads the answer that explains it.
async fn close_lingering(stream: &mut ClientStream) {
    let _ = stream.close().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    // On the heap: this runs rarely, and a 4 KiB array would size every connection task for it.
    let mut sink = vec![0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 {
        let within = deadline.saturating_duration_since(Instant::now());
        if within.is_zero() {
            return;
        }
        let read = timeout(within, stream.read(&mut sink)).await;
        match read {
            Some(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// One request counted in `Shard::in_flight` until its answer is written (a drain on SIGTERM
/// waits for it, bounded by `shutdown.drain_s`).
struct InFlight<'a>(&'a Shard);

impl<'a> InFlight<'a> {
    fn new(shard: &'a Shard) -> InFlight<'a> {
        shard.in_flight.set(shard.in_flight.get() + 1);
        InFlight(shard)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// One connection counted against `http.max_pending_heads` until its first head is whole.
struct PendingHead<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> PendingHead<'a> {
    /// None when the node already holds the maximum.
    fn enter(count: &'a std::sync::atomic::AtomicUsize, max: usize) -> Option<PendingHead<'a>> {
        use std::sync::atomic::Ordering;
        if count.fetch_add(1, Ordering::Relaxed) >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(PendingHead(count))
    }
}

impl Drop for PendingHead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Refuses a connection before its request is read: `503` with `msg` on a plain port; on an
/// HTTPS port just closed (no handshake for a connection that is refused anyway).
async fn refuse(shard: &Shard, tcp: TcpStream, which: Listener, secure: bool, msg: &str) {
    if secure {
        return;
    }
    let mut stream = ClientStream::Plain(tcp);
    send_error(shard, &mut stream, which, 503, msg).await
}

/// Serves one accepted connection; `secure`: it came to an HTTPS port (the TLS handshake is
/// part of its head: bounded by `http.header_timeout_ms` and counted as a pending head).
pub async fn serve(shard: Rc<Shard>, tcp: TcpStream, which: Listener, secure: bool) {
    // Events must leave as soon as they are written; coalescing happens in the session queue.
    let _ = tcp.set_nodelay(true);
    let globals = shard.globals.clone();
    let max_pending = shard.cfg().tuning.http.max_pending_heads;
    let mut pending = match PendingHead::enter(&globals.pending_heads, max_pending) {
        Some(p) => Some(p),
        None => {
            shard.metrics.pending_refused.inc();
            let msg = format!("Too many connections still sending their request ({max_pending}, http.max_pending_heads); retry.");
            return refuse(&shard, tcp, which, secure, &msg).await;
        }
    };
    // One address's share of the node (`http.max_connections_per_address`), held for the
    // connection's whole life (its session keeps it once it is a stream).
    let address = match &globals.address_caps {
        None => None,
        Some(caps) => {
            let ip = tcp
                .peer_addr()
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
            match caps.enter(ip) {
                Some(slot) => Some(slot),
                None => {
                    shard.metrics.address_refused.inc();
                    let msg = format!("Too many connections from {ip} (http.max_connections_per_address); close some and retry.");
                    return refuse(&shard, tcp, which, secure, &msg).await;
                }
            }
        }
    };
    let mut stream = match (secure, &globals.tls) {
        (false, _) => ClientStream::Plain(tcp),
        (true, None) => return,
        (true, Some(tls)) => {
            let within = Duration::from_millis(shard.cfg().tuning.http.header_timeout_ms);
            // Boxed: rustls's handshake state would size every connection task, plain ones too.
            let handshake = Box::pin(tls.acceptor.accept(tcp));
            let accepted = timeout(within, handshake).await;
            match accepted {
                Some(Ok(s)) => {
                    shard.metrics.tls_handshakes.inc();
                    ClientStream::Tls(Box::new(s))
                }
                Some(Err(_)) | None => {
                    shard.metrics.tls_failures.inc();
                    return;
                }
            }
        }
    };
    let limits = limits(&shard, which);
    let http = shard.cfg().tuning.http.clone();
    let header_timeout = Duration::from_millis(http.header_timeout_ms);
    let keepalive = Duration::from_millis(http.keepalive_timeout_ms);
    let mut buf: Vec<u8> = Vec::new();
    let mut peer: Option<proxy::Peer> = None;
    loop {
        // Head. Its deadline is total, counted from its first byte: a timeout per read would
        // let a client sending a byte every few seconds hold the connection forever.
        let mut head_deadline: Option<Instant> = None;
        let (mut head, head_len) = loop {
            match http1::parse_head(&buf, &limits) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(e) => {
                    return send_error(&shard, &mut stream, which, e.status(), &e.to_string()).await
                }
            }
            let waiting_first_byte = buf.iter().all(|b| matches!(b, b'\r' | b'\n'));
            let within = if waiting_first_byte {
                keepalive
            } else {
                let deadline =
                    *head_deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                deadline.saturating_duration_since(Instant::now())
            };
            match read_more(&mut stream, &mut buf, limits.max_head_bytes + 1, within).await {
                Ok(()) => {}
                Err(ReadErr::Timeout) if !waiting_first_byte => {
                    let msg = format!(
                        "request head not received within {} ms",
                        http.header_timeout_ms
                    );
                    return send_error(&shard, &mut stream, which, 408, &msg).await;
                }
                Err(_) => return,
            }
        };
        buf.drain(..head_len);
        // Spoken: no longer a connection that only holds a descriptor.
        drop(pending.take());
        let _in_flight = InFlight::new(&shard);
        if which == Listener::Inbound {
            strip_prefix(&shard.cfg().path_prefixes, &mut head.path);
        }

        // Every inbound request not under /_rig/ belongs to the API gateway, which streams
        // its body (RIG's router sends everything it does not serve itself to its proxy).
        if which == Listener::Inbound && !head.path.starts_with("/_rig/") {
            // Two syscalls: asked once per connection, not per request.
            let peer = *peer.get_or_insert_with(|| proxy::Peer {
                secure,
                ip: stream
                    .tcp()
                    .peer_addr()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip()),
                local: stream
                    .tcp()
                    .local_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            });
            // Boxed for the same reason as the handlers below.
            if Box::pin(proxy::serve(&shard, &mut stream, &mut buf, head, peer)).await {
                continue;
            }
            close_lingering(&mut stream).await;
            return;
        }

        // Body, with a total deadline of its own from the end of the head.
        let body = match read_body(&shard, &mut stream, &mut buf, &head, http.max_body_bytes).await
        {
            Ok(b) => b,
            Err(BodyErr::Respond(status, msg)) => {
                return send_error(&shard, &mut stream, which, status, &msg).await
            }
            Err(BodyErr::Gone) => return,
        };

        let (keep_alive, method) = (head.keep_alive, head.method);
        // Boxed: handler state (JWT checks, shard calls, publishes) is large and short-lived;
        // inline it would size every connection task for it, and the holes it leaves behind
        // fragment the heap between long-lived streams.
        let outcome = Box::pin(api::handle(&shard, which, &head, body)).await;
        drop(head);
        match outcome {
            Outcome::Resp(r) => {
                if !write_resp(&shard, &mut stream, which, r, keep_alive, method).await {
                    return;
                }
                if !keep_alive {
                    close_lingering(&mut stream).await;
                    return;
                }
            }
            // A stream lives for hours and idle memory per connection bounds how many a host
            // holds: its socket goes to the shard (writer and watcher) and this task, with its
            // buffers and the state of every handler, ends.
            Outcome::Sse { head, slot, token } => {
                shard.metrics.response(which, 200);
                stream::adopt(&shard, stream, head, Vec::new(), slot, token, address);
                return;
            }
            Outcome::Ws { head, slot, token } => {
                shard.metrics.response(which, 101);
                let early = std::mem::take(&mut buf);
                stream::adopt(&shard, stream, head, early, slot, token, address);
                return;
            }
            Outcome::WsRefuse { head, reason } => {
                shard.metrics.response(which, 101);
                let mut out = head;
                out.extend_from_slice(&crate::proto::ws::close_frame(1000, &reason));
                let _ = stream.write_all(&out).await;
                let _ = stream.close().await;
                return;
            }
        }
    }
}

async fn write_resp(
    shard: &Shard,
    stream: &mut ClientStream,
    which: Listener,
    r: Resp,
    keep_alive: bool,
    method: http1::Method,
) -> bool {
    shard.metrics.response(which, r.status);
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut bytes = http1::response(r.status, &headers, &r.body, keep_alive);
    if method == http1::Method::Head {
        bytes.truncate(bytes.len() - r.body.len());
    }
    stream.write_all(&bytes).await.is_ok()
}

/// `/api/events/_rig/v1/connection/sse` is served as `/_rig/v1/connection/sse` (FlowX's ingress
/// keeps its prefix). Only `/_rig/` routes move: every other path stays the API gateway's.
fn strip_prefix(prefixes: &[String], path: &mut String) {
    for p in prefixes {
        if let Some(rest) = path.strip_prefix(p.as_str()) {
            if rest.starts_with("/_rig/") {
                path.drain(..p.len());
                return;
            }
        }
    }
}

#[cfg(test)]
mod prefix_tests {
    #[test]
    fn only_rig_routes_lose_the_prefix() {
        let prefixes = vec!["/api/events".to_string()];
        let strip = |p: &str| {
            let mut s = p.to_string();
            super::strip_prefix(&prefixes, &mut s);
            s
        };
        assert_eq!(
            strip("/api/events/_rig/v1/connection/sse"),
            "/_rig/v1/connection/sse"
        );
        assert_eq!(strip("/api/events/other"), "/api/events/other");
        assert_eq!(strip("/api/eventsx/_rig/v1/x"), "/api/eventsx/_rig/v1/x");
        assert_eq!(strip("/_rig/health"), "/_rig/health");
    }
}
