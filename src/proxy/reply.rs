//! A response to a waiting proxy request, in RIG's binary mode: headers `rig-correlation`
//! (the waiting request's token) and `rig-response-code`, any other headers copied to the
//! client's response, the body passed verbatim. The same shape arrives as a Kafka record on a
//! response topic or as `POST /v3/responses`.
//!
//! Copied headers are filtered: framing and hop-by-hop fields (the gateway frames the
//! response), fields that cannot be written safely, and, from HTTP posts, the fields that
//! describe the posting request itself (`host`, `authorization`, `cookie`, ...): RIG copied
//! them all, so a backend's credentials for the internal API reached the frontend.

use crate::proto::http1_client::{is_clean_value, is_hop_by_hop, is_token};
use crate::proto::token::Token;

pub const CORRELATION_HEADER: &str = "rig-correlation";
pub const STATUS_HEADER: &str = "rig-response-code";
/// Marks a record on the response topic as a request forwarded to the node that owns a
/// connection (ours; RIG nodes reached each other through Erlang distribution instead).
pub const FORWARD_HEADER: &str = "cb-forward";
/// The connection token a forwarded request is for.
pub const CONNECTION_HEADER: &str = "cb-connection";
/// Forwarded requests: a subscriptions PUT for the node that owns a connection, or a
/// presence question for every node.
pub const FORWARD_SUBSCRIPTIONS: &[u8] = b"subscriptions";
pub const FORWARD_PRESENCE: &[u8] = b"presence";
/// Users one presence question names at most.
pub const MAX_PRESENCE_USERS: usize = 1000;

/// Who of these users is connected on your node? Answered to `reply_to` with
/// `{"node": ..., "connections": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceAsk {
    pub reply_to: Token,
    /// None: every user (bounded by the answer's limit).
    pub users: Option<Vec<String>>,
}

pub fn presence_headers(ask: &PresenceAsk) -> Vec<(String, Vec<u8>)> {
    vec![
        (FORWARD_HEADER.to_string(), FORWARD_PRESENCE.to_vec()),
        (
            CORRELATION_HEADER.to_string(),
            ask.reply_to.encode_correlation().into_bytes(),
        ),
    ]
}

/// A presence question, if the record is one; Err when it is malformed.
pub fn parse_presence_ask<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    body: &[u8],
) -> Option<Result<PresenceAsk, ReplyError>> {
    let get = |name: &str| {
        headers
            .clone()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if get(FORWARD_HEADER)? != FORWARD_PRESENCE {
        return None;
    }
    let reply_to = get(CORRELATION_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| Token::decode_correlation(v.trim()));
    let Some(reply_to) = reply_to else {
        return Some(Err(ReplyError::BadCorrelation));
    };
    let users = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("users")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .take(MAX_PRESENCE_USERS)
                    .collect()
            })
        });
    Some(Ok(PresenceAsk { reply_to, users }))
}

/// Headers copied to a client at most, and their bytes.
const MAX_COPIED: usize = 64;
const MAX_COPIED_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub token: Token,
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why a response cannot be delivered (the sender's fault). RIG answered these with
/// `400 Failed to parse request body: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("missing {CORRELATION_HEADER} header")]
    NoCorrelation,
    #[error("{CORRELATION_HEADER} is not a correlation id issued by this gateway")]
    BadCorrelation,
    #[error("missing {STATUS_HEADER} header")]
    NoStatus,
    /// RIG's own words for a status that is not a number.
    #[error("{{:error, {{:not_an_integer, {0:?}}}}}")]
    NotAnInteger(String),
    #[error("{STATUS_HEADER} {0} is not an HTTP status (100-599)")]
    OutOfRange(i64),
}

impl crate::error::Blame for ReplyError {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Client
    }
}

/// Where the headers come from decides which describe the carrier rather than the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Kafka,
    Http,
}

fn describes_http_request(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "user-agent"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "authorization"
            | "proxy-authorization"
            | "cookie"
            | "expect"
            | "origin"
            | "referer"
            | "forwarded"
            | "x-real-ip"
            | "range"
            | "traceparent"
            | "tracestate"
    ) || name.starts_with("x-forwarded-")
        || name.starts_with("if-")
        || name.starts_with("sec-")
}

/// The reply headers: (correlation, status, the ones copied to the client).
type Split<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Vec<(String, Vec<u8>)>);

fn split<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>, carrier: Carrier) -> Split<'a> {
    let mut correlation = None;
    let mut status = None;
    let mut copied: Vec<(String, Vec<u8>)> = Vec::new();
    let mut copied_bytes = 0;
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            CORRELATION_HEADER => correlation = Some(value),
            STATUS_HEADER => status = Some(value),
            n if is_hop_by_hop(n) || n == "content-length" => {}
            n if carrier == Carrier::Http && describes_http_request(n) => {}
            n if is_token(n) && is_clean_value(value) => {
                copied_bytes += n.len() + value.len();
                if copied.len() < MAX_COPIED && copied_bytes <= MAX_COPIED_BYTES {
                    copied.push((name, value.to_vec()));
                }
            }
            _ => {}
        }
    }
    (correlation, status, copied)
}

fn status_code(raw: &[u8]) -> Result<u16, ReplyError> {
    let text = String::from_utf8_lossy(raw);
    let code: i64 = text
        .trim()
        .parse()
        .map_err(|_| ReplyError::NotAnInteger(text.to_string()))?;
    if !(100..=599).contains(&code) {
        return Err(ReplyError::OutOfRange(code));
    }
    Ok(code as u16)
}

pub fn parse<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: Vec<u8>,
    carrier: Carrier,
) -> Result<Reply, ReplyError> {
    let (correlation, status, copied) = split(headers, carrier);
    let correlation = correlation.ok_or(ReplyError::NoCorrelation)?;
    let token = std::str::from_utf8(correlation)
        .ok()
        .and_then(|s| Token::decode_correlation(s.trim()))
        .ok_or(ReplyError::BadCorrelation)?;
    let status = status_code(status.ok_or(ReplyError::NoStatus)?)?;
    Ok(Reply {
        token,
        status,
        headers: copied,
        body,
    })
}

/// A NATS reply to the proxy's request (`target: nats`, `response_from: nats`): the reply
/// subject already pairs it with its request, so no correlation header; the status is
/// `rig-response-code` when the replier sets one, else 200; other headers as for Kafka.
pub fn from_nats<'a>(
    token: Token,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: Vec<u8>,
) -> Result<Reply, ReplyError> {
    let (_, status, copied) = split(headers, Carrier::Kafka);
    Ok(Reply {
        token,
        status: status.map_or(Ok(200), status_code)?,
        headers: copied,
        body,
    })
}

/// A response on a Kinesis stream, whose records have no headers: a JSON object with the same
/// names, `{"rig-correlation": "...", "rig-response-code": 200, "headers": {"name": "value"},
/// "body": ...}`. A string `body` is passed verbatim, any other JSON value as its JSON text.
pub fn parse_envelope(data: &[u8]) -> Result<Reply, ReplyError> {
    let v: serde_json::Value =
        serde_json::from_slice(data).map_err(|_| ReplyError::NoCorrelation)?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [CORRELATION_HEADER, STATUS_HEADER] {
        if let Some(x) = v.get(name) {
            fields.push((name.to_string(), text(x)));
        }
    }
    if let Some(h) = v.get("headers").and_then(|h| h.as_object()) {
        for (n, x) in h {
            fields.push((n.clone(), text(x)));
        }
    }
    let body = v.get("body").map(text).unwrap_or_default();
    parse(
        fields.iter().map(|(n, x)| (n.as_str(), x.as_slice())),
        body,
        Carrier::Kafka,
    )
}

/// A subscriptions PUT for a connection of another node, on its way to that node: what the
/// owner needs to run it as if it had arrived there, and where to send the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The connection token as the client sent it.
    pub connection: String,
    /// The waiting request on the node that took the PUT.
    pub reply_to: Token,
    /// The PUT's `authorization` values (JWT checks and automatic subscriptions run on the
    /// owner).
    pub authorization: Vec<Vec<u8>>,
    pub body: Vec<u8>,
}

/// The record headers of a forwarded PUT.
pub fn forward_headers(f: &Forwarded) -> Vec<(String, Vec<u8>)> {
    let mut h = vec![
        (FORWARD_HEADER.to_string(), FORWARD_SUBSCRIPTIONS.to_vec()),
        (
            CONNECTION_HEADER.to_string(),
            f.connection.clone().into_bytes(),
        ),
        (
            CORRELATION_HEADER.to_string(),
            f.reply_to.encode_correlation().into_bytes(),
        ),
    ];
    for a in &f.authorization {
        h.push(("authorization".to_string(), a.clone()));
    }
    h
}

/// A forwarded PUT, if the record is one (None: an ordinary response); Err when it is
/// malformed.
pub fn parse_forwarded<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    body: &[u8],
) -> Option<Result<Forwarded, ReplyError>> {
    let get = |name: &str| {
        headers
            .clone()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if get(FORWARD_HEADER)? != FORWARD_SUBSCRIPTIONS {
        return None;
    }
    let parse = || {
        let connection = get(CONNECTION_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(ReplyError::BadCorrelation)?
            .to_string();
        let reply_to = get(CORRELATION_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| Token::decode_correlation(v.trim()))
            .ok_or(ReplyError::BadCorrelation)?;
        let authorization = headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .take(crate::auth::jwt::MAX_BEARER_TOKENS)
            .map(|(_, v)| v.to_vec())
            .collect();
        Ok(Forwarded {
            connection,
            reply_to,
            authorization,
            body: body.to_vec(),
        })
    };
    Some(parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            node: 7,
            shard: 1,
            slot: 3,
            gen: 9,
            secret: 42,
        }
    }

    #[test]
    fn binary_mode_response_with_extra_headers() {
        let corr = token().encode_correlation();
        let hs = [
            ("rig-correlation", corr.as_bytes()),
            ("rig-response-code", &b"201"[..]),
            ("Content-Type", b"application/json"),
            ("x-extra", b"1"),
            ("content-length", b"99"),
            ("authorization", b"Bearer internal"),
            ("x-evil", b"a\r\nset-cookie: x"),
        ];
        let r = parse(hs.iter().copied(), b"{}".to_vec(), Carrier::Http).unwrap();
        assert_eq!((r.token, r.status), (token(), 201));
        assert_eq!(
            r.headers,
            vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                ("x-extra".to_string(), b"1".to_vec())
            ]
        );
        // Over Kafka, `authorization` is a header the backend chose to send.
        let r = parse(hs.iter().copied(), Vec::new(), Carrier::Kafka).unwrap();
        assert!(r.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn forwarded_puts_round_trip_and_responses_are_not_forwards() {
        let f = Forwarded {
            connection: "conn-token".into(),
            reply_to: token(),
            authorization: vec![b"Bearer a".to_vec()],
            body: b"{}".to_vec(),
        };
        let h = forward_headers(&f);
        let it = h.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        assert_eq!(parse_forwarded(it, b"{}"), Some(Ok(f)));
        let plain = [("rig-response-code", &b"200"[..])];
        assert_eq!(parse_forwarded(plain.iter().copied(), b""), None);
    }

    #[test]
    fn rigs_errors() {
        let corr = token().encode_correlation();
        let with = |code: &'static [u8]| {
            parse(
                [
                    ("rig-correlation", corr.as_bytes()),
                    ("rig-response-code", code),
                ]
                .into_iter(),
                Vec::new(),
                Carrier::Http,
            )
        };
        assert_eq!(
            with(b"abc201").unwrap_err().to_string(),
            r#"{:error, {:not_an_integer, "abc201"}}"#
        );
        assert_eq!(with(b"99").unwrap_err(), ReplyError::OutOfRange(99));
        assert_eq!(
            parse(std::iter::empty(), Vec::new(), Carrier::Http).unwrap_err(),
            ReplyError::NoCorrelation
        );
        let conn = token().encode();
        assert_eq!(
            parse(
                [
                    ("rig-correlation", conn.as_bytes()),
                    ("rig-response-code", &b"200"[..])
                ]
                .into_iter(),
                Vec::new(),
                Carrier::Http
            )
            .unwrap_err(),
            ReplyError::BadCorrelation,
            "a connection token is not a correlation token"
        );
    }
}
