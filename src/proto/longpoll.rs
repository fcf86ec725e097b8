//! RIG's long-polling wire format, sans I/O. The first `GET /_rig/v1/connection/longpolling`
//! (no live session cookie) answers `"ok"` and sets two cookies: `connection_token` (the
//! session) and `last_event_id` (a JSON string, `"first_event"` at first). Each later GET
//! carries both and is answered `{"last_event_id":"N","events":[...]}` with the events after
//! N, and the cookie moved to N. Events are the CloudEvents' JSON, unchanged.

use super::http1::{self, RequestHead};

pub const TOKEN_COOKIE: &str = "connection_token";
pub const LAST_ID_COOKIE: &str = "last_event_id";
/// RIG's initial `last_event_id`: read from the start of the session's buffer.
pub const FIRST_EVENT: &str = "first_event";
/// The body of the answer that creates a session.
pub const CREATED_BODY: &[u8] = b"\"ok\"";

/// What a poll request says about its session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PollCookies {
    /// The `connection_token` cookie, unquoted; the caller decodes it.
    pub token: Option<String>,
    /// The sequence number of the last event the client saw; None reads from the start
    /// (`first_event`, a missing cookie, or a value that is not a number).
    pub after: Option<u64>,
}

pub fn read_cookies(head: &RequestHead) -> PollCookies {
    let cookies = http1::cookies(head);
    let cookie = |name: &str| {
        cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"').to_string())
    };
    PollCookies {
        token: cookie(TOKEN_COOKIE),
        after: cookie(LAST_ID_COOKIE).and_then(|v| v.parse::<u64>().ok()),
    }
}

/// One event as a poll answer lists it: its JSON.
pub fn encode_event(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(json);
}

/// `{"last_event_id":"<last>","events":[<e>,...]}`; each event is already JSON.
pub fn response_body<E: AsRef<[u8]>>(last: u64, events: &[E]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(64 + events.iter().map(|e| e.as_ref().len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"last_event_id\":\"");
    body.extend_from_slice(last.to_string().as_bytes());
    body.extend_from_slice(b"\",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.as_ref());
    }
    body.extend_from_slice(b"]}");
    body
}

/// The two `Set-Cookie` values of every long-poll answer. `last_event_id` is a JSON string,
/// as RIG writes it.
pub fn set_cookies(token: &str, last: &str) -> [String; 2] {
    [
        format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly"),
        format!("{LAST_ID_COOKIE}=\"{last}\"; Path=/; HttpOnly"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::{parse_head, Limits};

    fn head(cookie: &str) -> RequestHead {
        let raw = format!(
            "GET /_rig/v1/connection/longpolling HTTP/1.1\r\nhost: x\r\ncookie: {cookie}\r\n\r\n"
        );
        let limits = Limits {
            max_head_bytes: 4096,
            max_headers: 16,
            max_uri_bytes: 1024,
            max_body_bytes: 0,
        };
        parse_head(raw.as_bytes(), &limits).unwrap().unwrap().0
    }

    #[test]
    fn cookies_as_rig_sets_them() {
        let c = read_cookies(&head("connection_token=abc; last_event_id=\"7\""));
        assert_eq!(c.token.as_deref(), Some("abc"));
        assert_eq!(c.after, Some(7));
        let first = read_cookies(&head("connection_token=abc; last_event_id=\"first_event\""));
        assert_eq!(first.after, None);
        let [t, l] = set_cookies("abc", FIRST_EVENT);
        assert_eq!(t, "connection_token=abc; Path=/; HttpOnly");
        assert_eq!(l, "last_event_id=\"first_event\"; Path=/; HttpOnly");
    }

    #[test]
    fn body_lists_events_as_json() {
        let body = response_body(3, &[&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(body, br#"{"last_event_id":"3","events":[{"a":1},{"b":2}]}"#);
        let v: serde_json::Value = serde_json::from_slice(&response_body::<&[u8]>(0, &[])).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 0);
    }
}
