//! The subscription model (RIG's): an exact event type plus `oneOf`, a list of clauses; a clause
//! is a conjunction of `field == value`, the list a disjunction; no clauses = every event of the
//! type. Fields are resolved against the extractor config when compiled; a constraint on a field
//! the extractors do not know is ignored, as RIG does, so such a clause matches everything.

use crate::config::Extractors;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub event_type: String,
    pub one_of: Vec<Map<String, Value>>,
}

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_subscriptions: usize,
    pub max_clauses: usize,
}

impl Subscription {
    /// RIG's wire form, as sent in `rig.subscriptions_set`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("eventType".into(), Value::String(self.event_type.clone()));
        m.insert(
            "oneOf".into(),
            Value::Array(self.one_of.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(m)
    }

    pub fn parse(v: &Value, limits: Limits) -> Result<Subscription, String> {
        let Some(obj) = v.as_object() else {
            return Err(format!(
                "invalid subscription: expected an object, got {}",
                short(v)
            ));
        };
        let event_type = match obj.get("eventType").or_else(|| obj.get("event_type")) {
            None => return Err("invalid subscription: event-type not found".into()),
            Some(Value::String(s)) if s.is_empty() => {
                return Err("invalid subscription: event-type empty".into())
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "invalid subscription: event-type must be a string, got {}",
                    short(other)
                ))
            }
        };
        let raw = obj
            .get("oneOf")
            .or_else(|| obj.get("one_of"))
            .or_else(|| obj.get("constraints"));
        let one_of = match raw {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > limits.max_clauses {
                    return Err(format!(
                        "invalid subscription for {event_type:?}: {} oneOf clauses, at most {} allowed",
                        items.len(),
                        limits.max_clauses
                    ));
                }
                let mut clauses = Vec::with_capacity(items.len());
                for item in items {
                    let Some(clause) = item.as_object() else {
                        return Err(format!(
                            "invalid subscription for {event_type:?}: oneOf entries must be objects, got {}",
                            short(item)
                        ));
                    };
                    if clause.keys().any(String::is_empty) {
                        return Err(format!(
                            "invalid subscription for {event_type:?}: constraint field names must not be empty"
                        ));
                    }
                    clauses.push(clause.clone());
                }
                clauses
            }
            Some(other) => {
                return Err(format!(
                    "invalid subscription for {event_type:?}: oneOf must be a list, got {}",
                    short(other)
                ))
            }
        };
        Ok(Subscription { event_type, one_of })
    }

    /// A JSON array of subscriptions (the `subscriptions` query parameter, the PUT body's field).
    /// Duplicates are removed keeping the first, like RIG's `Enum.uniq`.
    pub fn parse_list(v: &Value, limits: Limits) -> Result<Vec<Subscription>, String> {
        let Some(items) = v.as_array() else {
            return Err(format!(
                "expected a JSON list of subscriptions, got {}",
                short(v)
            ));
        };
        let mut out: Vec<Subscription> = Vec::with_capacity(items.len());
        for item in items {
            let s = Subscription::parse(item, limits)?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        if out.len() > limits.max_subscriptions {
            return Err(format!(
                "{} subscriptions given, at most {} allowed per connection",
                out.len(),
                limits.max_subscriptions
            ));
        }
        Ok(out)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        let mut end = 64;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// The canonical form values are compared in: compact JSON. Used for constraint values and for
/// values extracted from events, so equality of the strings is equality of the JSON values.
pub fn canonical(v: &Value) -> Box<str> {
    v.to_string().into_boxed_str()
}

/// One clause resolved to field ids: `(field id, canonical value)`, sorted by field id.
pub type Clause = Vec<(u16, Box<str>)>;

/// A subscription resolved against the extractors, ready for the index.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub event_type: Box<str>,
    /// True when some clause constrains no known field (or there are no clauses).
    pub match_all: bool,
    pub clauses: Vec<Clause>,
}

impl Compiled {
    pub fn new(sub: &Subscription, extractors: &Extractors) -> Compiled {
        let fields = extractors.for_type(&sub.event_type);
        let mut clauses = Vec::with_capacity(sub.one_of.len());
        let mut match_all = sub.one_of.is_empty();
        for raw in &sub.one_of {
            let mut clause: Clause = raw
                .iter()
                .filter_map(|(name, value)| {
                    let id = fields?.id_of(name)?;
                    Some((id, canonical(value)))
                })
                .collect();
            if clause.is_empty() {
                match_all = true;
            }
            clause.sort();
            clauses.push(clause);
        }
        if match_all {
            clauses.clear();
        }
        Compiled {
            event_type: sub.event_type.clone().into_boxed_str(),
            match_all,
            clauses,
        }
    }

    /// `fields`: the event's extracted values, sorted by field id.
    pub fn matches(&self, fields: &[(u16, Box<str>)]) -> bool {
        self.match_all || self.clauses.iter().any(|c| clause_matches(c, fields))
    }
}

pub fn clause_matches(clause: &Clause, fields: &[(u16, Box<str>)]) -> bool {
    clause.iter().all(|(id, want)| {
        fields
            .binary_search_by_key(id, |(f, _)| *f)
            .is_ok_and(|i| &fields[i].1 == want)
    })
}

/// Values of the configured fields for one event: `(field id, canonical value)` sorted by id;
/// fields the event lacks are absent (only clauses without them can match).
pub fn extract(event_type: &str, event: &Value, extractors: &Extractors) -> Vec<(u16, Box<str>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const L: Limits = Limits {
        max_subscriptions: 8,
        max_clauses: 4,
    };

    fn greeting() -> Extractors {
        let mut p = Vec::new();
        let x = Extractors::from_value(
            &json!({"greeting": {
                "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}},
                "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}}}}),
            &mut p,
        );
        assert!(p.is_empty());
        x
    }

    fn matches(sub: Value, event: Value) -> bool {
        let x = greeting();
        let s = Subscription::parse(&sub, L).unwrap();
        let c = Compiled::new(&s, &x);
        let ty = event["type"].as_str().unwrap();
        c.event_type.as_ref() == ty && c.matches(&extract(ty, &event, &x))
    }

    #[test]
    fn rig_constraint_semantics() {
        let joe30 = json!({"type": "greeting", "data": {"name": "joe", "age": 30}});
        let joe31 = json!({"type": "greeting", "data": {"name": "joe", "age": 31}});
        let ann30 = json!({"type": "greeting", "data": {"name": "ann", "age": 30}});
        let by_name = json!({"eventType": "greeting", "oneOf": [{"name": "joe"}]});
        assert!(matches(by_name.clone(), joe30.clone()));
        assert!(matches(by_name.clone(), joe31.clone()));
        assert!(!matches(by_name, ann30.clone()));
        let both = json!({"eventType": "greeting", "oneOf": [{"name": "joe", "age": 30}]});
        assert!(matches(both.clone(), joe30.clone()));
        assert!(!matches(both.clone(), joe31.clone()));
        assert!(!matches(both, ann30.clone()));
        let either = json!({"eventType": "greeting", "oneOf": [{"name": "ann"}, {"age": 31}]});
        assert!(!matches(either.clone(), joe30.clone()));
        assert!(matches(either.clone(), joe31.clone()));
        assert!(matches(either, ann30.clone()));
        // Unknown field: ignored, the clause matches everything.
        let unknown = json!({"eventType": "greeting", "oneOf": [{"shoe": 42}]});
        assert!(matches(unknown, ann30.clone()));
        // Exact type.
        let other = json!({"eventType": "greet"});
        assert!(!matches(other, joe30.clone()));
        // Event lacking the field: only clauses without it match.
        let no_age = json!({"type": "greeting", "data": {"name": "joe"}});
        assert!(!matches(
            json!({"eventType": "greeting", "oneOf": [{"age": 30}]}),
            no_age.clone()
        ));
        assert!(matches(
            json!({"eventType": "greeting", "oneOf": [{"name": "joe"}]}),
            no_age
        ));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = Subscription::parse(&json!({"oneOf": []}), L).unwrap_err();
        assert_eq!(e, "invalid subscription: event-type not found");
        let e = Subscription::parse(&json!({"eventType": ""}), L).unwrap_err();
        assert_eq!(e, "invalid subscription: event-type empty");
        let e = Subscription::parse_list(&json!({"eventType": "x"}), L).unwrap_err();
        assert!(e.starts_with("expected a JSON list"), "{e}");
        let many: Vec<Value> = (0..9)
            .map(|i| json!({"eventType": i.to_string()}))
            .collect();
        assert!(Subscription::parse_list(&Value::Array(many), L).is_err());
        let s =
            Subscription::parse_list(&json!([{"event_type": "a"}, {"eventType": "a"}]), L).unwrap();
        assert_eq!(s.len(), 1);
    }
}
