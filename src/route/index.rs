//! The per-shard subscription index: which of a shard's sessions take an event.
//!
//! It holds every session's compiled subscriptions (by slot) and files each one once per clause
//! under its first `(field, value)` pair, or under `all` when it matches every event of the
//! type. Matching an event looks up `all` plus one posting set per extracted field value, so its
//! cost follows the subscriptions whose key matches, not the number of sessions; candidates found
//! through a key are confirmed against the session's full clauses. Sets and maps are shrunk when
//! they empty out, so the memory of a connection that subscribed to much comes back when it goes.

use super::fields::Fields;
use super::interest::{Key, ShardInterest};
use super::subscription::Compiled;
use foldhash::fast::RandomState;
use std::collections::{HashMap, HashSet};

type Map<K, V> = HashMap<K, V, RandomState>;
type Set<T> = HashSet<T, RandomState>;

/// A session's place in its shard's registry.
pub type Slot = u32;

#[derive(Debug, Default)]
struct TypeIndex {
    all: Set<Slot>,
    by_key: Map<(u16, Box<str>), Set<Slot>>,
}

impl TypeIndex {
    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_key.is_empty()
    }
}

/// One slot's subscriptions and the stamp of the last event it was chosen for (an event that
/// reaches a session through several clauses is delivered once).
#[derive(Debug, Default)]
struct SlotSubs {
    subs: Box<[Compiled]>,
    stamp: u64,
}

#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    types: Map<Box<str>, TypeIndex>,
    slots: Vec<SlotSubs>,
    stamp: u64,
    /// This shard's side of the process-wide interest table, kept in step with what is filed.
    interest: Option<ShardInterest>,
}

/// Where to look for one event: sessions to deliver to without further checks, and sessions
/// to confirm against their clauses.
pub struct Candidates<'a> {
    pub all: Option<&'a Set<Slot>>,
    pub keyed: Vec<&'a Set<Slot>>,
}

/// A set that held many entries keeps its capacity after they are removed: give it back once
/// it is mostly empty.
fn sparse(capacity: usize, len: usize) -> bool {
    capacity > 64 && capacity > len * 4
}

impl SubscriptionIndex {
    /// An index that announces what it holds in the shared interest table.
    pub fn with_interest(interest: ShardInterest) -> SubscriptionIndex {
        SubscriptionIndex {
            interest: Some(interest),
            ..SubscriptionIndex::default()
        }
    }

    /// Replaces a slot's subscriptions; returns how many it held before.
    pub fn set(&mut self, slot: Slot, subs: Vec<Compiled>) -> usize {
        let i = slot as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, SlotSubs::default);
        }
        let old = std::mem::take(&mut self.slots[i].subs);
        self.unfile(slot, &old);
        self.file(slot, &subs);
        self.slots[i].subs = subs.into_boxed_slice();
        old.len()
    }

    /// Forgets a slot (its session closed); returns how many subscriptions it held.
    pub fn remove(&mut self, slot: Slot) -> usize {
        let n = self.set(slot, Vec::new());
        // Trailing free slots need no entry; the registry reuses low slots first.
        while self.slots.last().is_some_and(|s| s.subs.is_empty()) {
            self.slots.pop();
        }
        if sparse(self.slots.capacity(), self.slots.len()) {
            self.slots.shrink_to_fit();
        }
        n
    }

    fn file(&mut self, slot: Slot, subs: &[Compiled]) {
        for c in subs {
            let t = self.types.entry(c.event_type.clone()).or_default();
            if c.match_all {
                t.all.insert(slot);
                if let Some(i) = &mut self.interest {
                    i.add(Key::All(&c.event_type));
                }
            } else {
                for clause in &c.clauses {
                    t.by_key.entry(clause[0].clone()).or_default().insert(slot);
                    if let Some(i) = &mut self.interest {
                        i.add(Key::Field(&c.event_type, clause[0].0, &clause[0].1));
                    }
                }
            }
        }
    }

    fn unfile(&mut self, slot: Slot, subs: &[Compiled]) {
        for c in subs {
            let Some(t) = self.types.get_mut(&c.event_type) else {
                continue;
            };
            if let Some(i) = &mut self.interest {
                if c.match_all {
                    i.remove(Key::All(&c.event_type));
                } else {
                    for clause in &c.clauses {
                        i.remove(Key::Field(&c.event_type, clause[0].0, &clause[0].1));
                    }
                }
            }
            if c.match_all {
                t.all.remove(&slot);
                if sparse(t.all.capacity(), t.all.len()) {
                    t.all.shrink_to_fit();
                }
            } else {
                for clause in &c.clauses {
                    if let Some(set) = t.by_key.get_mut(&clause[0]) {
                        set.remove(&slot);
                        if set.is_empty() {
                            t.by_key.remove(&clause[0]);
                        } else if sparse(set.capacity(), set.len()) {
                            set.shrink_to_fit();
                        }
                    }
                }
                if sparse(t.by_key.capacity(), t.by_key.len()) {
                    t.by_key.shrink_to_fit();
                }
            }
            if t.is_empty() {
                self.types.remove(&c.event_type);
                if sparse(self.types.capacity(), self.types.len()) {
                    self.types.shrink_to_fit();
                }
            }
        }
    }

    /// Subscriptions a slot holds.
    pub fn count(&self, slot: Slot) -> usize {
        self.slots.get(slot as usize).map_or(0, |s| s.subs.len())
    }

    pub fn has_type(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// Whether the event goes to exactly the type's unconstrained subscribers: there are some,
    /// and no constrained subscription is keyed on one of the event's field values.
    pub fn takes_whole(&self, event_type: &str, fields: &Fields) -> bool {
        self.candidates(event_type, fields)
            .is_some_and(|c| c.all.is_some() && c.keyed.is_empty())
    }

    /// The type's unconstrained subscribers.
    pub fn all_of(&self, event_type: &str) -> impl Iterator<Item = Slot> + '_ {
        self.types
            .get(event_type)
            .into_iter()
            .flat_map(|t| t.all.iter().copied())
    }

    /// `fields`: the event's extracted `(field id, canonical value)` pairs.
    pub fn candidates<'a>(&'a self, event_type: &str, fields: &Fields) -> Option<Candidates<'a>> {
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

    /// Appends to `out` every slot the event goes to, each once.
    pub fn targets(&mut self, event_type: &str, fields: &Fields, out: &mut Vec<Slot>) {
        self.stamp += 1;
        let stamp = self.stamp;
        let Some(t) = self.types.get(event_type) else {
            return;
        };
        let slots = &mut self.slots;
        let mut take = |slots: &mut Vec<SlotSubs>, slot: Slot| {
            let s = &mut slots[slot as usize];
            if s.stamp != stamp {
                s.stamp = stamp;
                out.push(slot);
            }
        };
        for &slot in &t.all {
            take(slots, slot);
        }
        if t.by_key.is_empty() {
            return;
        }
        for (id, value) in fields {
            let Some(set) = t.by_key.get(&(*id, value.clone())) else {
                continue;
            };
            for &slot in set {
                let confirmed = slots[slot as usize]
                    .subs
                    .iter()
                    .any(|c| *c.event_type == *event_type && c.matches(fields));
                if confirmed {
                    take(slots, slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::subscription::Clause;

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
        ix.set(1, vec![sub("t", vec![])]);
        ix.set(2, vec![sub("t", vec![vec![(0, "\"joe\"".into())]])]);
        let joe = vec![(0u16, Box::<str>::from("\"joe\""))];
        let c = ix.candidates("t", &joe).unwrap();
        assert!(c.all.unwrap().contains(&1));
        assert_eq!(c.keyed.len(), 1);
        assert!(c.keyed[0].contains(&2));
        let ann = vec![(0u16, Box::<str>::from("\"ann\""))];
        assert!(ix.candidates("t", &ann).unwrap().keyed.is_empty());
        assert_eq!(ix.remove(1), 1);
        assert_eq!(ix.remove(2), 1);
        assert!(!ix.has_type("t"));
    }

    #[test]
    fn targets_are_confirmed_and_unique() {
        let mut ix = SubscriptionIndex::default();
        let joe = |v: &str| vec![(0u16, Box::<str>::from(v))];
        // Slot 1 matches joe through two clauses and an unconstrained subscription.
        ix.set(
            1,
            vec![
                sub(
                    "t",
                    vec![joe("\"joe\""), vec![(0, "\"joe\"".into()), (1, "3".into())]],
                ),
                sub("t", vec![]),
            ],
        );
        // Slot 2 is keyed on joe but also needs field 1 = 3.
        ix.set(
            2,
            vec![sub("t", vec![vec![(0, "\"joe\"".into()), (1, "3".into())]])],
        );
        let mut out = Vec::new();
        ix.targets("t", &joe("\"joe\""), &mut out);
        assert_eq!(out, vec![1]);
        out.clear();
        let with_age = vec![(0u16, Box::<str>::from("\"joe\"")), (1, "3".into())];
        ix.targets("t", &with_age, &mut out);
        out.sort();
        assert_eq!(out, vec![1, 2]);
        assert_eq!(ix.count(1), 2);
    }

    #[test]
    fn memory_is_given_back() {
        let mut ix = SubscriptionIndex::default();
        for slot in 0..200u32 {
            let clauses = (0..50)
                .map(|i| vec![(0u16, Box::<str>::from(format!("\"{slot}-{i}\"")))])
                .collect();
            ix.set(
                slot,
                vec![sub("t", clauses), sub(&format!("x{slot}"), vec![])],
            );
        }
        for slot in 0..200u32 {
            ix.remove(slot);
        }
        assert!(ix.types.is_empty() && ix.types.capacity() <= 64);
        assert!(ix.slots.capacity() <= 64);
    }
}
