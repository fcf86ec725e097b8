//! Requests parked on a shard while they wait for a correlated response (`response_from`
//! other than `http`), or for the owner node's answer to a forwarded subscriptions PUT.
//!
//! A waiter is a slab slot with a generation and a random secret; the correlation token
//! (`proto::token::Token`, correlation kind) names node, shard, slot, generation and secret,
//! so a response read by any node's consumer or posted to any node reaches this shard and
//! this waiter with no lookup elsewhere, and a guessed or stale token finds nothing. The shard
//! removes a waiter when its answer arrives, when it times out, or when its client leaves.
//! `T` is whatever hands the answer over (a oneshot sender on the shard). No I/O here.

use slab::Slab;

#[derive(Debug)]
struct Waiter<T> {
    gen: u32,
    secret: u64,
    tx: T,
}

/// Where a parked request is: what its token carries besides node and shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub slot: u32,
    pub gen: u32,
    pub secret: u64,
}

#[derive(Debug)]
pub struct Pending<T> {
    waiters: Slab<Waiter<T>>,
    next_gen: u32,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            waiters: Slab::new(),
            next_gen: 0,
        }
    }
}

impl<T> Pending<T> {
    pub fn park(&mut self, tx: T) -> Parked {
        self.next_gen = self.next_gen.wrapping_add(1);
        let (gen, secret) = (self.next_gen, fastrand::u64(..));
        let slot = self.waiters.insert(Waiter { gen, secret, tx }) as u32;
        Parked { slot, gen, secret }
    }

    /// The waiter `p` names, removed; None if it is gone (answered, timed out, left) or the
    /// token is not one we issued.
    pub fn take(&mut self, p: Parked) -> Option<T> {
        let w = self.waiters.get(p.slot as usize)?;
        if w.gen != p.gen || w.secret != p.secret {
            return None;
        }
        Some(self.waiters.remove(p.slot as usize).tx)
    }

    /// The waiter `p` names, left in place (a waiter that takes several answers).
    pub fn get(&self, p: Parked) -> Option<&T> {
        let w = self.waiters.get(p.slot as usize)?;
        (w.gen == p.gen && w.secret == p.secret).then_some(&w.tx)
    }

    /// Forgets a waiter that stopped waiting (timeout, client gone).
    pub fn cancel(&mut self, p: Parked) {
        if self
            .waiters
            .get(p.slot as usize)
            .is_some_and(|w| w.gen == p.gen)
        {
            self.waiters.remove(p.slot as usize);
        }
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_finds_its_waiter_once_and_stale_or_forged_ones_nothing() {
        let mut p: Pending<&str> = Pending::default();
        let a = p.park("a");
        let b = p.park("b");
        assert_eq!(
            p.take(Parked {
                secret: a.secret ^ 1,
                ..a
            }),
            None
        );
        assert_eq!(p.take(a), Some("a"));
        assert_eq!(p.take(a), None, "answered once");
        p.cancel(b);
        let c = p.park("c");
        assert_eq!(c.slot, b.slot, "slot reused");
        assert_eq!(p.take(b), None, "the old generation finds nothing");
        assert_eq!(p.take(c), Some("c"));
        assert!(p.is_empty());
    }
}
