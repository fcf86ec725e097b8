//! The per-shard session registry: a slab of sessions addressed by slot (and, from outside, by
//! token), the subscription index that decides who takes an event, and the shard's copy of the
//! blacklist with the connections each JWT session used.

use super::frontier::Frontiers;
use super::queue::OutQueue;
use super::{Blacklisted, CloseReason, Frame, LookupError, Slot};
use crate::auth::blacklist::{now_ms, Blacklist};
use crate::config::Config;
use crate::metrics::{DropReason, ShardMetrics};
use crate::proto::resume::Frontier;
use crate::proto::token::Token;
use crate::proto::{cloudevents, frame, Transport};
use crate::route::index::SubscriptionIndex;
use crate::route::subscription::{self, SubscriptionSet};
use crate::route::Event;
use slab::Slab;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Presence changes kept between two announcements at most (a connection storm must not grow
/// memory without bound; the announcement says how many went unsaid).
const MAX_PRESENCE_CHANGES: usize = 65_536;

/// Events in one batch frame at most (see [`Sessions::deliver_batch`]); also at most an eighth
/// of `queue_events`, so a batch frame never alone makes a session a slow consumer.
const BATCH_EVENTS: usize = 64;
/// Payload bytes in one batch frame at most, so a batch frame stays well inside a write.
const BATCH_BYTES: usize = 32 * 1024;

#[derive(Debug)]
pub(super) struct Session {
    pub(super) transport: Transport,
    pub(super) token: Token,
    /// The stream's socket, written by the shard's writer and watched by its epoll set; closed
    /// when the session is removed. None until the stream is attached (and for long-poll).
    sock: Option<OwnedFd>,
    /// A WebSocket client's bytes not yet a whole frame (control frames only: data frames are
    /// refused unread). Empty, unallocated, nearly always.
    input: Vec<u8>,
    pub(super) out: OutQueue,
    /// The JWT sessions (claim named by JWT_SESSION_FIELD) this connection was used with; it
    /// belongs to all of them, as in RIG, so blacklisting any one ends it.
    jwt_sessions: Vec<Box<str>>,
    /// Where this connection starts in each partition while the shard's frontier is behind
    /// it (see `frontier.rs`); None nearly always.
    pub(super) floor: Option<Box<Frontier>>,
    /// The shard tick of the last frame queued other than a heartbeat (idle clean-up).
    pub(super) active: u32,
    /// The user (`CB_PRESENCE_CLAIM` of its JWT) and when it connected (Unix ms): presence.
    user: Option<Box<str>>,
    since_ms: u64,
    /// A WebSocket that negotiated permessage-deflate.
    deflate: bool,
    /// The TLS state of a stream that came to an HTTPS port: what is written is sealed with
    /// it, what is read opened (`conn::tls`). None for plain streams.
    tls: Option<Box<rustls::ServerConnection>>,
    /// Its client address's share of `http.max_connections_per_address` (None without a cap),
    /// given back when the session goes.
    address: Option<Box<super::address::AddressSlot>>,
    /// A WebSocket that asked for resume ids (`?last_event_id=`, even empty): each event
    /// carries its id as the CloudEvents extension attribute `lasteventid`.
    ws_ids: bool,
}

/// One live connection of a user, as the presence API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Presence {
    pub user: String,
    pub transport: &'static str,
    pub connected_since_ms: u64,
    pub subscriptions: usize,
}

/// A user's connection came or went (for `rig.presence` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub user: Box<str>,
    pub transport: Transport,
    pub join: bool,
    /// The user's connections on this shard after the change.
    pub remaining: usize,
}

/// How an event is framed for a connection: per transport, plus compressed WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain(Transport),
    Deflate,
    /// WebSocket with resume ids in the events (`lasteventid`), uncompressed or compressed.
    Ids,
    DeflateIds,
}

/// Encodings of one delivery, by [`Variant::index`].
type Encoded = [Option<Frame>; 6];

impl Variant {
    fn of(s: &Session) -> Variant {
        match (s.deflate, s.ws_ids) {
            (true, false) => Variant::Deflate,
            (true, true) => Variant::DeflateIds,
            (false, true) => Variant::Ids,
            (false, false) => Variant::Plain(s.transport),
        }
    }

    /// Its slot among a delivery's encodings.
    fn index(self) -> usize {
        match self {
            Variant::Plain(t) => t as usize,
            Variant::Deflate => 3,
            Variant::Ids => 4,
            Variant::DeflateIds => 5,
        }
    }

    /// Whether the frame carries the event's resume id.
    fn has_ids(self) -> bool {
        matches!(
            self,
            Variant::Plain(Transport::Sse) | Variant::Ids | Variant::DeflateIds
        )
    }
}

/// How a stream that can resume starts: the positions live delivery starts from, and the
/// frontier its first ids carry (lower where a replay will fill in).
#[derive(Debug, Default)]
pub struct Start {
    pub live: Frontier,
    pub first: Frontier,
}

pub struct Sessions {
    pub(super) cfg: Arc<Config>,
    node: u32,
    shard: u16,
    pub(super) slab: Slab<Session>,
    index: SubscriptionIndex,
    next_gen: u32,
    pub(super) metrics: Arc<ShardMetrics>,
    pub(super) blacklist: Blacklist<(Slot, Token)>,
    /// The shard's clock in ticks (see `heartbeat.rs`), stamped on queue activity.
    pub(super) now: u32,
    /// Scratch list of an event's target slots, kept to avoid an allocation per event.
    targets: Vec<Slot>,
    /// Stream sessions with output for the writer, each once (`OutQueue::dirty`).
    dirty: Vec<Slot>,
    /// The shard's writer task, parked while nothing is dirty.
    writer: Option<Waker>,
    /// Stream sessions waiting for room on a full socket.
    stalled: usize,
    /// The tick of the last idle clean-up (`Config::sse_idle`).
    pub(super) last_reap: u32,
    /// The shard's permessage-deflate compressor (reset for every message).
    deflater: Option<Box<flate2::Compress>>,
    /// Each user's connections here (presence), and the changes not yet announced.
    users: std::collections::HashMap<Box<str>, Vec<Slot>>,
    changes: Vec<PresenceChange>,
    /// The resume frontier and its encoding.
    pub(super) fr: Frontiers,
    /// Sessions with a floor (some may have lost it since): while any exist, batches go
    /// event by event; progress messages clear the floors the frontier has passed.
    floored: Vec<Slot>,
    /// See [`Sessions::with_resumable`].
    pub(super) resumable: bool,
}

/// One session's output as the writer sends it: the lead bytes, the frames it took (in the
/// writer's list), and the closing bytes when the stream ends with this write.
#[derive(Debug)]
pub struct Output {
    pub fd: RawFd,
    pub token: Token,
    pub transport: Transport,
    pub lead: Vec<u8>,
    /// The stream ends after this write (killed or shut down): its closing bytes follow.
    pub closing: Option<CloseReason>,
}

/// How the writer's `sendmsg` of one [`Output`] went.
#[derive(Debug)]
pub enum Sent {
    All,
    /// The socket filled up; these bytes are still to go, in order.
    Partly(Vec<u8>),
    /// The client is gone.
    Failed,
}

/// The key a stream's socket is registered under in the shard's epoll set: its slot and its
/// token's generation, so an event for a closed session is not taken for the slot's next one.
pub fn stream_key(token: &Token) -> u64 {
    (u64::from(token.slot) << 32) | u64::from(token.gen)
}

/// Sorts slots so the slab is walked upwards. The index hands out slots in hash order, and the
/// first touch of each session's 248 bytes was a cache miss: 70% of `deliver`'s and of
/// `take_output`'s time in kafka-latency (10,000 sessions, one event at a time). Ascending
/// addresses let the hardware prefetcher fetch ahead; `take_output` fell from 4.5% to 2.6% of
/// the server's samples. Sorting costs a few nanoseconds per slot; a few slots are left alone.
fn in_memory_order(slots: &mut [Slot]) {
    if slots.len() >= 32 {
        slots.sort_unstable();
    }
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
            metrics,
            blacklist: Blacklist::default(),
            now: 0,
            targets: Vec::new(),
            dirty: Vec::new(),
            writer: None,
            stalled: 0,
            last_reap: 0,
            deflater: None,
            users: Default::default(),
            changes: Vec::new(),
            fr: Frontiers::default(),
            floored: Vec::new(),
            resumable: false,
        }
    }

    /// Events carry positions (Kafka, or the node's log of HTTP publishes): frames that carry
    /// ids get resume ids.
    pub fn with_resumable(mut self, resumable: bool) -> Sessions {
        self.resumable = resumable;
        self
    }

    /// The node's own log (`broker::local`) and its partitions, one per shard: ids name them
    /// all from the first event on.
    pub fn with_log(mut self, log: Option<(&Arc<str>, usize)>) -> Sessions {
        if let Some((topic, partitions)) = log {
            self.fr.name_log(topic, partitions);
        }
        self
    }

    /// Sessions on the blacklist (the status page).
    pub fn blacklisted(&self) -> usize {
        self.blacklist.len()
    }

    /// Announces this shard's subscriptions in the process-wide interest table, so events
    /// nobody here wants are not sent here.
    pub fn with_interest(mut self, interest: crate::route::interest::ShardInterest) -> Sessions {
        self.index = SubscriptionIndex::with_interest(interest);
        self
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
        let s = &self.cfg.tuning.sessions;
        subscription::Limits {
            max_subscriptions: s.max_subscriptions,
            max_clauses: s.max_clauses,
            max_bytes: s.max_subscription_bytes,
        }
    }

    /// Registers a session, queues `rig.connection.create` and `rig.subscriptions_set`.
    /// Refused when its JWT session is blacklisted by now: an entry that arrived while the
    /// connection was being admitted (after its token was checked) must not be missed.
    pub fn open(
        &mut self,
        transport: Transport,
        subs: SubscriptionSet,
        jwt_session: Option<String>,
    ) -> Result<(Slot, Token), Blacklisted> {
        self.open_at(transport, subs, jwt_session, false, &|| None)
            .map(|(slot, token, _)| (slot, token))
    }

    /// [`Sessions::open`] for a stream that can resume: `start` is asked once the session's
    /// interest is registered (so the island positions it reads are a clean seam) and gives
    /// where live delivery starts and the frontier of its first ids. `ws_ids`: a WebSocket's
    /// events carry their resume ids.
    pub fn open_at(
        &mut self,
        transport: Transport,
        subs: SubscriptionSet,
        jwt_session: Option<String>,
        ws_ids: bool,
        start: &dyn Fn() -> Option<Start>,
    ) -> Result<(Slot, Token, Option<Start>), Blacklisted> {
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
            sock: None,
            input: Vec::new(),
            out: OutQueue::new(self.now),
            jwt_sessions: Vec::new(),
            floor: None,
            active: self.now,
            user: None,
            since_ms: now_ms(),
            deflate: false,
            ws_ids: ws_ids && transport == Transport::Ws,
            tls: None,
            address: None,
        });
        if let Some(js) = jwt_session {
            self.associate(slot, js);
        }
        self.metrics.connections[transport as usize].inc();
        self.metrics.connections_opened[transport as usize].inc();
        // Interest first, then the positions: see `broker::Positions`.
        let echo = self.set_index(slot, subs);
        let started = start();
        // The first ids carry exactly where the client stands (a replay may follow them).
        let first_id = started
            .as_ref()
            .map(|st| crate::proto::resume::frontier_id(&st.first, now_ms() as i64));
        #[derive(serde::Serialize)]
        struct Created {
            connection_token: String,
        }
        let created = Created {
            connection_token: token.encode(),
        };
        let first_id = first_id.as_deref();
        self.push_new_rig_event(slot, "rig.connection.create", &created, first_id);
        self.push_new_rig_event(slot, "rig.subscriptions_set", &echo, first_id);
        if let Some(st) = &started {
            // Live records below the live start are the replay's; below the client's own
            // position (a node behind the one it came from), it has them already.
            let mut floor = st.live.clone();
            for (k, v) in &st.first {
                let e = floor.entry(k.clone()).or_insert(*v);
                *e = (*e).max(*v);
            }
            // Nearly always the shard is there already (nothing in flight, no client ahead of
            // this node): no floor, and batches stay whole.
            if !self.fr.passed(&floor) {
                self.set_floor(slot, floor);
            }
        }
        Ok((slot, token, started))
    }

    fn set_floor(&mut self, slot: Slot, floor: Frontier) {
        if let Some(s) = self.slab.get_mut(slot as usize) {
            if s.floor.is_none() {
                self.floored.push(slot);
            }
            s.floor = Some(Box::new(floor));
        }
    }

    /// Moves the resume frontier (the island's progress in a partition) and lets go of the
    /// floors it has passed.
    pub fn progress(&mut self, p: &crate::route::Progress) {
        self.fr.progress(p);
        self.release_floors();
    }

    fn release_floors(&mut self) {
        let (slab, fr) = (&mut self.slab, &self.fr);
        self.floored
            .retain(|&slot| match slab.get_mut(slot as usize) {
                Some(s) => match &s.floor {
                    Some(f) if fr.passed(f) => {
                        s.floor = None;
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                None => false,
            });
    }

    /// Puts a resumed connection's replay in front of what was queued since it opened (after
    /// its first `after` frames: `rig.connection.create` and `rig.subscriptions_set`), each
    /// event with the id of the frontier `from` moved past it. Only before the stream is
    /// attached (nothing has been written yet). Returns the events queued.
    pub fn splice_replay(
        &mut self,
        slot: Slot,
        token: &Token,
        after: usize,
        lead: Option<&cloudevents::CloudEvent>,
        replay: &[Arc<Event>],
        mut from: Frontier,
    ) -> usize {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return 0;
        };
        if s.token != *token || s.sock.is_some() {
            return 0;
        }
        let v = Variant::of(s);
        let t = s.transport;
        let min = self.cfg.tuning.sessions.ws_deflate_min_bytes;
        let mut frames = Vec::with_capacity(replay.len() + 1);
        if let Some(ce) = lead {
            let id = crate::proto::resume::frontier_id(&from, now_ms() as i64);
            let mut out = Vec::new();
            let json = ce.to_json();
            Self::encode_parts(
                &mut self.deflater,
                min,
                v,
                &id,
                true,
                &ce.event_type,
                &json,
                &mut out,
            );
            frames.push(Frame::from(out));
        }
        for e in replay {
            let Some(pos) = &e.pos else { continue };
            let mut id = super::frontier::position_id(pos);
            crate::proto::resume::encode_frontier(&from, &mut id);
            crate::proto::resume::push_since(pos.timestamp_ms, &mut id);
            from.insert((pos.topic.clone(), pos.partition), pos.offset + 1);
            let mut out = Vec::new();
            Self::encode_variant(&mut self.deflater, min, v, &id, e, &mut out);
            frames.push(Frame::from(out));
        }
        let n = replay.len();
        s.out.insert_at(after, frames, n as u32);
        if t == Transport::LongPoll {
            s.out.next_seq += (n + usize::from(lead.is_some())) as u64;
        }
        self.metrics.delivered[t as usize].add(n as u64);
        n
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

    pub fn token(&self, slot: Slot) -> Option<Token> {
        self.slab.get(slot as usize).map(|s| s.token)
    }

    /// Adds a JWT session to a connection (at connect, and on each subscriptions PUT that
    /// carries a token, as RIG does; earlier sessions stay). If that session is blacklisted by
    /// now, the connection is ended as a blacklisting would and false is returned.
    pub fn associate(&mut self, slot: Slot, jwt_session: String) -> bool {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return false;
        };
        let token = s.token;
        if !s.jwt_sessions.iter().any(|j| **j == *jwt_session) {
            s.jwt_sessions.push(jwt_session.clone().into_boxed_str());
        }
        if self
            .blacklist
            .associate(&jwt_session, (slot, token), now_ms())
        {
            self.end(slot, token);
            return false;
        }
        true
    }

    pub fn is_blacklisted(&self, jwt_session: &str, now_ms: u64) -> bool {
        self.blacklist.is_listed(jwt_session, now_ms)
    }

    /// Adds (or extends) a blacklist entry and ends every connection of that session on this
    /// shard. Returns how many ended.
    pub fn blacklist(&mut self, jwt_session: &str, until_ms: u64) -> usize {
        let victims = self.blacklist.add(jwt_session, until_ms);
        victims
            .into_iter()
            .filter(|&(slot, token)| self.end(slot, token))
            .count()
    }

    /// Ends a blacklisted connection: SSE gets `rig.session_killed` and its stream closes,
    /// WebSocket closes with "Session killed.", a long-poll session is removed.
    fn end(&mut self, slot: Slot, token: Token) -> bool {
        let Some(s) = self.slab.get(slot as usize).filter(|s| s.token == token) else {
            return false;
        };
        match s.transport {
            Transport::LongPoll => self.close(slot, &token),
            t => {
                if t == Transport::Sse {
                    let ev = cloudevents::rig_event("rig.session_killed", None);
                    let f = frame::encode(t, &ev.id, &ev.event_type, &ev.to_json());
                    self.push(slot, Frame::from(f));
                }
                self.slab[slot as usize].out.close(CloseReason::Killed);
                self.mark_dirty(slot);
            }
        }
        true
    }

    /// Replaces all subscriptions of a session and queues `rig.subscriptions_set`.
    pub fn replace_subscriptions(&mut self, slot: Slot, subs: SubscriptionSet) {
        if !self.slab.contains(slot as usize) {
            return;
        }
        let echo = self.set_index(slot, subs);
        let set = cloudevents::rig_event("rig.subscriptions_set", Some(echo));
        self.push_rig_event(slot, &set);
    }

    fn set_index(&mut self, slot: Slot, subs: SubscriptionSet) -> serde_json::Value {
        let before = self.index.set(slot, subs.compiled);
        self.metrics.subscriptions.sub(before as u64);
        self.metrics
            .subscriptions
            .add(self.index.count(slot) as u64);
        subs.echo
    }

    /// Queues a RIG event. On an SSE stream that can resume (Kafka on) its id is the
    /// connection's frontier, so a reconnect after it resumes from here, not from whatever
    /// id the browser held before.
    fn push_rig_event(&mut self, slot: Slot, ce: &cloudevents::CloudEvent) {
        self.push_rig_frame(slot, &ce.event_type, &ce.id, &ce.to_json(), None)
    }

    /// Makes a RIG event of `event_type` with `data` and queues it; `id` overrides the SSE id.
    fn push_new_rig_event(
        &mut self,
        slot: Slot,
        event_type: &str,
        data: &impl serde::Serialize,
        id: Option<&str>,
    ) {
        let (event_id, json) = cloudevents::rig_event_json(event_type, Some(data));
        self.push_rig_frame(slot, event_type, &event_id, &json, id);
    }

    /// Queues a RIG event given as its type, id and JSON; `id` overrides the SSE id.
    fn push_rig_frame(
        &mut self,
        slot: Slot,
        event_type: &str,
        event_id: &str,
        json: &[u8],
        id: Option<&str>,
    ) {
        let Some(s) = self.slab.get(slot as usize) else {
            return;
        };
        let v = Variant::of(s);
        let resume: Option<std::borrow::Cow<str>> = if let Some(id) = id {
            Some(id.into())
        } else if v.has_ids() && self.resumable {
            let empty = Frontier::new();
            Some(
                self.fr
                    .id_with_floor(None, s.floor.as_deref().unwrap_or(&empty))
                    .into(),
            )
        } else {
            None
        };
        let min = self.cfg.tuning.sessions.ws_deflate_min_bytes;
        let mut out = Vec::with_capacity(json.len() + event_type.len() + 2 * event_id.len() + 64);
        Self::encode_parts(
            &mut self.deflater,
            min,
            v,
            resume.as_deref().unwrap_or(event_id),
            resume.is_some(),
            event_type,
            json,
            &mut out,
        );
        self.push(slot, Frame::from(out));
    }

    /// Queues the events of one batch (a Kafka fetch, a publish) to every matching session, in
    /// order; returns the deliveries. A run of consecutive events of one type that every
    /// subscriber of the type takes whole (no constraints: the fan-out case) is encoded into
    /// one frame per transport and queued once per session, so the subscribers are walked once
    /// per run rather than once per event, and the socket driver writes one shared buffer.
    pub fn deliver_batch(&mut self, evs: &[Arc<Event>]) -> usize {
        // Connections with a floor take events one by one (ids and skips of their own).
        let cap = if !self.floored.is_empty() {
            0
        } else {
            BATCH_EVENTS.min(self.cfg.tuning.sessions.queue_events / 8)
        };
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
        if !self.floored.is_empty() {
            // Deliveries move the frontier too: floors it passed go now, not at the next
            // progress message (up to a second later), so batches are whole again sooner.
            self.release_floors();
        }
        n
    }

    /// Events of one type going to exactly the type's unconstrained subscribers.
    fn deliver_run(&mut self, evs: &[Arc<Event>]) -> usize {
        let mut targets = std::mem::take(&mut self.targets);
        targets.extend(self.index.all_of(&evs[0].event_type));
        in_memory_order(&mut targets);
        let k = evs.len() as u32;
        // The SSE ids, each with the frontier before its event (runs exist only while no
        // session has a floor).
        let ids: Vec<Option<String>> = evs
            .iter()
            .map(|e| {
                let id = self.fr.id(e);
                self.fr.advance(e);
                id
            })
            .collect();
        let mut whole: Encoded = Default::default();
        let mut longpoll: Vec<Frame> = Vec::new();
        let min = self.cfg.tuning.sessions.ws_deflate_min_bytes;
        let mut n = 0;
        for &slot in &targets {
            let Some(s) = self.slab.get(slot as usize) else {
                continue;
            };
            let t = s.transport;
            let v = Variant::of(s);
            if t == Transport::LongPoll {
                // Long-poll ids count events: one item each.
                if longpoll.is_empty() {
                    longpoll = evs
                        .iter()
                        .map(|e| Frame::from(frame::encode(t, &e.id, &e.event_type, &e.json)))
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
            let deflater = &mut self.deflater;
            let f = whole[v.index()]
                .get_or_insert_with(|| {
                    let mut out = Vec::new();
                    for (e, id) in evs.iter().zip(&ids) {
                        let id = id.as_deref().unwrap_or(&e.id);
                        Self::encode_variant(deflater, min, v, id, e, &mut out);
                    }
                    Frame::from(out)
                })
                .clone();
            if self.push_n(slot, f, k) {
                self.metrics.delivered[t as usize].add(k as u64);
                n += k as usize;
            }
        }
        targets.clear();
        self.targets = targets;
        n
    }

    /// Queues the event to every matching session; returns how many.
    pub fn deliver(&mut self, ev: &Event) -> usize {
        let mut targets = std::mem::take(&mut self.targets);
        self.index.targets(&ev.event_type, &ev.fields, &mut targets);
        in_memory_order(&mut targets);
        let mut encoded: Encoded = Default::default();
        let min = self.cfg.tuning.sessions.ws_deflate_min_bytes;
        let mut n = 0;
        for &slot in &targets {
            let Some(s) = self.slab.get(slot as usize) else {
                continue;
            };
            let t = s.transport;
            let v = Variant::of(s);
            let f = match &s.floor {
                Some(floor) if self.fr.passed(floor) => None,
                Some(floor) if Frontiers::below(ev, floor) => continue,
                Some(floor) if v.has_ids() && ev.pos.is_some() => {
                    let id = self.fr.id_with_floor(Some(ev), floor);
                    let mut out = Vec::new();
                    Self::encode_variant(&mut self.deflater, min, v, &id, ev, &mut out);
                    Some(Frame::from(out))
                }
                _ => None,
            };
            let (deflater, fr) = (&mut self.deflater, &mut self.fr);
            let f = match f {
                Some(f) => f,
                None => encoded[v.index()]
                    .get_or_insert_with(|| {
                        // The resume id only when a connection with ids takes the event (once).
                        let sse_id = v.has_ids().then(|| fr.id(ev)).flatten();
                        let id = sse_id.as_deref().unwrap_or(&ev.id);
                        let mut out = Vec::with_capacity(ev.json.len() + id.len() + 32);
                        Self::encode_variant(deflater, min, v, id, ev, &mut out);
                        Frame::from(out)
                    })
                    .clone(),
            };
            if self.push(slot, f) {
                self.metrics.delivered[t as usize].inc();
                n += 1;
            }
        }
        self.fr.advance(ev);
        targets.clear();
        self.targets = targets;
        n
    }

    /// Appends one event (or heartbeat) to a session's queue; see [`Sessions::push_n`].
    pub fn push(&mut self, slot: Slot, f: Frame) -> bool {
        self.push_n(slot, f, 1)
    }

    /// Appends a frame carrying `events` events to a session's queue under the slow-consumer
    /// policy; false if it was not queued.
    fn push_n(&mut self, slot: Slot, f: Frame, events: u32) -> bool {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return false;
        };
        s.active = self.now;
        let queued = s.out.push(
            f,
            events,
            s.transport,
            &self.cfg.tuning,
            &self.metrics,
            self.now,
        );
        if queued && s.transport != Transport::LongPoll {
            self.mark_dirty(slot);
        } else if s.out.close == Some(CloseReason::SlowConsumer) {
            // Its queue overflowed under the close policy: the socket goes now, whatever it
            // still had to send (a full socket would hold the writer's leftovers forever).
            let token = s.token;
            self.close(slot, &token);
        }
        queued
    }

    /// Puts a stream session on the writer's list (once) and wakes the writer, unless it is
    /// waiting for room on a full socket or its socket is not attached yet.
    fn mark_dirty(&mut self, slot: Slot) {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return;
        };
        let q = &mut s.out;
        if s.sock.is_none() || q.dirty || q.stalled || !q.has_output() {
            return;
        }
        q.dirty = true;
        self.dirty.push(slot);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn stream(&mut self, slot: Slot, token: &Token) -> Option<&mut Session> {
        self.slab
            .get_mut(slot as usize)
            .filter(|s| s.token == *token && s.transport != Transport::LongPoll)
    }

    /// A stream's socket, handed to the writer with the bytes that must go first (the
    /// response head). False (and the socket closed) if the session is gone meanwhile.
    /// With `tls`, the stream is sealed from the head on.
    pub fn attach(
        &mut self,
        slot: Slot,
        token: &Token,
        sock: OwnedFd,
        head: Vec<u8>,
        tls: Option<Box<rustls::ServerConnection>>,
    ) -> bool {
        let Some(s) = self.stream(slot, token) else {
            return false;
        };
        s.sock = Some(sock);
        s.out.lead = match tls {
            None => head,
            Some(mut t) => {
                let mut wire = Vec::with_capacity(head.len() + 64);
                super::tls::seal(&mut t, &head, &mut wire);
                s.tls = Some(t);
                wire
            }
        };
        self.mark_dirty(slot);
        true
    }

    /// The stream keeps its address slot until it closes.
    pub fn hold_address(&mut self, slot: Slot, token: &Token, a: super::address::AddressSlot) {
        if let Some(s) = self.stream(slot, token) {
            s.address = Some(Box::new(a));
        }
    }

    /// A TLS stream's state (the watcher opens what the client sent with it).
    pub fn tls(&mut self, slot: Slot, token: &Token) -> Option<&mut rustls::ServerConnection> {
        self.stream(slot, token)?.tls.as_deref_mut()
    }

    /// Whether the writer must seal this session's output.
    pub fn is_tls(&self, slot: Slot) -> bool {
        self.slab
            .get(slot as usize)
            .is_some_and(|s| s.tls.is_some())
    }

    /// Appends `plain`, sealed when the stream is TLS, to `wire` (the writer's pass).
    pub fn seal(&mut self, slot: Slot, plain: &[u8], wire: &mut Vec<u8>) {
        match self
            .slab
            .get_mut(slot as usize)
            .and_then(|s| s.tls.as_deref_mut())
        {
            Some(t) => super::tls::seal(t, plain, wire),
            None => wire.extend_from_slice(plain),
        }
    }

    /// Bytes already on the wire's terms (TLS records rustls wants sent) to go first.
    pub fn send_wire(&mut self, slot: Slot, token: &Token, bytes: &[u8]) {
        if let Some(s) = self.stream(slot, token) {
            s.out.lead.extend_from_slice(bytes);
            self.mark_dirty(slot);
        }
    }

    /// The live stream session registered under an epoll key, and its socket.
    pub fn by_key(&self, key: u64) -> Option<(Slot, Token, RawFd, Transport)> {
        let slot = (key >> 32) as Slot;
        let s = self.slab.get(slot as usize)?;
        let fd = s.sock.as_ref()?.as_raw_fd();
        (u64::from(s.token.gen) == key & 0xffff_ffff).then_some((slot, s.token, fd, s.transport))
    }

    /// A WebSocket client's partial input, to append to and decode from.
    pub fn input(&mut self, slot: Slot, token: &Token) -> Option<&mut Vec<u8>> {
        self.stream(slot, token).map(|s| &mut s.input)
    }

    /// Bytes that must precede the queued frames (a WebSocket pong).
    pub fn send_first(&mut self, slot: Slot, token: &Token, bytes: &[u8]) {
        if let Some(s) = self.stream(slot, token) {
            match s.tls.as_deref_mut() {
                Some(t) => super::tls::seal(t, bytes, &mut s.out.lead),
                None => s.out.lead.extend_from_slice(bytes),
            }
            self.mark_dirty(slot);
        }
    }

    /// The client ends the stream: what a full socket left unsent (never half a frame may be
    /// cut off) followed by `closing` (sealed for TLS), and the socket.
    pub fn take_socket(
        &mut self,
        slot: Slot,
        token: &Token,
        closing: &[u8],
    ) -> Option<(Vec<u8>, OwnedFd)> {
        let s = self.stream(slot, token)?;
        let sock = s.sock.take()?;
        let mut wire = std::mem::take(&mut s.out.lead);
        match s.tls.as_deref_mut() {
            Some(t) => super::tls::seal(t, closing, &mut wire),
            None => wire.extend_from_slice(closing),
        }
        Some((wire, sock))
    }

    /// For the writer: waits until some sessions have output and swaps their slots into `into`.
    pub fn poll_dirty(&mut self, cx: &Context<'_>, into: &mut Vec<Slot>) -> Poll<()> {
        if self.dirty.is_empty() {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut self.dirty, into);
        // Sessions were marked in the order events reached them: several events' runs.
        in_memory_order(into);
        Poll::Ready(())
    }

    /// For the writer: one write's worth of a dirty session (frames into `frames`), or None
    /// when it has nothing for the writer any more. A slow consumer is removed here.
    pub fn take_output(&mut self, slot: Slot, frames: &mut Vec<Frame>) -> Option<Output> {
        let s = self.slab.get_mut(slot as usize)?;
        let q = &mut s.out;
        if !q.dirty {
            return None;
        }
        q.dirty = false;
        let fd = s.sock.as_ref()?.as_raw_fd();
        if q.stalled {
            return None;
        }
        q.take(s.transport, frames);
        let closing = q
            .close
            .filter(|r| matches!(r, CloseReason::Killed | CloseReason::Shutdown))
            .filter(|_| q.items.is_empty());
        Some(Output {
            fd,
            token: s.token,
            transport: s.transport,
            lead: std::mem::take(&mut q.lead),
            closing,
        })
    }

    /// For the writer: how the write of `take_output`'s output went. True when the session
    /// now waits for room (the caller asks epoll to report it).
    pub fn wrote(&mut self, slot: Slot, token: &Token, sent: Sent, closing: bool) -> bool {
        let Some(s) = self.stream(slot, token) else {
            return false;
        };
        match sent {
            // The stream's last bytes are out, or the client is gone: close the socket.
            Sent::All if closing => self.close(slot, token),
            Sent::Failed => self.close(slot, token),
            Sent::All => self.mark_dirty(slot),
            Sent::Partly(rest) => {
                s.out.lead = rest;
                s.out.stalled = true;
                self.stalled += 1;
                return true;
            }
        }
        false
    }

    /// The watcher saw room on a stalled session's socket: the writer takes over again.
    pub fn unstall(&mut self, slot: Slot, token: &Token) {
        if let Some(s) = self.stream(slot, token) {
            if s.out.stalled {
                s.out.stalled = false;
                self.stalled -= 1;
            }
            self.mark_dirty(slot);
        }
    }

    /// What a task waiting for a session's output would get: one write's worth of frames, or
    /// Pending (the unit tests read queues this way).
    #[cfg(test)]
    pub fn poll_drain(
        &mut self,
        slot: Slot,
        token: &Token,
        cx: &Context<'_>,
        out: &mut Vec<Frame>,
    ) -> Poll<super::Drain> {
        match self
            .slab
            .get_mut(slot as usize)
            .filter(|s| s.token == *token)
        {
            None => Poll::Ready(super::Drain::Gone),
            Some(s) => s.out.drain(s.transport, cx, out),
        }
    }

    /// No session waits for the writer.
    pub fn nothing_dirty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Stream sessions waiting for room on a full socket.
    pub fn stalled(&self) -> usize {
        self.stalled
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
        if s.out.stalled {
            self.stalled -= 1;
        }
        for js in &s.jwt_sessions {
            self.blacklist.forget(js, (slot, s.token));
        }
        if let Some(user) = s.user {
            let remaining = match self.users.get_mut(&user) {
                Some(slots) => {
                    slots.retain(|x| *x != slot);
                    slots.len()
                }
                None => 0,
            };
            if remaining == 0 {
                self.users.remove(&user);
            }
            if self.announces_presence() && self.changes.len() < MAX_PRESENCE_CHANGES {
                self.changes.push(PresenceChange {
                    user,
                    transport: s.transport,
                    join: false,
                    remaining,
                });
            }
        }
        let held = self.index.remove(slot);
        let t = s.transport as usize;
        self.metrics.subscriptions.sub(held as u64);
        self.metrics.connections[t].sub(1);
        if s.transport != Transport::LongPoll && s.out.events > 0 {
            self.metrics
                .dropped(s.transport, DropReason::Closed, s.out.events as u64);
        }
        if self.slab.is_empty() {
            // A shard that once held many sessions gives the slab's memory back when they go.
            self.slab.shrink_to_fit();
        }
    }

    /// Joins and leaves are kept for `rig.presence` events only when there is a topic for them.
    fn announces_presence(&self) -> bool {
        self.cfg.presence.topic.is_some()
    }

    /// Marks a WebSocket that negotiated permessage-deflate.
    pub fn set_deflate(&mut self, slot: Slot) {
        if let Some(s) = self.slab.get_mut(slot as usize) {
            s.deflate = s.transport == Transport::Ws;
        }
    }

    /// One event's frame for a transport variant (see [`Variant`]).
    fn encode_variant(
        deflater: &mut Option<Box<flate2::Compress>>,
        min: usize,
        v: Variant,
        id: &str,
        e: &Event,
        out: &mut Vec<u8>,
    ) {
        let resume = e.pos.is_some();
        Self::encode_parts(deflater, min, v, id, resume, &e.event_type, &e.json, out);
    }

    /// [`Sessions::encode_variant`] of the parts: `id` is the SSE id, and the WebSocket's
    /// `lasteventid` when `resume` (it is a resume id).
    #[allow(clippy::too_many_arguments)]
    fn encode_parts(
        deflater: &mut Option<Box<flate2::Compress>>,
        min: usize,
        v: Variant,
        id: &str,
        resume: bool,
        event_type: &str,
        json: &[u8],
        out: &mut Vec<u8>,
    ) {
        let with_id;
        let json = match v {
            Variant::Ids | Variant::DeflateIds if resume => {
                with_id = cloudevents::with_attribute(json, "lasteventid", id);
                &with_id[..]
            }
            _ => json,
        };
        match v {
            Variant::Plain(t) => frame::encode_into(out, t, id, event_type, json),
            Variant::Ids => frame::encode_into(out, Transport::Ws, id, event_type, json),
            Variant::Deflate | Variant::DeflateIds if json.len() < min => {
                frame::encode_into(out, Transport::Ws, id, event_type, json)
            }
            Variant::Deflate | Variant::DeflateIds => {
                let c = deflater.get_or_insert_with(|| {
                    Box::new(flate2::Compress::new(flate2::Compression::fast(), false))
                });
                crate::proto::ws::encode_deflated(out, json, c);
            }
        }
    }

    /// Names the user of a connection (presence); announced as a join.
    pub fn set_user(&mut self, slot: Slot, user: String) {
        let Some(s) = self.slab.get_mut(slot as usize) else {
            return;
        };
        let user: Box<str> = user.into();
        s.user = Some(user.clone());
        let transport = s.transport;
        let slots = self.users.entry(user.clone()).or_default();
        slots.push(slot);
        let remaining = slots.len();
        if self.announces_presence() && self.changes.len() < MAX_PRESENCE_CHANGES {
            self.changes.push(PresenceChange {
                user,
                transport,
                join: true,
                remaining,
            });
        }
    }

    /// The live connections of these users here (all users' when None, at most `limit`).
    pub fn presence(&self, users: Option<&[String]>, limit: usize) -> Vec<Presence> {
        let describe = |slot: &Slot| {
            let s = self.slab.get(*slot as usize)?;
            Some(Presence {
                user: s.user.as_deref()?.to_string(),
                transport: match s.transport {
                    Transport::Sse => "sse",
                    Transport::Ws => "ws",
                    Transport::LongPoll => "longpolling",
                },
                connected_since_ms: s.since_ms,
                subscriptions: self.index.count(*slot),
            })
        };
        let mut out = Vec::new();
        match users {
            Some(users) => {
                for u in users {
                    if let Some(slots) = self.users.get(u.as_str()) {
                        out.extend(slots.iter().filter_map(describe).take(limit));
                    }
                }
            }
            None => out.extend(
                self.users
                    .values()
                    .flatten()
                    .filter_map(describe)
                    .take(limit),
            ),
        }
        out.truncate(limit);
        out
    }

    /// Presence changes since the last call (bounded: under a storm, the oldest are kept and
    /// the rest counted by the caller as not announced).
    pub fn take_presence_changes(&mut self) -> Vec<PresenceChange> {
        std::mem::take(&mut self.changes)
    }

    /// Ends one stream after what is queued (its closing bytes from the writer).
    pub(super) fn end_stream(&mut self, slot: Slot, reason: CloseReason) {
        if let Some(s) = self.slab.get_mut(slot as usize) {
            s.out.close(reason);
            self.mark_dirty(slot);
        }
    }

    /// Asks every session to end (shutdown): streams get their closing bytes from the writer.
    pub fn close_all(&mut self, reason: CloseReason) {
        let slots: Vec<Slot> = self.slab.iter().map(|(k, _)| k as Slot).collect();
        for slot in slots {
            // EventSource reconnects after the stream ends; a short retry sends it to another
            // node (this one no longer accepts) sooner than its default 3 s.
            if reason == CloseReason::Shutdown
                && self.slab[slot as usize].transport == Transport::Sse
            {
                self.push(slot, Frame::from(&b"retry: 1000\n\n"[..]));
            }
            self.slab[slot as usize].out.close(reason);
            self.mark_dirty(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EnvMap, SlowConsumer};
    use crate::route::fields::extract;
    use crate::route::subscription::Subscription;
    use crate::session::Drain;
    use bytes::Bytes;
    use serde_json::{json, Value};

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
            pos: None,
        }
    }

    const LIMITS: subscription::Limits = subscription::Limits {
        max_subscriptions: 8,
        max_clauses: 8,
        max_bytes: 16 * 1024,
    };

    fn set(s: &Sessions, list: Value) -> SubscriptionSet {
        let subs = Subscription::parse_list(&list, LIMITS).unwrap();
        SubscriptionSet::build(&subs, &s.cfg.extractors, LIMITS).unwrap()
    }

    fn sub(ty: &str) -> Value {
        json!([{ "eventType": ty }])
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
        let (slot, token) = s.open(Transport::Sse, set(&s, sub("a")), None).unwrap();
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
        let (slot, token) = s.open(Transport::Ws, set(&s, sub("a")), None).unwrap();
        for n in 0..10 {
            s.deliver(&ev("a", n));
        }
        // The session (and its socket) is removed at once, whatever it still had queued.
        assert_eq!(drain(&mut s, slot, &token).0, Poll::Ready(Drain::Gone));
        assert_eq!(s.lookup(&token), Err(LookupError::Gone));
        assert_eq!(s.metrics.slow_consumer_closes[1].get(), 1);
        assert_eq!(s.metrics.connections[1].get(), 0);
    }

    #[test]
    fn drop_oldest_keeps_newest_and_reports_the_gap() {
        let mut s = sessions(4, SlowConsumer::DropOldest);
        let (slot, token) = s.open(Transport::Sse, set(&s, sub("a")), None).unwrap();
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
            .open(Transport::Sse, set(&s, sub("a")), Some("sess-1".into()))
            .unwrap();
        let (ws, ws_t) = s
            .open(Transport::Ws, set(&s, sub("a")), Some("sess-1".into()))
            .unwrap();
        let (lp, _) = s
            .open(
                Transport::LongPoll,
                set(&s, sub("a")),
                Some("sess-1".into()),
            )
            .unwrap();
        let (other, other_t) = s
            .open(Transport::Sse, set(&s, sub("a")), Some("sess-2".into()))
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

    fn constrained(ty: &str, name: &str) -> Value {
        json!([{ "eventType": ty, "oneOf": [{ "name": name }] }])
    }

    fn ids(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect()
    }

    #[test]
    fn batch_runs_reach_every_subscriber_in_order_counted_per_event() {
        let mut s = sessions(64, SlowConsumer::Close);
        let (sse, sse_t) = s.open(Transport::Sse, set(&s, sub("a")), None).unwrap();
        let (ws, ws_t) = s.open(Transport::Ws, set(&s, sub("a")), None).unwrap();
        let (lp, _) = s
            .open(Transport::LongPoll, set(&s, sub("a")), None)
            .unwrap();
        let (b, b_t) = s.open(Transport::Sse, set(&s, sub("b")), None).unwrap();
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
        let Poll::Ready(Some((events, last, _))) = s.poll_longpoll(lp, Some(1), None) else {
            panic!()
        };
        assert_eq!((events.len(), last), (5, 6));
        assert_eq!(s.metrics.delivered[Transport::Sse as usize].get(), 6);
    }

    #[test]
    fn constrained_subscribers_break_runs_and_get_only_their_events() {
        let mut s = sessions(64, SlowConsumer::Close);
        let (all, all_t) = s.open(Transport::Sse, set(&s, sub("a")), None).unwrap();
        let (joe, joe_t) = s
            .open(Transport::Sse, set(&s, constrained("a", "joe")), None)
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
        let (slot, token) = s.open(Transport::Sse, set(&s, sub("a")), None).unwrap();
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
        let (slot, _) = s
            .open(Transport::LongPoll, set(&s, sub("a")), None)
            .unwrap();
        let Poll::Ready(Some((first, last, _))) = s.poll_longpoll(slot, None, None) else {
            panic!()
        };
        assert_eq!((first.len(), last), (2, 1));
        s.deliver(&ev("a", 5));
        let Poll::Ready(Some((next, last, _))) = s.poll_longpoll(slot, Some(1), None) else {
            panic!()
        };
        assert_eq!((next.len(), last), (1, 2));
        assert_eq!(&next[0][..], br#"{"type":"a","n":5}"#);
        let Poll::Ready(Some((none, _, _))) = s.poll_longpoll(slot, Some(2), None) else {
            panic!()
        };
        assert!(none.is_empty());
    }
}
