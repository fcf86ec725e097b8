//! Server-Sent Events (WHATWG HTML "Server-sent events"): encoding events and
//! comments onto a `text/event-stream`, plus a spec-following parser used by
//! tests and the load-test client.
//!
//! This module is sans-I/O and knows nothing of HTTP framing or timers: the
//! caller chunks the bytes and decides when to send a heartbeat. The encoder
//! must never let a value start a new field or event, so `id` and `event` lose
//! CR, LF and NUL, and multi-line data becomes one `data:` line per line.

pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Calls `f` for each line of `s`, splitting on CRLF, CR or LF as the parser
/// does. A trailing line break yields a final empty line, so it survives.
fn for_each_line(s: &[u8], mut f: impl FnMut(&[u8])) {
    let mut rest = s;
    // memchr: a `str::find` with a char-set pattern decodes every char, and each new
    // connection's two RIG events made that a seventh of its user-space instructions.
    while let Some(i) = memchr::memchr2(b'\r', b'\n', rest) {
        f(&rest[..i]);
        let skip = if rest[i..].starts_with(b"\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    f(rest);
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    super::push_clean(out, value.as_bytes());
    out.push(b'\n');
}

/// Appends one event: `id:` and `event:` if given, a `data:` line per line of
/// `data`, then the blank line that dispatches it. An `event` that is empty
/// after stripping is left out, since the parser treats it as absent anyway.
pub fn encode_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &str) {
    encode_event_bytes(out, id, event, data.as_bytes());
}

/// [`encode_event`] for data that is UTF-8 already (a JSON document), without checking again.
/// Lines break at CR and LF bytes only, which never occur inside a UTF-8 sequence.
pub fn encode_event_bytes(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    if let Some(id) = id {
        push_field(out, "id", id);
    }
    if let Some(event) = event {
        if event.bytes().any(|b| !matches!(b, b'\r' | b'\n' | 0)) {
            push_field(out, "event", event);
        }
    }
    for_each_line(data, |line| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    });
    out.push(b'\n');
}

/// Appends a comment (one `:` line per line of `text`) and a blank line;
/// `comment(out, "heartbeat")` writes [`HEARTBEAT`].
pub fn comment(out: &mut Vec<u8>, text: &str) {
    for_each_line(text.as_bytes(), |line| {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line);
        out.push(b'\n');
    });
    out.push(b'\n');
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The stream's last event ID when this event was dispatched (it persists
    /// across events, as `MessageEvent.lastEventId` does); `None` if no `id`
    /// field has been seen yet.
    pub id: Option<String>,
    /// `None` for the default `message` type.
    pub event: Option<String>,
    pub data: String,
}

/// Incremental event-stream parser following the WHATWG "event stream
/// interpretation". Lines may be split across `feed` calls at any byte,
/// including inside a CRLF or a UTF-8 sequence. Line and event sizes are not
/// bounded: it is meant for reading this gateway's own streams in tests and
/// the load-test client, never for input from an untrusted peer.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte was CR, so a leading LF is part of that line break.
    after_cr: bool,
    seen_first_line: bool,
    data: String,
    event: String,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reconnection time from the last valid `retry:` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Message> {
        let mut messages = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&bytes[..i]);
            let line = std::mem::take(&mut self.line);
            if let Some(m) = self.process_line(&line) {
                messages.push(m);
            }
            // Reuse the allocation for the next line.
            self.line = line;
            self.line.clear();
            let crlf = bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n');
            self.after_cr = bytes[i] == b'\r' && i + 1 == bytes.len();
            bytes = &bytes[i + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(bytes);
        messages
    }

    fn process_line(&mut self, mut line: &[u8]) -> Option<Message> {
        if !self.seen_first_line {
            self.seen_first_line = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Message> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(Message {
            id: self.last_id.clone(),
            event: (!event.is_empty()).then_some(event),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(id: Option<&str>, event: Option<&str>, data: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_event(&mut out, id, event, data);
        out
    }

    fn msg(id: Option<&str>, event: Option<&str>, data: &str) -> Message {
        Message {
            id: id.map(str::to_owned),
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn strip(s: &str) -> String {
        s.chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect()
    }

    fn normalize(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    #[test]
    fn encoding() {
        assert_eq!(encode(None, None, "hi"), b"data: hi\n\n");
        assert_eq!(
            encode(Some("7"), Some("greeting"), "a\r\nb\rc\n"),
            b"id: 7\nevent: greeting\ndata: a\ndata: b\ndata: c\ndata: \n\n"
        );
        assert_eq!(
            encode(Some("1\n\ndata: x"), Some("e\r\nid: 2"), ""),
            b"id: 1data: x\nevent: eid: 2\ndata: \n\n"
        );
        assert_eq!(encode(None, Some("\r\n"), "x"), b"data: x\n\n");
        let mut out = Vec::new();
        comment(&mut out, "heartbeat");
        assert_eq!(out, HEARTBEAT);
        let mut out = Vec::new();
        comment(&mut out, "a\nb");
        assert_eq!(out, b": a\n: b\n\n");
    }

    #[test]
    fn parser_follows_spec() {
        let mut p = Parser::new();
        let stream = "\u{feff}: hello\r\nretry: 1500\r\ndata:first\r\ndata:  second\r\n\r\n\
                      event: add\nid: 9\ndata\n\n\
                      data: only-if-terminated\rid\r\r\
                      id: a\0b\nevent: ignored-without-data\n\n\
                      foo: bar\ndata: x\n\ndata: trailing";
        let got = p.feed(stream.as_bytes());
        assert_eq!(
            got,
            vec![
                msg(None, None, "first\n second"),
                msg(Some("9"), Some("add"), ""),
                msg(Some(""), None, "only-if-terminated"),
                msg(Some(""), None, "x"),
            ]
        );
        assert_eq!(p.retry(), Some(1500));
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.feed(b"\n"), vec![msg(Some(""), None, "trailing")]);
    }

    #[test]
    fn crlf_split_across_feeds() {
        let mut p = Parser::new();
        assert!(p.feed(b"data: a\r").is_empty());
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.feed(b"\r"), vec![msg(None, None, "a")]);
        assert!(p.feed(b"\ndata: b\r\n").is_empty());
        assert_eq!(p.feed(b"\r\n"), vec![msg(None, None, "b")]);
    }

    fn feed_bytewise(wire: &[u8]) -> Vec<Message> {
        let mut p = Parser::new();
        wire.iter()
            .flat_map(|b| p.feed(std::slice::from_ref(b)))
            .collect()
    }

    proptest! {
        #[test]
        fn round_trip(
            id in proptest::option::of(any::<String>()),
            event in proptest::option::of(any::<String>()),
            data in any::<String>(),
        ) {
            let wire = encode(id.as_deref(), event.as_deref(), &data);
            let expected = Message {
                id: id.as_deref().map(strip),
                event: event.as_deref().map(strip).filter(|e| !e.is_empty()),
                data: normalize(&data),
            };
            prop_assert_eq!(Parser::new().feed(&wire), vec![expected.clone()]);
            prop_assert_eq!(feed_bytewise(&wire), vec![expected]);
        }

        #[test]
        fn stream_round_trip(
            events in proptest::collection::vec(
                (
                    proptest::option::of("[a-z0-9\r\n]{0,6}"),
                    proptest::option::of("[a-z\r\n]{0,6}"),
                    "(\\PC|[\r\n]){0,12}",
                ),
                0..6,
            ),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            let mut last_id = None;
            for (id, event, data) in &events {
                encode_event(&mut wire, id.as_deref(), event.as_deref(), data);
                wire.extend_from_slice(HEARTBEAT);
                if let Some(id) = id {
                    last_id = Some(strip(id));
                }
                expected.push(Message {
                    id: last_id.clone(),
                    event: event.as_deref().map(strip).filter(|e| !e.is_empty()),
                    data: normalize(data),
                });
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.extend([0, wire.len()]);
            points.sort_unstable();
            let mut p = Parser::new();
            let got: Vec<Message> = points.windows(2).flat_map(|w| p.feed(&wire[w[0]..w[1]])).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
