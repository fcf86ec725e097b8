//! `POST /_rig/v1/events` (inbound) and `POST /v3/messages` (internal): validate a CloudEvent
//! (structured or binary mode, 0.1/0.2/1.0), deliver it to every shard, answer 202 with the
//! event. Without a broker the event goes into every shard's inbound queue and is answered
//! once it is there (503 with `Retry-After` when a queue is full: the gateway is behind). With Kafka, it is
//! produced to the publish topic and answered after the broker's acknowledgement; every node
//! (this one included) consumes that topic, so subscribers everywhere receive it.

use super::access;
use super::{Outcome, Resp};
use crate::auth::jwt::bearer_tokens;
use crate::broker::{BrokerHandle, ProduceError, ProduceRecord};
use crate::config::Check;
use crate::metrics::Source;
use crate::proto::cloudevents;
use crate::proto::http1::RequestHead;
use crate::route::{Control, Event};
use crate::runtime::shard::Shard;
use std::rc::Rc;
use std::sync::Arc;

/// The inbound `POST /_rig/v1/events`: `SUBMISSION_CHECK` first (RIG's check is broken: it
/// denies every jwt_validation request; ours works as documented), then `publish`.
pub async fn submit(shard: &Rc<Shard>, head: &RequestHead, body: &[u8]) -> Outcome {
    let check = &shard.cfg().submission_check;
    if *check != Check::None {
        let tokens = bearer_tokens(head.header_values("authorization"));
        if !access::check(shard, check, &tokens, body).await {
            return Resp::text(403, "Submission denied.").into();
        }
    }
    publish(shard, head, body).await
}

pub async fn publish(shard: &Rc<Shard>, head: &RequestHead, body: &[u8]) -> Outcome {
    let ce = match cloudevents::from_http(head.header_str("content-type"), &head.headers, body) {
        Ok(ce) => ce,
        Err(e) => return Resp::text(e.status(), e.to_string()).into(),
    };
    if let Some(broker) = &shard.globals.broker {
        return produce(shard, broker, &ce).await;
    }
    // The SSE id names where the event entered: origin shard and its sequence.
    let id = format!("{}-{}", shard.id, shard.next_publish_seq());
    let event = Arc::new(Event::from_cloudevent(&ce, id, &shard.cfg().extractors));
    let echo = event.json.to_vec();
    let wanted = shard
        .globals
        .interest
        .shards_for(&event.event_type, &event.fields);
    if wanted == 0 {
        // Nobody on this node subscribes to it: accepted, and nothing to deliver.
        shard.metrics.received[Source::Http as usize].inc();
        shard.metrics.unwanted.inc();
        return Resp::json(202, echo).into();
    }
    match shard
        .publish(Control::Events(Arc::new(vec![event])), wanted)
        .await
    {
        Ok(()) => {
            shard.metrics.received[Source::Http as usize].inc();
            Resp::json(202, echo).into()
        }
        Err(e) => Resp::text(503, format!("{e}; retry"))
            .header("retry-after", "1")
            .into(),
    }
}

async fn produce(
    shard: &Rc<Shard>,
    broker: &BrokerHandle,
    ce: &cloudevents::CloudEvent,
) -> Outcome {
    // CloudEvents' partitioning extension names the key; RIG's `rig.target_partition` too.
    let key = ce
        .value
        .get("partitionkey")
        .or_else(|| ce.value.pointer("/rig/target_partition"))
        .map(|k| match k {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        });
    let echo = ce.to_json();
    let record = ProduceRecord {
        topic: broker.publish_topic.clone(),
        key,
        value: echo.clone(),
        headers: vec![(
            "content-type".into(),
            b"application/cloudevents+json".to_vec(),
        )],
    };
    match broker.produce(record).await {
        Ok(_) => {
            shard.metrics.received[Source::Http as usize].inc();
            Resp::json(202, echo).into()
        }
        Err(e @ ProduceError::Unavailable(_)) => Resp::text(503, e.to_string())
            .header("retry-after", "5")
            .into(),
        Err(e @ ProduceError::Rejected(_)) => Resp::text(502, e.to_string()).into(),
    }
}
