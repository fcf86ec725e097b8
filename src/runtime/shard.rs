//! One shard: a pinned glommio executor's state. It owns its sessions and subscription index
//! (`RefCell`, never borrowed across an await) and talks to other shards only through the
//! channel mesh: event batches one way, requests and replies for sessions it does not own.

use super::oneshot;
use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::route::subscription::SubscriptionSet;
use crate::route::Control;
use crate::session::token::Token;
use crate::session::{LookupError, Sessions};
use bytes::Bytes;
use futures_lite::future;
use glommio::channels::channel_mesh::Senders;
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
    pub island: Arc<crate::metrics::island::IslandMetrics>,
    pub connection_rate: crate::api::ratelimit::ConnectionRate,
    /// The JWT verifier; replaced when a new JWKS is fetched (read once per connect).
    pub jwt: Option<std::sync::RwLock<crate::auth::jwt::Verifier>>,
    /// When the JWKS was last fetched (Unix ms), to rate-limit refreshes.
    pub jwks_fetched_ms: std::sync::atomic::AtomicU64,
    pub outbound: crate::broker::http::Outbound,
    /// Set once by the signal thread; shards stop accepting and close their streams.
    pub shutdown: std::sync::atomic::AtomicBool,
}

/// Shard-to-shard messages. Events travel in batches (one message per batch per shard);
/// requests for a session go to the shard named in its token.
pub enum ShardMsg {
    /// Something every shard applies (events to deliver, a blacklist entry); with `ack`, the
    /// receiver answers `Reply::Delivered` to `(shard, id)` once it is applied.
    Apply {
        what: Control,
        ack: Option<(usize, u64)>,
    },
    Request {
        from: usize,
        id: u64,
        req: Request,
    },
    Reply {
        id: u64,
        rep: Reply,
    },
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
}

pub enum Reply {
    SetSubscriptions(Result<(), LookupError>),
    LongPoll(Result<(Vec<Bytes>, u64), LookupError>),
    Delivered,
    /// The owner shard did not answer in time or its channel closed.
    Unavailable,
}

pub struct Shard {
    pub id: usize,
    pub globals: Arc<Globals>,
    pub sessions: RefCell<Sessions>,
    pub metrics: Arc<ShardMetrics>,
    mesh: Senders<ShardMsg>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: Cell<u64>,
    publish_seq: Cell<u64>,
}

impl Shard {
    pub fn new(id: usize, globals: Arc<Globals>, mesh: Senders<ShardMsg>) -> Shard {
        let metrics = globals.metrics[id].clone();
        Shard {
            id,
            sessions: RefCell::new(Sessions::new(
                globals.cfg.clone(),
                globals.node,
                id as u16,
                metrics.clone(),
            )),
            globals,
            metrics,
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            publish_seq: Cell::new(0),
        }
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

    /// Delivers events on every shard (one batch per peer) and returns once every shard has
    /// queued them to its sessions. Publishers answer only then, so an event published after
    /// another's 202 can never overtake it on some shard. Waits while a peer's channel is full:
    /// back-pressure reaches the publisher instead of growing a queue.
    pub async fn broadcast(self: &Rc<Self>, what: Control) {
        let mut waits = Vec::with_capacity(self.shard_count());
        for peer in 0..self.shard_count() {
            if peer == self.id {
                continue;
            }
            let id = self.next_request_id();
            let (tx, rx) = oneshot::channel();
            self.pending.borrow_mut().insert(id, tx);
            let msg = ShardMsg::Apply {
                what: what.clone(),
                ack: Some((self.id, id)),
            };
            if self.mesh.send_to(peer, msg).await.is_ok() {
                waits.push((id, rx));
            } else {
                // A closed channel means that shard is shutting down; nothing to deliver to.
                self.pending.borrow_mut().remove(&id);
            }
        }
        self.apply(&what);
        for (id, rx) in waits {
            self.await_reply(id, rx).await;
        }
    }

    async fn await_reply(&self, id: u64, rx: oneshot::Receiver<Reply>) -> Reply {
        let limit = Duration::from_millis(self.cfg().tuning.longpoll.hold_ms + 5_000);
        let reply = future::or(async { Some(rx.await) }, async {
            glommio::timer::sleep(limit).await;
            None
        })
        .await;
        self.pending.borrow_mut().remove(&id);
        reply.unwrap_or(Reply::Unavailable)
    }

    pub fn apply(&self, what: &Control) {
        let mut s = self.sessions.borrow_mut();
        match what {
            Control::Events(events) => {
                s.deliver_batch(events);
            }
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
        if self.mesh.send_to(owner, msg).await.is_err() {
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
        }
    }

    /// Applies what the broker island sends (event batches from a fetch, control records) until
    /// its queue closes. The queue is bounded: while this shard is busy, the island stops
    /// fetching the partitions that feed it.
    pub async fn receive_island(self: Rc<Self>, rx: async_channel::Receiver<Control>) {
        while let Ok(msg) = rx.recv().await {
            self.apply(&msg);
        }
    }

    /// Receives from one peer until its channel closes.
    pub async fn receive(
        self: Rc<Self>,
        rx: glommio::channels::shared_channel::ConnectedReceiver<ShardMsg>,
    ) {
        while let Some(msg) = rx.recv().await {
            match msg {
                ShardMsg::Apply { what, ack } => {
                    self.apply(&what);
                    if let Some((from, id)) = ack {
                        // Sent from its own task: a receiver that waited on a full channel
                        // could deadlock with a peer doing the same.
                        let me = self.clone();
                        glommio::spawn_local(async move {
                            let _ = me
                                .mesh
                                .send_to(
                                    from,
                                    ShardMsg::Reply {
                                        id,
                                        rep: Reply::Delivered,
                                    },
                                )
                                .await;
                        })
                        .detach();
                    }
                }
                ShardMsg::Request { from, id, req } => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let rep = me.serve(req).await;
                        let _ = me.mesh.send_to(from, ShardMsg::Reply { id, rep }).await;
                    })
                    .detach();
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
