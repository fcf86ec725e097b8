//! One shard: the state of a pinned single-threaded runtime (`rt`). It owns its sessions and
//! subscription index (`RefCell`, never borrowed across an await) and talks to other shards only by messages:
//! what every shard must apply (published events, control records) goes into each shard's
//! bounded inbound queue, applied in FIFO order; requests and replies for a session another
//! shard owns go over the shard mesh (a bounded queue into each shard).
//!
//! Ordering: a publish is answered once its event sits in every shard's inbound queue, and
//! each shard applies its queue in order, so an event published after another's answer is
//! queued behind it everywhere and never delivered before it.

use super::oneshot;
use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::proto::token::Token;
use crate::route::subscription::SubscriptionSet;
use crate::route::{Control, Event};
use crate::session::{LookupError, Sessions};
use futures_lite::future;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What is shared, read-only, by all shards of the process.
pub struct Globals {
    pub cfg: Arc<Config>,
    /// Random per process: tokens minted by another process are recognised as foreign.
    pub node: u32,
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Produces publishes to Kafka when it is configured.
    pub broker: Option<crate::broker::BrokerHandle>,
    /// Puts records to Kinesis when it is enabled.
    pub kinesis: Option<crate::broker::kinesis::KinesisHandle>,
    pub kinesis_metrics: Arc<crate::metrics::kinesis::KinesisMetrics>,
    /// The NATS island (`NATS_SERVERS`): the event source and the proxy's `target: nats`.
    pub nats: Option<crate::broker::nats::NatsHandle>,
    pub nats_metrics: Arc<crate::metrics::nats::NatsMetrics>,
    pub island: Arc<crate::metrics::island::IslandMetrics>,
    pub connection_rate: crate::api::ratelimit::ConnectionRate,
    /// The JWT verifier; replaced when a new JWKS is fetched (read once per connect).
    pub jwt: Option<std::sync::RwLock<crate::auth::jwt::Verifier>>,
    /// When the JWKS was last fetched (Unix ms), to rate-limit refreshes.
    pub jwks_fetched_ms: std::sync::atomic::AtomicU64,
    pub outbound: crate::broker::http::Outbound,
    /// Resolves upstream host names off the shards.
    pub resolver: crate::broker::dns::Resolver,
    /// Set once by the signal thread; shards stop accepting and close their streams.
    pub shutdown: std::sync::atomic::AtomicBool,
    /// Each shard's inbound queue (index = shard): events and control records every shard
    /// applies, in order.
    pub inbound: Vec<async_channel::Sender<Control>>,
    /// Which shards want which events (shared with the island).
    pub interest: Arc<crate::route::interest::Interest>,
    /// When each shard's writer started its current pass (ms since `epoch`), 0 when idle.
    pub write_pass: Vec<std::sync::atomic::AtomicU64>,
    /// The process's start: `write_pass` counts from here.
    pub epoch: std::time::Instant,
    /// Each shard's last beat (ms since `epoch`), for the systemd watchdog.
    pub beats: super::notify::Beats,
    /// Connections that have not sent a whole first request head yet (`http.max_pending_heads`).
    pub pending_heads: std::sync::atomic::AtomicUsize,
    /// HTTP publishes kept for resuming, when they do not go through a broker.
    pub local: Option<crate::broker::local::LocalLog>,
    /// Each shard thread's CPU time (µs, user and system, the kernel's work in its sends
    /// included): busy share per core (`corebridge_shard_busy_seconds_total`).
    pub busy_us: Vec<std::sync::atomic::AtomicU64>,
    /// When the process started (Unix ms).
    pub started_ms: u64,
    /// `http.max_connections_per_address` (None: no cap).
    pub address_caps: Option<Arc<crate::session::address::AddressCaps>>,
    /// The HTTPS side (`HTTPS_CERTFILE`), shared by every shard; reloaded on SIGHUP.
    pub tls: Option<Arc<crate::conn::tls::TlsServer>>,
}

/// A shard's inbound queue is full: it is behind on deliveries. The publisher gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0}'s inbound queue is full: the gateway is behind on deliveries")]
pub struct Busy(pub usize);

impl crate::error::Blame for Busy {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Ours
    }
}

/// Shard-to-shard requests for a session, sent to the shard named in its token, and replies.
pub enum ShardMsg {
    Request { from: usize, id: u64, req: Request },
    Reply { id: u64, rep: Reply },
}

pub enum Request {
    SetSubscriptions {
        token: Token,
        /// Compiled by the shard that took the request (extractors are the same everywhere).
        subs: SubscriptionSet,
        /// The JWT sessions of the PUT's tokens, added to the connection's (as RIG does).
        sessions: Vec<String>,
    },
    /// Long-poll read; waits up to the hold time for an event when `hold`.
    LongPoll {
        token: Token,
        after: Option<u64>,
        hold: bool,
    },
    /// The live connections of these users (everyone's when None), at most `limit`.
    Presence {
        users: Option<Arc<Vec<String>>>,
        limit: usize,
    },
}

pub enum Reply {
    SetSubscriptions(Result<(), LookupError>),
    LongPoll(Result<crate::session::LongPollAnswer, LookupError>),
    Presence(Vec<crate::session::Presence>),
    /// The owner shard did not answer in time or its channel closed.
    Unavailable,
}

/// A request parked for its correlated response; dropping it (answered, timed out, client
/// gone) frees its slot.
pub struct Parking<'a> {
    shard: &'a Shard,
    at: crate::proxy::pending::Parked,
    rx: Option<oneshot::Receiver<Arc<crate::proxy::reply::Reply>>>,
}

/// What a parked request waits with: one answer, or every answer until it stops waiting
/// (a presence query gathering the other nodes').
pub enum Waiter {
    One(oneshot::Sender<Arc<crate::proxy::reply::Reply>>),
    Many(async_channel::Sender<Arc<crate::proxy::reply::Reply>>),
}

/// The correlation token that names a parked request: node, shard, slot, generation, secret.
fn correlation(shard: &Shard, at: crate::proxy::pending::Parked) -> String {
    crate::proto::token::Token {
        node: shard.globals.node,
        shard: shard.id as u16,
        slot: at.slot,
        gen: at.gen,
        secret: at.secret,
    }
    .encode_correlation()
}

/// A parked request that takes every answer for its token until dropped.
pub struct Gathering<'a> {
    shard: &'a Shard,
    at: crate::proxy::pending::Parked,
    rx: async_channel::Receiver<Arc<crate::proxy::reply::Reply>>,
}

impl<'a> Gathering<'a> {
    /// At most `max` answers are kept.
    pub fn new(shard: &'a Shard, max: usize) -> Gathering<'a> {
        let (tx, rx) = async_channel::bounded(max.max(1));
        let at = shard.parked.borrow_mut().park(Waiter::Many(tx));
        Gathering { shard, at, rx }
    }

    pub fn token(&self) -> String {
        correlation(self.shard, self.at)
    }

    /// Every answer that arrives within `within`.
    pub async fn gather(&self, within: Duration) -> Vec<Arc<crate::proxy::reply::Reply>> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            let next = super::rt::timeout(left, self.rx.recv())
                .await
                .and_then(Result::ok);
            match next {
                Some(r) => out.push(r),
                None => return out,
            }
        }
    }
}

impl Drop for Gathering<'_> {
    fn drop(&mut self) {
        self.shard.parked.borrow_mut().cancel(self.at);
    }
}

impl<'a> Parking<'a> {
    fn new(shard: &'a Shard) -> Parking<'a> {
        let (tx, rx) = oneshot::channel();
        let at = shard.parked.borrow_mut().park(Waiter::One(tx));
        shard.metrics.proxy.pending.add(1);
        Parking {
            shard,
            at,
            rx: Some(rx),
        }
    }

    pub fn token(&self) -> String {
        correlation(self.shard, self.at)
    }

    /// The reply, or None after `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<Arc<crate::proxy::reply::Reply>> {
        let rx = self.rx.take()?;
        super::rt::timeout(within, rx).await
    }
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        self.shard.parked.borrow_mut().cancel(self.at);
        self.shard.metrics.proxy.pending.sub(1);
    }
}

/// Queue messages applied together at most, so one shard's backlog cannot hold the
/// executor in one batch for long.
const MAX_APPLY_BATCH: usize = 256;

pub struct Shard {
    pub id: usize,
    /// The shard's stream sockets (an epoll set), written by its writer, read by its watcher.
    pub streams: crate::conn::stream::Streams,
    pub globals: Arc<Globals>,
    pub sessions: RefCell<Sessions>,
    pub metrics: Arc<ShardMetrics>,
    /// This shard's copy of the API definitions, compiled.
    pub proxy: RefCell<crate::proxy::table::Table>,
    /// Proxied requests waiting for a correlated response.
    pub parked: RefCell<crate::proxy::pending::Pending<Waiter>>,
    /// Keep-alive connections to HTTP upstreams.
    pub upstreams: crate::conn::upstream::Pools,
    /// A sender into every shard's mesh queue, by shard id.
    mesh: Vec<async_channel::Sender<ShardMsg>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: Cell<u64>,
    publish_seq: Cell<u64>,
    /// This shard's partition of the node's log (`globals.local`).
    local: Option<crate::broker::local::LocalPart>,
    /// One logged publish at a time: offsets are given in the order events are queued.
    publish_turn: super::rt::Semaphore,
    /// Requests being handled (head read, answer not yet written): a drain waits for them.
    pub in_flight: Cell<usize>,
}

impl Shard {
    pub fn new(
        id: usize,
        globals: Arc<Globals>,
        mesh: Vec<async_channel::Sender<ShardMsg>>,
        streams: crate::conn::stream::Streams,
    ) -> Shard {
        let metrics = globals.metrics[id].clone();
        let local = globals
            .local
            .as_ref()
            .map(|l| crate::broker::local::LocalPart::new(l, id));
        Shard {
            id,
            streams,
            sessions: RefCell::new(
                Sessions::new(
                    globals.cfg.clone(),
                    globals.node,
                    id as u16,
                    metrics.clone(),
                )
                .with_interest(globals.interest.for_shard(id))
                .with_resumable(globals.broker.is_some() || globals.local.is_some())
                .with_log(
                    globals
                        .local
                        .as_ref()
                        .map(|l| (&l.topic, globals.inbound.len())),
                ),
            ),
            proxy: RefCell::new(crate::proxy::table::Table::new(&globals.cfg.proxy.apis)),
            parked: RefCell::new(Default::default()),
            upstreams: Default::default(),
            globals,
            metrics,
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            publish_seq: Cell::new(0),
            local,
            publish_turn: super::rt::Semaphore::const_new(1),
            in_flight: Cell::new(0),
        }
    }

    /// Parks a request until a reply names it (see [`Parking`]).
    pub fn park(&self) -> Parking<'_> {
        Parking::new(self)
    }

    pub fn cfg(&self) -> &Config {
        &self.globals.cfg
    }

    pub fn shard_count(&self) -> usize {
        self.globals.metrics.len()
    }

    /// Ids of cross-shard requests awaiting a reply.
    fn next_request_id(&self) -> u64 {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        n
    }

    /// The sequence of events published through this shard (their SSE ids).
    pub fn next_publish_seq(&self) -> u64 {
        let n = self.publish_seq.get() + 1;
        self.publish_seq.set(n);
        n
    }

    /// Puts `what` into the inbound queue of every shard in `shards` (bit i = shard i; this
    /// one's too), all or nothing: when a queue is full nothing is queued and the publisher is
    /// told to come back. Returns once the event sits in every queue, not after it was
    /// delivered.
    pub async fn publish(&self, what: Control, shards: u64) -> Result<(), Busy> {
        self.room_in(shards)?;
        self.enqueue(what, shards).await;
        self.wait_for_writers(shards).await;
        Ok(())
    }

    /// Busy (counted) when a queue of `shards` is full: nothing is queued then.
    fn room_in(&self, shards: u64) -> Result<(), Busy> {
        let full = self
            .globals
            .inbound
            .iter()
            .enumerate()
            .find(|(i, q)| shards & (1 << i) != 0 && q.is_full());
        match full {
            Some((i, _)) => {
                self.metrics.publish_busy.inc();
                Err(Busy(i))
            }
            None => Ok(()),
        }
    }

    /// Queues `what` to every shard in `shards`. Only another sender (the island, another
    /// shard) can fill a queue after [`Shard::room_in`] looked; then this waits for room
    /// rather than half-delivering.
    async fn enqueue(&self, what: Control, shards: u64) {
        for (i, q) in self.globals.inbound.iter().enumerate() {
            if shards & (1 << i) != 0 {
                if let Err(async_channel::TrySendError::Full(w)) = q.try_send(what.clone()) {
                    let _ = q.send(w).await;
                }
            }
        }
    }

    /// A publish without a broker (`globals.local` set): the event gets the next offset of
    /// this shard's partition of the node's log and is kept for resuming before the shards
    /// that want it are chosen, then queued to them as [`Shard::publish`] does. Refused (503)
    /// before it is kept, so a retried publish is not kept twice.
    pub async fn publish_logged(&self, event: Event) -> Result<(), Busy> {
        let interest = &self.globals.interest;
        let (Some(log), Some(part)) = (&self.globals.local, &self.local) else {
            return match interest.shards_for(&event.event_type, &event.fields) {
                0 => {
                    self.metrics.unwanted.inc();
                    Ok(())
                }
                w => {
                    self.publish(Control::Events(Arc::new(vec![Arc::new(event)])), w)
                        .await
                }
            };
        };
        let turn = self.publish_turn.acquire().await;
        // Interest may change before the event has its offset; the shards are chosen again
        // after it (see `broker::Positions`).
        let guess = interest.shards_for(&event.event_type, &event.fields);
        self.room_in(guess)?;
        let event = part.append(log, event);
        let wanted = interest.shards_for(&event.event_type, &event.fields);
        if wanted == 0 {
            self.metrics.unwanted.inc();
            return Ok(());
        }
        self.enqueue(Control::Events(Arc::new(vec![event])), wanted)
            .await;
        drop(turn);
        self.wait_for_writers(wanted).await;
        Ok(())
    }

    /// Once a second, tells every shard where this shard's partition of the node's log
    /// stands (if it moved), behind the events already queued.
    pub async fn tell_log_progress(self: Rc<Self>) {
        let (Some(log), Some(part)) = (&self.globals.local, &self.local) else {
            return;
        };
        loop {
            {
                let _turn = self.publish_turn.acquire().await;
                if let Some(p) = part.progress(log) {
                    for q in &self.globals.inbound {
                        if q.send(p.clone()).await.is_err() {
                            return;
                        }
                    }
                }
            }
            crate::runtime::rt::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits (bounded) while a shard the event went to is behind on writing: its writer has
    /// been in one pass for longer than `sessions.max_write_lag_ms`. The publisher's answer is
    /// held meanwhile, as it would be by any server that writes before it answers, so events
    /// arrive no faster than they can be delivered and each write carries more of them. The
    /// event itself is already queued: the sessions the current pass has not reached yet take
    /// it in this pass. Holding it before queueing (as before) added up to a pass to its own
    /// latency; (a) measured p99 180 ms that way.
    async fn wait_for_writers(&self, shards: u64) {
        let lag = self.cfg().tuning.sessions.max_write_lag_ms;
        if lag == 0 {
            return;
        }
        let g = &self.globals;
        let behind = || {
            let now = g.epoch.elapsed().as_millis() as u64;
            g.write_pass.iter().enumerate().any(|(i, p)| {
                let started = p.load(std::sync::atomic::Ordering::Relaxed);
                shards & (1 << i) != 0 && started != 0 && now.saturating_sub(started) > lag
            })
        };
        // Bounded: a writer stuck behind for this long is the inbound queue's problem (503).
        let give_up = std::time::Instant::now() + Duration::from_secs(2);
        while behind() && std::time::Instant::now() < give_up {
            crate::runtime::rt::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The writer of this shard starts (true) or ends (false) a pass.
    pub fn writing(&self, busy: bool) {
        let v = if busy {
            // Never 0 while busy (0 means idle).
            (self.globals.epoch.elapsed().as_millis() as u64).max(1)
        } else {
            0
        };
        self.globals.write_pass[self.id].store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// Like [`Shard::publish`], but waits for room instead of refusing, and then until every
    /// shard applied it: for control records, whose caller answers "done" (a blacklist entry
    /// must not be refused half-applied, nor a token it revokes pass on another shard after
    /// the 201). Bounded by 5 s: a shard that is that far behind is reported, not waited for.
    pub async fn publish_wait(&self, what: Control) {
        let (ack, acks) = async_channel::bounded(self.globals.inbound.len().max(1));
        let mut sent = 0;
        for q in &self.globals.inbound {
            // A closed queue belongs to a shard that is shutting down: nothing to deliver to.
            if q.send(what.clone()).await.is_ok() && q.send(Control::Ack(ack.clone())).await.is_ok()
            {
                sent += 1;
            }
        }
        drop(ack);
        let all = async {
            for _ in 0..sent {
                if acks.recv().await.is_err() {
                    break;
                }
            }
            true
        };
        let within = future::or(all, async {
            crate::runtime::rt::sleep(Duration::from_secs(5)).await;
            false
        })
        .await;
        if !within {
            tracing::warn!(
                shard = self.id,
                "a control record was not applied by every shard within 5 s (a shard is behind)"
            );
        }
    }

    async fn await_reply(&self, id: u64, rx: oneshot::Receiver<Reply>) -> Reply {
        let limit = Duration::from_millis(self.cfg().tuning.longpoll.hold_ms + 5_000);
        let reply = super::rt::timeout(limit, rx).await;
        self.pending.borrow_mut().remove(&id);
        reply.unwrap_or(Reply::Unavailable)
    }

    pub fn apply(self: &Rc<Self>, what: &Control) {
        match what {
            Control::Forward(f) => {
                crate::runtime::rt::spawn(crate::api::subscriptions::forwarded(
                    self.clone(),
                    f.clone(),
                ));
                return;
            }
            Control::Api(api) => {
                self.proxy.borrow_mut().apply(api);
                return;
            }
            Control::Ack(ack) => {
                let _ = ack.try_send(());
                return;
            }
            Control::Reply(reply) => {
                let t = reply.token;
                let at = crate::proxy::pending::Parked {
                    slot: t.slot,
                    gen: t.gen,
                    secret: t.secret,
                };
                let mut parked = self.parked.borrow_mut();
                // A gathering waiter takes every answer until it stops waiting.
                if let Some(Waiter::Many(tx)) = parked.get(at) {
                    let _ = tx.try_send(reply.clone());
                    self.metrics.proxy.replies_delivered.inc();
                    return;
                }
                match parked.take(at) {
                    Some(Waiter::One(tx)) => {
                        self.metrics.proxy.replies_delivered.inc();
                        tx.send(reply.clone());
                    }
                    _ => self.metrics.proxy.replies_dropped.inc(),
                }
                return;
            }
            Control::PresenceAsk(ask) => {
                crate::runtime::rt::spawn(crate::api::presence::answer(self.clone(), ask.clone()));
                return;
            }
            _ => {}
        }
        let mut s = self.sessions.borrow_mut();
        match what {
            Control::Events(events) => {
                s.deliver_batch(events);
            }
            Control::Progress(p) => s.progress(p),
            Control::Blacklist { session, until_ms } => {
                let n = s.blacklist(session, *until_ms);
                if n > 0 {
                    tracing::info!(
                        shard = self.id,
                        connections = n,
                        "blacklisted session ended"
                    );
                }
            }
            Control::Api(_)
            | Control::Reply(_)
            | Control::Forward(_)
            | Control::Ack(_)
            | Control::PresenceAsk(_) => {}
        }
    }

    /// Runs a request on the shard that owns the token's session, here or across the mesh.
    pub async fn call(self: &Rc<Self>, owner: usize, req: Request) -> Reply {
        if owner == self.id {
            return self.serve(req).await;
        }
        if owner >= self.shard_count() {
            return match req {
                Request::SetSubscriptions { .. } => {
                    Reply::SetSubscriptions(Err(LookupError::Invalid))
                }
                Request::LongPoll { .. } => Reply::LongPoll(Err(LookupError::Invalid)),
                Request::Presence { .. } => Reply::Presence(Vec::new()),
            };
        }
        let id = self.next_request_id();
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let msg = ShardMsg::Request {
            from: self.id,
            id,
            req,
        };
        if self.mesh[owner].send(msg).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Reply::Unavailable;
        }
        self.await_reply(id, rx).await
    }

    /// Handles one request for a session owned by this shard.
    pub async fn serve(self: &Rc<Self>, req: Request) -> Reply {
        match req {
            Request::SetSubscriptions {
                token,
                subs,
                sessions,
            } => {
                let mut s = self.sessions.borrow_mut();
                let reply = s.lookup(&token).and_then(|slot| {
                    // A session blacklisted since its token was checked ends the connection.
                    for js in sessions {
                        if !s.associate(slot, js) {
                            return Err(LookupError::Gone);
                        }
                    }
                    s.replace_subscriptions(slot, subs);
                    Ok(())
                });
                Reply::SetSubscriptions(reply)
            }
            Request::LongPoll { token, after, hold } => {
                Reply::LongPoll(crate::conn::longpoll::read(self, token, after, hold).await)
            }
            Request::Presence { users, limit } => Reply::Presence(
                self.sessions
                    .borrow()
                    .presence(users.as_deref().map(Vec::as_slice), limit),
            ),
        }
    }

    /// Applies a queue's messages in order until it closes: the broker island's (event batches
    /// from a fetch, control records; bounded, so while this shard is behind the island stops
    /// fetching the partitions that feed it) or the inbound queue (publishes from every
    /// shard). Whatever has arrived by the time the shard gets to it is applied as one batch,
    /// so events published one at a time still share frames and writes when they pile up.
    pub async fn apply_queue(self: Rc<Self>, rx: async_channel::Receiver<Control>) {
        let mut events: Vec<Arc<crate::route::Event>> = Vec::new();
        while let Ok(first) = rx.recv().await {
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(msg) = next.take() {
                taken += 1;
                match msg {
                    Control::Events(batch) => events.extend(batch.iter().cloned()),
                    other => {
                        // Keep the order: events before a control record go out first.
                        self.deliver(&mut events);
                        self.apply(&other);
                    }
                }
                if taken < MAX_APPLY_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.deliver(&mut events);
        }
    }

    fn deliver(&self, events: &mut Vec<Arc<crate::route::Event>>) {
        if !events.is_empty() {
            self.sessions.borrow_mut().deliver_batch(events);
            events.clear();
        }
    }

    /// Receives requests and replies from the other shards until the mesh closes.
    pub async fn receive(self: Rc<Self>, rx: async_channel::Receiver<ShardMsg>) {
        while let Ok(msg) = rx.recv().await {
            match msg {
                ShardMsg::Request { from, id, req } => {
                    let me = self.clone();
                    crate::runtime::rt::spawn(async move {
                        let rep = me.serve(req).await;
                        let _ = me.mesh[from].send(ShardMsg::Reply { id, rep }).await;
                    });
                }
                ShardMsg::Reply { id, rep } => {
                    if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                        tx.send(rep);
                    }
                }
            }
        }
    }
}
