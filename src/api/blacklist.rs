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
use serde_json::Value;
use std::rc::Rc;

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(64).collect()
}

/// RIG's validation messages.
fn parse(body: &[u8]) -> Result<(String, u64), String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("Expected a JSON object with sessionId and validityInSeconds: {e}"))?;
    let session = match v.get("sessionId") {
        None | Some(Value::Null) => return Err("Missing value for \"sessionId\"".into()),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => return Err(format!("Expected non-empty string, got {}", short(other))),
    };
    if session.len() > 1024 {
        return Err("Expected a sessionId of at most 1024 bytes".into());
    }
    let secs = match v.get("validityInSeconds") {
        None | Some(Value::Null) => return Err("Missing value for \"validityInSeconds\"".into()),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let raw = v.get("validityInSeconds").map(short).unwrap_or_default();
    match secs {
        None => Err(format!("Expected a number, got {raw}")),
        Some(s) if s.is_nan() || s <= 0.0 || !s.is_finite() => {
            Err(format!("Expected a positive number, got {raw}"))
        }
        // At most ten years: the expiry must stay representable.
        Some(s) => Ok((session, (s.min(315_360_000.0) * 1000.0) as u64)),
    }
}

pub async fn add(shard: &Rc<Shard>, body: &[u8]) -> Outcome {
    let (session, validity_ms) = match parse(body) {
        Ok(p) => p,
        Err(e) => return Resp::text(400, e).into(),
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
        };
        match broker.produce(record).await {
            Ok(_) => {}
            Err(e @ ProduceError::Unavailable(_)) => {
                return Resp::text(503, format!("{e}; the entry was not stored"))
                    .header("retry-after", "5")
                    .into()
            }
            Err(e @ ProduceError::Rejected(_)) => {
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
        .broadcast(Control::Blacklist {
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

/// Percent-encodes a path segment (the session id in `location`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
            parse(br#"{"validityInSeconds":1}"#).unwrap_err(),
            "Missing value for \"sessionId\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"","validityInSeconds":1}"#).unwrap_err(),
            "Expected non-empty string, got \"\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s"}"#).unwrap_err(),
            "Missing value for \"validityInSeconds\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":"x"}"#).unwrap_err(),
            "Expected a number, got \"x\""
        );
        assert_eq!(
            parse(br#"{"sessionId":"s","validityInSeconds":-3}"#).unwrap_err(),
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
