//! The control topic's record format: what one node tells every node through Kafka. Today one
//! kind, a session blacklist entry: `{"blacklist":{"sessionId":"...","until":<unix ms>}}`.
//! API definitions will travel the same way.

use serde_json::Value;

/// One control record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRecord {
    /// End the session's connections and refuse its tokens until `until_ms` (Unix ms).
    Blacklist { session: String, until_ms: u64 },
}

pub fn encode(rec: &ControlRecord) -> Vec<u8> {
    match rec {
        ControlRecord::Blacklist { session, until_ms } => {
            serde_json::json!({"blacklist": {"sessionId": session, "until": until_ms}})
                .to_string()
                .into_bytes()
        }
    }
}

/// None for anything that is not a control record this version knows (counted and skipped by
/// the caller, so a newer node's records do not stop an older one).
pub fn decode(value: &[u8]) -> Option<ControlRecord> {
    let v: Value = serde_json::from_slice(value).ok()?;
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
    }
}
