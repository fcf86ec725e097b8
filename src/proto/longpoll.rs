//! RIG's long-polling wire format, sans I/O. The first `GET /_rig/v1/connection/longpolling`
//! (no live session cookie) answers `"ok"` and sets two cookies: `connection_token` (the
//! session) and `last_event_id` (a JSON string, `"first_event"` at first). Each later GET
//! carries both and is answered `{"last_event_id":"N","events":[...]}` with the events after
//! N, and the cookie moved to N. Events are the CloudEvents' JSON, unchanged.
//!
//! Where events can be resumed, the id is `N|RESUME`: RESUME is the resume id of everything
//! answered so far (`proto::resume`, with `;` `,` `%` percent-encoded so that it is a valid
//! cookie value). Clients treat the value as opaque, as with RIG; when the session is gone (a
//! restarted or another node), the next poll opens a new one that starts from RESUME.

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
    /// The resume id after `|`, decoded.
    pub resume: Option<String>,
}

/// The `last_event_id` value of an answer: `N`, or `N|RESUME` (encoded).
pub fn last_value(last: u64, resume: Option<&str>) -> String {
    let mut v = last.to_string();
    if let Some(r) = resume {
        v.push('|');
        for c in r.chars() {
            match c {
                ';' => v.push_str("%3B"),
                ',' => v.push_str("%2C"),
                '%' => v.push_str("%25"),
                '"' => v.push_str("%22"),
                '\\' => v.push_str("%5C"),
                c => v.push(c),
            }
        }
    }
    v
}

fn decode_resume(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

pub fn read_cookies(head: &RequestHead) -> PollCookies {
    let cookies = http1::cookies(head);
    let cookie = |name: &str| {
        cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"').to_string())
    };
    let last = cookie(LAST_ID_COOKIE).unwrap_or_default();
    let (after, resume) = match last.split_once('|') {
        Some((n, r)) => (n, decode_resume(r)),
        None => (last.as_str(), None),
    };
    PollCookies {
        token: cookie(TOKEN_COOKIE),
        after: after.parse::<u64>().ok(),
        resume,
    }
}

/// One event as a poll answer lists it: its JSON.
pub fn encode_event(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(json);
}

/// `{"last_event_id":"<last>","events":[<e>,...]}`; each event is already JSON.
pub fn response_body<E: AsRef<[u8]>>(last: &str, events: &[E]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(64 + events.iter().map(|e| e.as_ref().len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"last_event_id\":\"");
    body.extend_from_slice(last.as_bytes());
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
    fn resume_ids_ride_in_the_cookie() {
        let id = "~0a1b2c3d/1/7;9e3779b9:0.8,12345678:_.3";
        let v = last_value(12, Some(id));
        assert!(!v.contains(';') && !v.contains(','), "{v}");
        let c = read_cookies(&head(&format!(
            "connection_token=abc; last_event_id=\"{v}\""
        )));
        assert_eq!((c.after, c.resume.as_deref()), (Some(12), Some(id)));
        assert_eq!(last_value(3, None), "3");
    }

    #[test]
    fn body_lists_events_as_json() {
        let body = response_body("3", &[&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(body, br#"{"last_event_id":"3","events":[{"a":1},{"b":2}]}"#);
        let v: serde_json::Value =
            serde_json::from_slice(&response_body::<&[u8]>("0", &[])).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 0);
    }
}
