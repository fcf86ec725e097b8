//! `POST /v3/responses` on the internal port: a backend answers a parked proxy request over
//! HTTP, in RIG's binary mode (`rig-correlation`, `rig-response-code`, other headers copied,
//! the body verbatim). The token names the node and shard that hold the request: this node's
//! go straight to that shard; another node's go through the first response topic, which every
//! node reads, so any node of a cluster takes any response. `/v2/responses` is RIG 2's form: a
//! CloudEvent carrying `rig.correlation`, answered to the client as JSON with status 200.

use super::{Outcome, Resp};
use crate::broker::{ProduceError, ProduceRecord};
use crate::proto::http1::RequestHead;
use crate::proxy::reply::{self, Carrier, Reply, CORRELATION_HEADER, STATUS_HEADER};
use crate::route::Control;
use crate::runtime::shard::Shard;
use std::rc::Rc;
use std::sync::Arc;

const SENT: &str = "message sent to correlated reverse proxy request";

fn refused(e: impl std::fmt::Display) -> Outcome {
    Resp::text(400, format!("Failed to parse request body: {e}")).into()
}

pub async fn v3(shard: &Rc<Shard>, head: &RequestHead, body: Vec<u8>) -> Outcome {
    let headers = head.headers.iter();
    match reply::parse(headers, body, Carrier::Http) {
        Ok(r) => deliver(shard, r).await,
        Err(e) => refused(e),
    }
}

pub async fn v2(shard: &Rc<Shard>, body: Vec<u8>) -> Outcome {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refused(format!("expected a CloudEvent: {e}")),
    };
    if v.get("specversion").is_none() {
        return refused("the body does not look like a CloudEvent");
    }
    let Some(corr) = v.pointer("/rig/correlation").and_then(|c| c.as_str()) else {
        return refused("missing rig.correlation");
    };
    let headers = [
        (CORRELATION_HEADER, corr.as_bytes()),
        (STATUS_HEADER, &b"200"[..]),
        ("content-type", &b"application/json; charset=utf-8"[..]),
    ];
    match reply::parse(headers.into_iter(), body.clone(), Carrier::Kafka) {
        Ok(r) => deliver(shard, r).await,
        Err(e) => refused(e),
    }
}

async fn deliver(shard: &Rc<Shard>, r: Reply) -> Outcome {
    let t = r.token;
    if t.node == shard.globals.node {
        if usize::from(t.shard) >= shard.shard_count() {
            shard.metrics.proxy.replies_dropped.inc();
            return Resp::text(202, SENT).into();
        }
        return match shard
            .publish(Control::Reply(Arc::new(r)), 1 << t.shard)
            .await
        {
            Ok(()) => Resp::text(202, SENT).into(),
            Err(e) => Resp::text(503, format!("{e}; retry"))
                .header("retry-after", "1")
                .into(),
        };
    }
    let Some(broker) = &shard.globals.broker else {
        // No cluster to pass it on through: nobody here waits for it (RIG answered 202 too).
        shard.metrics.proxy.replies_dropped.inc();
        return Resp::text(202, SENT).into();
    };
    let mut headers = vec![
        (
            CORRELATION_HEADER.to_string(),
            t.encode_correlation().into_bytes(),
        ),
        (STATUS_HEADER.to_string(), r.status.to_string().into_bytes()),
    ];
    headers.extend(r.headers);
    let record = ProduceRecord {
        topic: broker.response_topic.clone(),
        key: None,
        value: r.body,
        headers,
        avro_subject: None,
    };
    match broker.produce(record).await {
        Ok(_) => Resp::text(202, SENT).into(),
        Err(e @ ProduceError::Unavailable(_)) => Resp::text(503, e.to_string())
            .header("retry-after", "5")
            .into(),
        Err(e @ (ProduceError::Rejected(_) | ProduceError::Invalid(_))) => {
            Resp::text(502, e.to_string()).into()
        }
    }
}
