//! W3C Trace Context (`traceparent`, `tracestate`): taken from a request when valid, else a new
//! trace is started; either way the gateway's own span id goes upstream as the parent, and
//! the same values go into produced CloudEvents (the distributed-tracing extension) and the
//! request log.

/// The context a proxied request carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// This hop's span: 16 lower-case hex digits.
    pub span_id: String,
    /// 2 hex digits (`01` = sampled).
    pub flags: String,
    /// Passed through unchanged when it was valid.
    pub tracestate: Option<String>,
}

/// Longest `tracestate` passed on (the spec allows 32 members of up to 256 bytes; vendors
/// keep them short, and we bound what a client makes us forward).
const MAX_TRACESTATE: usize = 512;

fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    loop {
        out.clear();
        // Eight random bytes per draw, not one: ids are made for every proxied request.
        let mut left = bytes;
        while left > 0 {
            let r = fastrand::u64(..).to_le_bytes();
            let take = left.min(8);
            for b in &r[..take] {
                super::push_hex(&mut out, *b);
            }
            left -= take;
        }
        // All-zero ids are invalid.
        if out.bytes().any(|b| b != b'0') {
            return out;
        }
    }
}

impl TraceContext {
    /// Continues the caller's trace when `traceparent` is valid (version 00 layout), else
    /// starts one.
    pub fn continue_or_start(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        let parent = traceparent
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .and_then(|v| {
                let parts: Vec<&str> = v.split('-').collect();
                let [version, trace, parent, flags, ..] = parts[..] else {
                    return None;
                };
                let ok = hex(version, 2)
                    && version != "ff"
                    && (version != "00" || parts.len() == 4)
                    && hex(trace, 32)
                    && trace.bytes().any(|b| b != b'0')
                    && hex(parent, 16)
                    && parent.bytes().any(|b| b != b'0')
                    && hex(flags, 2);
                ok.then(|| (trace.to_string(), flags.to_string()))
            });
        match parent {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id: random_hex(8),
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
                trace_id: random_hex(16),
                span_id: random_hex(8),
                flags: "01".into(),
                tracestate: None,
            },
        }
    }

    pub fn traceparent(&self) -> String {
        let mut out = Vec::with_capacity(55);
        self.write_traceparent(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the `traceparent` value (without a `String` per proxied request).
    pub fn write_traceparent(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"00-");
        out.extend_from_slice(self.trace_id.as_bytes());
        out.push(b'-');
        out.extend_from_slice(self.span_id.as_bytes());
        out.push(b'-');
        out.extend_from_slice(self.flags.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace_and_starts_otherwise() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_or_start(Some(incoming), Some(b"congo=t61rcWkgMzE"));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert!(t
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"garbage",
        ] {
            let t = TraceContext::continue_or_start(Some(bad), Some(b"a=b"));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!((t.flags.as_str(), t.tracestate), ("01", None));
            assert!(hex(&t.trace_id, 32) && hex(&t.span_id, 16));
        }
    }
}
