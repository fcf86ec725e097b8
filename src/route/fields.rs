//! Field extraction: the values an event carries in the fields `EXTRACTORS` declares for its
//! type, in the canonical form constraint values are compared in.

use crate::config::Extractors;
use serde_json::Value;

/// `(field id, canonical value)` pairs sorted by field id; a field the event lacks is absent.
pub type Fields = Vec<(u16, Box<str>)>;

/// The canonical form values are compared in: compact JSON. Used for constraint values and for
/// values extracted from events, so equality of the strings is equality of the JSON values.
pub fn canonical(v: &Value) -> Box<str> {
    v.to_string().into_boxed_str()
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
        .filter_map(|(i, f)| Some((i as u16, canonical(event.pointer(&f.event_pointer)?))))
        .collect()
}
