//! HTTP/1.1 as the API gateway speaks it to upstreams: request heads out, response heads and
//! body framing in (RFC 9112), and the header rules of a proxy (hop-by-hop fields dropped both
//! ways, RFC 9110 §7.6.1).
//!
//! Sans-I/O like the server side: bytes in, values out. Every [`UpstreamError`] is the
//! upstream's fault (the gateway answers 502); the bounds are the caller's [`ResponseLimits`].

pub use super::headers::Headers;
use super::http1::{ChunkedDecoder, HttpError};
pub use super::is_clean_value;
use super::{content_length, has_token, trim_ows, BadLength};
use std::mem::MaybeUninit;

/// Upper bound of `ResponseLimits::max_headers` (header slots live on the stack).
pub const MAX_RESPONSE_HEADERS: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// HEAD responses, 1xx, 204 and 304.
    None,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
    pub headers: Headers,
    pub body: ResponseBody,
    /// The upstream allows another request on this connection once the body is read.
    pub keep_alive: bool,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// Whether any `name` field lists `token` (comma-separated, case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(self.headers.values(name), token)
    }
}

/// Why an upstream's response cannot be passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} response headers")]
    TooManyHeaders(usize),
    #[error("response framing: {0}")]
    Framing(String),
}

impl crate::error::Blame for UpstreamError {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Upstream
    }
}

/// Hop-by-hop fields: they describe one connection and are never forwarded (RFC 9110 §7.6.1;
/// RIG's list plus `te` and `trailer`). `content-length` is not one, but the gateway frames
/// bodies itself and sets it.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "te"
            | "trailer"
    )
}

/// Field names a `Connection` header declares hop-by-hop (lower-cased), beyond the ones
/// always dropped (`keep-alive` and `close` are what nearly every `Connection` says).
pub fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
        })
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect()
}

/// The bytes of a token (RFC 9110 §5.1), by value: checked for every field of every proxied
/// head, where a table costs one load per byte.
const TOKEN_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A field name is a token (RFC 9110 §5.1); anything else must not be written to a peer.
pub fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| TOKEN_BYTES[usize::from(b)])
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// A request head is written piece by piece, straight into the bytes that go out: the request
/// line, [`push_field`]s (the caller filters hop-by-hop and framing fields; names and values
/// that could break the head are dropped here as a last line), then [`end_head`].
pub fn request_line(out: &mut Vec<u8>, method: &str, target: &str) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend(
        target
            .bytes()
            .filter(|b| !matches!(b, b' ' | b'\r' | b'\n' | 0)),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// One field; a name that is not a token or a value with CR, LF or NUL is dropped.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    if is_token(name) && is_clean_value(value) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// A field whose value `write` appends in place; dropped whole (as [`push_field`] would) if
/// the name or what was written could break the head.
pub fn push_field_with(out: &mut Vec<u8>, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
    if !is_token(name) {
        return;
    }
    let start = out.len();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let value = out.len();
    write(out);
    if is_clean_value(&out[value..]) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}

/// A field the gateway composes itself from parts that cannot hold CR, LF or NUL (addresses,
/// hex digits): not checked again.
pub fn push_own_field(out: &mut Vec<u8>, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    write(out);
    out.extend_from_slice(b"\r\n");
}

/// The body's framing fields and the blank line that ends the head.
pub fn end_head(out: &mut Vec<u8>, body: RequestBody) {
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            super::push_dec(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head from the start of `buf`. `Ok(None)`: more bytes needed. Interim
/// (1xx) responses are returned like any other; the caller skips them.
pub fn parse_response_head(
    buf: &[u8],
    limits: &ResponseLimits,
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, UpstreamError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let max_headers = limits.max_headers.min(MAX_RESPONSE_HEADERS);
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_RESPONSE_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(false)
        .parse_response_with_uninit_headers(&mut resp, window, &mut slots[..max_headers]);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(UpstreamError::HeadTooLarge(limits.max_head_bytes))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::TooManyHeaders(max_headers))
        }
        Err(e) => return Err(UpstreamError::Malformed(e.to_string())),
    };
    let (Some(status), Some(version_minor)) = (resp.code, resp.version) else {
        return Err(UpstreamError::Malformed("incomplete status line".into()));
    };
    if !(100..=599).contains(&status) {
        return Err(UpstreamError::Malformed(format!("status {status}")));
    }
    let mut head = ResponseHead {
        status,
        version_minor,
        headers: {
            let bytes = resp
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum();
            let mut headers = Headers::with_capacity(resp.headers.len(), bytes);
            for h in resp.headers.iter() {
                headers.push(h.name, h.value);
            }
            headers
        },
        body: ResponseBody::None,
        keep_alive: false,
    };
    head.body = body_kind(&head, head_request)?;
    head.keep_alive = head.body != ResponseBody::UntilClose
        && if version_minor == 1 {
            !head.has_token("connection", "close")
        } else {
            head.has_token("connection", "keep-alive")
        };
    Ok(Some((head, len)))
}

fn body_kind(head: &ResponseHead, head_request: bool) -> Result<ResponseBody, UpstreamError> {
    if head_request || (100..200).contains(&head.status) || matches!(head.status, 204 | 304) {
        return Ok(ResponseBody::None);
    }
    if let Some(first) = head.headers.get("transfer-encoding") {
        // Both framings at once is how responses get split; refuse rather than guess.
        if head.headers.get("content-length").is_some() {
            return Err(UpstreamError::Framing(
                "both Transfer-Encoding and Content-Length".into(),
            ));
        }
        let (mut count, mut last) = (0, &b""[..]);
        for coding in head
            .headers
            .values("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
        {
            (count, last) = (count + 1, coding);
        }
        return match count {
            0 => Ok(ResponseBody::UntilClose),
            // Only chunked can be undone here; with another coding before it the body would
            // reach the client still encoded without saying so, so that is refused too.
            1 if last.eq_ignore_ascii_case(b"chunked") => Ok(ResponseBody::Chunked),
            1 => Ok(ResponseBody::UntilClose),
            _ => Err(UpstreamError::Framing(format!(
                "transfer-coding {:?} is not supported",
                String::from_utf8_lossy(first)
            ))),
        };
    }
    match content_length(head.headers.values("content-length")) {
        Ok(Some(u64::MAX)) | Err(BadLength::Invalid) => {
            Err(UpstreamError::Framing("invalid Content-Length".into()))
        }
        Err(BadLength::Conflicting) => Err(UpstreamError::Framing(
            "conflicting Content-Length values".into(),
        )),
        Ok(Some(n)) => Ok(ResponseBody::Length(n)),
        // Not chunked as the final coding: the body runs to the end of the connection.
        Ok(None) => Ok(ResponseBody::UntilClose),
    }
}

/// Incremental reader of a response body: feed it bytes from the upstream and it appends
/// body bytes to `out`, never consuming past the body's end.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(kind: ResponseBody) -> BodyDecoder {
        match kind {
            ResponseBody::None | ResponseBody::Length(0) => BodyDecoder::Done,
            ResponseBody::Length(n) => BodyDecoder::Length { remaining: n },
            // No size bound: the body is streamed through, never held whole.
            ResponseBody::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(usize::MAX)),
            ResponseBody::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// `(bytes consumed, finished)`.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), UpstreamError> {
        match self {
            BodyDecoder::Done => Ok((0, true)),
            BodyDecoder::Length { remaining } => {
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok((take, done))
            }
            BodyDecoder::Chunked(d) => {
                let r = d.feed(input, out).map_err(|e| match e {
                    HttpError::BadRequest(m) => UpstreamError::Framing(m),
                    other => UpstreamError::Framing(other.to_string()),
                })?;
                if r.1 {
                    *self = BodyDecoder::Done;
                }
                Ok(r)
            }
            BodyDecoder::UntilClose => {
                out.extend_from_slice(input);
                Ok((input.len(), false))
            }
        }
    }

    /// The upstream closed: fine only where the close is the end of the body.
    pub fn eof(&self) -> Result<(), UpstreamError> {
        match self {
            BodyDecoder::Done | BodyDecoder::UntilClose => Ok(()),
            BodyDecoder::Length { remaining } => Err(UpstreamError::Framing(format!(
                "connection closed {remaining} bytes before the end of the body"
            ))),
            BodyDecoder::Chunked(_) => Err(UpstreamError::Framing(
                "connection closed inside a chunked body".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ResponseLimits = ResponseLimits {
        max_head_bytes: 1024,
        max_headers: 16,
    };

    fn parse(b: &[u8]) -> Result<Option<(ResponseHead, usize)>, UpstreamError> {
        parse_response_head(b, &L, false)
    }

    #[test]
    fn framing_by_status_method_and_headers() {
        let (h, n) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.body, h.keep_alive, n),
            (200, ResponseBody::Length(5), true, 38)
        );
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, ResponseBody::Chunked);
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.body, h.keep_alive), (ResponseBody::UntilClose, false));
        let (h, _) = parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, ResponseBody::None);
        let (h, _) = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &L, true)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, ResponseBody::None);
        let (h, _) = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "1.0 without keep-alive closes");
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err()
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nX: y\r\n").unwrap(), None);
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(
            parse(big.as_bytes()).unwrap_err(),
            UpstreamError::HeadTooLarge(1024)
        );
    }

    #[test]
    fn bodies_decode_in_any_split() {
        let wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut d = BodyDecoder::new(ResponseBody::Chunked);
            let mut out = Vec::new();
            let (a, done_a) = d.feed(&wire[..split], &mut out).unwrap();
            let (used, done) = if done_a {
                (a, true)
            } else {
                let (b, done) = d.feed(&wire[a..], &mut out).unwrap();
                (a + b, done)
            };
            assert!(done);
            assert_eq!(out, b"hello world");
            assert_eq!(&wire[used..], b"NEXT", "split at {split}");
        }
        let mut d = BodyDecoder::new(ResponseBody::Length(3));
        let mut out = Vec::new();
        assert_eq!(d.feed(b"abcdef", &mut out).unwrap(), (3, true));
        let d = BodyDecoder::new(ResponseBody::Length(3));
        assert!(d.eof().is_err());
    }

    #[test]
    fn request_heads_drop_what_would_break_them() {
        let mut h = Vec::new();
        request_line(&mut h, "GET", "/a b?x=1");
        push_field(&mut h, "host", b"up:80");
        push_field(&mut h, "x-bad", b"a\r\nb");
        push_field(&mut h, "bad name", b"v");
        push_field_with(&mut h, "x-bad-too", |b| b.extend_from_slice(b"1\n2"));
        end_head(&mut h, RequestBody::Length(2));
        assert_eq!(
            h,
            b"GET /ab?x=1 HTTP/1.1\r\nhost: up:80\r\ncontent-length: 2\r\n\r\n".to_vec()
        );
    }
}
