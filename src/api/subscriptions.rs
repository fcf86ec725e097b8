//! `PUT /_rig/v1/connection/<transport>/<token>/subscriptions`: replaces every subscription of
//! a connection, wherever it lives (the token names its node and shard). Status codes as
//! RIG's: 204, 400, 406, 410; plus 503 if the owner shard cannot answer.
//!
//! A connection of another node (frontends behind a load balancer without sticky sessions):
//! with Kafka, the PUT is forwarded to its owner through the response topic every node reads
//! (`proxy::reply::Forwarded`), the owner runs it as if it had arrived there and answers the
//! same way, to the correlation token of the waiting PUT; no answer within
//! `PROXY_KAFKA_RESPONSE_TIMEOUT` is 504. Without Kafka a foreign token is invalid (400).

use super::access;
use super::{Outcome, Resp};
use crate::auth::jwt::bearer_tokens;
use crate::broker::{ProduceError, ProduceRecord};
use crate::config::Check;
use crate::proto::http1::RequestHead;
use crate::proto::http1::{BodyKind, Method};
use crate::proto::token::Token;
use crate::proxy::reply::{self, Forwarded};
use crate::route::subscription::{Subscription, SubscriptionSet};
use crate::runtime::shard::{Reply, Request, Shard};
use crate::session::LookupError;
use std::rc::Rc;
use std::sync::Arc;

/// The token segment if `path` is a subscriptions path. The transport segment is not checked
/// against the connection's real transport, as in RIG.
pub fn parse_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/_rig/v1/connection/")?;
    let (transport, rest) = rest.split_once('/')?;
    if !matches!(transport, "sse" | "ws" | "longpolling") {
        return None;
    }
    let (token, tail) = rest.split_once('/')?;
    (tail == "subscriptions" && !token.is_empty()).then_some(token)
}

fn accepts_json(head: &RequestHead) -> bool {
    let Some(accept) = head.header_str("accept") else {
        return true;
    };
    accept.split(',').any(|range| {
        let media = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(
            media.as_str(),
            "application/json" | "application/*" | "*/*" | ""
        )
    })
}

pub async fn put(shard: &Rc<Shard>, head: &RequestHead, raw_token: &str, body: &[u8]) -> Outcome {
    if !accepts_json(head) {
        return Resp::text(
            406,
            "Not acceptable: this endpoint answers application/json.",
        )
        .into();
    }
    let Some(token) = Token::decode(raw_token) else {
        return Resp::text(400, "Invalid connection token.").into();
    };
    if token.node != shard.globals.node && shard.globals.broker.is_some() {
        return forward(shard, head, raw_token, body).await;
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Resp::text(
                400,
                format!("Expected JSON encoded body of the form {{\"subscriptions\": [...]}}: {e}"),
            )
            .into()
        }
    };
    let Some(list) = v.get("subscriptions") else {
        return Resp::text(
            400,
            "Expected field \"subscriptions\" is not present in the request body.",
        )
        .into();
    };
    let limits = shard.sessions.borrow().subscription_limits();
    let subs = match Subscription::parse_list(list, limits) {
        Ok(s) => s,
        Err(e) => {
            return Resp::text(400, format!("cannot accept subscription request: {e}")).into()
        }
    };
    // JWT-derived subscriptions are recomputed from this request's Authorization header; without
    // one they are dropped (RIG's docs/event-subscription.md).
    let tokens = bearer_tokens(head.header_values("authorization"));
    let check = &shard.cfg().subscription_check;
    let mut auto = Vec::new();
    let mut sessions = Vec::new();
    let mut claims = None;
    for t in &tokens {
        match access::verify(shard, t).await {
            Ok(id) => {
                if claims.is_none() {
                    claims = Some(id.claims.clone());
                }
                auto = access::merge(auto, access::jwt_subscriptions(&id.claims, &shard.cfg().extractors));
                sessions.extend(id.session);
            }
            // An external checker may accept tokens we cannot verify (RIG #377 refused them).
            Err(_) if matches!(check, Check::Url(_)) => {}
            Err(e) => {
                return Resp::text(
                    400,
                    format!("cannot accept subscription request: invalid authorization header: could not decode JWT: {e}"),
                )
                .into()
            }
        }
    }
    if *check == Check::JwtClaims {
        let cfg = shard.cfg();
        if let Err(e) = crate::auth::privacy::check_subscriptions(
            &subs,
            claims.as_ref(),
            &cfg.extractors,
            cfg.privileged.as_ref(),
        ) {
            return Resp::text(403, format!("Subscription denied: {e}.")).into();
        }
    }
    let subs =
        match SubscriptionSet::build(&access::merge(auto, subs), &shard.cfg().extractors, limits) {
            Ok(s) => s,
            Err(e) => {
                return Resp::text(400, format!("cannot accept subscription request: {e}")).into()
            }
        };
    if !access::check(shard, check, &tokens, body).await {
        return Resp::text(403, "Subscription denied.").into();
    }
    let req = Request::SetSubscriptions {
        token,
        subs,
        sessions,
    };
    match shard.call(token.shard as usize, req).await {
        Reply::SetSubscriptions(Ok(())) => Resp::new(204).into(),
        Reply::SetSubscriptions(Err(LookupError::Invalid)) => {
            Resp::text(400, "Invalid connection token.").into()
        }
        Reply::SetSubscriptions(Err(LookupError::Gone)) => {
            Resp::text(410, "Connection no longer exists.").into()
        }
        Reply::Unavailable => Resp::text(503, "The connection's shard did not answer; retry.")
            .header("retry-after", "1")
            .into(),
        _ => Resp::text(500, "Internal server error: unexpected shard reply.").into(),
    }
}

/// Sends the PUT to the node that owns the connection and waits for its answer.
async fn forward(shard: &Rc<Shard>, head: &RequestHead, raw_token: &str, body: &[u8]) -> Outcome {
    let Some(broker) = shard.globals.broker.clone() else {
        return Resp::text(400, "Invalid connection token.").into();
    };
    let mut parking = shard.park();
    let reply_to = Token::decode_correlation(&parking.token()).expect("a token we just made");
    let fwd = Forwarded {
        connection: raw_token.to_string(),
        reply_to,
        authorization: head
            .header_values("authorization")
            .take(crate::auth::jwt::MAX_BEARER_TOKENS)
            .map(<[u8]>::to_vec)
            .collect(),
        body: body.to_vec(),
    };
    let record = ProduceRecord {
        topic: broker.response_topic.clone(),
        key: None,
        value: fwd.body.clone(),
        headers: reply::forward_headers(&fwd),
        avro_subject: None,
    };
    match broker.produce(record).await {
        Ok(_) => {}
        Err(e @ ProduceError::Unavailable(_)) => {
            return Resp::text(503, format!("{e}; cannot reach the connection's node"))
                .header("retry-after", "5")
                .into()
        }
        Err(e @ (ProduceError::Rejected(_) | ProduceError::Invalid(_))) => {
            return Resp::text(502, e.to_string()).into()
        }
    }
    let within = shard.cfg().proxy.kafka_response_timeout;
    match parking.wait(within).await {
        Some(r) => {
            let mut resp = Resp::new(r.status);
            resp.body = r.body.clone();
            if let Some((_, ct)) = r.headers.iter().find(|(n, _)| n == "content-type") {
                resp = resp.header("content-type", String::from_utf8_lossy(ct).into_owned());
            }
            resp.into()
        }
        None => Resp::text(
            504,
            format!(
                "The node that holds this connection did not answer within {} ms.",
                within.as_millis()
            ),
        )
        .into(),
    }
}

/// Runs a PUT another node forwarded for a connection of this one, and sends the answer back
/// to the waiting PUT through the response topic.
pub async fn forwarded(shard: Rc<Shard>, f: Arc<Forwarded>) {
    let Some(broker) = shard.globals.broker.clone() else {
        return;
    };
    let head = RequestHead {
        method: Method::Put,
        method_str: "PUT".into(),
        path: format!("/_rig/v1/connection/sse/{}/subscriptions", f.connection),
        query: None,
        version_minor: 1,
        headers: f
            .authorization
            .iter()
            .map(|v| ("authorization".to_string(), v.clone()))
            .collect(),
        body: BodyKind::Length(f.body.len() as u64),
        keep_alive: true,
        expect_continue: false,
    };
    let outcome = put(&shard, &head, &f.connection, &f.body).await;
    let Outcome::Resp(r) = outcome else { return };
    let mut headers = vec![
        (
            reply::CORRELATION_HEADER.to_string(),
            f.reply_to.encode_correlation().into_bytes(),
        ),
        (
            reply::STATUS_HEADER.to_string(),
            r.status.to_string().into_bytes(),
        ),
    ];
    for (n, v) in &r.headers {
        headers.push((n.to_string(), v.clone().into_bytes()));
    }
    let record = ProduceRecord {
        topic: broker.response_topic.clone(),
        key: None,
        value: r.body,
        headers,
        avro_subject: None,
    };
    if let Err(e) = broker.produce(record).await {
        tracing::warn!(error = %e, "cannot answer a forwarded subscriptions request (whose fault: broker)");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/_rig/v1/connection/sse/abc/subscriptions"),
            Some("abc")
        );
        assert_eq!(
            parse_path("/_rig/v1/connection/longpolling/abc/subscriptions"),
            Some("abc")
        );
        assert_eq!(
            parse_path("/_rig/v1/connection/foo/abc/subscriptions"),
            None
        );
        assert_eq!(parse_path("/_rig/v1/connection/ws//subscriptions"), None);
        assert_eq!(
            parse_path("/_rig/v1/connection/ws/abc/subscriptions/x"),
            None
        );
    }
}
