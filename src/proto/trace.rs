//! W3C Trace Context (`traceparent`, `tracestate`): taken from a request when valid, else a new
//! trace is started; either way the gateway's own span id goes upstream as the parent, and
//! the same values go into produced CloudEvents (the distributed-tracing extension) and the
//! request log.

/// The context a proxied request carries on. Ids are kept as their hex digits in arrays:
/// one is made for every proxied request, and three `String`s per request were a fifth of
/// its allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    trace_id: [u8; 32],
    /// This hop's span: 16 lower-case hex digits.
    span_id: [u8; 16],
    /// 2 hex digits (`01` = sampled).
    flags: [u8; 2],
    /// Passed through unchanged when it was valid.
    pub tracestate: Option<String>,
}

/// Longest `tracestate` passed on (the spec allows 32 members of up to 256 bytes; vendors
/// keep them short, and we bound what a client makes us forward).
const MAX_TRACESTATE: usize = 512;

fn lower_hex(s: &[u8]) -> bool {
    s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `s` as `N` lower-case hex digits, not all zero (an all-zero id is invalid).
fn hex_id<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let id: [u8; N] = s.try_into().ok()?;
    (lower_hex(&id) && id.iter().any(|&b| b != b'0')).then_some(id)
}

fn random_hex<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [b'0'; N];
        // Sixteen digits per draw, not two: ids are made for every proxied request.
        for chunk in out.chunks_mut(16) {
            let mut r = fastrand::u64(..);
            for digit in chunk {
                *digit = super::HEX[(r & 15) as usize];
                r >>= 4;
            }
        }
        if out.iter().any(|&b| b != b'0') {
            return out;
        }
    }
}

/// `version-traceid-parentid-flags`: the version-00 layout, exactly 55 bytes; later versions
/// may append fields after another `-`.
fn parse_traceparent(v: &[u8]) -> Option<([u8; 32], [u8; 2])> {
    let v = v.trim_ascii();
    let version = v.get(..2)?;
    let dashes = [2, 35, 52].iter().all(|&i| v.get(i) == Some(&b'-'));
    let tail_ok = match v.len() {
        55 => true,
        _ => version != b"00" && v.get(55) == Some(&b'-'),
    };
    let version_ok = version != b"ff" && lower_hex(version);
    if !(dashes && tail_ok && version_ok && lower_hex(&v[53..55])) {
        return None;
    }
    hex_id::<16>(&v[36..52])?;
    Some((hex_id::<32>(&v[3..35])?, v[53..55].try_into().ok()?))
}

impl TraceContext {
    /// Continues the caller's trace when `traceparent` is valid (version 00 layout), else
    /// starts one.
    pub fn continue_or_start(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id: random_hex(),
                flags,
                tracestate: tracestate
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::trim)
                    .filter(|s| {
                        !s.is_empty()
                            && s.len() <= MAX_TRACESTATE
                            && s.bytes().all(|b| (0x20..0x7f).contains(&b))
                    })
                    .map(str::to_string),
            },
            None => TraceContext {
                trace_id: random_hex(),
                span_id: random_hex(),
                flags: *b"01",
                tracestate: None,
            },
        }
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or_default()
    }

    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or_default()
    }

    pub fn traceparent(&self) -> String {
        let mut out = Vec::with_capacity(55);
        self.write_traceparent(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the `traceparent` value (without a `String` per proxied request).
    pub fn write_traceparent(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"00-");
        out.extend_from_slice(&self.trace_id);
        out.push(b'-');
        out.extend_from_slice(&self.span_id);
        out.push(b'-');
        out.extend_from_slice(&self.flags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace_and_starts_otherwise() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_or_start(Some(incoming), Some(b"congo=t61rcWkgMzE"));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id(), "00f067aa0ba902b7");
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert!(t
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
            b"garbage",
        ] {
            let t = TraceContext::continue_or_start(Some(bad), Some(b"a=b"));
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!((&t.flags, t.tracestate.as_deref()), (b"01", None));
            assert!(hex_id::<32>(t.trace_id().as_bytes()).is_some());
            assert!(hex_id::<16>(t.span_id().as_bytes()).is_some());
        }
        // A later version may carry more fields; its first four are read as version 00's.
        for newer in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b" 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever ",
        ] {
            let t = TraceContext::continue_or_start(Some(newer), None);
            assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
}
