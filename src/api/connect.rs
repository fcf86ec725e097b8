//! Opening connections: `GET /_rig/v1/connection/{sse,ws,longpolling}` with RIG's
//! `subscriptions` and `jwt` query parameters, status codes, bodies and close reasons
//! (rig-contract.md 1.2, 1.4).
//!
//! Admission, in RIG's order: parse `subscriptions`; verify `jwt` (signature, `exp`, the
//! session blacklist) and derive automatic subscriptions from its claims; merge them
//! (`uniq(jwt ++ manual)`); run `SUBSCRIPTION_CHECK` when subscriptions were given; apply
//! `MAX_CONNECTIONS_PER_MINUTE`. Long-poll sessions go through the same admission (RIG skipped
//! the check and the session association there, so blacklisting could not end them).

use super::access::{self, AccessError};
use super::{Outcome, Resp};
use crate::metrics::Transport;
use crate::proto::http1::{self, RequestHead};
use crate::proto::token::Token;
use crate::proto::{longpoll, ws};
use crate::route::subscription::{Subscription, SubscriptionSet};
use crate::runtime::shard::{Reply, Request, Shard};
use crate::session::Slot;
use std::rc::Rc;

/// Why a connection was refused; each transport words it as RIG does.
enum Refusal {
    /// Bad `subscriptions`: the message goes to the client (SSE/LP body, WebSocket close reason).
    Subscriptions(String),
    /// Bad, expired or blacklisted `jwt`.
    Jwt(AccessError),
    /// `SUBSCRIPTION_CHECK` said no.
    Denied,
    /// `MAX_CONNECTIONS_PER_MINUTE` reached.
    RateLimited,
    /// `SUBSCRIPTION_CHECK=jwt_claims`: a subscription reaches into another user's events.
    Private(String),
}

impl Refusal {
    fn http(self) -> Outcome {
        match self {
            Refusal::Subscriptions(m) => Resp::text(400, m).into(),
            Refusal::Jwt(m) => Resp::text(
                400,
                format!("could not parse subscriptions: could not decode JWT: {m}"),
            )
            .into(),
            Refusal::Denied => Resp::text(400, "Subscription denied (not authorized).").into(),
            Refusal::RateLimited => Resp::text(429, "Reached maximum number of connections").into(),
            Refusal::Private(m) => Resp::text(403, format!("Subscription denied: {m}.")).into(),
        }
    }

    /// RIG upgrades, then closes with 1000; the detail is only given for bad subscriptions.
    fn ws_reason(self) -> String {
        match self {
            Refusal::Subscriptions(m) => m,
            Refusal::Private(m) => format!("Subscription denied: {m}."),
            _ => "Bad request.".into(),
        }
    }
}

struct Admitted {
    subs: SubscriptionSet,
    session: Option<String>,
    /// The presence user (`CB_PRESENCE_CLAIM` of a valid token).
    user: Option<String>,
}

async fn admit(shard: &Rc<Shard>, head: &RequestHead) -> Result<Admitted, Refusal> {
    let raw = http1::query_param(head.query.as_deref(), "subscriptions");
    let manual = match &raw {
        None => Vec::new(),
        Some(raw) => {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
                Refusal::Subscriptions(format!("Failed to decode subscription list: {e}"))
            })?;
            let limits = shard.sessions.borrow().subscription_limits();
            Subscription::parse_list(&v, limits).map_err(|e| {
                Refusal::Subscriptions(format!("could not parse subscriptions: {e}"))
            })?
        }
    };
    let token = http1::query_param(head.query.as_deref(), "jwt").filter(|t| !t.is_empty());
    let (subs, session, user) = match &token {
        None => {
            private_check(shard, &manual, None)?;
            (manual, None, None)
        }
        Some(t) => {
            let id = access::verify(shard, t).await.map_err(Refusal::Jwt)?;
            private_check(shard, &manual, Some(&id.claims))?;
            let auto = access::jwt_subscriptions(&id.claims, &shard.cfg().extractors);
            let user = match id.claims.pointer(&shard.cfg().presence.claim) {
                Some(serde_json::Value::String(u)) if !u.is_empty() => Some(u.clone()),
                Some(v @ serde_json::Value::Number(_)) => Some(v.to_string()),
                _ => None,
            };
            (access::merge(auto, manual), id.session, user)
        }
    };
    let limits = shard.sessions.borrow().subscription_limits();
    let subs = SubscriptionSet::build(&subs, &shard.cfg().extractors, limits)
        .map_err(|e| Refusal::Subscriptions(format!("could not parse subscriptions: {e}")))?;
    // As RIG: no `subscriptions` parameter, no check.
    if let Some(raw) = &raw {
        let body = format!("{{\"subscriptions\":{raw}}}");
        let tokens: Vec<String> = token.into_iter().collect();
        if !access::check(
            shard,
            &shard.cfg().subscription_check,
            &tokens,
            body.as_bytes(),
        )
        .await
        {
            return Err(Refusal::Denied);
        }
    }
    let now = crate::auth::blacklist::now_ms() / 1000;
    if !shard
        .globals
        .connection_rate
        .admit(now, shard.cfg().max_connections_per_minute)
    {
        return Err(Refusal::RateLimited);
    }
    Ok(Admitted {
        subs,
        session,
        user,
    })
}

/// `SUBSCRIPTION_CHECK=jwt_claims` on the subscriptions the client wrote.
fn private_check(
    shard: &Shard,
    manual: &[Subscription],
    claims: Option<&serde_json::Value>,
) -> Result<(), Refusal> {
    let cfg = shard.cfg();
    if cfg.subscription_check != crate::config::Check::JwtClaims {
        return Ok(());
    }
    crate::auth::privacy::check_subscriptions(
        manual,
        claims,
        &cfg.extractors,
        cfg.privileged.as_ref(),
    )
    .map_err(|e| Refusal::Private(e.to_string()))
}

/// Admission, then the session on this shard (refused if its JWT session was blacklisted
/// meanwhile).
async fn open(
    shard: &Rc<Shard>,
    head: &RequestHead,
    transport: Transport,
) -> Result<(u32, Token), Refusal> {
    let a = admit(shard, head).await?;
    let mut sessions = shard.sessions.borrow_mut();
    let opened = sessions.open(transport, a.subs, a.session);
    if let (Ok((slot, _)), Some(user)) = (&opened, a.user) {
        sessions.set_user(*slot, user);
    }
    // A blacklist entry may land while a connection is being admitted, after its token passed.
    opened.map_err(|_| Refusal::Jwt(AccessError::Blacklisted))
}

/// A session that can resume: opened at the positions (see `api::resume`), then, when the
/// client names where it was (`last_id` not empty), what it missed is put in front.
async fn open_resumable(
    shard: &Rc<Shard>,
    head: &RequestHead,
    transport: Transport,
    last_id: Option<&str>,
) -> Result<(Slot, Token), Refusal> {
    let last_id = last_id.filter(|id| !id.is_empty());
    let a = admit(shard, head).await?;
    let subs = last_id.map(|_| a.subs.compiled.clone());
    if let Some(id) = last_id {
        super::resume::settle(shard, id).await;
    }
    let opened = super::resume::open(shard, transport, a.subs, a.session, last_id);
    let (slot, token, start) = opened.map_err(|_| Refusal::Jwt(AccessError::Blacklisted))?;
    if let Some(user) = a.user {
        shard.sessions.borrow_mut().set_user(slot, user);
    }
    if let (Some(id), Some(subs)) = (last_id, subs) {
        super::resume::replay(shard, slot, &token, id, start, subs).await;
    }
    Ok((slot, token))
}

pub async fn sse(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    // EventSource sends the last id it saw; clients that cannot set headers use the query.
    let last_id = head
        .header_str("last-event-id")
        .map(str::to_string)
        .or_else(|| http1::query_param(head.query.as_deref(), "last_event_id"));
    let (slot, token) = match open_resumable(shard, head, Transport::Sse, last_id.as_deref()).await
    {
        Ok(o) => o,
        Err(r) => return r.http(),
    };
    let mut headers = vec![
        (
            "content-type",
            "text/event-stream; charset=utf-8".to_string(),
        ),
        ("cache-control", "no-cache".to_string()),
        // Tell nginx-style proxies not to buffer the stream.
        ("x-accel-buffering", "no".to_string()),
    ];
    headers.extend(super::cors_headers(shard, head.header_str("origin")));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let head = http1::streaming_head(200, &headers);
    Outcome::Sse { head, slot, token }
}

pub async fn ws(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
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
    let deflate = shard.cfg().tuning.sessions.ws_deflate && ws::accepts_deflate(head);
    let extensions: &[(&str, &str)] = if deflate {
        &[("sec-websocket-extensions", ws::DEFLATE_RESPONSE)]
    } else {
        &[]
    };
    let upgrade = ws::handshake_response(&accept, extensions);
    // `?last_event_id=` (even empty) asks for resume ids in the events.
    let opened = match http1::query_param(head.query.as_deref(), "last_event_id") {
        Some(id) => open_resumable(shard, head, Transport::Ws, Some(&id)).await,
        None => open(shard, head, Transport::Ws).await,
    };
    match opened {
        Ok((slot, token)) => {
            if deflate {
                shard.sessions.borrow_mut().set_deflate(slot);
            }
            Outcome::Ws {
                head: upgrade,
                slot,
                token,
            }
        }
        Err(r) => Outcome::WsRefuse {
            head: upgrade,
            reason: r.ws_reason(),
        },
    }
}

/// Long-poll: the first GET (no live `connection_token` cookie) creates the session and answers
/// `"ok"`; later GETs carry the cookies and read events after `last_event_id`, waiting up to
/// `longpoll.hold_ms` for one. The session lives on the shard that created it; polls arriving on
/// other shards are forwarded there.
pub async fn longpoll(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    let cookies = longpoll::read_cookies(head);
    if let Some(token) = cookies.token.as_deref().and_then(Token::decode) {
        let req = Request::LongPoll {
            token,
            after: cookies.after,
            hold: true,
        };
        match shard.call(token.shard as usize, req).await {
            Reply::LongPoll(Ok((events, last, resume))) => {
                let last = longpoll::last_value(last, resume.as_deref());
                let body = longpoll::response_body(&last, &events);
                return lp_reply(Resp::json(200, body), &token.encode(), &last);
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
    // A new session: from where the cookie (a session that is gone) or the query says, when
    // events can be resumed here.
    let resume_from = cookies
        .resume
        .or_else(|| http1::query_param(head.query.as_deref(), "last_event_id"))
        .filter(|id| !id.is_empty());
    let resumable = shard.globals.broker.is_some() || shard.globals.local.is_some();
    let opened = match resume_from {
        Some(id) if resumable => open_resumable(shard, head, Transport::LongPoll, Some(&id)).await,
        _ => open(shard, head, Transport::LongPoll).await,
    };
    let token = match opened {
        Ok((_, token)) => token,
        Err(r) => return r.http(),
    };
    lp_reply(
        Resp::json(200, longpoll::CREATED_BODY.to_vec()),
        &token.encode(),
        longpoll::FIRST_EVENT,
    )
}

fn lp_reply(r: Resp, token: &str, last: &str) -> Outcome {
    let [token_cookie, last_cookie] = longpoll::set_cookies(token, last);
    r.header("cache-control", "no-cache")
        .header("access-control-allow-credentials", "true")
        .header("set-cookie", token_cookie)
        .header("set-cookie", last_cookie)
        .into()
}
