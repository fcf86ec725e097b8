//! The subscription model (RIG's): an exact event type plus `oneOf`, a list of clauses; a clause
//! is a conjunction of `field == value`, the list a disjunction; no clauses = every event of the
//! type. Fields are resolved against the extractor config when compiled; a constraint on a field
//! the extractors do not know is ignored, as RIG does, so such a clause matches everything.
//!
//! A connection keeps only the compiled form ([`SubscriptionSet`]): constraints on unknown
//! fields are not stored (they can never narrow a match), and what is stored is bounded in
//! bytes per connection (`sessions.max_subscription_bytes`), so a peer cannot make a session
//! cost megabytes with thousands of clauses.

use super::fields::{canonical, Fields};
use crate::config::Extractors;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub event_type: String,
    pub one_of: Vec<Map<String, Value>>,
}

/// Bounds on what one connection may ask for (tuning, `[sessions]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_subscriptions: usize,
    pub max_clauses: usize,
    /// Bytes of compiled subscription state one connection may hold.
    pub max_bytes: usize,
}

/// Why a subscription list was refused: always the client's request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("invalid subscription: expected an object, got {0}")]
    NotAnObject(String),
    #[error("invalid subscription: event-type not found")]
    NoEventType,
    #[error("invalid subscription: event-type empty")]
    EmptyEventType,
    #[error("invalid subscription: event-type must be a string, got {0}")]
    EventTypeNotString(String),
    #[error(
        "invalid subscription for {event_type:?}: {given} oneOf clauses, at most {max} allowed"
    )]
    TooManyClauses {
        event_type: String,
        given: usize,
        max: usize,
    },
    #[error("invalid subscription for {event_type:?}: oneOf entries must be objects, got {got}")]
    ClauseNotObject { event_type: String, got: String },
    #[error("invalid subscription for {0:?}: constraint field names must not be empty")]
    EmptyFieldName(String),
    #[error("invalid subscription for {event_type:?}: oneOf must be a list, got {got}")]
    OneOfNotList { event_type: String, got: String },
    #[error("expected a JSON list of subscriptions, got {0}")]
    NotAList(String),
    #[error("{given} subscriptions given, at most {max} allowed per connection")]
    TooMany { given: usize, max: usize },
    #[error("the subscriptions take {bytes} bytes of state, at most {max} allowed per connection (sessions.max_subscription_bytes)")]
    TooLarge { bytes: usize, max: usize },
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

    pub fn parse(v: &Value, limits: Limits) -> Result<Subscription, SubscriptionError> {
        use SubscriptionError as E;
        let Some(obj) = v.as_object() else {
            return Err(E::NotAnObject(short(v)));
        };
        let event_type = match obj.get("eventType").or_else(|| obj.get("event_type")) {
            None => return Err(E::NoEventType),
            Some(Value::String(s)) if s.is_empty() => return Err(E::EmptyEventType),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(E::EventTypeNotString(short(other))),
        };
        let raw = obj
            .get("oneOf")
            .or_else(|| obj.get("one_of"))
            .or_else(|| obj.get("constraints"));
        let one_of = match raw {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > limits.max_clauses {
                    return Err(E::TooManyClauses {
                        event_type,
                        given: items.len(),
                        max: limits.max_clauses,
                    });
                }
                let mut clauses = Vec::with_capacity(items.len());
                for item in items {
                    let Some(clause) = item.as_object() else {
                        return Err(E::ClauseNotObject {
                            event_type,
                            got: short(item),
                        });
                    };
                    if clause.keys().any(String::is_empty) {
                        return Err(E::EmptyFieldName(event_type));
                    }
                    clauses.push(clause.clone());
                }
                clauses
            }
            Some(other) => {
                return Err(E::OneOfNotList {
                    event_type,
                    got: short(other),
                })
            }
        };
        Ok(Subscription { event_type, one_of })
    }

    /// A JSON array of subscriptions (the `subscriptions` query parameter, the PUT body's field).
    /// Duplicates are removed keeping the first, like RIG's `Enum.uniq`.
    pub fn parse_list(v: &Value, limits: Limits) -> Result<Vec<Subscription>, SubscriptionError> {
        let Some(items) = v.as_array() else {
            return Err(SubscriptionError::NotAList(short(v)));
        };
        let mut out: Vec<Subscription> = Vec::with_capacity(items.len());
        for item in items {
            let s = Subscription::parse(item, limits)?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        if out.len() > limits.max_subscriptions {
            return Err(SubscriptionError::TooMany {
                given: out.len(),
                max: limits.max_subscriptions,
            });
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

/// One clause resolved to field ids: `(field id, canonical value)`, sorted by field id.
pub type Clause = Vec<(u16, Box<str>)>;

/// What the accounting of [`Compiled::state_bytes`] charges besides the values themselves: the
/// compiled value and its place in the type's index, each clause's vector and posting-set entry,
/// each constraint's pair. Rounded up from the sizes of the types involved, so the bound tracks
/// real memory, not only the bytes a client sent.
const SUBSCRIPTION_OVERHEAD: usize = 96;
const CLAUSE_OVERHEAD: usize = 64;
const CONSTRAINT_OVERHEAD: usize = 24;

/// A subscription resolved against the extractors, ready for the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub event_type: Box<str>,
    /// True when some clause constrains no known field (or there are no clauses).
    pub match_all: bool,
    pub clauses: Vec<Clause>,
}

impl Compiled {
    /// Only constraints on declared fields are kept: the others never narrow a match.
    pub fn new(sub: &Subscription, extractors: &Extractors) -> Compiled {
        let fields = extractors.for_type(&sub.event_type);
        let mut clauses: Vec<Clause> = Vec::with_capacity(sub.one_of.len());
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
                break;
            }
            clause.sort();
            if !clauses.contains(&clause) {
                clauses.push(clause);
            }
        }
        if match_all {
            clauses = Vec::new();
        }
        Compiled {
            event_type: sub.event_type.clone().into_boxed_str(),
            match_all,
            clauses,
        }
    }

    /// `fields`: the event's extracted values, sorted by field id.
    pub fn matches(&self, fields: &Fields) -> bool {
        self.match_all || self.clauses.iter().any(|c| clause_matches(c, fields))
    }

    /// What holding this subscription costs a session, for `sessions.max_subscription_bytes`.
    pub fn state_bytes(&self) -> usize {
        SUBSCRIPTION_OVERHEAD
            + self.event_type.len()
            + self
                .clauses
                .iter()
                .map(|c| {
                    CLAUSE_OVERHEAD
                        + c.iter()
                            .map(|(_, v)| CONSTRAINT_OVERHEAD + v.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

pub fn clause_matches(clause: &Clause, fields: &Fields) -> bool {
    clause.iter().all(|(id, want)| {
        fields
            .binary_search_by_key(id, |(f, _)| *f)
            .is_ok_and(|i| &fields[i].1 == want)
    })
}

/// What a connection holds of its subscriptions: the compiled form (what can match, nothing
/// else). RIG's `rig.subscriptions_set` echoes the list as given;
/// that echo is built from the [`Subscription`]s once, when they are set, and not kept.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSet {
    pub compiled: Vec<Compiled>,
    /// The `rig.subscriptions_set` data: the list as RIG echoes it.
    pub echo: Value,
}

impl SubscriptionSet {
    /// Compiles `subs` and checks the per-connection byte bound. Subscriptions that compile to
    /// the same thing (they differed only in fields nobody extracts) are kept once.
    pub fn build(
        subs: &[Subscription],
        extractors: &Extractors,
        limits: Limits,
    ) -> Result<SubscriptionSet, SubscriptionError> {
        let mut compiled: Vec<Compiled> = Vec::with_capacity(subs.len());
        for s in subs {
            let c = Compiled::new(s, extractors);
            if !compiled.contains(&c) {
                compiled.push(c);
            }
        }
        let bytes: usize = compiled.iter().map(Compiled::state_bytes).sum();
        if bytes > limits.max_bytes {
            return Err(SubscriptionError::TooLarge {
                bytes,
                max: limits.max_bytes,
            });
        }
        compiled.shrink_to_fit();
        Ok(SubscriptionSet {
            compiled,
            echo: Value::Array(subs.iter().map(Subscription::to_json).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::fields::extract;
    use serde_json::json;

    const L: Limits = Limits {
        max_subscriptions: 8,
        max_clauses: 4,
        max_bytes: 16 * 1024,
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
        assert_eq!(e.to_string(), "invalid subscription: event-type not found");
        let e = Subscription::parse(&json!({"eventType": ""}), L).unwrap_err();
        assert_eq!(e.to_string(), "invalid subscription: event-type empty");
        let e = Subscription::parse_list(&json!({"eventType": "x"}), L).unwrap_err();
        assert!(e.to_string().starts_with("expected a JSON list"), "{e}");
        let many: Vec<Value> = (0..9)
            .map(|i| json!({"eventType": i.to_string()}))
            .collect();
        assert!(Subscription::parse_list(&Value::Array(many), L).is_err());
        let s =
            Subscription::parse_list(&json!([{"event_type": "a"}, {"eventType": "a"}]), L).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn only_what_can_match_is_stored() {
        let x = greeting();
        let sub = Subscription::parse(
            &json!({"eventType": "greeting", "oneOf": [{"name": "joe", "shoe": 1}, {"name": "joe"}]}),
            L,
        )
        .unwrap();
        let c = Compiled::new(&sub, &x);
        assert_eq!(c.clauses, vec![vec![(0u16, Box::<str>::from("\"joe\""))]]);
        // A clause on unknown fields only matches everything: nothing else is kept.
        let sub = Subscription::parse(
            &json!({"eventType": "greeting", "oneOf": [{"name": "joe"}, {"shoe": 1}, {"age": 3}]}),
            L,
        )
        .unwrap();
        let c = Compiled::new(&sub, &x);
        assert!(c.match_all && c.clauses.is_empty());
        // Two subscriptions that differ only in unknown fields are one.
        let subs = Subscription::parse_list(
            &json!([{"eventType": "greeting", "oneOf": [{"shoe": 1}]}, {"eventType": "greeting", "oneOf": [{"hat": 2}]}]),
            L,
        )
        .unwrap();
        let set = SubscriptionSet::build(&subs, &x, L).unwrap();
        assert_eq!(set.compiled.len(), 1);
        assert_eq!(
            set.echo.as_array().unwrap().len(),
            2,
            "the echo is the list as given"
        );
    }

    #[test]
    fn state_is_bounded_per_connection() {
        let x = greeting();
        let limits = Limits {
            max_subscriptions: 128,
            max_clauses: 64,
            max_bytes: 4096,
        };
        let clauses: Vec<Value> = (0..64)
            .map(|i| json!({"name": format!("user-{i}")}))
            .collect();
        let sub = Subscription::parse(&json!({"eventType": "greeting", "oneOf": clauses}), limits)
            .unwrap();
        let e = SubscriptionSet::build(&[sub], &x, limits).unwrap_err();
        let SubscriptionError::TooLarge { bytes, max } = e.clone() else {
            panic!("{e}")
        };
        assert!(bytes > max && max == 4096, "{e}");
        assert!(
            e.to_string().contains("sessions.max_subscription_bytes"),
            "{e}"
        );
        // Unknown fields cost nothing, however many.
        let junk: Vec<Value> = (0..64)
            .map(|i| json!({"shoe": format!("size-{i}")}))
            .collect();
        let sub =
            Subscription::parse(&json!({"eventType": "greeting", "oneOf": junk}), limits).unwrap();
        let set = SubscriptionSet::build(&[sub], &x, limits).unwrap();
        assert!(set.compiled[0].state_bytes() < 200);
    }
}
