//! The session blacklist on the internal port, with RIG's bodies and codes:
//! `POST /v3/session-blacklist` `{"sessionId": "...", "validityInSeconds": 60}` -> 201 `{}` and
//! `location`; `GET /v3/session-blacklist/:id` -> 200 `{}` or 404 `Not found.`. An entry ends
//! the session's connections on every shard and refuses its token until it expires. With Kafka,
//! entries also go through the control topic that every node reads, so an entry added on one
//! node takes effect on all (the POST answers after the broker acknowledged it).

use super::{Outcome, Resp};
use crate::auth::blacklist::now_ms;
use crate::broker::{ProduceError, ProduceRecord};
use crate::proto::control::{self, ControlRecord};
use crate::route::Control;
use crate::runtime::shard::Shard;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::rc::Rc;

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(64).collect()
}

/// Why a blacklist request was refused (the client's), in RIG's words.
#[derive(Debug, thiserror::Error)]
enum BadEntry {
    #[error("Expected a JSON object with sessionId and validityInSeconds: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("Missing value for \"sessionId\"")]
    NoSession,
    #[error("Expected non-empty string, got {0}")]
    SessionNotString(String),
    #[error("Expected a sessionId of at most {MAX_SESSION_ID} bytes")]
    SessionTooLong,
    #[error("Missing value for \"validityInSeconds\"")]
    NoValidity,
    #[error("Expected a number, got {0}")]
    NotNumber(String),
    #[error("Expected a positive number, got {0}")]
    NotPositive(String),
}

const MAX_SESSION_ID: usize = 1024;

/// RIG's validation messages.
fn parse(body: &[u8]) -> Result<(String, u64), BadEntry> {
    let v: Value = serde_json::from_slice(body)?;
    let session = match v.get("sessionId") {
        None | Some(Value::Null) => return Err(BadEntry::NoSession),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(BadEntry::SessionNotString(short(other))),
    };
    if session.len() > MAX_SESSION_ID {
        return Err(BadEntry::SessionTooLong);
    }
    let secs = match v.get("validityInSeconds") {
        None | Some(Value::Null) => return Err(BadEntry::NoValidity),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let raw = v.get("validityInSeconds").map(short).unwrap_or_default();
    match secs {
        None => Err(BadEntry::NotNumber(raw)),
        Some(s) if s.is_nan() || s <= 0.0 || !s.is_finite() => Err(BadEntry::NotPositive(raw)),
        // At most ten years: the expiry must stay representable.
        Some(s) => Ok((session, (s.min(315_360_000.0) * 1000.0) as u64)),
    }
}

pub async fn add(shard: &Rc<Shard>, body: &[u8]) -> Outcome {
    let (session, validity_ms) = match parse(body) {
        Ok(p) => p,
        Err(e) => return Resp::text(400, e.to_string()).into(),
    };
    let until_ms = now_ms() + validity_ms;
    if let Some(broker) = &shard.globals.broker {
        let record = ProduceRecord {
            topic: broker.control_topic.clone(),
            key: Some(session.clone().into_bytes()),
            value: control::encode(&ControlRecord::Blacklist {
                session: session.clone(),
                until_ms,
            }),
            headers: Vec::new(),
            avro_subject: None,
        };
        match broker.produce(record).await {
            Ok(_) => {}
            Err(e @ ProduceError::Unavailable(_)) => {
                return Resp::text(503, format!("{e}; the entry was not stored"))
                    .header("retry-after", "5")
                    .into()
            }
            Err(e @ (ProduceError::Rejected(_) | ProduceError::Invalid(_))) => {
                return Resp::text(
                    502,
                    format!(
                        "{e} (control topic {:?}); the entry was not stored",
                        broker.control_topic
                    ),
                )
                .into()
            }
        }
    }
    // Applied here at once; other nodes (and this one again, harmlessly) read it from Kafka.
    shard
        .publish_wait(Control::Blacklist {
            session: session.as_str().into(),
            until_ms,
        })
        .await;
    Resp::json(201, b"{}".to_vec())
        .header(
            "location",
            format!("/v3/session-blacklist/{}", encode_segment(&session)),
        )
        .into()
}

/// Everything but RFC 3986's unreserved characters is percent-encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment (the session id in `location`).
fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn check(shard: &Shard, session: &str) -> Outcome {
    let session =
        crate::proto::http1::percent_decode(session).unwrap_or_else(|| session.to_string());
    if shard.sessions.borrow().is_blacklisted(&session, now_ms()) {
        Resp::json(200, b"{}".to_vec()).into()
    } else {
        Resp::text(404, "Not found.").into()
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn rigs_validation_messages() {
        assert_eq!(
            parse(br#"{"validityInSeconds":1}"#)
                .unwrap_err()
                .to_string(),
            "Missing value for \"sessionId\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"","validityInSeconds":1}"#)
                .unwrap_err()
                .to_string(),
            "Expected non-empty string, got \"\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s"}"#).unwrap_err().to_string(),
            "Missing value for \"validityInSeconds\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":"x"}"#)
                .unwrap_err()
                .to_string(),
            "Expected a number, got \"x\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":-3}"#)
                .unwrap_err()
                .to_string(),
            "Expected a positive number, got -3"
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":"60"}"#).unwrap(),
            ("s".into(), 60_000)
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":1.5}"#).unwrap(),
            ("s".into(), 1_500)
        );
    }
}
