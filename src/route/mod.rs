//! Routing: where an event goes. An [`Event`] is built once where it enters the process (an
//! HTTP publish on a shard, a Kafka record on the island): decoded, its subscription fields
//! extracted with the configured JSON pointers ([`fields`]), its JSON compacted into shared
//! `Bytes`. Shards receive it behind an `Arc` and never parse it again; each shard's
//! [`index::SubscriptionIndex`] decides which of its sessions take it.
//!
//! Owns: the event value, field extraction, the subscription model and its compiled form,
//! the per-shard index (which sessions take an event) and the interest table (which shards
//! do). Must not: touch sockets, queues or a runtime (it is pure data and decisions, used on
//! the island and on shards alike).

pub mod event;
pub mod fields;
pub mod index;
pub mod interest;
pub mod subscription;

pub use event::{Event, Pos};
use std::sync::Arc;

/// Events for one shard from one fetch or publish, shared by every shard that gets it.
pub type EventBatch = Arc<Vec<Arc<Event>>>;

/// What travels to every shard (from a publish, the broker island, or another shard).
#[derive(Debug, Clone)]
pub enum Control {
    Events(EventBatch),
    /// A session blacklist entry: end that session's connections, refuse its token until
    /// `until_ms` (Unix ms).
    Blacklist {
        session: Arc<str>,
        until_ms: u64,
    },
    /// A version of an API definition, compiled once; each shard keeps it if it supersedes
    /// the version it holds.
    Api(Arc<crate::proxy::table::CompiledApi>),
    /// A response for a request parked on the shard this goes to (only that shard).
    Reply(Arc<crate::proxy::reply::Reply>),
    /// A subscriptions PUT another node took for a connection of this one (to its shard).
    Forward(Arc<crate::proxy::reply::Forwarded>),
    /// Answered when the shard gets to it: everything queued before it has been applied.
    Ack(async_channel::Sender<()>),
    /// Every record of this partition below `next` that this shard wanted has been sent to it
    /// (the resume frontier moves even when nothing was wanted).
    Progress(Arc<Progress>),
    /// Another node asks who of these users is connected here (answered on the response topic).
    PresenceAsk(Arc<crate::proxy::reply::PresenceAsk>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub topic: Arc<str>,
    pub partition: i32,
    pub next: i64,
}
