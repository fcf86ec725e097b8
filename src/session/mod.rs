//! The per-shard session registry: every connection (or long-poll session) of one shard, its
//! subscriptions, the subscription index and each session's bounded outbound queue. Owned by
//! exactly one shard, used through `RefCell`, never shared across threads and never held across
//! an await. No I/O here: socket drivers in `conn/` drain the queues.
//!
//! Session lifecycle:
//! ```text
//! open ──> live ──(client gone | slow consumer | shutdown)──> closing ──> removed
//!            │ set_subscriptions: index updated, rig.subscriptions_set queued
//!            │ deliver: encoded once per transport per event, shared handle queued
//! ```
//! A long-poll session has no socket: its queue is a ring of the last `buffer_events` events
//! that polls read by sequence number; it is removed after `session_timeout_ms` without a poll.

pub mod index;
pub mod subscription;
pub mod token;

use crate::config::{Config, SlowConsumer};
use crate::metrics::{DropReason, ShardMetrics, Transport};
use crate::proto::{cloudevents, sse, ws};
use crate::route::Event;
use bytes::Bytes;
use std::rc::Rc;

/// One encoded event (or heartbeat) as queued for sessions of this shard. `Rc`, not `Bytes`:
/// the handle is cloned and dropped once per delivery, and Bytes' atomic reference count cost
/// 13% of the server's CPU under a burst; these never leave the shard.
pub type Frame = Rc<[u8]>;
use index::{Slot, SubscriptionIndex};
use serde_json::Value;
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use subscription::{Compiled, Subscription};
use token::Token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The outbound queue overflowed under the `close` policy.
    SlowConsumer,
    /// The process is shutting down.
    Shutdown,
    /// The session was blacklisted; anything queued (`rig.session_killed` for SSE) goes out
    /// first.
    Killed,
}

/// Bytes drained into one write at most (more stay queued for the next write).
const MAX_WRITE: usize = 64 * 1024;
/// Frames drained into one write at most: each is one `iovec` of a `sendmsg`, and Linux takes
/// at most 1,024.
const MAX_FRAMES: usize = 512;
/// Events in one batch frame at most (see [`Sessions::deliver_batch`]); also at most an eighth
/// of `queue_events`, so a batch frame never alone makes a session a slow consumer.
const BATCH_EVENTS: usize = 64;
/// Payload bytes in one batch frame at most, so a batch frame stays well inside a write.
const BATCH_BYTES: usize = 32 * 1024;

/// What a socket driver gets when it asks for output.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Bytes were appended to the caller's buffer.
    Data,
    /// The session must end; anything queued was discarded.
    Close(CloseReason),
    /// The session no longer exists (removed by someone else).
    Gone,
}

/// A queued frame and the events it carries: several for a batch frame, one for a single
/// event, a RIG event or a heartbeat.
#[derive(Debug)]
struct Item {
    frame: Frame,
    events: u32,
}

#[derive(Debug, Default)]
struct OutQueue {
    items: VecDeque<Item>,
    bytes: usize,
    /// Events queued, which `queue_events` bounds (a batch frame holds several).
    events: u32,
    /// Sequence number the next pushed item gets (long-poll ids).
    next_seq: u64,
    waker: Option<Waker>,
    close: Option<CloseReason>,
    /// Events dropped by drop-oldest since the last drain, announced to SSE clients.
    gap: u64,
    /// Something was queued since the last heartbeat tick.
    active: bool,
}

#[derive(Debug)]
pub struct Session {
    pub transport: Transport,
    token: Token,
    subs: Vec<Subscription>,
    compiled: Vec<Compiled>,
    /// Last delivery stamp; an event reaching a session through several clauses is queued once.
    stamp: u64,
    out: OutQueue,
    last_poll: Instant,
    /// The JWT sessions (claim named by JWT_SESSION_FIELD) this connection was used with; it
    /// belongs to all of them, as in RIG, so blacklisting any one ends it.
    jwt_sessions: Vec<Box<str>>,
}

pub struct Sessions {
    cfg: Arc<Config>,
    node: u32,
    shard: u16,
    slab: Slab<Session>,
    index: SubscriptionIndex,
    next_gen: u32,
    stamp: u64,
    metrics: Arc<ShardMetrics>,
    /// Connections per JWT session, to end them when the session is blacklisted.
    by_session: HashMap<Box<str>, Vec<(Slot, Token)>>,
    heartbeat: Frame,
    ping: Frame,
    /// Blacklisted sessions and when (unix ms) each entry expires. Every shard holds all of
    /// them (entries reach every shard through the mesh and, with Kafka, every node).
    blacklist: HashMap<Box<str>, u64>,
}

/// The connection's JWT session is blacklisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blacklisted;

/// Why a token does not name a live session here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// Not ours (another node) or forged: RIG's "Invalid connection token."
    Invalid,
    /// Was ours, is gone: RIG's 410 "Connection no longer exists."
    Gone,
}

impl Sessions {
    pub fn new(cfg: Arc<Config>, node: u32, shard: u16, metrics: Arc<ShardMetrics>) -> Sessions {
        Sessions {
            cfg,
            node,
            shard,
            slab: Slab::new(),
            index: SubscriptionIndex::default(),
            next_gen: fastrand::u32(..),
            stamp: 0,
            metrics,
            by_session: HashMap::new(),
            heartbeat: Frame::from(sse::HEARTBEAT),
            ping: Frame::from(ws::PING),
            blacklist: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// SSE and WebSocket sessions (those with a socket driver).
    pub fn streams(&self) -> usize {
        self.slab
            .iter()
            .filter(|(_, s)| s.transport != Transport::LongPoll)
            .count()
    }

    pub fn subscription_limits(&self) -> subscription::Limits {
        subscription::Limits {
            max_subscriptions: self.cfg.tuning.sessions.max_subscriptions,
            max_clauses: self.cfg.tuning.sessions.max_clauses,
        }
    }

    /// Registers a session, queues `rig.connection.create` and `rig.subscriptions_set`.
    /// Refused when its JWT session is blacklisted by now: an entry that arrived while the
    /// connection was being admitted (after its token was checked) must not be missed.
    pub fn open(
        &mut self,
        transport: Transport,
        subs: Vec<Subscription>,
        jwt_session: Option<String>,
    ) -> Result<(Slot, Token), Blacklisted> {
        if let Some(js) = &jwt_session {
            if self.is_blacklisted(js, now_ms()) {
                return Err(Blacklisted);
            }
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let entry = self.slab.vacant_entry();
        let slot = entry.key() as Slot;
        let token = Token {
            node: self.node,
            shard: self.shard,
            slot,
            gen: self.next_gen,
            secret: fastrand::u64(..),
        };
        entry.insert(Session {
            transport,
            token,
            subs: Vec::new(),
            compiled: Vec::new(),
            stamp: 0,
            out: OutQueue::default(),
            last_poll: Instant::now(),
            jwt_sessions: Vec::new(),
        });
        if let Some(js) = jwt_session {
            self.associate(slot, js);
        }
        self.metrics.connections[transport as usize].inc();
        self.metrics.connections_opened[transport as usize].inc();
        let create = cloudevents::rig_event(
            "rig.connection.create",
            Some(serde_json::json!({ "connection_token": token.encode() })),
        );
        self.push_rig_event(slot, &create);
        self.replace_subscriptions(slot, subs);
        Ok((slot, token))
    }

    /// The slot a token names, if it is a live session of this shard.
    pub fn lookup(&self, token: &Token) -> Result<Slot, LookupError> {
        if token.node != self.node || token.shard != self.shard {
            return Err(LookupError::Invalid);
        }
        match self.slab.get(token.slot as usize) {
            Some(s) if s.token == *token => Ok(token.slot),
            _ => Err(LookupError::Gone),
        }
    }

    /// Adds a JWT session to a connection (at connect, and on each subscriptions PUT that
    /// carries a token, as RIG does; earlier sessions stay). If that session is blacklisted by
    /// now, the connection is ended as a blacklisting would and false is returned.
    pub fn associate(&mut self, slot: Slot, jwt_session: String) -> bool {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return false;
        };
        if s.jwt_sessions.iter().any(|j| **j == *jwt_session) {
            return true;
        }
        let token = s.token;
        s.jwt_sessions.push(jwt_session.clone().into_boxed_str());
        self.by_session
            .entry(jwt_session.clone().into_boxed_str())
            .or_default()
            .push((slot, token));
        if self.is_blacklisted(&jwt_session, now_ms()) {
            let until = self.blacklist[jwt_session.as_str()];
            self.blacklist(&jwt_session, until);
            return false;
        }
        true
    }

    fn forget_session(&mut self, jwt_session: &str, slot: Slot) {
        if let Some(list) = self.by_session.get_mut(jwt_session) {
            list.retain(|(s, _)| *s != slot);
            if list.is_empty() {
                self.by_session.remove(jwt_session);
            }
        }
    }

    pub fn is_blacklisted(&self, jwt_session: &str, now_ms: u64) -> bool {
        self.blacklist
            .get(jwt_session)
            .is_some_and(|&until| until > now_ms)
    }

    /// Adds (or extends) a blacklist entry and ends every connection of that session on this
    /// shard: SSE gets `rig.session_killed` and its stream closes, WebSocket closes with
    /// "Session killed.", long-poll sessions are removed. Returns how many ended.
    pub fn blacklist(&mut self, jwt_session: &str, until_ms: u64) -> usize {
        let entry = self.blacklist.entry(jwt_session.into()).or_insert(0);
        *entry = (*entry).max(until_ms);
        let Some(victims) = self.by_session.remove(jwt_session) else {
            return 0;
        };
        let mut n = 0;
        for (slot, token) in victims {
            let Some(s) = self.slab.get(slot as usize).filter(|s| s.token == token) else {
                continue;
            };
            n += 1;
            match s.transport {
                Transport::LongPoll => self.close(slot, &token),
                t => {
                    if t == Transport::Sse {
                        let ev = cloudevents::rig_event("rig.session_killed", None);
                        self.push(slot, encode(t, &ev.id, &ev.event_type, &ev.to_json()));
                    }
                    let q = &mut self.slab[slot as usize].out;
                    q.close = Some(CloseReason::Killed);
                    if let Some(w) = q.waker.take() {
                        w.wake();
                    }
                }
            }
        }
        n
    }

    pub fn token(&self, slot: Slot) -> Option<Token> {
        self.slab.get(slot as usize).map(|s| s.token)
    }

    /// Replaces all subscriptions of a session and queues `rig.subscriptions_set`.
    pub fn replace_subscriptions(&mut self, slot: Slot, subs: Vec<Subscription>) {
        let compiled: Vec<Compiled> = subs
            .iter()
            .map(|s| Compiled::new(s, &self.cfg.extractors))
            .collect();
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return;
        };
        self.index.remove(slot, &s.compiled);
        self.index.insert(slot, &compiled);
        self.metrics.subscriptions.sub(s.subs.len() as u64);
        self.metrics.subscriptions.add(subs.len() as u64);
        let data = Value::Array(subs.iter().map(Subscription::to_json).collect());
        s.subs = subs;
        s.compiled = compiled;
        let set = cloudevents::rig_event("rig.subscriptions_set", Some(data));
        self.push_rig_event(slot, &set);
    }

    fn push_rig_event(&mut self, slot: Slot, ce: &cloudevents::CloudEvent) {
        let Some(s) = self.slab.get(slot as usize) else {
            return;
        };
        let bytes = encode(s.transport, &ce.id, &ce.event_type, &ce.to_json());
        self.push(slot, bytes);
    }

    /// Queues the events of one batch (a Kafka fetch, a publish) to every matching session, in
    /// order; returns the deliveries. A run of consecutive events of one type that every
    /// subscriber of the type takes whole (no constraints: the fan-out case) is encoded into
    /// one frame per transport and queued once per session, so the subscribers are walked once
    /// per run rather than once per event, and the socket driver writes one shared buffer.
    pub fn deliver_batch(&mut self, evs: &[Arc<Event>]) -> usize {
        let cap = BATCH_EVENTS.min(self.cfg.tuning.sessions.queue_events / 8);
        let mut n = 0;
        let mut i = 0;
        while i < evs.len() {
            let mut j = i + 1;
            if cap >= 2 && self.index.takes_whole(&evs[i].event_type, &evs[i].fields) {
                let mut bytes = evs[i].json.len();
                while j < evs.len()
                    && j - i < cap
                    && bytes < BATCH_BYTES
                    && evs[j].event_type == evs[i].event_type
                    && self.index.takes_whole(&evs[j].event_type, &evs[j].fields)
                {
                    bytes += evs[j].json.len();
                    j += 1;
                }
            }
            n += if j - i >= 2 {
                self.deliver_run(&evs[i..j])
            } else {
                self.deliver(&evs[i])
            };
            i = j;
        }
        n
    }

    /// Events of one type going to exactly the type's unconstrained subscribers.
    fn deliver_run(&mut self, evs: &[Arc<Event>]) -> usize {
        let Some(c) = self.index.candidates(&evs[0].event_type, &evs[0].fields) else {
            return 0;
        };
        let targets: Vec<Slot> = c
            .all
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        let k = evs.len() as u32;
        let mut whole: [Option<Frame>; 2] = [None, None];
        let mut longpoll: Vec<Frame> = Vec::new();
        let mut n = 0;
        for slot in targets {
            let Some(s) = self.slab.get(slot as usize) else {
                continue;
            };
            let t = s.transport;
            if t == Transport::LongPoll {
                // Long-poll ids count events: one item each.
                if longpoll.is_empty() {
                    longpoll = evs
                        .iter()
                        .map(|e| encode(t, &e.id, &e.event_type, &e.json))
                        .collect();
                }
                for f in &longpoll {
                    if self.push(slot, f.clone()) {
                        self.metrics.delivered[t as usize].inc();
                        n += 1;
                    }
                }
                continue;
            }
            let frame = whole[t as usize]
                .get_or_insert_with(|| {
                    let mut out = Vec::new();
                    for e in evs {
                        encode_into(&mut out, t, &e.id, &e.event_type, &e.json);
                    }
                    Frame::from(out)
                })
                .clone();
            if self.push_n(slot, frame, k) {
                self.metrics.delivered[t as usize].add(k as u64);
                n += k as usize;
            }
        }
        n
    }

    /// Queues the event to every matching session; returns how many.
    pub fn deliver(&mut self, ev: &Event) -> usize {
        let Some(c) = self.index.candidates(&ev.event_type, &ev.fields) else {
            return 0;
        };
        self.stamp += 1;
        let stamp = self.stamp;
        let mut targets: Vec<Slot> = Vec::new();
        if let Some(all) = c.all {
            targets.extend(all.iter().copied());
        }
        for set in &c.keyed {
            for &slot in set.iter() {
                if let Some(s) = self.slab.get(slot as usize) {
                    if s.compiled
                        .iter()
                        .any(|c| *c.event_type == *ev.event_type && c.matches(&ev.fields))
                    {
                        targets.push(slot);
                    }
                }
            }
        }
        drop(c);
        let mut encoded: [Option<Frame>; 3] = [None, None, None];
        let mut n = 0;
        for slot in targets {
            let Some(s) = self.slab.get_mut(slot as usize) else {
                continue;
            };
            if s.stamp == stamp {
                continue;
            }
            s.stamp = stamp;
            let t = s.transport;
            let bytes = encoded[t as usize]
                .get_or_insert_with(|| encode(t, &ev.id, &ev.event_type, &ev.json))
                .clone();
            if self.push(slot, bytes) {
                self.metrics.delivered[t as usize].inc();
                n += 1;
            }
        }
        n
    }

    /// Appends one event (or heartbeat) to a session's queue; see [`Sessions::push_n`].
    pub fn push(&mut self, slot: Slot, bytes: Frame) -> bool {
        self.push_n(slot, bytes, 1)
    }

    /// Appends a frame carrying `events` events to a session's queue under the slow-consumer
    /// policy; false if it was not queued.
    fn push_n(&mut self, slot: Slot, bytes: Frame, events: u32) -> bool {
        let limits = &self.cfg.tuning;
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return false;
        };
        let q = &mut s.out;
        if q.close.is_some() {
            return false;
        }
        let t = s.transport;
        let over = |q: &OutQueue| {
            q.events as usize + events as usize > limits.sessions.queue_events
                || q.bytes + bytes.len() > limits.sessions.queue_bytes
        };
        if t == Transport::LongPoll {
            // The long-poll buffer is a ring: the oldest event falls out.
            if q.items.len() >= limits.longpoll.buffer_events {
                if let Some(old) = q.items.pop_front() {
                    q.bytes -= old.frame.len();
                    q.events -= old.events;
                    self.metrics.dropped(t, DropReason::SlowConsumer, 1);
                }
            }
        } else if over(q) {
            match limits.sessions.slow_consumer {
                SlowConsumer::Close => {
                    let lost = (q.events + events) as u64;
                    q.items.clear();
                    q.bytes = 0;
                    q.events = 0;
                    q.close = Some(CloseReason::SlowConsumer);
                    self.metrics.slow_consumer_closes[t as usize].inc();
                    self.metrics.dropped(t, DropReason::SlowConsumer, lost);
                    if let Some(w) = q.waker.take() {
                        w.wake();
                    }
                    return false;
                }
                SlowConsumer::DropOldest => {
                    while !q.items.is_empty() && over(q) {
                        let old = q.items.pop_front().unwrap();
                        q.bytes -= old.frame.len();
                        q.events -= old.events;
                        q.gap += old.events as u64;
                        self.metrics
                            .dropped(t, DropReason::SlowConsumer, old.events as u64);
                    }
                }
            }
        }
        q.bytes += bytes.len();
        q.events += events;
        q.items.push_back(Item {
            frame: bytes,
            events,
        });
        q.next_seq += 1;
        q.active = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        true
    }

    /// For SSE and WebSocket drivers: moves what is queued into `out` (one write's worth: at
    /// most about MAX_WRITE bytes in at most MAX_FRAMES frames; everything when the session was
    /// killed), or registers the waker and returns Pending.
    pub fn poll_drain(
        &mut self,
        slot: Slot,
        token: &Token,
        cx: &Context<'_>,
        out: &mut Vec<Frame>,
    ) -> Poll<Drain> {
        let Some(s) = self
            .slab
            .get_mut(slot as usize)
            .filter(|s| s.token == *token)
        else {
            return Poll::Ready(Drain::Gone);
        };
        let q = &mut s.out;
        if let Some(r) = q.close {
            if r == CloseReason::Killed {
                out.extend(q.items.drain(..).map(|i| i.frame));
                q.bytes = 0;
                q.events = 0;
            }
            return Poll::Ready(Drain::Close(r));
        }
        if q.items.is_empty() && q.gap == 0 {
            q.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if q.gap > 0 && s.transport == Transport::Sse {
            let mut note = Vec::new();
            sse::comment(
                &mut note,
                &format!("{} events dropped (slow consumer)", q.gap),
            );
            out.push(Frame::from(note));
        }
        q.gap = 0;
        // The frames are written from where they are (one sendmsg, no copy into a buffer); a
        // cap on one write's size keeps a burst from monopolising the shard.
        let mut bytes = 0;
        while bytes < MAX_WRITE && out.len() < MAX_FRAMES {
            let Some(i) = q.items.pop_front() else { break };
            q.bytes -= i.frame.len();
            q.events -= i.events;
            bytes += i.frame.len();
            out.push(i.frame);
        }
        // An idle connection keeps no ring at all (idle memory per connection is what bounds a
        // host); the next event allocates a small one again.
        if q.items.is_empty() {
            q.items = VecDeque::new();
        }
        Poll::Ready(Drain::Data)
    }

    /// Ready when the session must end; drivers poll this while a write is blocked.
    pub fn poll_closing(&mut self, slot: Slot, token: &Token, cx: &Context<'_>) -> Poll<Drain> {
        match self
            .slab
            .get_mut(slot as usize)
            .filter(|s| s.token == *token)
        {
            None => Poll::Ready(Drain::Gone),
            Some(s) => match s.out.close {
                Some(r) => Poll::Ready(Drain::Close(r)),
                None => {
                    s.out.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
        }
    }

    /// Removes a session (its driver ended, or a long-poll session expired).
    pub fn close(&mut self, slot: Slot, token: &Token) {
        if self
            .slab
            .get(slot as usize)
            .is_none_or(|s| s.token != *token)
        {
            return;
        }
        let s = self.slab.remove(slot as usize);
        for js in &s.jwt_sessions {
            self.forget_session(js, slot);
        }
        self.index.remove(slot, &s.compiled);
        let t = s.transport as usize;
        self.metrics.subscriptions.sub(s.subs.len() as u64);
        self.metrics.connections[t].sub(1);
        if s.transport != Transport::LongPoll && s.out.events > 0 {
            self.metrics
                .dropped(s.transport, DropReason::Closed, s.out.events as u64);
        }
    }

    /// Long-poll read: events with sequence numbers after `after` (None = from the start), or,
    /// when there are none, Pending with the waker stored. Returns the events and the sequence
    /// number of the newest event (the next `last_event_id`).
    pub fn poll_longpoll(
        &mut self,
        slot: Slot,
        after: Option<u64>,
        cx: Option<&Context<'_>>,
    ) -> Poll<Option<(Vec<Bytes>, u64)>> {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return Poll::Ready(None);
        };
        s.last_poll = Instant::now();
        let q = &mut s.out;
        let first_seq = q.next_seq - q.items.len() as u64;
        // Ids are "seq of the last event seen"; events after it start at after + 1. An id older
        // than the ring returns what is left (RIG returns nothing; both lost the dropped ones).
        let start = match after {
            None => first_seq,
            Some(a) => (a + 1).max(first_seq),
        };
        let last = q.next_seq.saturating_sub(1);
        if start < q.next_seq {
            let skip = (start - first_seq) as usize;
            // Replies may cross shards: copy out of the shard-local frames.
            let events: Vec<Bytes> = q
                .items
                .iter()
                .skip(skip)
                .map(|i| Bytes::copy_from_slice(&i.frame))
                .collect();
            return Poll::Ready(Some((events, last)));
        }
        match cx {
            Some(cx) => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Some((Vec::new(), last))),
        }
    }

    /// The shard's periodic tick: heartbeats for idle SSE/WebSocket sessions, expiry of
    /// abandoned long-poll sessions.
    pub fn tick(&mut self, now: Instant) {
        let lp_timeout = Duration::from_millis(self.cfg.tuning.longpoll.session_timeout_ms);
        let mut idle: Vec<Slot> = Vec::new();
        let mut expired: Vec<(Slot, Token)> = Vec::new();
        for (slot, s) in self.slab.iter_mut() {
            match s.transport {
                Transport::LongPoll => {
                    if now.duration_since(s.last_poll) > lp_timeout {
                        expired.push((slot as Slot, s.token));
                    }
                }
                _ => {
                    if !s.out.active {
                        idle.push(slot as Slot);
                    }
                    s.out.active = false;
                }
            }
        }
        for slot in idle {
            let beat = match self.slab[slot as usize].transport {
                Transport::Sse => self.heartbeat.clone(),
                _ => self.ping.clone(),
            };
            self.push(slot, beat);
            self.slab[slot as usize].out.active = false;
        }
        for (slot, token) in expired {
            self.close(slot, &token);
        }
        let now_ms = crate::session::now_ms();
        self.blacklist.retain(|_, until| *until > now_ms);
    }

    /// Asks every session to end (shutdown).
    pub fn close_all(&mut self, reason: CloseReason) {
        for (_, s) in self.slab.iter_mut() {
            s.out.close = Some(reason);
            if let Some(w) = s.out.waker.take() {
                w.wake();
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: blacklist expiry is compared across nodes.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One event in one transport's wire form (SSE frame, WebSocket text frame, long-poll JSON).
pub fn encode(t: Transport, id: &str, event_type: &str, json: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(json.len() + event_type.len() + id.len() + 24);
    encode_into(&mut out, t, id, event_type, json);
    Frame::from(out)
}

/// Appends one event's wire form; a batch frame is several of these back to back.
fn encode_into(out: &mut Vec<u8>, t: Transport, id: &str, event_type: &str, json: &[u8]) {
    match t {
        // The JSON is compact (no raw newlines), so it is one data line.
        Transport::Sse => sse::encode_event(
            out,
            Some(id),
            Some(event_type),
            std::str::from_utf8(json).unwrap_or_default(),
        ),
        Transport::Ws => ws::encode_frame(out, ws::OpCode::Text, json),
        Transport::LongPoll => out.extend_from_slice(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EnvMap};
    use crate::session::subscription::extract;
    use serde_json::json;

    fn sessions(queue_events: usize, policy: SlowConsumer) -> Sessions {
        let env = EnvMap::from([(
            "EXTRACTORS".to_string(),
            r#"{"a": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}}}}"#
                .to_string(),
        )]);
        let mut cfg = Config::load(&env, None).unwrap();
        cfg.tuning.sessions.queue_events = queue_events;
        cfg.tuning.sessions.slow_consumer = policy;
        Sessions::new(Arc::new(cfg), 7, 0, Arc::new(ShardMetrics::default()))
    }

    fn ev(ty: &str, n: u32) -> Event {
        Event {
            event_type: ty.into(),
            id: format!("0-{n}").into(),
            json: Bytes::from(format!("{{\"type\":\"{ty}\",\"n\":{n}}}")),
            fields: Vec::new(),
        }
    }

    fn sub(ty: &str) -> Vec<Subscription> {
        Subscription::parse_list(
            &json!([{ "eventType": ty }]),
            subscription::Limits {
                max_subscriptions: 8,
                max_clauses: 8,
            },
        )
        .unwrap()
    }

    fn drain(s: &mut Sessions, slot: Slot, token: &Token) -> (Poll<Drain>, Vec<u8>) {
        let mut out = Vec::new();
        let w = std::task::Waker::noop();
        let cx = Context::from_waker(w);
        let p = s.poll_drain(slot, token, &cx, &mut out);
        (p, out.concat())
    }

    #[test]
    fn open_queues_rig_events_and_delivers_once() {
        let mut s = sessions(16, SlowConsumer::Close);
        let (slot, token) = s.open(Transport::Sse, sub("a"), None).unwrap();
        let (_, first) = drain(&mut s, slot, &token);
        let text = String::from_utf8(first).unwrap();
        assert!(text.contains("event: rig.connection.create\n"), "{text}");
        assert!(text.contains("event: rig.subscriptions_set\n"), "{text}");
        assert!(text.contains(&token.encode()));
        assert_eq!(s.deliver(&ev("a", 1)), 1);
        assert_eq!(s.deliver(&ev("b", 2)), 0);
        let (p, out) = drain(&mut s, slot, &token);
        assert_eq!(p, Poll::Ready(Drain::Data));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "id: 0-1\nevent: a\ndata: {\"type\":\"a\",\"n\":1}\n\n"
        );
        assert!(drain(&mut s, slot, &token).0.is_pending());
    }

    #[test]
    fn full_queue_closes_under_close_policy() {
        let mut s = sessions(4, SlowConsumer::Close);
        let (slot, token) = s.open(Transport::Ws, sub("a"), None).unwrap();
        for n in 0..10 {
            s.deliver(&ev("a", n));
        }
        assert_eq!(
            drain(&mut s, slot, &token).0,
            Poll::Ready(Drain::Close(CloseReason::SlowConsumer))
        );
        assert_eq!(s.metrics.slow_consumer_closes[1].get(), 1);
    }

    #[test]
    fn drop_oldest_keeps_newest_and_reports_the_gap() {
        let mut s = sessions(4, SlowConsumer::DropOldest);
        let (slot, token) = s.open(Transport::Sse, sub("a"), None).unwrap();
        for n in 0..10 {
            s.deliver(&ev("a", n));
        }
        let (_, out) = drain(&mut s, slot, &token);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(": 8 events dropped"), "{text}");
        assert!(
            text.contains("id: 0-9\n") && !text.contains("id: 0-5\n"),
            "{text}"
        );
    }

    #[test]
    fn blacklisting_ends_every_transport_of_the_session_only() {
        let mut s = sessions(16, SlowConsumer::Close);
        let (sse, sse_t) = s
            .open(Transport::Sse, sub("a"), Some("sess-1".into()))
            .unwrap();
        let (ws, ws_t) = s
            .open(Transport::Ws, sub("a"), Some("sess-1".into()))
            .unwrap();
        let (lp, _) = s
            .open(Transport::LongPoll, sub("a"), Some("sess-1".into()))
            .unwrap();
        let (other, other_t) = s
            .open(Transport::Sse, sub("a"), Some("sess-2".into()))
            .unwrap();
        let _ = drain(&mut s, sse, &sse_t);
        let until = now_ms() + 60_000;
        assert_eq!(s.blacklist("sess-1", until), 3);
        let (p, out) = drain(&mut s, sse, &sse_t);
        assert_eq!(p, Poll::Ready(Drain::Close(CloseReason::Killed)));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("event: rig.session_killed\n"));
        assert_eq!(
            drain(&mut s, ws, &ws_t).0,
            Poll::Ready(Drain::Close(CloseReason::Killed))
        );
        assert!(matches!(s.poll_longpoll(lp, None, None), Poll::Ready(None)));
        assert_eq!(drain(&mut s, other, &other_t).0, Poll::Ready(Drain::Data));
        assert!(s.is_blacklisted("sess-1", now_ms()));
        assert!(!s.is_blacklisted("sess-1", until + 1));
        assert!(!s.is_blacklisted("sess-2", now_ms()));
    }

    fn constrained(ty: &str, name: &str) -> Vec<Subscription> {
        Subscription::parse_list(
            &json!([{ "eventType": ty, "oneOf": [{ "name": name }] }]),
            subscription::Limits {
                max_subscriptions: 8,
                max_clauses: 8,
            },
        )
        .unwrap()
    }

    fn ids(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect()
    }

    #[test]
    fn batch_runs_reach_every_subscriber_in_order_counted_per_event() {
        let mut s = sessions(64, SlowConsumer::Close);
        let (sse, sse_t) = s.open(Transport::Sse, sub("a"), None).unwrap();
        let (ws, ws_t) = s.open(Transport::Ws, sub("a"), None).unwrap();
        let (lp, _) = s.open(Transport::LongPoll, sub("a"), None).unwrap();
        let (b, b_t) = s.open(Transport::Sse, sub("b"), None).unwrap();
        for (slot, t) in [(sse, &sse_t), (ws, &ws_t), (b, &b_t)] {
            let _ = drain(&mut s, slot, t);
        }
        // a1..a3 form one run (one frame per transport), b1 breaks it, a4 a5 are another run.
        let batch: Vec<Arc<Event>> = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("a", 4), ("a", 5)]
            .into_iter()
            .map(|(t, n)| Arc::new(ev(t, n)))
            .collect();
        assert_eq!(s.deliver_batch(&batch), 3 * 5 + 1);
        assert_eq!(s.slab[sse as usize].out.items.len(), 2);
        assert_eq!(s.slab[sse as usize].out.events, 5);
        let (_, out) = drain(&mut s, sse, &sse_t);
        assert_eq!(
            ids(&String::from_utf8(out).unwrap()),
            ["0-1", "0-2", "0-3", "0-4", "0-5"]
        );
        let (_, out) = drain(&mut s, b, &b_t);
        assert_eq!(ids(&String::from_utf8(out).unwrap()), ["0-1"]);
        // WebSocket: five text frames, each one whole event.
        let (_, mut out) = drain(&mut s, ws, &ws_t);
        let mut ns = Vec::new();
        while !out.is_empty() {
            assert_eq!(out[0], 0x81);
            let len = out[1] as usize;
            let v: Value = serde_json::from_slice(&out[2..2 + len]).unwrap();
            ns.push(v["n"].as_u64().unwrap());
            out.drain(..2 + len);
        }
        assert_eq!(ns, [1, 2, 3, 4, 5]);
        // Long-poll keeps one item (one id) per event.
        let Poll::Ready(Some((events, last))) = s.poll_longpoll(lp, Some(1), None) else {
            panic!()
        };
        assert_eq!((events.len(), last), (5, 6));
        assert_eq!(s.metrics.delivered[Transport::Sse as usize].get(), 6);
    }

    #[test]
    fn constrained_subscribers_break_runs_and_get_only_their_events() {
        let mut s = sessions(64, SlowConsumer::Close);
        let (all, all_t) = s.open(Transport::Sse, sub("a"), None).unwrap();
        let (joe, joe_t) = s
            .open(Transport::Sse, constrained("a", "joe"), None)
            .unwrap();
        for (slot, t) in [(all, &all_t), (joe, &joe_t)] {
            let _ = drain(&mut s, slot, t);
        }
        let with_name = |n: u32, name: &str| {
            let mut e = ev("a", n);
            e.fields = extract("a", &json!({ "data": { "name": name } }), &s.cfg.extractors);
            Arc::new(e)
        };
        let batch = vec![
            with_name(1, "ann"),
            with_name(2, "joe"),
            with_name(3, "ann"),
        ];
        s.deliver_batch(&batch);
        let (_, out) = drain(&mut s, all, &all_t);
        assert_eq!(ids(&String::from_utf8(out).unwrap()), ["0-1", "0-2", "0-3"]);
        let (_, out) = drain(&mut s, joe, &joe_t);
        assert_eq!(ids(&String::from_utf8(out).unwrap()), ["0-2"]);
    }

    #[test]
    fn batch_frames_count_their_events_against_the_queue_bound() {
        // queue_events 16: runs of at most 2 events; 20 events overflow the queue.
        let mut s = sessions(16, SlowConsumer::DropOldest);
        let (slot, token) = s.open(Transport::Sse, sub("a"), None).unwrap();
        let _ = drain(&mut s, slot, &token);
        let batch: Vec<Arc<Event>> = (0..20).map(|n| Arc::new(ev("a", n))).collect();
        s.deliver_batch(&batch);
        assert!(s.slab[slot as usize].out.events <= 16);
        let (_, out) = drain(&mut s, slot, &token);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(": 4 events dropped"), "{text}");
        assert_eq!(ids(&text).len(), 16);
        assert_eq!(ids(&text)[15], "0-19");
    }

    #[test]
    fn longpoll_reads_by_sequence() {
        let mut s = sessions(4, SlowConsumer::Close);
        let (slot, _) = s.open(Transport::LongPoll, sub("a"), None).unwrap();
        let Poll::Ready(Some((first, last))) = s.poll_longpoll(slot, None, None) else {
            panic!()
        };
        assert_eq!((first.len(), last), (2, 1));
        s.deliver(&ev("a", 5));
        let Poll::Ready(Some((next, last))) = s.poll_longpoll(slot, Some(1), None) else {
            panic!()
        };
        assert_eq!((next.len(), last), (1, 2));
        assert_eq!(&next[0][..], br#"{"type":"a","n":5}"#);
        let Poll::Ready(Some((none, _))) = s.poll_longpoll(slot, Some(2), None) else {
            panic!()
        };
        assert!(none.is_empty());
    }
}
