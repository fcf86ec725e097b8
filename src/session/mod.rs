//! Sessions: every connection (or long-poll session) of one shard and its bounded outbound
//! queue. Owned by exactly one shard, used through `RefCell`, never shared across threads and
//! never borrowed across an await. No I/O here: socket drivers in `conn/` drain the queues;
//! which sessions take an event is `route`'s decision, made by the index the registry holds.
//!
//! - `registry`  — the slab of sessions: open, look up by token, subscriptions, deliver, close
//! - `queue`     — one session's bounded queue and the slow-consumer policy
//! - `longpoll`  — long-poll sessions: the queue read as a ring of recent events by sequence
//! - `heartbeat` — the shard's tick: heartbeats for idle streams, expiry of abandoned polls
//!
//! Session lifecycle:
//! ```text
//! open ──> live ──(client gone | slow consumer | blacklisted | shutdown)──> closing ──> removed
//!            │ set_subscriptions: index updated, rig.subscriptions_set queued
//!            │ deliver: encoded once per transport per event, shared handle queued
//! ```
//! A long-poll session has no socket: its queue is a ring of the last `buffer_events` events
//! that polls read by sequence number; it is removed after `session_timeout_ms` without a poll.

pub mod address;
mod frontier;
mod heartbeat;
mod longpoll;
pub mod tls;
pub use longpoll::Answer as LongPollAnswer;
mod queue;
mod registry;

pub use crate::route::index::Slot;
pub use registry::{stream_key, Output, Presence, PresenceChange, Sent, Sessions, Start};
use std::rc::Rc;

/// One encoded event (or heartbeat) as queued for sessions of this shard. `Rc`, not `Bytes`:
/// the handle is cloned and dropped once per delivery, and Bytes' atomic reference count cost
/// 13% of the server's CPU under a burst; these never leave the shard.
pub type Frame = Rc<[u8]>;

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

/// What a socket driver gets when it asks for output.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Frames were appended to the caller's list.
    Data,
    /// The session must end; anything queued was discarded.
    Close(CloseReason),
    /// The session no longer exists (removed by someone else).
    Gone,
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
