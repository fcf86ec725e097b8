//! Events on their way to shards. An `Event` is built once where it enters the process (HTTP
//! publish today, the broker island later): decoded, its subscription fields extracted with the
//! configured JSON pointers, its JSON compacted into shared `Bytes`. Shards receive it behind an
//! `Arc` and never parse it again.

use crate::config::Extractors;
use crate::proto::cloudevents::CloudEvent;
use crate::session::subscription::extract;
use bytes::Bytes;
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
}

#[derive(Debug)]
pub struct Event {
    pub event_type: Box<str>,
    /// The SSE `id:`: where the event came from (origin shard and sequence for HTTP publishes).
    pub id: Box<str>,
    /// The CloudEvent as compact single-line JSON: the WebSocket and long-poll payload, the SSE data.
    pub json: Bytes,
    /// `(field id, canonical value)` for the type's extractor fields, sorted by id.
    pub fields: Vec<(u16, Box<str>)>,
}

impl Event {
    pub fn from_cloudevent(ce: &CloudEvent, id: String, extractors: &Extractors) -> Event {
        Event {
            event_type: ce.event_type.clone().into_boxed_str(),
            id: id.into_boxed_str(),
            json: Bytes::from(ce.to_json()),
            fields: extract(&ce.event_type, &ce.value, extractors),
        }
    }
}
