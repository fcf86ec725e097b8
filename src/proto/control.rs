//! The control topic's record format: what one node tells every node through Kafka: a session
//! blacklist entry, `{"blacklist":{"sessionId":"...","until":<unix ms>}}`, or a version of an
//! API definition as stored (server fields included), `{"api":{...}}`. The topic is read from
//! its beginning by every node at start, so both survive a restart of every node; records are
//! keyed (session id, `api:<id>`) so a compacted topic keeps the latest of each.

use serde_json::{Map, Value};

/// One control record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRecord {
    /// End the session's connections and refuse its tokens until `until_ms` (Unix ms).
    Blacklist { session: String, until_ms: u64 },
    /// A version of an API definition; every node keeps the one that supersedes the others.
    Api(Map<String, Value>),
}

/// The record key of a control record (what compaction keeps one of).
pub fn key(rec: &ControlRecord) -> Vec<u8> {
    match rec {
        ControlRecord::Blacklist { session, .. } => session.as_bytes().to_vec(),
        ControlRecord::Api(doc) => format!(
            "api:{}",
            doc.get("id").and_then(Value::as_str).unwrap_or_default()
        )
        .into_bytes(),
    }
}

pub fn encode(rec: &ControlRecord) -> Vec<u8> {
    match rec {
        ControlRecord::Blacklist { session, until_ms } => {
            serde_json::json!({"blacklist": {"sessionId": session, "until": until_ms}})
                .to_string()
                .into_bytes()
        }
        ControlRecord::Api(doc) => {
            let mut m = Map::new();
            m.insert("api".into(), Value::Object(doc.clone()));
            Value::Object(m).to_string().into_bytes()
        }
    }
}

/// None for anything that is not a control record this version knows (counted and skipped by
/// the caller, so a newer node's records do not stop an older one).
pub fn decode(value: &[u8]) -> Option<ControlRecord> {
    let v: Value = serde_json::from_slice(value).ok()?;
    if let Some(Value::Object(doc)) = v.get("api") {
        return Some(ControlRecord::Api(doc.clone()));
    }
    let b = v.get("blacklist")?;
    Some(ControlRecord::Blacklist {
        session: b.get("sessionId")?.as_str()?.to_string(),
        until_ms: b.get("until")?.as_u64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blacklist_round_trips_and_junk_is_none() {
        let r = ControlRecord::Blacklist {
            session: "s-1".into(),
            until_ms: 1_700_000_000_000,
        };
        assert_eq!(
            encode(&r),
            br#"{"blacklist":{"sessionId":"s-1","until":1700000000000}}"#
        );
        assert_eq!(decode(&encode(&r)), Some(r));
        assert_eq!(decode(b"{}"), None);
        assert_eq!(decode(b"not json"), None);
        assert_eq!(decode(br#"{"blacklist":{"sessionId":1,"until":2}}"#), None);
        let mut doc = Map::new();
        doc.insert("id".into(), Value::String("svc".into()));
        let r = ControlRecord::Api(doc);
        assert_eq!(decode(&encode(&r)), Some(r.clone()));
        assert_eq!(key(&r), b"api:svc");
    }
}
