//! One event in each transport's wire form: an SSE event, a WebSocket text frame, or the
//! event's JSON as a long-poll response carries it. Shards encode an event once per transport
//! and share the bytes with every session that gets it; a batch frame is several of these back
//! to back.

use super::{longpoll, sse, ws, Transport};

/// One event's wire form in a new buffer.
pub fn encode(t: Transport, id: &str, event_type: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + event_type.len() + id.len() + 24);
    encode_into(&mut out, t, id, event_type, json);
    out
}

/// Appends one event's wire form. `json` is compact (no raw newlines), so for SSE it is one
/// `data:` line.
pub fn encode_into(out: &mut Vec<u8>, t: Transport, id: &str, event_type: &str, json: &[u8]) {
    match t {
        Transport::Sse => sse::encode_event_bytes(out, Some(id), Some(event_type), json),
        Transport::Ws => ws::encode_frame(out, ws::OpCode::Text, json),
        Transport::LongPoll => longpoll::encode_event(out, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_frames_the_event_once() {
        let json = br#"{"type":"a","n":1}"#;
        assert_eq!(
            encode(Transport::Sse, "0-1", "a", json),
            b"id: 0-1\nevent: a\ndata: {\"type\":\"a\",\"n\":1}\n\n"
        );
        let ws = encode(Transport::Ws, "0-1", "a", json);
        assert_eq!((ws[0], ws[1] as usize), (0x81, json.len()));
        assert_eq!(&ws[2..], json);
        assert_eq!(encode(Transport::LongPoll, "0-1", "a", json), json);
    }
}
