//! The event value every shard receives: decoded once, fields extracted once, JSON shared.

use super::fields::{extract, Fields};
use crate::config::Extractors;
use crate::proto::cloudevents::CloudEvent;
use bytes::Bytes;
use std::sync::Arc;

#[derive(Debug)]
pub struct Event {
    pub event_type: Box<str>,
    /// The SSE `id:`: where the event came from (origin shard and sequence for HTTP publishes,
    /// `topic/partition/offset` for Kafka records).
    pub id: Box<str>,
    /// The CloudEvent as compact single-line JSON: the WebSocket and long-poll payload, the SSE data.
    pub json: Bytes,
    /// The type's extractor fields, sorted by field id.
    pub fields: Fields,
    /// Where a Kafka record is in its log: SSE ids carry it with the shard's frontier, so a
    /// client can resume from it on any node (`proto::resume`).
    pub pos: Option<Pos>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (Unix ms; -1 unknown): replays merge partitions by it.
    pub timestamp_ms: i64,
}

impl Event {
    pub fn from_cloudevent(ce: &CloudEvent, id: String, extractors: &Extractors) -> Event {
        Event {
            event_type: ce.event_type.clone().into_boxed_str(),
            id: id.into_boxed_str(),
            json: Bytes::from(ce.to_json()),
            fields: extract(&ce.event_type, ce, extractors),
            pos: None,
        }
    }

    pub fn with_pos(mut self, pos: Pos) -> Event {
        self.pos = Some(pos);
        self
    }
}
