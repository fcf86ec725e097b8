//! `POST /_rig/v1/events` (inbound) and `POST /v3/messages` (internal): validate a CloudEvent
//! (structured or binary mode, 0.1/0.2/1.0), deliver it to every shard, answer 202 with the
//! event. Without a broker the event goes straight through the shard mesh.

use super::{Outcome, Resp};
use crate::metrics::Source;
use crate::proto::cloudevents;
use crate::proto::http1::RequestHead;
use crate::route::Event;
use crate::runtime::shard::Shard;
use std::rc::Rc;
use std::sync::Arc;

pub async fn publish(shard: &Rc<Shard>, head: &RequestHead, body: &[u8]) -> Outcome {
    let ce = match cloudevents::from_http(head.header_str("content-type"), &head.headers, body) {
        Ok(ce) => ce,
        Err(e) => return Resp::text(e.status(), e.to_string()).into(),
    };
    // The SSE id names where the event entered: origin shard and its sequence.
    let id = format!("{}-{}", shard.id, shard.next_publish_seq());
    let event = Arc::new(Event::from_cloudevent(&ce, id, &shard.cfg().extractors));
    let echo = event.json.to_vec();
    shard.metrics.received[Source::Http as usize].inc();
    shard.broadcast(vec![event]).await;
    Resp::json(202, echo).into()
}
