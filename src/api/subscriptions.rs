//! `PUT /_rig/v1/connection/<transport>/<token>/subscriptions`: replaces every subscription of
//! a connection, wherever it lives (the token names its shard). Status codes as RIG's:
//! 204, 400, 406, 410; plus 503 if the owner shard cannot answer.

use super::access;
use super::{Outcome, Resp};
use crate::auth::jwt::bearer_tokens;
use crate::config::Check;
use crate::proto::http1::RequestHead;
use crate::route::subscription::{Subscription, SubscriptionSet};
use crate::runtime::shard::{Reply, Request, Shard};
use crate::session::token::Token;
use crate::session::LookupError;
use std::rc::Rc;

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
    for t in &tokens {
        match access::verify(shard, t).await {
            Ok(id) => {
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
