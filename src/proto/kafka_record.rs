//! Kafka records to CloudEvents, sans-I/O. The Kafka protocol binding of CloudEvents as RIG
//! reads it: structured mode (no `content-type` header, or `application/cloudevents+json`) or
//! binary mode (`ce_`-prefixed headers, the value is `data`). Sources whose records are not
//! CloudEvents (FlowX) get a record mapping: the event type from the topic, a header, a JSON
//! pointer or a constant; key and headers are kept as the extension attributes `kafkakey` and
//! `kafkaheaders` so that extractors (`/kafkakey`, `/kafkaheaders/<name>`, `/data/...`) can
//! route on them. Also Kafka's murmur2 partitioner, so keys land where Java producers put them.

use super::cloudevents::{self, CloudEvent};
use crate::config::kafka::{FieldFrom, RecordMapping, TypeFrom};
use serde_json::{Map, Value};

/// What decoding needs of a record; borrowed from the client's record type.
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Header names as sent; matched case-insensitively.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    Empty,
    #[error("not a CloudEvent: {0}")]
    NotCloudEvent(String),
    #[error("unsupported record: {0}")]
    Unsupported(String),
}

impl RecordView<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The SSE id of an event read from Kafka: where it is in the log.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

pub fn decode(
    rec: &RecordView,
    mapping: Option<&RecordMapping>,
) -> Result<CloudEvent, DecodeError> {
    if let Some(m) = mapping {
        return map_record(rec, m);
    }
    let value = rec.value.ok_or(DecodeError::Empty)?;
    let content_type = rec
        .header("content-type")
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let media = content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if media.as_deref().is_some_and(|m| m.starts_with("avro/")) {
        // Values in Confluent's wire format were decoded before (`proto::avro`).
        return Err(DecodeError::Unsupported(
            "content-type avro/binary, but the value is not in the schema registry's wire format (magic byte 0 and a schema id)".into(),
        ));
    }
    let binary = rec.header("ce_specversion").is_some()
        && media.as_deref() != Some("application/cloudevents+json");
    if !binary {
        return cloudevents::parse_structured(value).map_err(not_cloudevent);
    }
    // Binary mode: reuse the HTTP binding's rules with ce_ headers renamed to ce-.
    let headers: super::headers::Headers = rec
        .headers
        .iter()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            lower
                .strip_prefix("ce_")
                .map(|attr| (format!("ce-{attr}"), v.to_vec()))
        })
        .collect();
    cloudevents::from_http(content_type.as_deref(), &headers, value).map_err(not_cloudevent)
}

/// The CloudEvents messages speak of HTTP requests; here it is a record's value.
fn not_cloudevent(e: cloudevents::CeError) -> DecodeError {
    let msg = e.to_string();
    DecodeError::NotCloudEvent(
        msg.replacen("The request body does not look like a CloudEvent: ", "", 1)
            .replacen("The request does not look like a CloudEvent: ", "", 1),
    )
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn map_record(rec: &RecordView, how: &RecordMapping) -> Result<CloudEvent, DecodeError> {
    let data = rec
        .value
        .map(|v| serde_json::from_slice::<Value>(v).unwrap_or_else(|_| text(v)));
    let event_type = match &how.event_type {
        TypeFrom::Topic => rec.topic.to_string(),
        TypeFrom::Fixed(t) => t.clone(),
        TypeFrom::Header(h) => match rec.header(h) {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => {
                return Err(DecodeError::NotCloudEvent(format!(
                    "mapped record lacks header {h:?}"
                )))
            }
        },
        TypeFrom::Pointer(p) => match data.as_ref().and_then(|d| d.pointer(p)) {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(DecodeError::NotCloudEvent(format!(
                    "mapped record has no string at {p} in its value"
                )))
            }
        },
    };
    if event_type.is_empty() {
        return Err(DecodeError::NotCloudEvent(
            "mapped record has an empty event type".into(),
        ));
    }
    let mut m = Map::new();
    m.insert("specversion".into(), "1.0".into());
    m.insert("type".into(), Value::String(event_type.clone()));
    m.insert(
        "source".into(),
        Value::String(format!("kafka:{}", rec.topic)),
    );
    m.insert("id".into(), Value::String(rec.position()));
    if rec.timestamp_ms >= 0 {
        m.insert(
            "time".into(),
            Value::String(cloudevents::rfc3339_utc(rec.timestamp_ms as u64)),
        );
    }
    if let Some(k) = rec.key {
        m.insert("kafkakey".into(), text(k));
    }
    if !rec.headers.is_empty() {
        let h: Map<String, Value> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), text(v)))
            .collect();
        m.insert("kafkaheaders".into(), Value::Object(h));
    }
    for f in &how.fields {
        let found = f.from.iter().find_map(|src| match src {
            FieldFrom::Key => rec.key.filter(|k| !k.is_empty()).map(text),
            FieldFrom::Header(h) => rec.header(h).filter(|v| !v.is_empty()).map(text),
            FieldFrom::Pointer(p) => data
                .as_ref()
                .and_then(|d| d.pointer(p))
                .filter(|v| !v.is_null())
                .cloned(),
        });
        if let Some(v) = found {
            m.entry(f.name.clone()).or_insert(v);
        }
    }
    if let Some(d) = data {
        m.insert("data".into(), d);
    }
    cloudevents::from_value(Value::Object(m)).map_err(not_cloudevent)
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java producer's default partitioner picks for a key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec<'a>(value: &'a [u8], headers: &'a [(&'a str, &'a [u8])]) -> RecordView<'a> {
        RecordView {
            topic: "rig",
            partition: 2,
            offset: 41,
            key: Some(b"user-7"),
            value: Some(value),
            headers,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn structured_and_binary() {
        let v = json!({"specversion":"1.0","type":"t","source":"s","id":"1","data":{"a":1}})
            .to_string();
        let e = decode(&rec(v.as_bytes(), &[]), None).unwrap();
        assert_eq!(e.event_type, "t");
        let ct: &[(&str, &[u8])] = &[("content-type", b"application/cloudevents+json")];
        assert_eq!(decode(&rec(v.as_bytes(), ct), None).unwrap().id, "1");
        let h: &[(&str, &[u8])] = &[
            ("ce_specversion", b"1.0"),
            ("ce_type", b"bin"),
            ("ce_source", b"s"),
            ("ce_id", b"9"),
            ("content-type", b"application/json"),
        ];
        let e = decode(&rec(br#"{"x":2}"#, h), None).unwrap();
        assert_eq!(
            (e.event_type.as_str(), &e.value()["data"]),
            ("bin", &json!({"x": 2}))
        );
        assert!(matches!(
            decode(&rec(b"hello", &[]), None),
            Err(DecodeError::NotCloudEvent(_))
        ));
        let avro: &[(&str, &[u8])] = &[("content-type", b"avro/binary")];
        assert!(matches!(
            decode(&rec(b"\0\0", avro), None),
            Err(DecodeError::Unsupported(_))
        ));
    }

    fn mapping(event_type: TypeFrom) -> RecordMapping {
        RecordMapping {
            topics: crate::config::kafka::TopicPattern::Name("rig".into()),
            event_type,
            fields: Vec::new(),
        }
    }

    #[test]
    fn mapped_fields_take_the_first_source_present() {
        use crate::config::kafka::MappedField;
        let mut m = mapping(TypeFrom::Fixed("flowx.processinstance.message".into()));
        m.fields.push(MappedField {
            name: "processinstanceuuid".into(),
            from: vec![
                FieldFrom::Header("processinstanceuuid".into()),
                FieldFrom::Key,
            ],
        });
        m.fields.push(MappedField {
            name: "tenant".into(),
            from: vec![FieldFrom::Pointer("/t".into())],
        });
        let e = decode(&rec(br#"{"t":"acme"}"#, &[]), Some(&m)).unwrap();
        assert_eq!(e.value()["processinstanceuuid"], "user-7");
        assert_eq!(e.value()["tenant"], "acme");
        let h: &[(&str, &[u8])] = &[("processInstanceUuid", b"pi-1")];
        let e = decode(&rec(b"{}", h), Some(&m)).unwrap();
        assert_eq!(e.value()["processinstanceuuid"], "pi-1");
        assert!(e.value().get("tenant").is_none());
    }

    #[test]
    fn mapping_builds_a_routable_event() {
        let h: &[(&str, &[u8])] = &[("fxType", b"process.update"), ("userId", b"u1")];
        let e = decode(
            &rec(br#"{"pid":5}"#, h),
            Some(&mapping(TypeFrom::Header("fxtype".into()))),
        )
        .unwrap();
        assert_eq!(e.event_type, "process.update");
        assert_eq!(e.value()["id"], "rig/2/41");
        assert_eq!(e.value()["kafkakey"], "user-7");
        assert_eq!(e.value()["kafkaheaders"]["userid"], "u1");
        assert_eq!(e.value()["data"]["pid"], 5);
        let e = decode(
            &rec(br#"{"kind":"k1"}"#, &[]),
            Some(&mapping(TypeFrom::Pointer("/kind".into()))),
        )
        .unwrap();
        assert_eq!(e.event_type, "k1");
        assert!(decode(
            &rec(b"{}", &[]),
            Some(&mapping(TypeFrom::Header("nope".into())))
        )
        .is_err());
    }
}
