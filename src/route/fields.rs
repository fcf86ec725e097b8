//! Field extraction: the values an event carries in the fields `EXTRACTORS` declares for its
//! type, in the canonical form constraint values are compared in.

use crate::config::Extractors;
use serde_json::Value;

/// `(field id, canonical value)` pairs sorted by field id; a field the event lacks is absent.
pub type Fields = Vec<(u16, Box<str>)>;

/// The canonical form values are compared in: compact JSON. Used for constraint values and for
/// values extracted from events, so equality of the strings is equality of the JSON values.
pub fn canonical(v: &Value) -> Box<str> {
    // Not `to_string`: that goes through `core::fmt`, once per extracted field per event.
    // Serializing a `Value` cannot fail, and serde_json writes UTF-8.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    String::from_utf8(bytes)
        .unwrap_or_default()
        .into_boxed_str()
}

/// `serde_json::Value::pointer` (RFC 6901) without its allocation per reference token: an
/// extractor's pointer is resolved for every event of its type.
pub fn pointer<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(v);
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .try_fold(v, |target, token| {
            let token: std::borrow::Cow<str> = if token.contains('~') {
                token.replace("~1", "/").replace("~0", "~").into()
            } else {
                token.into()
            };
            match target {
                Value::Object(map) => map.get(&*token),
                Value::Array(list) => index(&token).and_then(|i| list.get(i)),
                _ => None,
            }
        })
}

/// An array index token: digits, no leading zero (RFC 6901 §4).
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Values of the configured fields for one event (only clauses without the missing fields can
/// match it).
pub fn extract(event_type: &str, event: &Value, extractors: &Extractors) -> Fields {
    let Some(fields) = extractors.for_type(event_type) else {
        return Vec::new();
    };
    fields
        .fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i as u16, canonical(pointer(event, &f.event_pointer)?))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointer_resolves_as_serde_json_does() {
        let v = json!({"data": {"user": "alice", "a/b": 1, "m~n": 2, "list": [10, 11], "": 3}});
        for p in [
            "",
            "/data",
            "/data/user",
            "/data/a~1b",
            "/data/m~0n",
            "/data/list/1",
            "/data/list/01",
            "/data/list/-",
            "/data/list/2",
            "/data/",
            "/data/user/x",
            "data",
            "/nope",
        ] {
            assert_eq!(pointer(&v, p), v.pointer(p), "{p:?}");
        }
        assert_eq!(
            &*canonical(&json!({"b": "é\n", "a": [1.5, null]})),
            r#"{"b":"é\n","a":[1.5,null]}"#
        );
    }
}
