//! Opening connections: `GET /_rig/v1/connection/{sse,ws,longpolling}` with RIG's
//! `subscriptions` query parameter, status codes and bodies (rig-contract.md 1.2, 1.4).

use super::{Outcome, Resp};
use crate::metrics::Transport;
use crate::proto::http1::{self, RequestHead};
use crate::proto::ws;
use crate::runtime::shard::{Reply, Request, Shard};
use crate::session::subscription::Subscription;
use crate::session::token::Token;
use std::rc::Rc;

/// The `subscriptions` query parameter: absent = none; RIG's messages for bad input.
fn query_subscriptions(shard: &Shard, head: &RequestHead) -> Result<Vec<Subscription>, String> {
    let Some(raw) = http1::query_param(head.query.as_deref(), "subscriptions") else {
        return Ok(Vec::new());
    };
    let v: serde_json::Value = serde_json::from_str(&raw)
        .map_err(|e| format!("Failed to decode subscription list: {e}"))?;
    let limits = shard.sessions.borrow().subscription_limits();
    Subscription::parse_list(&v, limits).map_err(|e| format!("could not parse subscriptions: {e}"))
}

pub fn sse(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    let subs = match query_subscriptions(shard, head) {
        Ok(s) => s,
        // RIG's SSE errors carry no CORS header; ours do (see `inbound`).
        Err(e) => return Resp::text(400, e).into(),
    };
    let (slot, token) = shard.sessions.borrow_mut().open(Transport::Sse, subs, None);
    let head = http1::streaming_head(
        200,
        &[
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("access-control-allow-origin", &shard.cfg().cors),
            // Tell nginx-style proxies not to buffer the stream.
            ("x-accel-buffering", "no"),
        ],
    );
    Outcome::Sse { head, slot, token }
}

pub fn ws(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    let accept = match ws::check_handshake(head) {
        Ok(a) => a,
        Err(e) => {
            let mut r = Resp::text(e.status(), e.message());
            if e.status() == 426 {
                r = r.header("sec-websocket-version", "13");
            }
            return r.into();
        }
    };
    let upgrade = ws::handshake_response(&accept, &[]);
    match query_subscriptions(shard, head) {
        Ok(subs) => {
            let (slot, token) = shard.sessions.borrow_mut().open(Transport::Ws, subs, None);
            Outcome::Ws {
                head: upgrade,
                slot,
                token,
            }
        }
        Err(reason) => Outcome::WsRefuse {
            head: upgrade,
            reason,
        },
    }
}

/// Long-poll: the first GET (no live `connection_token` cookie) creates the session and answers
/// `"ok"`; later GETs carry the cookies and read events after `last_event_id`, waiting up to
/// `longpoll.hold_ms` for one. The session lives on the shard that created it; polls arriving on
/// other shards are forwarded there.
pub async fn longpoll(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    let cookies = http1::cookies(head);
    let cookie = |name: &str| {
        cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"').to_string())
    };
    if let Some(token) = cookie("connection_token").and_then(|t| Token::decode(&t)) {
        // "first_event" (RIG's initial value) or anything unparsable reads from the start.
        let after = cookie("last_event_id").and_then(|v| v.parse::<u64>().ok());
        let req = Request::LongPoll {
            token,
            after,
            hold: true,
        };
        match shard.call(token.shard as usize, req).await {
            Reply::LongPoll(Ok((events, last))) => {
                let mut body =
                    Vec::with_capacity(64 + events.iter().map(|e| e.len() + 1).sum::<usize>());
                body.extend_from_slice(
                    format!("{{\"last_event_id\":\"{last}\",\"events\":[").as_bytes(),
                );
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(e);
                }
                body.extend_from_slice(b"]}");
                return lp_reply(
                    shard,
                    Resp::json(200, body),
                    &token.encode(),
                    &last.to_string(),
                );
            }
            Reply::LongPoll(Err(_)) => {} // gone or foreign: a new session, as RIG does
            Reply::Unavailable => {
                return Resp::text(
                    503,
                    "Long-polling session is temporarily unavailable; retry.",
                )
                .header("retry-after", "1")
                .into()
            }
            // A reply of another kind is our bug; answer it as ours rather than panic the shard.
            _ => return Resp::text(500, "Internal server error: unexpected shard reply.").into(),
        }
    }
    let subs = match query_subscriptions(shard, head) {
        Ok(s) => s,
        Err(e) => return Resp::text(400, e).into(),
    };
    let (_, token) = shard
        .sessions
        .borrow_mut()
        .open(Transport::LongPoll, subs, None);
    lp_reply(
        shard,
        Resp::json(200, b"\"ok\"".to_vec()),
        &token.encode(),
        "first_event",
    )
}

fn lp_reply(shard: &Shard, r: Resp, token: &str, last: &str) -> Outcome {
    // Cookie values are JSON strings for last_event_id, as RIG writes them.
    r.header("cache-control", "no-cache")
        .header("access-control-allow-origin", shard.cfg().cors.clone())
        .header("access-control-allow-credentials", "true")
        .header(
            "set-cookie",
            format!("connection_token={token}; Path=/; HttpOnly"),
        )
        .header(
            "set-cookie",
            format!("last_event_id=\"{last}\"; Path=/; HttpOnly"),
        )
        .into()
}
