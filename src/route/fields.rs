//! Field extraction: the values an event carries in the fields `EXTRACTORS` declares for its
//! type, in the canonical form constraint values are compared in.

use crate::config::Extractors;
use crate::proto::json::Lookup;

/// `(field id, canonical value)` pairs sorted by field id; a field the event lacks is absent.
pub type Fields = Vec<(u16, Box<str>)>;

pub use crate::proto::json::{canonical, pointer};

/// Values of the configured fields for one event (only clauses without the missing fields can
/// match it).
pub fn extract(event_type: &str, event: &impl Lookup, extractors: &Extractors) -> Fields {
    let Some(fields) = extractors.for_type(event_type) else {
        return Vec::new();
    };
    fields
        .fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i as u16, event.canonical_at(&f.event_pointer)?)))
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
