//! The harness's own small wire code (it does not link the appliance): URL encoding, the load
//! CloudEvent, finding `data.seq`/`data.ts` without a JSON parse, HTTP/1.1 response heads and
//! chunked bodies, the SSE line scanner and RFC 6455 client framing.
//!
//! The stream decoders are incremental and keep almost nothing per connection: input is
//! processed straight out of the caller's (shared) read buffer and only a line or frame that
//! straddles two reads is copied into the connection's carry buffer.

use base64::Engine as _;
use memchr::memmem;
use sha1::{Digest, Sha1};
use std::sync::LazyLock;

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The load CloudEvent for `seq`, sent at `ts_ns` (unix ns), padded so the whole JSON is about
/// `payload_bytes` long (never shorter than its fixed part).
/// `to`: the connection a targeted event is for (its `data.user` is `u<to>`, what a targeted
/// client subscribes to); `seq` is then that connection's own sequence number.
pub fn cloud_event(
    event_type: &str,
    seq: u64,
    ts_ns: u64,
    stream: u32,
    to: Option<u64>,
    payload_bytes: usize,
) -> Vec<u8> {
    let target = to.map_or(String::new(), |t| format!(",\"to\":{t},\"user\":\"u{t}\""));
    let head = format!(
        "{{\"specversion\":\"1.0\",\"type\":\"{event_type}\",\"source\":\"/loadtest\",\"id\":\"{seq}\",\"data\":{{\"seq\":{seq},\"ts\":{ts_ns},\"st\":{stream}{target},\"pad\":\""
    );
    let tail = b"\"}}";
    let pad = payload_bytes.saturating_sub(head.len() + tail.len());
    let mut v = Vec::with_capacity(head.len() + pad + tail.len());
    v.extend_from_slice(head.as_bytes());
    v.resize(v.len() + pad, b'x');
    v.extend_from_slice(tail);
    v
}

fn number_after(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut i = at;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let start = i;
    let mut n: u64 = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        n = n.checked_mul(10)?.checked_add(u64::from(bytes[i] - b'0'))?;
        i += 1;
    }
    (i > start).then_some((n, i))
}

/// A load event's marks: its sequence number, send time and ordering stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub seq: u64,
    pub ts: u64,
    /// Events are ordered only within a stream: one Kafka partition, or one HTTP publishing
    /// connection (which waits for each 202).
    pub stream: u32,
    /// The connection a targeted event is addressed to.
    pub to: Option<u64>,
}

/// Finds the first `"seq":N`, the `"ts":T` after it and the `"st":S` right after that (the
/// load event's `data`); returns the marks and where they end.
pub fn marks(bytes: &[u8]) -> Option<(Marks, usize)> {
    // Searchers built once: this runs for every delivery the harness reads.
    static SEQ: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new("\"seq\":"));
    static TS: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("\"ts\":"));
    let s = SEQ.find(bytes)?;
    let (seq, end) = number_after(bytes, s + 6)?;
    let t = end + TS.find(&bytes[end..])?;
    let (ts, mut end) = number_after(bytes, t + 5)?;
    let mut stream = 0;
    if bytes[end..].starts_with(b",\"st\":") {
        let (st, e) = number_after(bytes, end + 6)?;
        stream = u32::try_from(st).ok()?;
        end = e;
    }
    let mut to = None;
    if bytes[end..].starts_with(b",\"to\":") {
        let (t, e) = number_after(bytes, end + 6)?;
        to = Some(t);
        end = e;
    }
    Some((
        Marks {
            seq,
            ts,
            stream,
            to,
        },
        end,
    ))
}

/// Every load event in `bytes` (a long-poll body holds many), in order.
pub fn each_marks(mut bytes: &[u8], mut f: impl FnMut(Marks)) {
    while let Some((m, end)) = marks(bytes) {
        f(m);
        bytes = &bytes[end..];
    }
}

/// A parsed HTTP/1.1 response head.
#[derive(Debug, Default)]
pub struct Head {
    pub status: u16,
    pub len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub set_cookies: Vec<String>,
    pub ws_accept: Option<String>,
}

/// Parses a response head from the start of `buf`; `Ok(None)` if incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let mut h = Head {
        status: r.code.unwrap_or(0),
        len,
        ..Head::default()
    };
    for hd in r.headers.iter() {
        let v = String::from_utf8_lossy(hd.value);
        let name = hd.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => h.content_length = v.trim().parse().ok(),
            "transfer-encoding" => h.chunked = v.to_ascii_lowercase().contains("chunked"),
            "connection" => h.close = v.to_ascii_lowercase().contains("close"),
            "set-cookie" => h.set_cookies.push(v.into_owned()),
            "sec-websocket-accept" => h.ws_accept = Some(v.trim().to_string()),
            _ => {}
        }
    }
    Ok(Some(h))
}

/// `name=value` from a `Set-Cookie` header, if it sets `name`.
pub fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    let first = set_cookie.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    (k.trim() == name).then_some(v.trim())
}

/// Incremental decoder of an HTTP/1.1 chunked body; hands out body bytes as slices of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size { val: u64, digits: u8, ext: bool },
    Data { rem: u64 },
    DataEnd,
    Trailer { line_empty: bool },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            val: 0,
            digits: 0,
            ext: false,
        }
    }
}

impl Chunked {
    /// Feeds `input`, calling `body` with each run of body bytes. Returns an error on a
    /// malformed size line.
    pub fn feed(&mut self, mut input: &[u8], mut body: impl FnMut(&[u8])) -> Result<(), String> {
        while !input.is_empty() {
            match *self {
                Chunked::Done => return Ok(()),
                Chunked::Data { rem } => {
                    let n = (rem.min(input.len() as u64)) as usize;
                    body(&input[..n]);
                    input = &input[n..];
                    *self = if rem == n as u64 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data {
                            rem: rem - n as u64,
                        }
                    };
                }
                Chunked::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => *self = Chunked::default(),
                        _ => return Err("missing CRLF after chunk".into()),
                    }
                }
                Chunked::Size { val, digits, ext } => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\n' {
                        if digits == 0 {
                            return Err("empty chunk size".into());
                        }
                        *self = if val == 0 {
                            Chunked::Trailer { line_empty: true }
                        } else {
                            Chunked::Data { rem: val }
                        };
                    } else if ext || b == b'\r' {
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        *self = Chunked::Size {
                            val,
                            digits,
                            ext: true,
                        };
                    } else {
                        let d = (b as char)
                            .to_digit(16)
                            .ok_or_else(|| format!("bad chunk size byte {b:#x}"))?;
                        if digits >= 15 {
                            return Err("chunk size too large".into());
                        }
                        *self = Chunked::Size {
                            val: val * 16 + u64::from(d),
                            digits: digits + 1,
                            ext,
                        };
                    }
                }
                Chunked::Trailer { line_empty } => {
                    let b = input[0];
                    input = &input[1..];
                    *self = match b {
                        b'\n' if line_empty => Chunked::Done,
                        b'\n' => Chunked::Trailer { line_empty: true },
                        b'\r' => Chunked::Trailer { line_empty },
                        _ => Chunked::Trailer { line_empty: false },
                    };
                }
            }
        }
        Ok(())
    }

    pub fn done(&self) -> bool {
        *self == Chunked::Done
    }
}

/// Splits an event stream into lines and reports the load event on each `data:` line (the
/// gateway writes one-line JSON data). Only a line split across reads is copied.
#[derive(Debug, Default)]
pub struct SseScanner {
    carry: Vec<u8>,
}

impl SseScanner {
    pub fn feed(&mut self, mut input: &[u8], f: &mut impl FnMut(Marks)) {
        // memchr, not a byte loop: in (a) the workers spent 37% of their CPU scanning lines
        // and finding marks, CPU the server under test did not get.
        while let Some(nl) = memchr::memchr(b'\n', input) {
            if self.carry.is_empty() {
                Self::line(&input[..nl], f);
            } else {
                self.carry.extend_from_slice(&input[..nl]);
                Self::line(&self.carry, f);
                self.carry.clear();
                if self.carry.capacity() > 16 * 1024 {
                    self.carry = Vec::new();
                }
            }
            input = &input[nl + 1..];
        }
        self.carry.extend_from_slice(input);
    }

    fn line(line: &[u8], f: &mut impl FnMut(Marks)) {
        if let Some(data) = line.strip_prefix(b"data:") {
            if let Some((m, _)) = marks(data) {
                f(m);
            }
        }
    }
}

pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub fn ws_key() -> String {
    let mut k = [0u8; 16];
    k.iter_mut().for_each(|b| *b = fastrand::u8(..));
    base64::engine::general_purpose::STANDARD.encode(k)
}

pub fn ws_accept(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Appends a masked client frame (FIN set).
pub fn ws_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = fastrand::u32(..).to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// What a server frame asked of the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WsOut {
    /// Bytes to send back (pongs, the close reply).
    pub reply: Vec<u8>,
    pub closed: bool,
}

/// Incremental decoder of server (unmasked) frames.
#[derive(Debug, Default)]
pub struct WsDecoder {
    hdr: [u8; 14],
    hdr_len: u8,
    /// Payload bytes still to come for the current frame, once its header is complete.
    rem: Option<u64>,
    opcode: u8,
    fin: bool,
    /// Opcode of a fragmented message in progress (0 when none).
    msg_opcode: u8,
    /// Payload of a data frame or fragmented message that straddles reads.
    carry: Vec<u8>,
    /// Payload of a control frame that straddles reads (at most 125 bytes).
    ctrl: Vec<u8>,
}

impl WsDecoder {
    fn header_len(h: &[u8]) -> Option<usize> {
        if h.len() < 2 {
            return None;
        }
        let base = 2 + if h[1] & 0x80 != 0 { 4 } else { 0 };
        Some(match h[1] & 0x7f {
            126 => base + 2,
            127 => base + 8,
            _ => base,
        })
    }

    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut WsOut,
        f: &mut impl FnMut(Marks),
    ) -> Result<(), String> {
        while !input.is_empty() && !out.closed {
            match self.rem {
                None => {
                    let need = Self::header_len(&self.hdr[..self.hdr_len as usize]).unwrap_or(2);
                    let take = (need - self.hdr_len as usize).min(input.len());
                    let at = self.hdr_len as usize;
                    self.hdr[at..at + take].copy_from_slice(&input[..take]);
                    self.hdr_len += take as u8;
                    input = &input[take..];
                    let h = &self.hdr[..self.hdr_len as usize];
                    let Some(full) = Self::header_len(h) else {
                        continue;
                    };
                    if h.len() < full {
                        continue;
                    }
                    if h[1] & 0x80 != 0 {
                        return Err("server frame is masked".into());
                    }
                    if h[0] & 0x70 != 0 {
                        return Err("reserved bits set".into());
                    }
                    let len = match h[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                        127 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
                        n => u64::from(n),
                    };
                    if len > 64 << 20 {
                        return Err("frame over 64 MiB".into());
                    }
                    self.fin = h[0] & 0x80 != 0;
                    self.opcode = h[0] & 0x0f;
                    self.hdr_len = 0;
                    self.rem = Some(len);
                    if self.opcode & 0x8 != 0 && (len > 125 || !self.fin) {
                        return Err("bad control frame".into());
                    }
                    if len == 0 {
                        self.payload(&[], 0, out, f)?;
                    }
                }
                Some(rem) => {
                    let n = rem.min(input.len() as u64) as usize;
                    let (part, rest) = input.split_at(n);
                    input = rest;
                    self.payload(part, rem - n as u64, out, f)?;
                }
            }
        }
        Ok(())
    }

    /// Takes `part` of the current frame's payload, `left` bytes of it still to come.
    fn payload(
        &mut self,
        part: &[u8],
        left: u64,
        out: &mut WsOut,
        f: &mut impl FnMut(Marks),
    ) -> Result<(), String> {
        let control = self.opcode & 0x8 != 0;
        let whole = self.fin && self.opcode != 0;
        let buf = if control {
            &mut self.ctrl
        } else {
            &mut self.carry
        };
        if left == 0 && buf.is_empty() && (control || whole) {
            return self.frame_done(part, out, f);
        }
        buf.extend_from_slice(part);
        if left > 0 {
            self.rem = Some(left);
            return Ok(());
        }
        let mut payload = std::mem::take(buf);
        self.frame_done(&payload, out, f)?;
        if control {
            payload.clear();
            self.ctrl = payload;
        } else if self.msg_opcode != 0 {
            // A fragmented message goes on: keep what it has so far.
            self.carry = payload;
        } else if payload.capacity() <= 16 * 1024 {
            payload.clear();
            self.carry = payload;
        }
        Ok(())
    }

    /// A frame's payload is complete (`payload` is the whole frame, or for a fragmented data
    /// message everything so far).
    fn frame_done(
        &mut self,
        payload: &[u8],
        out: &mut WsOut,
        f: &mut impl FnMut(Marks),
    ) -> Result<(), String> {
        self.rem = None;
        match self.opcode {
            0x9 => ws_client_frame(&mut out.reply, 0xA, payload),
            0xA => {}
            0x8 => {
                let code = payload.get(..2).unwrap_or(&[0x03, 0xe8]);
                ws_client_frame(&mut out.reply, 0x8, code);
                out.closed = true;
            }
            0x0..=0x2 => {
                if self.opcode != 0 {
                    self.msg_opcode = self.opcode;
                } else if self.msg_opcode == 0 {
                    return Err("continuation without a message".into());
                }
                if self.fin {
                    if self.msg_opcode == 0x1 {
                        if let Some((m, _)) = marks(payload) {
                            f(m);
                        }
                    }
                    self.msg_opcode = 0;
                }
            }
            op => return Err(format!("unknown opcode {op:#x}")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_padded_and_scannable() {
        let e = cloud_event("load", 42, 1_700_000_000_123_456_789, 0, None, 200);
        assert_eq!(e.len(), 200);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["data"]["seq"], 42);
        assert_eq!(v["id"], "42");
        assert_eq!(
            marks(&e).map(|x| x.0),
            Some(Marks {
                seq: 42,
                ts: 1_700_000_000_123_456_789,
                stream: 0,
                to: None,
            })
        );
        let e = cloud_event("load", 7, 8, 3, None, 200);
        assert_eq!(marks(&e).map(|x| x.0.stream), Some(3));
        // A targeted event names its connection and carries the user it subscribed to.
        let e = cloud_event("load", 7, 8, 3, Some(41), 200);
        assert_eq!(e.len(), 200);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["data"]["user"], "u41");
        assert_eq!(marks(&e).map(|x| x.0.to), Some(Some(41)));
        // Smaller than the fixed part: no padding, still valid.
        let e = cloud_event("load", 1, 2, 0, None, 10);
        serde_json::from_slice::<serde_json::Value>(&e).unwrap();
    }

    #[test]
    fn many_events_in_one_body() {
        let body = format!(
            "{{\"last_event_id\":\"3\",\"events\":[{},{}]}}",
            String::from_utf8(cloud_event("load", 1, 10, 0, None, 0)).unwrap(),
            String::from_utf8(cloud_event("load", 2, 20, 0, None, 0)).unwrap()
        );
        let mut got = vec![];
        each_marks(body.as_bytes(), |m: Marks| got.push((m.seq, m.ts)));
        assert_eq!(got, vec![(1, 10), (2, 20)]);
    }

    #[test]
    fn encodes_url() {
        assert_eq!(percent_encode("[{\"a\":1}]"), "%5B%7B%22a%22%3A1%7D%5D");
    }

    fn sse_stream(seqs: &[u64]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"event: rig.connection.create\ndata: {\"x\":1}\n\n");
        for &s in seqs {
            let ev = cloud_event("load", s, s * 10, 0, None, 120);
            body.extend_from_slice(format!("id: 1-{s}\nevent: load\ndata: ").as_bytes());
            body.extend_from_slice(&ev);
            body.extend_from_slice(b"\n\n: heartbeat\n\n");
        }
        // Chunk it in pieces of varying size.
        let mut out = Vec::new();
        let mut i = 0;
        let mut size = 7;
        while i < body.len() {
            let n = size.min(body.len() - i);
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&body[i..i + n]);
            out.extend_from_slice(b"\r\n");
            i += n;
            size = size * 3 % 301 + 1;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn chunked_sse_split_anywhere() {
        let wire = sse_stream(&[0, 1, 2, 5, 3]);
        for step in [1, 2, 3, 7, 64, 1000, wire.len()] {
            let mut ch = Chunked::default();
            let mut sc = SseScanner::default();
            let mut got = vec![];
            for piece in wire.chunks(step) {
                ch.feed(piece, |b| {
                    sc.feed(b, &mut |m: Marks| got.push((m.seq, m.ts)))
                })
                .unwrap();
            }
            assert!(ch.done(), "step {step}");
            assert_eq!(got, vec![(0, 0), (1, 10), (2, 20), (5, 50), (3, 30)]);
        }
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut ch = Chunked::default();
        assert!(ch.feed(b"zz\r\n", |_| {}).is_err());
    }

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else if payload.len() <= 0xffff {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert!(frame[1] & 0x80 != 0, "client frames are masked");
        let len = (frame[1] & 0x7f) as usize;
        let mask = &frame[2..6];
        let p = frame[6..6 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (frame[0] & 0x0f, p)
    }

    #[test]
    fn ws_frames_split_anywhere() {
        let mut wire = Vec::new();
        wire.extend(server_frame(
            1,
            true,
            b"{\"type\":\"rig.connection.create\"}",
        ));
        wire.extend(server_frame(
            1,
            true,
            &cloud_event("load", 0, 5, 0, None, 100),
        ));
        wire.extend(server_frame(9, true, b"hi"));
        wire.extend(server_frame(
            1,
            true,
            &cloud_event("load", 1, 6, 0, None, 70_000),
        ));
        let big = cloud_event("load", 2, 7, 0, None, 300);
        wire.extend(server_frame(1, false, &big[..100]));
        wire.extend(server_frame(0, true, &big[100..]));
        wire.extend(server_frame(8, true, &[0x03, 0xe8, b'b', b'y', b'e']));
        for step in [1, 5, 100, 4096, wire.len()] {
            let mut d = WsDecoder::default();
            let mut out = WsOut::default();
            let mut got = vec![];
            for piece in wire.chunks(step) {
                d.feed(piece, &mut out, &mut |m: Marks| got.push((m.seq, m.ts)))
                    .unwrap();
            }
            assert_eq!(got, vec![(0, 5), (1, 6), (2, 7)], "step {step}");
            assert!(out.closed);
            let pong_len = 6 + 2;
            let (op, p) = unmask(&out.reply[..pong_len]);
            assert_eq!((op, p.as_slice()), (0xA, &b"hi"[..]));
            let (op, p) = unmask(&out.reply[pong_len..]);
            assert_eq!((op, p.as_slice()), (0x8, &[0x03, 0xe8][..]));
        }
    }

    #[test]
    fn ws_accept_matches_rfc() {
        assert_eq!(
            ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn heads_and_cookies() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nset-cookie: connection_token=abc; Path=/\r\nSet-Cookie: last_event_id=\"first_event\"; Path=/\r\ncontent-length: 4\r\n\r\n\"ok\"",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(4));
        assert_eq!(
            cookie_value(&h.set_cookies[0], "connection_token"),
            Some("abc")
        );
        assert_eq!(
            cookie_value(&h.set_cookies[1], "last_event_id"),
            Some("\"first_event\"")
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }
}
