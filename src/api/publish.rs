//! `POST /_rig/v1/events` (inbound) and `POST /v3/messages` (internal): validate a CloudEvent
//! (structured or binary mode, 0.1/0.2/1.0), deliver it to every shard, answer 202 with the
//! event. Without a broker the event goes into every shard's inbound queue and is answered
//! once it is there (503 with `Retry-After` when a queue is full: the gateway is behind). With Kafka, it is
//! produced to the publish topic and answered after the broker's acknowledgement; every node
//! (this one included) consumes that topic, so subscribers everywhere receive it. Without Kafka
//! and with `CB_KINESIS_PUBLISH_STREAM`, the same through Kinesis.

use super::access;
use super::{Outcome, Resp};
use crate::auth::jwt::bearer_tokens;
use crate::broker::{BrokerHandle, ProduceError, ProduceRecord};
use crate::config::Check;
use crate::metrics::Source;
use crate::proto::cloudevents;
use crate::proto::http1::RequestHead;
use crate::route::Event;
use crate::runtime::shard::Shard;
use std::rc::Rc;

/// The inbound `POST /_rig/v1/events`: `SUBMISSION_CHECK` first (RIG's check is broken: it
/// denies every jwt_validation request; ours works as documented), then `publish`.
pub async fn submit(shard: &Rc<Shard>, head: &RequestHead, body: &[u8]) -> Outcome {
    let check = &shard.cfg().submission_check;
    if *check == Check::JwtClaims {
        return publish_own(shard, head, body).await;
    }
    if *check != Check::None {
        let tokens = bearer_tokens(head.header_values("authorization"));
        if !access::check(shard, check, &tokens, body).await {
            return Resp::text(403, "Submission denied.").into();
        }
    }
    publish(shard, head, body).await
}

/// `SUBMISSION_CHECK=jwt_claims`: fields tied to a claim carry the publisher's own values.
async fn publish_own(shard: &Rc<Shard>, head: &RequestHead, body: &[u8]) -> Outcome {
    let ce = match cloudevents::from_http(head.header_str("content-type"), &head.headers, body) {
        Ok(ce) => ce,
        Err(e) => return Resp::text(e.status(), e.to_string()).into(),
    };
    // The first bearer token speaks for the publisher.
    let claims = match bearer_tokens(head.header_values("authorization")).first() {
        None => None,
        Some(t) => match access::verify(shard, t).await {
            Ok(id) => Some(id.claims),
            Err(e) => {
                return Resp::text(403, format!("Submission denied: invalid token: {e}.")).into()
            }
        },
    };
    let cfg = shard.cfg();
    if let Err(e) = crate::auth::privacy::check_event(
        &ce.event_type,
        &ce,
        claims.as_ref(),
        &cfg.extractors,
        cfg.privileged.as_ref(),
    ) {
        return Resp::text(403, format!("Submission denied: {e}.")).into();
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
    if let (Some(kinesis), Some(stream)) = (
        &shard.globals.kinesis,
        shard
            .cfg()
            .kinesis
            .as_ref()
            .and_then(|k| k.publish_stream.clone()),
    ) {
        return put(shard, kinesis, stream, &ce).await;
    }
    // The id names where the event entered: origin shard and its sequence (SSE streams that
    // can resume get the node log's position instead).
    let mut id = String::with_capacity(24);
    id.push_str(itoa::Buffer::new().format(shard.id));
    id.push('-');
    id.push_str(itoa::Buffer::new().format(shard.next_publish_seq()));
    let event = Event::from_cloudevent(&ce, id, &shard.cfg().extractors);
    let echo = event.json.to_vec();
    match shard.publish_logged(event).await {
        Ok(()) => {
            shard.metrics.received[Source::Http as usize].inc();
            Resp::json(202, echo).into()
        }
        Err(e) => Resp::text(503, format!("{e}; retry"))
            .header("retry-after", "1")
            .into(),
    }
}

/// The record key of a published event: CloudEvents' partitioning extension, else RIG's
/// `rig.target_partition`.
fn partition_key(ce: &cloudevents::CloudEvent) -> Option<Vec<u8>> {
    ce.attr("partitionkey")
        .or_else(|| ce.pointer("/rig/target_partition"))
        .map(|k| match &*k {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        })
}

/// Kinesis as the publish target (`CB_KINESIS_PUBLISH_STREAM`, without Kafka): put, answer
/// after Kinesis acknowledged it; every node (this one too) reads the stream and delivers.
async fn put(
    shard: &Rc<Shard>,
    kinesis: &crate::broker::kinesis::KinesisHandle,
    stream: String,
    ce: &cloudevents::CloudEvent,
) -> Outcome {
    use crate::broker::kinesis::{PutError, PutRecord};
    let echo = ce.to_json();
    let partition_key = partition_key(ce)
        .and_then(|k| String::from_utf8(k).ok())
        .filter(|k| !k.is_empty())
        // Kinesis needs a key; the event id keeps one event's retries on one shard.
        .or_else(|| ce.attr("id").and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
    let record = PutRecord {
        stream,
        partition_key,
        data: echo.clone(),
    };
    match kinesis.put(record).await {
        Ok(_) => {
            shard.metrics.received[Source::Http as usize].inc();
            Resp::json(202, echo).into()
        }
        Err(e @ PutError::Unavailable(_)) => Resp::text(503, e.to_string())
            .header("retry-after", "5")
            .into(),
        Err(e @ PutError::Rejected(_)) => Resp::text(502, e.to_string()).into(),
    }
}

async fn produce(
    shard: &Rc<Shard>,
    broker: &BrokerHandle,
    ce: &cloudevents::CloudEvent,
) -> Outcome {
    let key = partition_key(ce);
    let echo = ce.to_json();
    let record = ProduceRecord {
        topic: broker.publish_topic.clone(),
        key,
        value: echo.clone(),
        headers: vec![(
            "content-type".into(),
            b"application/cloudevents+json".to_vec(),
        )],
        avro_subject: None,
    };
    let produced = broker.produce(record).await;
    let island = &shard.globals.island;
    match &produced {
        Ok(_) => island.events_produced.inc(),
        Err(_) => island.events_produce_failed.inc(),
    }
    match produced {
        Ok(_) => {
            shard.metrics.received[Source::Http as usize].inc();
            Resp::json(202, echo).into()
        }
        Err(e @ ProduceError::Unavailable(_)) => Resp::text(503, e.to_string())
            .header("retry-after", "5")
            .into(),
        Err(e @ (ProduceError::Rejected(_) | ProduceError::Invalid(_))) => {
            Resp::text(502, e.to_string()).into()
        }
    }
}
