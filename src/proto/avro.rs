//! Avro in the Confluent wire format, as RIG reads and writes it (`KAFKA_SERIALIZER=avro`),
//! sans-I/O: a magic byte 0, the schema's registry id (4 bytes, big-endian), the datum. The
//! schemas themselves come from the registry (`broker::kafka::registry`).
//!
//! Consuming: a record is Avro when its `content-type` is `avro/binary` (binary mode: the
//! value is `data`, the other attributes are `ce_` headers) or when it has no content type and
//! its value starts with the magic byte (the whole CloudEvent as one Avro record). Either way
//! the datum becomes JSON and the record is then read like any other.
//!
//! Producing (an endpoint's `schema`): only `data` is encoded, with the subject's latest
//! schema; every other attribute goes into a `ce_` header (nested values as JSON text) and
//! `content-type` is `avro/binary`.

use crate::error::{Blame, Fault};
use apache_avro::Schema;
use serde_json::{Map, Value};

pub const MEDIA_TYPE: &str = "avro/binary";

/// Why a value could not be read or written with its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvroError {
    #[error("shorter than the wire format's header")]
    Short,
    #[error("not a datum of its schema: {0}")]
    NotDatum(String),
    #[error("{0} bytes left after the datum")]
    Trailing(usize),
    #[error("no JSON for it: {0}")]
    NoJson(String),
    /// Producing: the event's data does not fit the subject's schema.
    #[error("does not match the schema: {0}")]
    Mismatch(String),
    /// Producing: the resolved value could not be written.
    #[error("cannot be written with the schema: {0}")]
    Write(String),
}

impl Blame for AvroError {
    fn fault(&self) -> Fault {
        match self {
            // A record that does not decode, or holds what JSON cannot (NaN): its producer.
            AvroError::Short
            | AvroError::NotDatum(_)
            | AvroError::Trailing(_)
            | AvroError::NoJson(_) => Fault::Upstream,
            AvroError::Write(_) => Fault::Ours,
            // The published event's data.
            AvroError::Mismatch(_) => Fault::Client,
        }
    }
}

/// The schema id of a value in the wire format, if it is one.
pub fn schema_id(value: &[u8]) -> Option<u32> {
    match value {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Whether a record is Avro by RIG's rule: `content-type: avro/binary`, or no content type and
/// a value in the wire format. Returns its schema id.
pub fn record_schema_id(content_type: Option<&[u8]>, value: Option<&[u8]>) -> Option<u32> {
    let value = value?;
    match content_type.map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase()) {
        Some(c) if c.starts_with(MEDIA_TYPE) => schema_id(value),
        Some(c) if !c.is_empty() => None,
        _ => schema_id(value),
    }
}

/// The datum of a wire-format value, as JSON. Bytes and fixed values become arrays of numbers
/// (as RIG's JSON encoding of them), unions their branch's value.
pub fn decode(schema: &Schema, value: &[u8]) -> Result<Value, AvroError> {
    let mut datum = value.get(5..).ok_or(AvroError::Short)?;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(|e| AvroError::NotDatum(e.to_string()))?;
    if !datum.is_empty() {
        return Err(AvroError::Trailing(datum.len()));
    }
    Value::try_from(v).map_err(|e| AvroError::NoJson(e.to_string()))
}

/// `json` encoded with `schema` (registry id `id`) in the wire format; the error says why the
/// value does not fit.
pub fn encode(schema: &Schema, id: u32, json: &Value) -> Result<Vec<u8>, AvroError> {
    let v = to_avro(json)
        .resolve(schema)
        .map_err(|e| AvroError::Mismatch(e.to_string()))?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(v))
        .map_err(|e| AvroError::Write(e.to_string()))?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// JSON as an untyped Avro value (integers as long, other numbers as double, objects as maps)
/// for `resolve` to fit to the schema. (apache-avro's serde path turns a JSON integer into a
/// `u64` fixed, which no int or long field accepts.)
fn to_avro(json: &Value) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    match json {
        Value::Null => A::Null,
        Value::Bool(b) => A::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => A::Long(i),
            None => A::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => A::String(s.clone()),
        Value::Array(items) => A::Array(items.iter().map(to_avro).collect()),
        Value::Object(m) => A::Map(m.iter().map(|(k, v)| (k.clone(), to_avro(v))).collect()),
    }
}

/// A structured CloudEvent split for the binary mode: `data` (Null when absent) and the `ce_`
/// headers of every other attribute (strings as they are, other values as JSON text).
pub fn binary_parts(event: &Map<String, Value>) -> (Value, Vec<(String, Vec<u8>)>) {
    let mut headers = Vec::with_capacity(event.len() + 1);
    let mut data = Value::Null;
    for (k, v) in event {
        if k == "data" {
            data = v.clone();
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        headers.push((format!("ce_{k}"), text));
    }
    headers.push(("content-type".into(), MEDIA_TYPE.as_bytes().to_vec()));
    (data, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type":"record","name":"Greeting","fields":[
                {"name":"name","type":"string"},{"name":"age","type":"int"},
                {"name":"nick","type":["null","string"],"default":null}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_in_the_wire_format() {
        let s = schema();
        let bytes = encode(&s, 7, &json!({"name": "joe", "age": 42, "nick": "j"})).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(schema_id(&bytes), Some(7));
        assert_eq!(
            decode(&s, &bytes).unwrap(),
            json!({"name": "joe", "age": 42, "nick": "j"})
        );
        let e = encode(&s, 7, &json!({"name": "joe"})).unwrap_err();
        assert!(matches!(e, AvroError::Mismatch(_)), "{e}");
        assert_eq!(e.fault(), Fault::Client);
        let e = decode(&s, &bytes[..7]).unwrap_err();
        assert!(matches!(e, AvroError::NotDatum(_)), "{e}");
        assert_eq!(e.fault(), Fault::Upstream);
        assert_eq!(decode(&s, &bytes[..3]), Err(AvroError::Short));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&s, &longer), Err(AvroError::Trailing(1)));
    }

    #[test]
    fn which_records_are_avro() {
        let wire = [0u8, 0, 0, 0, 9, 1];
        assert_eq!(record_schema_id(None, Some(&wire)), Some(9));
        assert_eq!(record_schema_id(Some(b"avro/binary"), Some(&wire)), Some(9));
        assert_eq!(
            record_schema_id(Some(b"application/json"), Some(&wire)),
            None
        );
        assert_eq!(record_schema_id(None, Some(b"{\"a\":1}")), None);
    }

    #[test]
    fn binary_parts_keep_data_and_header_the_rest() {
        let ev = json!({"specversion": "0.2", "type": "t", "data": {"a": 1}, "rig": {"x": 1}});
        let (data, headers) = binary_parts(ev.as_object().unwrap());
        assert_eq!(data, json!({"a": 1}));
        assert!(headers.contains(&("ce_type".into(), b"t".to_vec())));
        assert!(headers.contains(&("ce_rig".into(), br#"{"x":1}"#.to_vec())));
        assert!(headers.contains(&("content-type".into(), b"avro/binary".to_vec())));
    }
}
