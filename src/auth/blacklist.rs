//! The session blacklist, one feature in one place. An entry names a JWT session (the claim
//! `JWT_SESSION_FIELD` points at) and when it expires; while it lasts, tokens of that session
//! are refused and every connection that was used with it is ended.
//!
//! Every shard holds the whole list (entries reach every shard through the mesh and, with
//! Kafka, every node through the control topic, `proto::control`). Each shard also remembers
//! which of its own connections belong to which sessions (`K` is the registry's key for a
//! connection), so an entry ends them without a scan. Expiry is wall-clock milliseconds, since
//! entries are compared across nodes. No I/O, no runtime: the registry and the API call in.

use std::collections::HashMap;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct Blacklist<K> {
    /// Session -> expiry (Unix ms).
    entries: HashMap<Box<str>, u64>,
    /// Session -> this shard's connections used with it.
    members: HashMap<Box<str>, Vec<K>>,
}

impl<K> Default for Blacklist<K> {
    fn default() -> Self {
        Blacklist {
            entries: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

impl<K: Copy + PartialEq> Blacklist<K> {
    /// Sessions listed (some may have expired since the last clean-up).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_listed(&self, session: &str, now_ms: u64) -> bool {
        self.entries
            .get(session)
            .is_some_and(|&until| until > now_ms)
    }

    /// Adds (or extends) an entry; returns the connections to end (they are forgotten here).
    pub fn add(&mut self, session: &str, until_ms: u64) -> Vec<K> {
        let entry = self.entries.entry(session.into()).or_insert(0);
        *entry = (*entry).max(until_ms);
        self.members.remove(session).unwrap_or_default()
    }

    /// Records that connection `k` was used with `session` (at connect, and on each
    /// subscriptions PUT with a token: a connection belongs to every session it was used with,
    /// as in RIG). True when the session is listed by now: the caller ends the connection.
    pub fn associate(&mut self, session: &str, k: K, now_ms: u64) -> bool {
        if self.is_listed(session, now_ms) {
            return true;
        }
        let list = self.members.entry(session.into()).or_default();
        if !list.contains(&k) {
            list.push(k);
        }
        false
    }

    /// Forgets connection `k` of `session` (it closed).
    pub fn forget(&mut self, session: &str, k: K) {
        if let Some(list) = self.members.get_mut(session) {
            list.retain(|x| *x != k);
            if list.is_empty() {
                self.members.remove(session);
            }
        }
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now_ms: u64) {
        self.entries.retain(|_, until| *until > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_end_members_and_expire() {
        let mut b: Blacklist<u32> = Blacklist::default();
        assert!(!b.associate("s1", 1, 100));
        assert!(!b.associate("s1", 2, 100));
        assert!(!b.associate("s2", 3, 100));
        b.forget("s1", 2);
        assert_eq!(b.add("s1", 1_000), vec![1]);
        assert!(b.is_listed("s1", 999) && !b.is_listed("s1", 1_000));
        assert!(!b.is_listed("s2", 500));
        // A connection used with a listed session is ended at once and not remembered.
        assert!(b.associate("s1", 4, 500));
        assert!(b.add("s1", 2_000).is_empty(), "extends; nobody left to end");
        b.expire(1_500);
        assert!(b.is_listed("s1", 1_500));
        b.expire(2_000);
        assert!(!b.is_listed("s1", 1_999));
    }
}
