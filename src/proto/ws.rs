//! RFC 6455 WebSocket, server side: validating the opening handshake, encoding
//! server frames, and decoding the frames a client may send on a push-only
//! connection (control frames; data frames are recognised only to be refused).
//!
//! This module is sans-I/O: it must not touch sockets or timers and must not
//! buffer data-frame payloads. Every error here is the client's fault and maps
//! to a 4xx status (handshake) or a close code (frames).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::http1::{Method, RequestHead};

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// `base64(sha1(key + GUID))`, the value of `Sec-WebSocket-Accept`.
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("websocket handshake must be a GET request")]
    NotGet,
    #[error("request is not a websocket upgrade")]
    NotUpgrade,
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    BadVersion,
    #[error("missing or invalid Sec-WebSocket-Key")]
    MissingKey,
}

impl HandshakeError {
    /// 400, or 426 for a version we do not speak (RFC 6455 §4.4).
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::BadVersion => 426,
            _ => 400,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HandshakeError::NotGet => "websocket handshake must be a GET request",
            HandshakeError::NotUpgrade => "request is not a websocket upgrade",
            HandshakeError::BadVersion => "unsupported Sec-WebSocket-Version (only 13)",
            HandshakeError::MissingKey => "missing or invalid Sec-WebSocket-Key",
        }
    }

    /// The full refusal, closing the connection. A 426 carries
    /// `sec-websocket-version: 13` so the client can retry with a version we speak.
    pub fn response(&self) -> Vec<u8> {
        let mut headers = vec![("content-type", "text/plain; charset=utf-8")];
        if *self == HandshakeError::BadVersion {
            headers.push(("sec-websocket-version", "13"));
        }
        super::http1::response(self.status(), &headers, self.message().as_bytes(), false)
    }
}

/// Validates an opening handshake (RFC 6455 §4.2.1) and returns the accept key.
pub fn check_handshake(head: &RequestHead) -> Result<String, HandshakeError> {
    if head.method != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if !head.has_token("upgrade", "websocket") || !head.has_token("connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if head.header_str("sec-websocket-version") != Some("13") {
        return Err(HandshakeError::BadVersion);
    }
    let key = head
        .header_str("sec-websocket-key")
        .ok_or(HandshakeError::MissingKey)?;
    // A 16-byte nonce is exactly 24 base64 characters; decoding into a fixed
    // buffer bounds the work and needs no allocation.
    if key.len() != 24 {
        return Err(HandshakeError::MissingKey);
    }
    let mut nonce = [0u8; 18];
    match BASE64.decode_slice(key, &mut nonce) {
        Ok(16) => Ok(accept_key(key)),
        _ => Err(HandshakeError::MissingKey),
    }
}

/// `101 Switching Protocols` completing the handshake.
pub fn handshake_response(accept: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
    );
    super::http1::push_header(&mut out, "sec-websocket-accept", accept);
    for (name, value) in extra_headers {
        super::http1::push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The `sec-websocket-extensions` answer when permessage-deflate (RFC 7692) is accepted. The
/// server keeps no context between messages, so a message is compressed once and the same
/// bytes go to every connection that negotiated it; the client's own context is its business
/// (it may not send data frames here anyway).
pub const DEFLATE_RESPONSE: &str = "permessage-deflate; server_no_context_takeover";

/// Whether the client offers permessage-deflate in a form we can accept: the first offer
/// naming it whose parameters are all known and valid, and that does not ask for a server
/// window below 15 bits (the compressor uses 32 KiB; RFC 7692 7.1.2.1 lets the server decline
/// such an offer). Offers come in `sec-websocket-extensions` header(s), comma-separated.
pub fn accepts_deflate(head: &RequestHead) -> bool {
    head.header_values("sec-websocket-extensions")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            if !parts
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                return false;
            }
            let mut seen = Vec::new();
            parts.all(|p| {
                let (name, value) = match p.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (p, None),
                };
                let name = name.to_ascii_lowercase();
                if seen.contains(&name) {
                    return false; // a parameter twice: declined (7.1)
                }
                seen.push(name.clone());
                let bits = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok());
                match (name.as_str(), value) {
                    ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
                    ("client_max_window_bits", None) => true,
                    ("client_max_window_bits", v) => bits(v).is_some_and(|b| (8..=15).contains(&b)),
                    ("server_max_window_bits", v) => bits(v) == Some(15),
                    _ => false,
                }
            })
        })
}

/// Appends one text message compressed per RFC 7692 (RSV1 set; raw deflate, sync-flushed,
/// without the trailing `00 00 ff ff`), with `compressor` reset first (no context takeover).
pub fn encode_deflated(out: &mut Vec<u8>, payload: &[u8], compressor: &mut flate2::Compress) {
    compressor.reset();
    let mut body: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    for round in 0.. {
        if round > 64 {
            encode_frame(out, OpCode::Text, payload);
            return;
        }
        if body.capacity() - body.len() < 64 {
            body.reserve(body.capacity().max(256));
        }
        let before_in = compressor.total_in();
        let status = compressor.compress_vec(input, &mut body, flate2::FlushCompress::Sync);
        input = &input[(compressor.total_in() - before_in) as usize..];
        match status {
            Ok(_) if input.is_empty() && body.ends_with(&[0, 0, 0xff, 0xff]) => break,
            Ok(_) => continue,
            // Cannot happen with a valid compressor and output room; send it plain instead.
            Err(_) => {
                encode_frame(out, OpCode::Text, payload);
                return;
            }
        }
    }
    body.truncate(body.len() - 4);
    let start = out.len();
    encode_frame(out, OpCode::Text, &body);
    out[start] |= 0x40; // RSV1: this message is compressed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    fn is_control(self) -> bool {
        self as u8 >= 8
    }
}

impl TryFrom<u8> for OpCode {
    type Error = FrameError;

    fn try_from(b: u8) -> Result<Self, FrameError> {
        Ok(match b {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            other => return Err(FrameError::BadOpcode(other)),
        })
    }
}

/// Appends one unfragmented, unmasked server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode as u8);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Close frame; `reason` is cut at a char boundary so the payload fits the
/// 125-byte control-frame limit.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    let mut out = Vec::with_capacity(2 + payload.len());
    encode_frame(&mut out, OpCode::Close, &payload);
    out
}

pub const PING: &[u8] = &[0x89, 0x00];

#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Ping(Vec<u8>),
    Pong,
    Close {
        code: Option<u16>,
        reason: String,
    },
    /// Header of a data frame; its `len` payload bytes were not consumed.
    Data {
        opcode: OpCode,
        len: u64,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frame is not masked")]
    Unmasked,
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0}")]
    BadOpcode(u8),
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("payload length not minimally encoded or over 2^63")]
    BadLength,
    #[error("close payload of one byte or with an invalid close code")]
    BadClosePayload,
    #[error("close reason is not valid UTF-8")]
    CloseReasonNotUtf8,
}

impl FrameError {
    /// Code for the close frame sent before dropping the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::CloseReasonNotUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Codes a peer may send (RFC 6455 §7.4); 1005, 1006 and 1015 are reserved
/// for reporting and never appear on the wire.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Decodes one client frame from the start of `buf`. `Ok(None)` means more
/// bytes are needed. Control frames are returned only when whole; data frames
/// as soon as their header is complete, consuming only the header, because
/// the server refuses them and closes instead of buffering their payload.
pub fn decode_client_frame(buf: &[u8]) -> Result<Option<(ClientFrame, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::try_from(b0 & 0x0f)?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if b0 & 0x80 == 0 {
            return Err(FrameError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    let ext_len = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext_len + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let ext = &buf[2..2 + ext_len];
    let len = match len7 {
        126 => u64::from(u16::from_be_bytes([ext[0], ext[1]])),
        127 => u64::from_be_bytes(ext.try_into().map_err(|_| FrameError::BadLength)?),
        n => u64::from(n),
    };
    let minimal = match len7 {
        126 => len >= 126,
        127 => len > 0xffff && len >> 63 == 0,
        _ => true,
    };
    if !minimal {
        return Err(FrameError::BadLength);
    }
    if !opcode.is_control() {
        return Ok(Some((ClientFrame::Data { opcode, len }, header_len)));
    }
    // Control frames have a 7-bit length, so this fits without overflow.
    let total = header_len + len as usize;
    let Some(masked) = buf.get(header_len..total) else {
        return Ok(None);
    };
    let key = &buf[2 + ext_len..header_len];
    let payload: Vec<u8> = masked
        .iter()
        .zip(key.iter().cycle())
        .map(|(b, k)| b ^ k)
        .collect();
    let frame = match opcode {
        OpCode::Ping => ClientFrame::Ping(payload),
        OpCode::Pong => ClientFrame::Pong,
        _ => close_from_payload(&payload)?,
    };
    Ok(Some((frame, total)))
}

fn close_from_payload(payload: &[u8]) -> Result<ClientFrame, FrameError> {
    match payload {
        [] => Ok(ClientFrame::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(FrameError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(FrameError::BadClosePayload);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::CloseReasonNotUtf8)?;
            Ok(ClientFrame::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod deflate_tests {
    use super::*;

    fn head_with(ext: &[&str]) -> RequestHead {
        let mut raw = String::from("GET /ws HTTP/1.1\r\nhost: x\r\n");
        for e in ext {
            raw.push_str(&format!("sec-websocket-extensions: {e}\r\n"));
        }
        raw.push_str("\r\n");
        crate::proto::http1::parse_head(raw.as_bytes(), &Default::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn offers_accepted_and_declined() {
        for ok in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=12; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15",
        ] {
            assert!(accepts_deflate(&head_with(&[ok])), "{ok}");
        }
        for no in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert!(!accepts_deflate(&head_with(&[no])), "{no}");
        }
        assert!(!accepts_deflate(&head_with(&[])));
    }

    #[test]
    fn compressed_messages_inflate_back_and_set_rsv1() {
        let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
        for payload in [
            br#"{"type":"a"}"#.to_vec(),
            serde_json::json!({"data": "x".repeat(3000), "n": (0..200).collect::<Vec<_>>()})
                .to_string()
                .into_bytes(),
        ] {
            let mut out = Vec::new();
            encode_deflated(&mut out, &payload, &mut c);
            assert_eq!(out[0], 0xC1, "FIN + RSV1 + text");
            let (len, at) = match out[1] {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                n => (n as usize, 2),
            };
            let mut body = out[at..at + len].to_vec();
            body.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut d = flate2::Decompress::new(false);
            let mut back = Vec::with_capacity(payload.len() + 64);
            d.decompress_vec(&body, &mut back, flate2::FlushDecompress::Sync)
                .unwrap();
            assert_eq!(back, payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::http1::{parse_head, Limits};
    use super::*;
    use proptest::prelude::*;

    fn head(raw: &str) -> RequestHead {
        parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_ok() {
        assert_eq!(
            check_handshake(&head(UPGRADE)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let resp = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &[("x-a", "b")]);
        assert_eq!(
            resp,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-a: b\r\n\r\n"
        );
    }

    #[test]
    fn handshake_errors() {
        let case = |from: &str, to: &str| check_handshake(&head(&UPGRADE.replace(from, to)));
        assert_eq!(case("GET", "POST"), Err(HandshakeError::NotGet));
        assert_eq!(
            case("Upgrade: websocket", "Upgrade: h2c"),
            Err(HandshakeError::NotUpgrade)
        );
        assert_eq!(
            case("keep-alive, Upgrade", "keep-alive"),
            Err(HandshakeError::NotUpgrade)
        );
        assert_eq!(
            case("Version: 13", "Version: 8"),
            Err(HandshakeError::BadVersion)
        );
        assert_eq!(
            case("Sec-WebSocket-Version: 13\r\n", ""),
            Err(HandshakeError::BadVersion)
        );
        assert_eq!(
            case("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
            Err(HandshakeError::MissingKey)
        );
        assert_eq!(
            case("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"),
            Err(HandshakeError::MissingKey)
        );
        assert_eq!(
            case("Sec-WebSocket-Key", "X-Key"),
            Err(HandshakeError::MissingKey)
        );
        assert_eq!(
            case("Upgrade: websocket", "Upgrade: WebSocket").map(|_| ()),
            Ok(())
        );

        assert_eq!(HandshakeError::BadVersion.status(), 426);
        assert_eq!(HandshakeError::MissingKey.status(), 400);
        let r = String::from_utf8(HandshakeError::BadVersion.response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("\r\nsec-websocket-version: 13\r\n"));
        assert!(r.contains("\r\nconnection: close\r\n"));
        assert_eq!(
            HandshakeError::NotGet.to_string(),
            HandshakeError::NotGet.message()
        );
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7.
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let masked_hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_client_frame(&masked_hello),
            Ok(Some((
                ClientFrame::Data {
                    opcode: OpCode::Text,
                    len: 5
                },
                6
            )))
        );
        let masked_ping = [
            0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_client_frame(&masked_ping),
            Ok(Some((ClientFrame::Ping(b"Hello".to_vec()), 11)))
        );
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Binary, &[0; 256]);
        assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Binary, &vec![0; 65536]);
        assert_eq!(out[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(PING, [0x89, 0x00]);
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out[..2], [0x81, 0x05]);
    }

    /// Test-side client encoder.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    /// Test-side server-frame decoder: (fin, opcode, payload, frame length).
    fn server_frame(buf: &[u8]) -> (bool, u8, &[u8], usize) {
        assert_eq!(buf[1] & 0x80, 0, "server frames are unmasked");
        let (len, hdr) = match buf[1] {
            126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        (
            buf[0] & 0x80 != 0,
            buf[0] & 0x0f,
            &buf[hdr..hdr + len],
            hdr + len,
        )
    }

    #[test]
    fn close_frames() {
        let key = [1, 2, 3, 4];
        let dec = |payload: &[u8]| decode_client_frame(&client_frame(true, 8, payload, key));
        assert_eq!(
            dec(b""),
            Ok(Some((
                ClientFrame::Close {
                    code: None,
                    reason: String::new()
                },
                6
            )))
        );
        assert_eq!(
            dec(b"\x03\xe8bye"),
            Ok(Some((
                ClientFrame::Close {
                    code: Some(1000),
                    reason: "bye".into()
                },
                11
            )))
        );
        assert_eq!(dec(b"\x03"), Err(FrameError::BadClosePayload));
        assert_eq!(dec(b"\x03\xed"), Err(FrameError::BadClosePayload)); // 1005
        assert_eq!(dec(b"\x03\xe8\xff"), Err(FrameError::CloseReasonNotUtf8));
        assert_eq!(FrameError::CloseReasonNotUtf8.close_code(), 1007);
        assert_eq!(FrameError::BadClosePayload.close_code(), 1002);
        assert_eq!(
            decode_client_frame(&client_frame(true, 10, b"x", key)),
            Ok(Some((ClientFrame::Pong, 7)))
        );

        let long = "é".repeat(100);
        let frame = close_frame(1001, &long);
        let (fin, op, payload, n) = server_frame(&frame);
        assert!(fin && op == 8 && n == frame.len());
        assert!(payload.len() <= 125);
        assert_eq!(&payload[..2], &1001u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
        assert_eq!(payload.len(), 2 + 122);
    }

    #[test]
    fn frame_errors() {
        let key = [9, 9, 9, 9];
        assert_eq!(
            decode_client_frame(&[0x81, 0x05]),
            Err(FrameError::Unmasked)
        );
        assert_eq!(
            decode_client_frame(&[0xc1, 0x85]),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_client_frame(&[0x83, 0x80]),
            Err(FrameError::BadOpcode(3))
        );
        assert_eq!(
            decode_client_frame(&[0x8b, 0x80]),
            Err(FrameError::BadOpcode(11))
        );
        assert_eq!(
            decode_client_frame(&[0x89, 0xfe]),
            Err(FrameError::ControlTooLong)
        );
        assert_eq!(
            decode_client_frame(&[0x09, 0x80]),
            Err(FrameError::FragmentedControl)
        );
        let mut non_minimal = vec![0x82, 0xfe, 0x00, 0x05];
        non_minimal.extend_from_slice(&key);
        assert_eq!(
            decode_client_frame(&non_minimal),
            Err(FrameError::BadLength)
        );
        let mut huge = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&key);
        assert_eq!(decode_client_frame(&huge), Err(FrameError::BadLength));
        assert_eq!(FrameError::Unmasked.close_code(), 1002);
        assert_eq!(decode_client_frame(&[0x81]), Ok(None));
        assert_eq!(decode_client_frame(&[]), Ok(None));
    }

    #[test]
    fn data_frame_header_only() {
        let frame = client_frame(false, 2, &vec![7; 70_000], [1, 2, 3, 4]);
        assert_eq!(decode_client_frame(&frame[..13]), Ok(None));
        assert_eq!(
            decode_client_frame(&frame[..14]),
            Ok(Some((
                ClientFrame::Data {
                    opcode: OpCode::Binary,
                    len: 70_000
                },
                14
            )))
        );
    }

    proptest! {
        #[test]
        fn control_frames_split_anywhere(
            op in prop_oneof![Just(9u8), Just(10u8), Just(8u8)],
            bytes in proptest::collection::vec(any::<u8>(), 0..=125),
            reason in "\\PC{0,30}",
            key in any::<[u8; 4]>(),
        ) {
            let payload = if op == 8 {
                [&4000u16.to_be_bytes()[..], reason.as_bytes()].concat()
            } else {
                bytes.clone()
            };
            let expected = || match op {
                9 => ClientFrame::Ping(bytes.clone()),
                10 => ClientFrame::Pong,
                _ => ClientFrame::Close { code: Some(4000), reason: reason.clone() },
            };
            let mut wire = client_frame(true, op, &payload, key);
            let frame_len = wire.len();
            // A following frame must not be consumed.
            wire.extend_from_slice(&[0x81, 0x80]);
            for cut in 0..frame_len {
                prop_assert_eq!(decode_client_frame(&wire[..cut]), Ok(None));
            }
            for end in [frame_len, wire.len()] {
                prop_assert_eq!(decode_client_frame(&wire[..end]), Ok(Some((expected(), frame_len))));
            }
        }

        #[test]
        fn data_headers_split_anywhere(len in prop_oneof![0usize..130, 65530usize..65540], op in 0u8..3) {
            let wire = client_frame(op != 0, op, &vec![0; len], [5, 6, 7, 8]);
            let header_len = wire.len() - len;
            for cut in 0..header_len {
                prop_assert_eq!(decode_client_frame(&wire[..cut]), Ok(None));
            }
            let opcode = OpCode::try_from(op).unwrap();
            prop_assert_eq!(
                decode_client_frame(&wire[..header_len]),
                Ok(Some((ClientFrame::Data { opcode, len: len as u64 }, header_len)))
            );
        }

        #[test]
        fn server_frames_round_trip(
            len in prop_oneof![Just(0usize), Just(125), Just(126), Just(65535), Just(65536), 0usize..70_000],
            fill in any::<u8>(),
        ) {
            let payload = vec![fill; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, &payload);
            let (fin, op, body, n) = server_frame(&out);
            prop_assert!(fin);
            prop_assert_eq!(op, 2);
            prop_assert_eq!(body, &payload[..]);
            prop_assert_eq!(n, out.len());
        }

        #[test]
        fn decoder_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_client_frame(&raw);
        }
    }
}
