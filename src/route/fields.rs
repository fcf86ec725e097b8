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
    fn canonical_is_compact_json_in_key_order() {
        assert_eq!(
            &*canonical(&json!({"b": "é\n", "a": [1.5, null]})),
            r#"{"b":"é\n","a":[1.5,null]}"#
        );
    }
}
