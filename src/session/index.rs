//! The per-shard subscription index: event type -> the sessions that may want it.
//!
//! Each compiled subscription is filed once per clause under its first `(field, value)` pair,
//! or under `all` when it matches every event of the type. Matching an event looks up `all`
//! plus one posting set per extracted field value, so its cost follows the subscriptions whose
//! key matches, not the number of sessions. Candidates found through a key are confirmed against
//! the session's full clauses by the caller (`Compiled::matches`).

use super::subscription::Compiled;
use std::collections::{HashMap, HashSet};

pub type Slot = u32;

#[derive(Debug, Default)]
struct TypeIndex {
    all: HashSet<Slot>,
    by_key: HashMap<(u16, Box<str>), HashSet<Slot>>,
}

impl TypeIndex {
    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_key.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    types: HashMap<Box<str>, TypeIndex>,
}

/// Where to look for one event: sessions to deliver to without further checks, and sessions
/// to confirm against their clauses.
pub struct Candidates<'a> {
    pub all: Option<&'a HashSet<Slot>>,
    pub keyed: Vec<&'a HashSet<Slot>>,
}

impl SubscriptionIndex {
    pub fn insert(&mut self, slot: Slot, subs: &[Compiled]) {
        for c in subs {
            let t = self.types.entry(c.event_type.clone()).or_default();
            if c.match_all {
                t.all.insert(slot);
            } else {
                for clause in &c.clauses {
                    let key = clause[0].clone();
                    t.by_key.entry(key).or_default().insert(slot);
                }
            }
        }
    }

    pub fn remove(&mut self, slot: Slot, subs: &[Compiled]) {
        for c in subs {
            let Some(t) = self.types.get_mut(&c.event_type) else {
                continue;
            };
            if c.match_all {
                t.all.remove(&slot);
            } else {
                for clause in &c.clauses {
                    if let Some(set) = t.by_key.get_mut(&clause[0]) {
                        set.remove(&slot);
                        if set.is_empty() {
                            t.by_key.remove(&clause[0]);
                        }
                    }
                }
            }
            if t.is_empty() {
                self.types.remove(&c.event_type);
            }
        }
    }

    pub fn has_type(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// Whether the event goes to exactly the type's unconstrained subscribers: there are some,
    /// and no constrained subscription is keyed on one of the event's field values.
    pub fn takes_whole(&self, event_type: &str, fields: &[(u16, Box<str>)]) -> bool {
        self.candidates(event_type, fields)
            .is_some_and(|c| c.all.is_some() && c.keyed.is_empty())
    }

    /// `fields`: the event's extracted `(field id, canonical value)` pairs.
    pub fn candidates<'a>(
        &'a self,
        event_type: &str,
        fields: &[(u16, Box<str>)],
    ) -> Option<Candidates<'a>> {
        let t = self.types.get(event_type)?;
        let mut keyed = Vec::new();
        if !t.by_key.is_empty() {
            // Lookups by borrowed tuple need an owned key; fields are few per event.
            for (id, value) in fields {
                if let Some(set) = t.by_key.get(&(*id, value.clone())) {
                    keyed.push(set);
                }
            }
        }
        Some(Candidates {
            all: (!t.all.is_empty()).then_some(&t.all),
            keyed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::subscription::{Clause, Compiled};

    fn sub(ty: &str, clauses: Vec<Clause>) -> Compiled {
        Compiled {
            event_type: ty.into(),
            match_all: clauses.is_empty(),
            clauses,
        }
    }

    #[test]
    fn insert_lookup_remove() {
        let mut ix = SubscriptionIndex::default();
        let a = vec![sub("t", vec![])];
        let b = vec![sub("t", vec![vec![(0, "\"joe\"".into())]])];
        ix.insert(1, &a);
        ix.insert(2, &b);
        let joe = vec![(0u16, Box::<str>::from("\"joe\""))];
        let c = ix.candidates("t", &joe).unwrap();
        assert!(c.all.unwrap().contains(&1));
        assert_eq!(c.keyed.len(), 1);
        assert!(c.keyed[0].contains(&2));
        let ann = vec![(0u16, Box::<str>::from("\"ann\""))];
        assert!(ix.candidates("t", &ann).unwrap().keyed.is_empty());
        ix.remove(1, &a);
        ix.remove(2, &b);
        assert!(!ix.has_type("t"));
    }
}
