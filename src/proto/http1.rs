//! HTTP/1.1 request-side protocol: parsing request heads (on `httparse`), RFC 9112
//! body framing (`Content-Length` and chunked), response serialisation and small
//! helpers for queries and cookies.
//!
//! This module is sans-I/O: bytes in, values out. It must not read or write
//! sockets, spawn, sleep or log, and it must not allocate while waiting for more
//! bytes. Everything a peer controls is bounded by [`Limits`] or a constant here,
//! and every [`HttpError`] is the client's fault (a 4xx, or 501/505 for features
//! the client asked for and we refuse).

pub use super::headers::Headers;
use super::{content_length, has_token, trim_ows, BadLength};
use std::mem::MaybeUninit;

/// Hard ceiling on `Limits::max_headers`: the header slots live on the stack so
/// that a partial head costs no allocation.
pub const MAX_HEADERS_CAP: usize = 256;

/// Longest chunk-size line (size, extensions, CRLF) we accept.
pub const MAX_CHUNK_LINE: usize = 1024;

/// Largest trailer section we are willing to skip over.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_head_bytes: usize,
    /// Capped at [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    // Method names are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    fn from_token(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub method_str: String,
    /// Raw path part of the target, without the query; not percent-decoded.
    pub path: String,
    /// Raw query string after `?`, without the `?`.
    pub query: Option<String>,
    /// 0 or 1.
    pub version_minor: u8,
    pub headers: Headers,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    /// First value of header `name` (given lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// First value of header `name` if it is valid UTF-8, with surrounding
    /// whitespace trimmed.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        let v = std::str::from_utf8(self.header(name)?).ok()?;
        Some(v.trim_matches([' ', '\t']))
    }

    /// Every value of header `name`, in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.values(name)
    }

    /// Whether any instance of header `name` lists `token` in its
    /// comma-separated value (ASCII case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(self.headers.values(name), token)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request target longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request header section larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("transfer-encoding {0} is not supported")]
    UnsupportedTransferEncoding(String),
    #[error("HTTP version not supported")]
    VersionNotSupported,
}

impl HttpError {
    /// Status code to answer with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::UriTooLong { .. } => 414,
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedTransferEncoding(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }
}

fn bad(msg: &str) -> HttpError {
    HttpError::BadRequest(msg.to_owned())
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; that only happens while `buf` is
/// shorter than `max_head_bytes`. `Ok(Some((head, head_len)))` gives the number
/// of bytes of the head, including leading empty lines and the final CRLFCRLF.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Bytes past the head limit are never examined: a head that needs them is
    // too large whatever they hold, and the rest may be a pipelined request.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    // Checked on the raw bytes first so an endless target is refused as soon
    // as it passes the limit rather than when the head limit is reached.
    if target_len_so_far(window, limits.max_uri_bytes) > limits.max_uri_bytes {
        return Err(HttpError::UriTooLong {
            limit: limits.max_uri_bytes,
        });
    }
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(window, &mut slots[..max_headers]) {
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            Err(HttpError::HeadTooLarge {
                limit: limits.max_head_bytes,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => build_head(&req, limits).map(|h| Some((h, len))),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HttpError::TooManyHeaders { limit: max_headers })
        }
        Err(httparse::Error::Version) => Err(version_error(window)),
        Err(e) => Err(HttpError::BadRequest(e.to_string())),
    }
}

/// Bytes seen so far of the request target, stopping the scan once it is known
/// to be over `limit`.
fn target_len_so_far(buf: &[u8], limit: usize) -> usize {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let sp = match line.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        Some(sp) if line[sp] == b' ' => sp,
        _ => return 0,
    };
    line[sp + 1..]
        .iter()
        .take(limit.saturating_add(1))
        .take_while(|&&b| !matches!(b, b' ' | b'\r' | b'\n'))
        .count()
}

/// httparse only knows 1.0 and 1.1; a well-formed `HTTP/<digit>...` is a
/// version we refuse (505), anything else is garbage (400).
fn version_error(buf: &[u8]) -> HttpError {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let end = line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let version = line[..end]
        .rsplit(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    match version.strip_prefix(b"HTTP/") {
        Some([d, ..]) if d.is_ascii_digit() => HttpError::VersionNotSupported,
        _ => bad("invalid HTTP version"),
    }
}

fn build_head(req: &httparse::Request<'_, '_>, limits: &Limits) -> Result<RequestHead, HttpError> {
    let (Some(method_str), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(bad("incomplete request line"));
    };
    if target.len() > limits.max_uri_bytes {
        return Err(HttpError::UriTooLong {
            limit: limits.max_uri_bytes,
        });
    }
    let method = Method::from_token(method_str);
    let (path, query) = split_target(target, method)?;
    let mut headers = Headers::with_capacity(
        req.headers.len(),
        req.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum(),
    );
    for h in req.headers.iter() {
        headers.push(h.name, h.value);
    }
    let mut head = RequestHead {
        method,
        method_str: method_str.to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        version_minor,
        headers,
        body: BodyKind::None,
        keep_alive: false,
        expect_continue: false,
    };

    // RFC 9112 §3.2: a 1.1 request needs exactly one Host; more than one is
    // ambiguous routing, so refuse it on any version.
    match head.header_values("host").count() {
        0 if version_minor == 1 => return Err(bad("missing Host header")),
        0 | 1 => {}
        _ => return Err(bad("multiple Host headers")),
    }
    head.body = body_kind(&head, limits)?;
    head.keep_alive = if version_minor == 1 {
        !head.has_token("connection", "close")
    } else {
        head.has_token("connection", "keep-alive") && !head.has_token("connection", "close")
    };
    let expect_continue = head
        .header_values("expect")
        .any(|v| trim_ows(v).eq_ignore_ascii_case(b"100-continue"));
    head.expect_continue = expect_continue;
    Ok(head)
}

fn split_target(target: &str, method: Method) -> Result<(&str, Option<&str>), HttpError> {
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" {
        if method != Method::Options {
            return Err(bad("asterisk target is only valid for OPTIONS"));
        }
        return Ok(("*", None));
    } else if let Some(after_scheme) = strip_http_scheme(target) {
        // Absolute form (RFC 9112 §3.2.2): routing is by path, the authority
        // is dropped like a proxy would after choosing the upstream.
        match after_scheme.find(['/', '?']) {
            Some(i) if after_scheme.as_bytes()[i] == b'/' => &after_scheme[i..],
            Some(i) => return Ok(("/", Some(&after_scheme[i + 1..]))),
            None => return Ok(("/", None)),
        }
    } else {
        return Err(bad("request target must be origin-form"));
    };
    Ok(match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    })
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
            .filter(|rest| !rest.is_empty())
    })
}

/// RFC 9112 §6: decides how the body is delimited, refusing anything that two
/// parsers could read differently (request smuggling).
fn body_kind(head: &RequestHead, limits: &Limits) -> Result<BodyKind, HttpError> {
    let has_te = head.header("transfer-encoding").is_some();
    let has_cl = head.header("content-length").is_some();
    if has_te && has_cl {
        return Err(bad("both Transfer-Encoding and Content-Length"));
    }
    if has_te {
        if head.version_minor == 0 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let mut chunked = 0;
        for coding in head
            .header_values("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
        {
            if !coding.eq_ignore_ascii_case(b"chunked") {
                // We cannot undo any other coding, so even `gzip, chunked`
                // would hand the application bytes it cannot read.
                return Err(HttpError::UnsupportedTransferEncoding(
                    String::from_utf8_lossy(coding).into_owned(),
                ));
            }
            chunked += 1;
        }
        return match chunked {
            0 => Err(bad("empty Transfer-Encoding")),
            1 => Ok(BodyKind::Chunked),
            _ => Err(bad("chunked applied more than once")),
        };
    }
    if !has_cl {
        return Ok(BodyKind::None);
    }
    let length = content_length(head.header_values("content-length")).map_err(|e| match e {
        BadLength::Invalid => bad("invalid Content-Length"),
        BadLength::Conflicting => bad("conflicting Content-Length values"),
    })?;
    let n = length.unwrap_or(0);
    if n > limits.max_body_bytes as u64 {
        return Err(HttpError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    Ok(BodyKind::Length(n))
}

/// Incremental body reader: feed it the bytes that follow the head and it
/// appends body bytes to `out`.
#[derive(Debug, Clone)]
pub enum BodyReader {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    Done,
}

impl BodyReader {
    /// `Length` kinds are trusted to be within `max_body_bytes`: [`parse_head`]
    /// refuses larger ones before a reader exists.
    pub fn new(kind: BodyKind, max_body_bytes: usize) -> Self {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyReader::Done,
            BodyKind::Length(n) => BodyReader::Length { remaining: n },
            BodyKind::Chunked => BodyReader::Chunked(ChunkedDecoder::new(max_body_bytes)),
        }
    }

    /// Returns `(bytes consumed from input, finished)`. Never consumes past the
    /// end of the body: what follows belongs to the next pipelined request.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        match self {
            BodyReader::Done => Ok((0, true)),
            BodyReader::Length { remaining } => {
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyReader::Done;
                }
                Ok((take, done))
            }
            BodyReader::Chunked(decoder) => decoder.feed(input, out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePhase {
    Digits,
    /// Whitespace after the digits (BWS before `;`).
    Space,
    Extension,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size {
        size: u64,
        digits: usize,
        line: usize,
        phase: SizePhase,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

const SIZE_START: ChunkState = ChunkState::Size {
    size: 0,
    digits: 0,
    line: 0,
    phase: SizePhase::Digits,
};

/// Decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1) that accepts its
/// input split at any byte. Line endings must be CRLF: being lenient about
/// framing is how request smuggling starts.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    max_body: u64,
    total: u64,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(max_body_bytes: usize) -> Self {
        ChunkedDecoder {
            state: SIZE_START,
            max_body: max_body_bytes as u64,
            total: 0,
            trailer_bytes: 0,
        }
    }

    /// Returns `(bytes consumed, finished)`; consumes all of `input` unless the
    /// body ends inside it.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        if self.state == ChunkState::Done {
            return Ok((0, true));
        }
        let mut pos = 0;
        while pos < input.len() {
            if let ChunkState::Data { remaining } = &mut self.state {
                let avail = input.len() - pos;
                let take = avail.min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[pos..pos + take]);
                pos += take;
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = input[pos];
            pos += 1;
            self.step(b)?;
            if self.state == ChunkState::Done {
                return Ok((pos, true));
            }
        }
        Ok((pos, self.state == ChunkState::Done))
    }

    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use ChunkState as S;
        self.state = match self.state {
            S::Size {
                size,
                digits,
                line,
                phase,
            } => {
                let line = line + 1;
                if line > MAX_CHUNK_LINE {
                    return Err(bad("chunk size line too long"));
                }
                self.size_byte(b, size, digits, line, phase)?
            }
            S::SizeLf { size } => {
                if b != b'\n' {
                    return Err(bad("chunk size line not ended by CRLF"));
                }
                self.total += size;
                if size == 0 {
                    S::TrailerStart
                } else {
                    S::Data { remaining: size }
                }
            }
            S::DataCr if b == b'\r' => S::DataLf,
            S::DataLf if b == b'\n' => SIZE_START,
            S::DataCr | S::DataLf => return Err(bad("chunk data not followed by CRLF")),
            S::TrailerStart if b == b'\r' => S::FinalLf,
            S::TrailerStart | S::TrailerLine => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(bad("chunked trailer section too large"));
                }
                match b {
                    b'\r' => S::TrailerLf,
                    b'\n' | 0 => return Err(bad("invalid byte in chunked trailer")),
                    _ => S::TrailerLine,
                }
            }
            S::TrailerLf if b == b'\n' => S::TrailerStart,
            S::FinalLf if b == b'\n' => S::Done,
            S::TrailerLf | S::FinalLf => return Err(bad("chunked trailer line not ended by CRLF")),
            // `feed` copies data in bulk and stops at `Done`; neither reaches here.
            S::Data { .. } | S::Done => self.state,
        };
        Ok(())
    }

    fn size_byte(
        &self,
        b: u8,
        size: u64,
        digits: usize,
        line: usize,
        phase: SizePhase,
    ) -> Result<ChunkState, HttpError> {
        let next = |size, digits, phase| ChunkState::Size {
            size,
            digits,
            line,
            phase,
        };
        if phase == SizePhase::Digits {
            if let Some(d) = (b as char).to_digit(16) {
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(d)))
                    .ok_or_else(|| bad("chunk size overflows"))?;
                // Refused while the size is still being read, before any of
                // the chunk's data is appended.
                if self.total.saturating_add(size) > self.max_body {
                    return Err(HttpError::BodyTooLarge {
                        limit: self.max_body as usize,
                    });
                }
                return Ok(next(size, digits + 1, phase));
            }
            if digits == 0 {
                return Err(bad("invalid chunk size"));
            }
        }
        Ok(match (phase, b) {
            (_, b'\r') => ChunkState::SizeLf { size },
            (SizePhase::Extension, b'\n' | 0) => {
                return Err(bad("invalid byte in chunk extension"))
            }
            (SizePhase::Extension, _) => next(size, digits, phase),
            (_, b' ' | b'\t') => next(size, digits, SizePhase::Space),
            (_, b';') => next(size, digits, SizePhase::Extension),
            _ => return Err(bad("invalid chunk size")),
        })
    }
}

/// Standard reason phrase, or `""` for codes not listed (an empty reason
/// still makes a valid status line).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

pub(crate) fn push_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    super::push_dec(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value\r\n`, dropping CR, LF and NUL so that a value derived
/// from peer input can never start a new header or end the head early.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    super::push_clean(out, name.as_bytes());
    out.extend_from_slice(b": ");
    super::push_clean(out, value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A complete response with `content-length`; adds `connection: close` when
/// `!keep_alive`. Header names are written as given. 1xx and 204 responses get
/// no `content-length` (RFC 9110 §8.6 forbids it) and should have no body.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    push_status_line(&mut out, status);
    for (name, value) in headers {
        push_header(&mut out, name, value);
    }
    if !(100..200).contains(&status) && status != 204 {
        push_header(
            &mut out,
            "content-length",
            itoa::Buffer::new().format(body.len()),
        );
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Head of a streaming response framed with chunked transfer-encoding.
pub fn streaming_head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    push_status_line(&mut out, status);
    for (name, value) in headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    out
}

/// Appends a chunk's size line (`<hex>\r\n`) for `len` (non-zero) bytes of data; the writer
/// sends the data and `\r\n` after it without copying them next to the line.
pub fn chunk_line(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len > 0, "an empty chunk would end the body");
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for d in (0..digits).rev() {
        out.push(super::HEX[(len >> (d * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk (`<hex>\r\n<data>\r\n`). Empty data appends nothing,
/// since an empty chunk would be read as the end of the body.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    chunk_line(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Decodes `%XX` escapes and `+` as space (form style). `None` on a bad
/// escape or if the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                (hi * 16 + lo) as u8
            }
            b'+' => b' ',
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=2` pairs as they are written (a pair without `=` has an empty value).
fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn decoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw_pairs(query).filter_map(|(k, v)| Some((percent_decode(k)?, percent_decode(v)?)))
}

/// `a=1&b=2` pairs, percent-decoded; pairs that do not decode are skipped.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    decoded_pairs(query).collect()
}

/// Value of the first pair named `name`.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    // Only the value asked for is decoded (a connect asks for several names, and the
    // subscriptions value is long); a pair that does not decode is skipped, as in
    // `query_pairs`.
    raw_pairs(query?).find_map(|(k, v)| {
        let named = if k.bytes().any(|b| b == b'%' || b == b'+') {
            percent_decode(k).is_some_and(|k| k == name)
        } else {
            k == name
        };
        if named {
            percent_decode(v)
        } else {
            None
        }
    })
}

/// Every `name=value` from every `Cookie` header, in order; values trimmed,
/// surrounding double quotes kept. Non-UTF-8 headers and nameless pairs are
/// skipped.
pub fn cookies(head: &RequestHead) -> Vec<(String, String)> {
    head.header_values("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()).then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_head_bytes: 4096,
            max_headers: 32,
            max_uri_bytes: 256,
            max_body_bytes: 1000,
        }
    }

    fn parse(raw: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(raw, &limits())
    }

    fn head(raw: &[u8]) -> RequestHead {
        let (h, len) = parse(raw).unwrap().unwrap();
        assert_eq!(len, raw.len());
        h
    }

    fn err(raw: &[u8]) -> HttpError {
        parse(raw).unwrap_err()
    }

    #[test]
    fn chunk_lines() {
        let mut plain = b"HEAD".to_vec();
        push_chunk(&mut plain, b"hello");
        assert_eq!(plain, b"HEAD5\r\nhello\r\n");
        for (len, line) in [
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (300, "12c"),
            (65536, "10000"),
        ] {
            let mut out = Vec::new();
            chunk_line(&mut out, len);
            assert_eq!(out, format!("{line}\r\n").as_bytes(), "{len}");
        }
    }

    #[test]
    fn simple_get() {
        let h =
            head(b"GET /x/y?a=1&b=%20 HTTP/1.1\r\nHost: h\r\nX-Thing: 1\r\nx-thing:  2 \r\n\r\n");
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.method_str, "GET");
        assert_eq!(h.path, "/x/y");
        assert_eq!(h.query.as_deref(), Some("a=1&b=%20"));
        assert_eq!(h.version_minor, 1);
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.header("x-thing"), Some(&b"1"[..]));
        assert_eq!(h.header_values("x-thing").count(), 2);
        assert_eq!(h.header_str("host"), Some("h"));
        assert_eq!(h.headers.field(1).0, "x-thing");
    }

    #[test]
    fn head_len_excludes_body_and_counts_leading_crlf() {
        let raw = b"\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET";
        let (h, len) = parse(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"abcGET");
        assert_eq!(h.body, BodyKind::Length(3));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let raw = b"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\n";
        for i in 0..raw.len() {
            assert_eq!(
                parse(&raw[..i]).unwrap().map(|(_, n)| n),
                None,
                "prefix {i}"
            );
        }
        assert!(parse(raw).unwrap().is_some());
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.version_minor, 0);
    }

    #[test]
    fn tokens_and_expect() {
        let h = head(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nExpect: 100-Continue\r\n\r\n",
        );
        assert!(h.has_token("connection", "upgrade"));
        assert!(h.has_token("upgrade", "websocket"));
        assert!(!h.has_token("upgrade", "h2c"));
        assert!(h.expect_continue);
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), bad("missing Host header"));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
            HttpError::VersionNotSupported
        );
        assert_eq!(err(b"GET / HTTP/1.2\r\n\r\n").status(), 505);
        assert_eq!(err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status(), 505);
        assert_eq!(err(b"GET / FTP/1.1\r\n\r\n").status(), 400);
    }

    #[test]
    fn targets() {
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query), ("*", None));
        assert_eq!(err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET foo HTTP/1.1\r\nHost: h\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n").status(),
            400
        );
        let h = head(b"GET HTTP://h:1/p/q?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/p/q", Some("x=1")));
        let h = head(b"GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/", Some("x")));
        let h = head(b"GET https://h HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/", None));
        assert_eq!(
            head(b"get / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Method::Other
        );
    }

    #[test]
    fn uri_too_long_even_when_incomplete() {
        let mut raw = b"GET /".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 255));
        assert_eq!(parse(&raw), Ok(None));
        raw.push(b'a');
        assert_eq!(parse(&raw), Err(HttpError::UriTooLong { limit: 256 }));
        let mut whole = b"GET /".to_vec();
        whole.extend(std::iter::repeat_n(b'a', 300));
        whole.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err(&whole).status(), 414);
        let mut garbage = b"GE\nT /".to_vec();
        garbage.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(err(&garbage).status(), 400);
    }

    #[test]
    fn head_too_large() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        raw.resize(4096, b'p');
        assert_eq!(parse(&raw[..4095]), Ok(None));
        assert_eq!(parse(&raw), Err(HttpError::HeadTooLarge { limit: 4096 }));
        // A complete head that fits is fine even if the buffer holds more.
        let mut ok = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        ok.resize(10_000, b'z');
        assert!(parse(&ok).unwrap().is_some());
    }

    #[test]
    fn too_many_headers() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..32 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(err(&raw), HttpError::TooManyHeaders { limit: 32 });
        assert_eq!(err(&raw).status(), 431);
    }

    #[test]
    fn invalid_header_bytes() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn body_framing() {
        let chunked = head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.body, BodyKind::Chunked);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HttpError::UnsupportedTransferEncoding("gzip".into())
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            400
        );
        let same = head(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(same.body, BodyKind::Length(5));
        for bad_cl in [&b"5, 6"[..], b"+5", b"-1", b"", b"0x10", b"1 0"] {
            let mut raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ".to_vec();
            raw.extend_from_slice(bad_cl);
            raw.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                err(&raw).status(),
                400,
                "{:?}",
                String::from_utf8_lossy(bad_cl)
            );
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n"),
            HttpError::BodyTooLarge { limit: 1000 }
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .status(),
            413
        );
        let exact = head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(exact.body, BodyKind::Length(1000));
    }

    #[test]
    fn length_reader_stops_at_end() {
        let mut r = BodyReader::new(BodyKind::Length(5), 1000);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"abc", &mut out), Ok((3, false)));
        assert_eq!(r.feed(b"defGET", &mut out), Ok((2, true)));
        assert_eq!(r.feed(b"more", &mut out), Ok((0, true)));
        assert_eq!(out, b"abcde");
        let mut none = BodyReader::new(BodyKind::None, 1000);
        assert_eq!(none.feed(b"GET", &mut out), Ok((0, true)));
    }

    fn decode_all(input: &[u8], max: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut r = BodyReader::new(BodyKind::Chunked, max);
        let mut out = Vec::new();
        let (n, done) = r.feed(input, &mut out)?;
        Ok((out, n, done))
    }

    #[test]
    fn chunked_basic() {
        let raw = b"4\r\nWiki\r\n5;ext=\"a;b\"\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, n, done) = decode_all(raw, 1000).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert!(done);
        assert_eq!(&raw[n..], b"NEXT");
    }

    #[test]
    fn chunked_errors() {
        for raw in [
            &b"g\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n",
            b"4\r\nWiki\rX",
            b"0\r\nTrailer: x\n\r\n",
            b"0\r\n\rX",
            b"0x4\r\n",
            b"4;a\nb\r\n",
        ] {
            assert_eq!(decode_all(raw, 1000).unwrap_err().status(), 400, "{raw:?}");
        }
        assert_eq!(
            decode_all(b"ffffffffffffffffff\r\n", usize::MAX)
                .unwrap_err()
                .status(),
            400
        );
        let long = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        assert_eq!(
            decode_all(&long, 1000).unwrap_err(),
            bad("chunk size line too long")
        );
        let big_trailer = [b"0\r\nX: ".as_slice(), &[b'y'; MAX_TRAILER_BYTES]].concat();
        assert_eq!(decode_all(&big_trailer, 1000).unwrap_err().status(), 400);
    }

    #[test]
    fn chunked_limit_before_append() {
        let mut r = BodyReader::new(BodyKind::Chunked, 10);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"8\r\n12345678\r\n", &mut out), Ok((13, false)));
        assert_eq!(
            r.feed(b"3", &mut out),
            Err(HttpError::BodyTooLarge { limit: 10 })
        );
        assert_eq!(out.len(), 8);
        assert_eq!(decode_all(b"1000000000000", 10).unwrap_err().status(), 413);
        assert!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10).unwrap().2);
    }

    fn encode_chunked(chunks: &[Vec<u8>], ext: bool, trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            if ext {
                out.extend_from_slice(format!("{:X} ;name=v\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            } else {
                push_chunk(&mut out, c);
            }
        }
        out.extend_from_slice(if trailers {
            b"0\r\nA: b\r\nC: d\r\n\r\n"
        } else {
            LAST_CHUNK
        });
        out
    }

    proptest! {
        #[test]
        fn chunked_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8),
            ext in any::<bool>(),
            trailers in any::<bool>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut wire = encode_chunked(&chunks, ext, trailers);
            let body_len = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            points.dedup();

            let mut r = BodyReader::new(BodyKind::Chunked, 10_000);
            let mut out = Vec::new();
            let mut consumed = 0;
            let mut finished = false;
            for w in points.windows(2) {
                let piece = &wire[w[0]..w[1]];
                let (n, done) = r.feed(piece, &mut out).unwrap();
                consumed += n;
                prop_assert!(n == piece.len() || done);
                if done {
                    finished = true;
                    break;
                }
            }
            prop_assert!(finished);
            prop_assert_eq!(consumed, body_len);
            prop_assert_eq!(out, chunks.concat());
        }

        #[test]
        fn chunked_split_agrees_with_whole(
            raw in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'3'), Just(b';'), any::<u8>()],
                0..80,
            ),
        ) {
            let whole = decode_all(&raw, 64);
            let mut r = BodyReader::new(BodyKind::Chunked, 64);
            let mut out = Vec::new();
            let mut split = Ok((Vec::new(), 0, false));
            for (i, b) in raw.iter().enumerate() {
                match r.feed(std::slice::from_ref(b), &mut out) {
                    Err(e) => { split = Err(e); break; }
                    Ok((_, true)) => { split = Ok((out.clone(), i + 1, true)); break; }
                    Ok(_) => split = Ok((out.clone(), i + 1, false)),
                }
            }
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn parse_head_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&raw, &limits());
        }

        #[test]
        fn head_split_anywhere(split in 0usize..64) {
            let raw = b"\r\nPUT /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
            let head_len = raw.len() - 2;
            let split = split.min(raw.len());
            match parse(&raw[..split]).unwrap() {
                None => prop_assert!(split < head_len),
                Some((_, n)) => prop_assert_eq!(n, head_len),
            }
        }
    }

    #[test]
    fn responses() {
        let r = response(404, &[("content-type", "text/plain")], b"nope", false);
        assert_eq!(
            r,
            b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
        );
        let r = response(204, &[], b"", true);
        assert_eq!(r, b"HTTP/1.1 204 No Content\r\n\r\n");
        let r = response(200, &[("x", "a\r\nset-cookie: evil")], b"", true);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nx: aset-cookie: evil\r\ncontent-length: 0\r\n\r\n"
        );
        let r = streaming_head(200, &[("content-type", "text/event-stream")]);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        push_chunk(&mut out, b"");
        push_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
        assert_eq!(&out[out.len() - 2..], b"\r\n");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode_all(&out, 100).unwrap().0, [b'x'; 26]);
        for code in [
            100, 101, 200, 201, 202, 204, 400, 401, 403, 404, 405, 406, 408, 410, 411, 413, 414,
            415, 426, 429, 431, 500, 501, 502, 503, 504, 505,
        ] {
            assert!(!reason(code).is_empty(), "{code}");
        }
        assert!(response(299, &[], b"", true).starts_with(b"HTTP/1.1 299 \r\n"));
    }

    #[test]
    fn error_statuses() {
        assert_eq!(HttpError::UriTooLong { limit: 1 }.status(), 414);
        assert_eq!(HttpError::HeadTooLarge { limit: 1 }.status(), 431);
        assert_eq!(HttpError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(
            HttpError::UnsupportedTransferEncoding("x".into()).status(),
            501
        );
        assert_eq!(
            HttpError::VersionNotSupported.to_string(),
            "HTTP version not supported"
        );
    }

    #[test]
    fn percent_and_query() {
        assert_eq!(percent_decode("a%20b+c%2B").as_deref(), Some("a b c+"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(
            query_pairs("a=1&&b&c=x%3Dy&bad=%g1&a=2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "x=y".into()),
                ("a".into(), "2".into()),
            ]
        );
        assert_eq!(query_param(Some("a=1&a=2"), "a").as_deref(), Some("1"));
        assert_eq!(query_param(Some("a=1"), "b"), None);
        assert_eq!(query_param(None, "a"), None);
        assert_eq!(query_param(Some("a=%ZZ&a=2"), "a").as_deref(), Some("2"));
        assert_eq!(
            query_param(Some("a%62=x+y&ab=z"), "ab").as_deref(),
            Some("x y")
        );
        assert_eq!(query_param(Some("b=%ZZ&a=1"), "a").as_deref(), Some("1"));
    }

    #[test]
    fn cookie_parsing() {
        let h = head(b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=b; c = \"d e\" ;junk\r\ncookie: t=x=y;\r\n\r\n");
        assert_eq!(
            cookies(&h),
            vec![
                ("a".into(), "b".into()),
                ("c".into(), "\"d e\"".into()),
                ("t".into(), "x=y".into()),
            ]
        );
    }
}
