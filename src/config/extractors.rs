//! `EXTRACTORS`: which fields of which event types subscriptions may constrain, and where to
//! find them (JSON pointers into the event and, for automatic subscriptions, into the JWT).
//! Format as RIG's:
//! `{"<eventType>": {"<field>": {"stable_field_index": 0, "event": {"json_pointer": "/data/x"},
//! "jwt": {"json_pointer": "/sub"}}}}`.
//! Fields of a type are numbered by `stable_field_index`; that number is the field id the
//! subscription index uses, so it is validated to be unique per type.

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub event_pointer: String,
    pub jwt_pointer: Option<String>,
}

/// The fields of one event type, ordered by `stable_field_index` (position = field id).
#[derive(Debug, Clone, Default)]
pub struct TypeFields {
    pub fields: Vec<Field>,
}

impl TypeFields {
    pub fn id_of(&self, name: &str) -> Option<u16> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .map(|i| i as u16)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Extractors {
    types: HashMap<String, TypeFields>,
}

impl Extractors {
    pub fn for_type(&self, event_type: &str) -> Option<&TypeFields> {
        self.types.get(event_type)
    }

    pub fn types(&self) -> impl Iterator<Item = (&String, &TypeFields)> {
        self.types.iter()
    }

    /// Adds `defaults`' types this set does not have (built-in extractors under the operator's).
    pub fn add_missing(&mut self, defaults: Extractors) {
        for (t, f) in defaults.types {
            self.types.entry(t).or_insert(f);
        }
    }

    /// `raw` is either inline JSON (starts with `{`) or a path to a JSON file, as in RIG.
    pub fn load(raw: &str, problems: &mut Vec<String>) -> Extractors {
        let raw = raw.trim();
        if raw.is_empty() {
            return Extractors::default();
        }
        let text = if raw.starts_with('{') {
            raw.to_string()
        } else {
            match std::fs::read_to_string(raw) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("EXTRACTORS: cannot read file {raw:?}: {e}"));
                    return Extractors::default();
                }
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => Self::from_value(&v, problems),
            Err(e) => {
                problems.push(format!("EXTRACTORS: not valid JSON: {e}"));
                Extractors::default()
            }
        }
    }

    pub fn from_value(v: &Value, problems: &mut Vec<String>) -> Extractors {
        let mut out = Extractors::default();
        let Some(types) = v.as_object() else {
            problems.push("EXTRACTORS: expected a JSON object keyed by event type".into());
            return out;
        };
        for (event_type, fields) in types {
            let Some(fields) = fields.as_object() else {
                problems.push(format!(
                    "EXTRACTORS: {event_type}: expected an object keyed by field name"
                ));
                continue;
            };
            let mut indexed: Vec<(u64, Field)> = Vec::new();
            for (name, spec) in fields {
                let at = format!("EXTRACTORS: {event_type}.{name}");
                if name.is_empty() {
                    problems.push(format!("{at}: field name must not be empty"));
                    continue;
                }
                let index = spec.get("stable_field_index").and_then(Value::as_u64);
                let event_pointer = spec
                    .pointer("/event/json_pointer")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let jwt_pointer = spec.pointer("/jwt/json_pointer").and_then(Value::as_str);
                let mut ok = true;
                if index.is_none() {
                    problems.push(format!(
                        "{at}: stable_field_index is required (an integer >= 0)"
                    ));
                    ok = false;
                }
                if !is_pointer(event_pointer) || event_pointer.is_empty() {
                    problems.push(format!(
                        "{at}: event.json_pointer is required and must start with '/', got {event_pointer:?}"
                    ));
                    ok = false;
                }
                if let Some(p) = jwt_pointer {
                    if !is_pointer(p) || p.is_empty() {
                        problems.push(format!(
                            "{at}: jwt.json_pointer must start with '/', got {p:?}"
                        ));
                        ok = false;
                    }
                }
                if let (true, Some(index)) = (ok, index) {
                    indexed.push((
                        index,
                        Field {
                            name: name.clone(),
                            event_pointer: event_pointer.to_string(),
                            jwt_pointer: jwt_pointer.map(str::to_string),
                        },
                    ));
                }
            }
            indexed.sort_by_key(|(i, _)| *i);
            for pair in indexed.windows(2) {
                if pair[0].0 == pair[1].0 {
                    problems.push(format!(
                        "EXTRACTORS: {event_type}: fields {:?} and {:?} share stable_field_index {}",
                        pair[0].1.name, pair[1].1.name, pair[0].0
                    ));
                }
            }
            out.types.insert(
                event_type.clone(),
                TypeFields {
                    fields: indexed.into_iter().map(|(_, f)| f).collect(),
                },
            );
        }
        out
    }
}

fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rig_example_and_orders_by_index() {
        let mut p = Vec::new();
        let x = Extractors::load(
            r#"{"greeting":{"age":{"stable_field_index":1,"event":{"json_pointer":"/data/age"}},
                "name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/username"}}}}"#,
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        let t = x.for_type("greeting").unwrap();
        assert_eq!(t.id_of("name"), Some(0));
        assert_eq!(t.id_of("age"), Some(1));
        assert_eq!(t.fields[0].jwt_pointer.as_deref(), Some("/username"));
    }

    #[test]
    fn reports_every_problem() {
        let mut p = Vec::new();
        Extractors::load(
            r#"{"t":{"a":{"event":{"json_pointer":"x"}},"b":{"stable_field_index":0,"event":{"json_pointer":"/b"}},
                "c":{"stable_field_index":0,"event":{"json_pointer":"/c"}}}}"#,
            &mut p,
        );
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
