//! Privacy by default (`SUBSCRIPTION_CHECK=jwt_claims`, `SUBMISSION_CHECK=jwt_claims`): a
//! field that an extractor ties to a JWT claim (`jwt.json_pointer`) belongs to the user the
//! claim names. With RIG's modes anyone may subscribe to `{"name": "alice"}` and read alice's
//! events; here a subscription must constrain every such field of its event type, in every
//! clause, to the caller's own claim value (no token: such types cannot be subscribed to), and
//! a published event may carry only the publisher's own values in such fields. A token with
//! the configured privileged claim (`CB_PRIVILEGED_CLAIM=POINTER=VALUE`, a role or a scope:
//! support staff, admin consoles) is exempt. Sans-I/O: decisions on parsed values only.

use crate::config::Extractors;
use crate::proto::json::{canonical, Lookup};
use crate::route::subscription::Subscription;
use serde_json::Value;

/// The claim that exempts a token: the value at `pointer` equals `value`, or is an array
/// holding it, or a space-separated string (an OAuth `scope`) containing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileged {
    pub pointer: String,
    pub value: String,
}

impl Privileged {
    /// `POINTER=VALUE`, e.g. `/realm_access/roles=support` or `/scope=events:read-all`.
    pub fn parse(raw: &str) -> Result<Privileged, String> {
        let (pointer, value) = raw
            .rsplit_once('=')
            .ok_or_else(|| format!("{raw:?}: expected POINTER=VALUE, e.g. /roles=support"))?;
        let pointer = if pointer.starts_with('/') {
            pointer.to_string()
        } else {
            format!("/{pointer}")
        };
        if value.is_empty() || pointer.len() < 2 {
            return Err(format!(
                "{raw:?}: expected POINTER=VALUE, e.g. /roles=support"
            ));
        }
        Ok(Privileged {
            pointer,
            value: value.to_string(),
        })
    }

    pub fn holds(&self, claims: &Value) -> bool {
        match claims.pointer(&self.pointer) {
            Some(Value::String(s)) => s == &self.value || s.split(' ').any(|p| p == self.value),
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.value)),
            Some(Value::Bool(b)) => self.value == if *b { "true" } else { "false" },
            Some(Value::Number(n)) => self.value.parse::<f64>().ok() == n.as_f64(),
            _ => false,
        }
    }
}

/// Why a subscription or an event was refused (the caller's request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivacyError {
    #[error("{event_type} events belong to users: constrain {field} to your own value (the {claim} claim of your token)")]
    Unconstrained {
        event_type: String,
        field: String,
        claim: String,
    },
    #[error("{event_type}.{field} may only be your own value (the {claim} claim of your token)")]
    NotYours {
        event_type: String,
        field: String,
        claim: String,
    },
    #[error("{event_type}.{field} belongs to a user: send a token (its {claim} claim) to use it")]
    NoToken {
        event_type: String,
        field: String,
        claim: String,
    },
}

fn exempt(claims: Option<&Value>, privileged: Option<&Privileged>) -> bool {
    matches!((claims, privileged), (Some(c), Some(p)) if p.holds(c))
}

/// Checks subscriptions the caller wrote (not those derived from its own token).
pub fn check_subscriptions(
    subs: &[Subscription],
    claims: Option<&Value>,
    extractors: &Extractors,
    privileged: Option<&Privileged>,
) -> Result<(), PrivacyError> {
    if exempt(claims, privileged) {
        return Ok(());
    }
    for sub in subs {
        let Some(fields) = extractors.for_type(&sub.event_type) else {
            continue;
        };
        for f in &fields.fields {
            let Some(claim) = f.jwt_pointer.as_deref() else {
                continue;
            };
            let err = |kind: fn(String, String, String) -> PrivacyError| {
                kind(sub.event_type.clone(), f.name.clone(), claim.to_string())
            };
            if sub.one_of.is_empty() {
                return Err(err(|event_type, field, claim| {
                    PrivacyError::Unconstrained {
                        event_type,
                        field,
                        claim,
                    }
                }));
            }
            for clause in &sub.one_of {
                let Some(want) = clause.get(&f.name) else {
                    return Err(err(|event_type, field, claim| {
                        PrivacyError::Unconstrained {
                            event_type,
                            field,
                            claim,
                        }
                    }));
                };
                let Some(claims) = claims else {
                    return Err(err(|event_type, field, claim| PrivacyError::NoToken {
                        event_type,
                        field,
                        claim,
                    }));
                };
                if claims.pointer(claim) != Some(want) {
                    return Err(err(|event_type, field, claim| PrivacyError::NotYours {
                        event_type,
                        field,
                        claim,
                    }));
                }
            }
        }
    }
    Ok(())
}

/// Checks a published CloudEvent: its user-bound fields, where present, must be the
/// publisher's own.
pub fn check_event(
    event_type: &str,
    event: &impl Lookup,
    claims: Option<&Value>,
    extractors: &Extractors,
    privileged: Option<&Privileged>,
) -> Result<(), PrivacyError> {
    if exempt(claims, privileged) {
        return Ok(());
    }
    let Some(fields) = extractors.for_type(event_type) else {
        return Ok(());
    };
    for f in &fields.fields {
        let Some(claim) = f.jwt_pointer.as_deref() else {
            continue;
        };
        let Some(value) = event.canonical_at(&f.event_pointer) else {
            continue;
        };
        let (event_type, field, claim) =
            (event_type.to_string(), f.name.clone(), claim.to_string());
        match claims {
            None => {
                return Err(PrivacyError::NoToken {
                    event_type,
                    field,
                    claim,
                })
            }
            // Compared as routing compares them: canonical JSON.
            Some(c) if c.pointer(&claim).map(canonical).as_deref() != Some(&*value) => {
                return Err(PrivacyError::NotYours {
                    event_type,
                    field,
                    claim,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::subscription::Limits;
    use serde_json::json;

    fn extractors() -> Extractors {
        let mut p = Vec::new();
        let x = Extractors::from_value(
            &json!({"greeting": {
                "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}, "jwt": {"json_pointer": "/username"}},
                "mood": {"stable_field_index": 1, "event": {"json_pointer": "/data/mood"}}},
              "news": {"topic": {"stable_field_index": 0, "event": {"json_pointer": "/data/topic"}}}}),
            &mut p,
        );
        assert!(p.is_empty());
        x
    }

    fn subs(v: Value) -> Vec<Subscription> {
        let l = Limits {
            max_subscriptions: 8,
            max_clauses: 8,
            max_bytes: 1 << 16,
        };
        Subscription::parse_list(&v, l).unwrap()
    }

    #[test]
    fn own_values_only_unless_privileged() {
        let x = extractors();
        let alice = json!({"username": "alice", "roles": ["user"]});
        let support =
            json!({"username": "sam", "roles": ["support"], "scope": "a events:read-all"});
        let mine =
            subs(json!([{"eventType": "greeting", "oneOf": [{"name": "alice", "mood": "ok"}]}]));
        let theirs = subs(json!([{"eventType": "greeting", "oneOf": [{"name": "bob"}]}]));
        let all = subs(json!([{"eventType": "greeting"}]));
        let partly =
            subs(json!([{"eventType": "greeting", "oneOf": [{"name": "alice"}, {"mood": "ok"}]}]));
        let public = subs(json!([{"eventType": "news"}, {"eventType": "other"}]));
        assert!(check_subscriptions(&mine, Some(&alice), &x, None).is_ok());
        assert!(matches!(
            check_subscriptions(&theirs, Some(&alice), &x, None),
            Err(PrivacyError::NotYours { .. })
        ));
        assert!(matches!(
            check_subscriptions(&all, Some(&alice), &x, None),
            Err(PrivacyError::Unconstrained { .. })
        ));
        assert!(matches!(
            check_subscriptions(&partly, Some(&alice), &x, None),
            Err(PrivacyError::Unconstrained { .. })
        ));
        assert!(matches!(
            check_subscriptions(&mine, None, &x, None),
            Err(PrivacyError::NoToken { .. })
        ));
        assert!(check_subscriptions(&public, None, &x, None).is_ok());
        let roles = Privileged::parse("/roles=support").unwrap();
        let scope = Privileged::parse("scope=events:read-all").unwrap();
        assert!(check_subscriptions(&theirs, Some(&support), &x, Some(&roles)).is_ok());
        assert!(check_subscriptions(&all, Some(&support), &x, Some(&scope)).is_ok());
        assert!(check_subscriptions(&theirs, Some(&alice), &x, Some(&roles)).is_err());
        assert!(Privileged::parse("nothing").is_err());
    }

    #[test]
    fn events_carry_the_publishers_own_values() {
        let x = extractors();
        let alice = json!({"username": "alice"});
        let to_alice = json!({"type": "greeting", "data": {"name": "alice"}});
        let to_bob = json!({"type": "greeting", "data": {"name": "bob"}});
        let nobody = json!({"type": "greeting", "data": {"mood": "ok"}});
        assert!(check_event("greeting", &to_alice, Some(&alice), &x, None).is_ok());
        assert!(matches!(
            check_event("greeting", &to_bob, Some(&alice), &x, None),
            Err(PrivacyError::NotYours { .. })
        ));
        assert!(matches!(
            check_event("greeting", &to_alice, None, &x, None),
            Err(PrivacyError::NoToken { .. })
        ));
        assert!(check_event("greeting", &nobody, None, &x, None).is_ok());
        assert!(check_event("news", &to_bob, None, &x, None).is_ok());
    }
}
