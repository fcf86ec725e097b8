//! The interest table: which shards want an event, answered before it is sent anywhere, so an
//! event for one user wakes the one shard that holds that user's connections, and an event
//! nobody subscribed to is dropped where it enters (the island, a publish).
//!
//! One table per process, shared by every shard and the island: a fixed array of cells, each
//! a bitmask of shards, indexed by a hash of what a subscription is filed under in the index
//! (`index.rs`): (event type, field id, value) for a clause's first constraint, or (event type)
//! for a subscription that takes every event of its type. A shard sets its bit in a cell when
//! it first holds a subscription filed there and clears it when it holds none; it keeps its
//! own counts per cell (only it writes its bit, so no update is lost). Two keys may share a
//! cell: that costs a wasted hop to a shard that then finds nobody, never a lost event.
//!
//! Readers do one atomic load per extracted field, with no lock and no write, on every event.
//! A shard sets its bit before it queues `rig.subscriptions_set`, so an event published after
//! a client saw that confirmation always finds the bit.

use super::fields::Fields;
use foldhash::fast::FixedState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shards one process may run: a cell is a 64-bit mask.
pub const MAX_SHARDS: usize = 64;

/// The seed of the cell hash: fixed, so every thread agrees on a key's cell.
const SEED: u64 = 0x636f_7265_6272_6964;

/// What a subscription (and an event) is filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// Every event of the type.
    All(&'a str),
    /// Events of the type whose field has this canonical value.
    Field(&'a str, u16, &'a str),
}

impl Key<'_> {
    fn hash(&self) -> u64 {
        let mut h = FixedState::with_seed(SEED).build_hasher();
        match self {
            Key::All(t) => {
                0u8.hash(&mut h);
                t.hash(&mut h);
            }
            Key::Field(t, id, v) => {
                1u8.hash(&mut h);
                t.hash(&mut h);
                id.hash(&mut h);
                v.hash(&mut h);
            }
        }
        h.finish()
    }
}

#[derive(Debug)]
pub struct Interest {
    cells: Box<[AtomicU64]>,
    mask: usize,
}

impl Interest {
    /// `cells` is rounded up to a power of two.
    pub fn new(cells: usize) -> Arc<Interest> {
        let n = cells.max(64).next_power_of_two();
        Arc::new(Interest {
            cells: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
        })
    }

    fn cell(&self, key: &Key) -> usize {
        key.hash() as usize & self.mask
    }

    /// The shards (bit i = shard i) that may want an event of this type with these fields.
    pub fn shards_for(&self, event_type: &str, fields: &Fields) -> u64 {
        let mut mask = self.cells[self.cell(&Key::All(event_type))].load(Ordering::Acquire);
        for (id, value) in fields {
            mask |=
                self.cells[self.cell(&Key::Field(event_type, *id, value))].load(Ordering::Acquire);
        }
        mask
    }

    /// One shard's writer of this table.
    pub fn for_shard(self: &Arc<Self>, shard: usize) -> ShardInterest {
        assert!(shard < MAX_SHARDS, "at most {MAX_SHARDS} shards");
        ShardInterest {
            table: self.clone(),
            bit: 1 << shard,
            counts: HashMap::new(),
        }
    }
}

/// A shard's side of the table: how many of its subscriptions are filed in each cell.
#[derive(Debug)]
pub struct ShardInterest {
    table: Arc<Interest>,
    bit: u64,
    counts: HashMap<usize, u32>,
}

impl ShardInterest {
    pub fn add(&mut self, key: Key) {
        let cell = self.table.cell(&key);
        let n = self.counts.entry(cell).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.table.cells[cell].fetch_or(self.bit, Ordering::Release);
        }
    }

    pub fn remove(&mut self, key: Key) {
        let cell = self.table.cell(&key);
        if let Some(n) = self.counts.get_mut(&cell) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&cell);
                self.table.cells[cell].fetch_and(!self.bit, Ordering::Release);
                if self.counts.capacity() > 64 && self.counts.capacity() > self.counts.len() * 4 {
                    self.counts.shrink_to_fit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: u16, v: &str) -> Fields {
        vec![(id, v.into())]
    }

    #[test]
    fn shards_see_only_what_they_hold() {
        let t = Interest::new(1 << 12);
        let (mut a, mut b) = (t.for_shard(0), t.for_shard(3));
        a.add(Key::Field("greeting", 0, "\"joe\""));
        b.add(Key::All("other"));
        b.add(Key::Field("greeting", 0, "\"ann\""));
        b.add(Key::Field("greeting", 0, "\"ann\""));
        assert_eq!(t.shards_for("greeting", &f(0, "\"joe\"")), 0b0001);
        assert_eq!(t.shards_for("greeting", &f(0, "\"ann\"")), 0b1000);
        assert_eq!(t.shards_for("other", &f(0, "\"x\"")), 0b1000);
        // A key held twice stays until both are gone.
        b.remove(Key::Field("greeting", 0, "\"ann\""));
        assert_eq!(t.shards_for("greeting", &f(0, "\"ann\"")), 0b1000);
        b.remove(Key::Field("greeting", 0, "\"ann\""));
        a.remove(Key::Field("greeting", 0, "\"joe\""));
        b.remove(Key::All("other"));
        assert_eq!(t.shards_for("greeting", &f(0, "\"ann\"")), 0);
        assert_eq!(t.shards_for("other", &Vec::new()), 0);
    }

    #[test]
    fn collisions_only_add_shards() {
        // A 64-cell table with 1,000 keys: every key's holder is always among the answer.
        let t = Interest::new(64);
        let mut shards: Vec<ShardInterest> = (0..4).map(|s| t.for_shard(s)).collect();
        for k in 0..1000u32 {
            let v = format!("\"u{k}\"");
            shards[(k % 4) as usize].add(Key::Field("t", 0, &v));
        }
        for k in 0..1000u32 {
            let v = format!("\"u{k}\"");
            assert_ne!(t.shards_for("t", &f(0, &v)) & (1 << (k % 4)), 0);
        }
    }
}
