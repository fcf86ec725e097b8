//! Sans-I/O protocol code: bytes in, values or actions out. Nothing here may open a socket or
//! file, spawn, sleep or name a runtime (`tests/layering.rs` enforces it), so every
//! parser can be unit-, property- and fuzz-tested on plain byte slices.

pub mod avro;
pub mod cloudevents;
pub mod control;
pub mod frame;
pub mod headers;
pub mod http1;
pub mod http1_client;
pub mod json;
pub mod kafka_record;
pub mod longpoll;
pub mod resume;
pub mod sse;
pub mod token;
pub mod trace;
pub mod ws;

/// The three ways a frontend receives events. Also a bounded metric label and an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse = 0,
    Ws = 1,
    LongPoll = 2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Sse, Transport::Ws, Transport::LongPoll];
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// Lower-case hex digits, by value.
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `n` in decimal. `write!` goes through the formatting machinery, which cost a
/// proxied request more instructions than its routing (callgrind).
pub(crate) fn push_dec(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends an IPv4 address in dotted decimal.
pub(crate) fn push_ipv4(out: &mut Vec<u8>, ip: core::net::Ipv4Addr) {
    // Into a stack buffer, then one copy: two per proxied request (`forwarded`).
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.extend_from_slice(&text[..len]);
}

/// Appends `b` as two lower-case hex digits.
pub(crate) fn push_hex(out: &mut String, b: u8) {
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// A field value (or SSE field) carries no CR, LF or NUL, which would end the field, the line
/// or the head. Every value of every proxied head passes here; memchr looks at 16-32 bytes a
/// step.
pub fn is_clean_value(v: &[u8]) -> bool {
    memchr::memchr3(b'\r', b'\n', 0, v).is_none()
}

/// Appends `v` without its CR, LF and NUL bytes (copied whole in the usual case that it has
/// none). Removing ASCII bytes from UTF-8 leaves valid UTF-8.
pub(crate) fn push_clean(out: &mut Vec<u8>, v: &[u8]) {
    if is_clean_value(v) {
        out.extend_from_slice(v);
    } else {
        out.extend(v.iter().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
    }
}

/// `s` without optional whitespace (RFC 9110 §5.6.3) at either end.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether any of a field's `values` lists `token` (comma-separated, case-insensitive).
pub(crate) fn has_token<'a>(mut values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    values.any(|v| {
        v.split(|&b| b == b',')
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Why a message's Content-Length cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadLength {
    Invalid,
    Conflicting,
}

/// The length all `Content-Length` values (each possibly a list) agree on; `None` without any.
/// More digits than a `u64` holds read as `u64::MAX`, over any limit. Read in place: a proxied
/// request reads two of these, and collecting the values first was an allocation each.
pub(crate) fn content_length<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<u64>, BadLength> {
    let mut length = None;
    for element in values.flat_map(|v| v.split(|&b| b == b',')) {
        let digits = trim_ows(element);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BadLength::Invalid);
        }
        let n = digits
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .unwrap_or(u64::MAX);
        if length.is_some_and(|prev| prev != n) {
            return Err(BadLength::Conflicting);
        }
        length = Some(n);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::{content_length, BadLength};

    #[test]
    fn content_length_values_must_agree() {
        let read = |values: &[&str]| content_length(values.iter().map(|v| v.as_bytes()));
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[" 5 ", "5,5"]), Ok(Some(5)));
        assert_eq!(read(&["5", "6"]), Err(BadLength::Conflicting));
        for bad in ["", "5,", "-1", "0x10", "5 5"] {
            assert_eq!(read(&[bad]), Err(BadLength::Invalid), "{bad:?}");
        }
        assert_eq!(read(&["99999999999999999999999"]), Ok(Some(u64::MAX)));
    }

    #[test]
    fn decimal_and_ipv4_as_display_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 65_535, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            super::push_dec(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.255",
            "255.255.255.255",
            "9.10.99.100",
        ] {
            let mut out = Vec::new();
            super::push_ipv4(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip.as_bytes());
        }
    }
}
