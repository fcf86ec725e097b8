//! Who may connect, subscribe and publish: JWT verification (with JWKS refresh on an unknown
//! `kid`), the session blacklist, JWT-derived (automatic) subscriptions, and RIG's
//! `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK` (`no_check`, `jwt_validation`, or a URL called with
//! the caller's `Authorization` header and the request body: 2xx allows, anything else denies).

use crate::auth::blacklist::now_ms;
use crate::auth::jwt::{self, JwtError, KeyError, Verifier};
use crate::broker::http::{Call, CallError};
use crate::config::{Check, Extractors};
use crate::error::{Blame, Fault};
use crate::route::subscription::Subscription;
use crate::runtime::shard::Shard;
use serde_json::{Map, Value};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// An unknown `kid` may trigger a JWKS refresh at most this often (the peer picks the kid).
const JWKS_REFRESH_MIN_INTERVAL_MS: u64 = 10_000;
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A verified token.
pub struct Identity {
    pub claims: Value,
    /// The session the claim named by `JWT_SESSION_FIELD` identifies.
    pub session: Option<String>,
}

/// Why the JWKS could not be refreshed. Each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWT is not configured")]
    NotConfigured,
    #[error(transparent)]
    Fetch(#[from] CallError),
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Document { url: String, source: KeyError },
}

impl Blame for JwksError {
    fn fault(&self) -> Fault {
        match self {
            JwksError::NotConfigured => Fault::Ours,
            JwksError::Fetch(e) => e.fault(),
            JwksError::Status { .. } | JwksError::Document { .. } => Fault::Upstream,
        }
    }
}

/// Why a token does not identify a caller. The text is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("JWT validation is not configured on this gateway")]
    NotConfigured,
    #[error(transparent)]
    Token(#[from] JwtError),
    #[error("the session is blacklisted")]
    Blacklisted,
}

impl Blame for AccessError {
    fn fault(&self) -> Fault {
        match self {
            AccessError::NotConfigured => Fault::Client,
            AccessError::Token(JwtError::NoKeys) => Fault::Upstream,
            AccessError::Token(_) | AccessError::Blacklisted => Fault::Client,
        }
    }
}

/// Fetches the JWKS and installs it for every shard.
pub async fn refresh_jwks(shard: &Shard) -> Result<usize, JwksError> {
    let Some(lock) = &shard.globals.jwt else {
        return Err(JwksError::NotConfigured);
    };
    let current = lock.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(url) = current.jwks_url().map(str::to_string) else {
        return Ok(0);
    };
    shard
        .globals
        .jwks_fetched_ms
        .store(now_ms(), Ordering::Relaxed);
    let (status, body) = shard
        .globals
        .outbound
        .call(Call {
            post: false,
            url: url.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout: CHECK_TIMEOUT,
        })
        .await?;
    if !(200..300).contains(&status) {
        return Err(JwksError::Status { url, status });
    }
    let (next, n) = current
        .with_jwks(&body)
        .map_err(|source| JwksError::Document { url, source })?;
    *lock.write().unwrap_or_else(|e| e.into_inner()) = next;
    Ok(n)
}

fn verifier(shard: &Shard) -> Option<Verifier> {
    shard
        .globals
        .jwt
        .as_ref()
        .map(|l| l.read().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Verifies a token and checks the session blacklist.
pub async fn verify(shard: &Shard, token: &str) -> Result<Identity, AccessError> {
    let Some(v) = verifier(shard) else {
        return Err(AccessError::NotConfigured);
    };
    let now = now_ms() / 1000;
    let claims = match v.verify(token, now) {
        Ok(c) => c,
        Err(JwtError::UnknownKid(_) | JwtError::NoKeys) if v.is_jwks() => {
            let last = shard.globals.jwks_fetched_ms.load(Ordering::Relaxed);
            if now_ms().saturating_sub(last) >= JWKS_REFRESH_MIN_INTERVAL_MS {
                if let Err(e) = refresh_jwks(shard).await {
                    tracing::warn!(error = %e, fault = %e.fault(), "JWKS refresh failed");
                }
            }
            verifier(shard)
                .ok_or(AccessError::NotConfigured)?
                .verify(token, now)?
        }
        Err(e) => return Err(e.into()),
    };
    let pointer = shard
        .cfg()
        .jwt
        .as_ref()
        .map_or(jwt::DEFAULT_SESSION_POINTER, |j| j.session_pointer.as_str());
    let session = jwt::session_id(&claims, pointer);
    if let Some(s) = &session {
        if shard.sessions.borrow().is_blacklisted(s, now_ms()) {
            return Err(AccessError::Blacklisted);
        }
    }
    Ok(Identity { claims, session })
}

/// RIG's automatic subscriptions: for each event type whose extractor fields have a
/// `jwt.json_pointer`, one subscription constraining every such field the claims resolve.
pub fn jwt_subscriptions(claims: &Value, extractors: &Extractors) -> Vec<Subscription> {
    let mut out = Vec::new();
    for (event_type, fields) in extractors.types() {
        let mut clause = Map::new();
        for f in &fields.fields {
            if let Some(v) = f.jwt_pointer.as_deref().and_then(|p| claims.pointer(p)) {
                clause.insert(f.name.clone(), v.clone());
            }
        }
        if !clause.is_empty() {
            out.push(Subscription {
                event_type: event_type.clone(),
                one_of: vec![clause],
            });
        }
    }
    // Deterministic order (the extractor map is a hash map).
    out.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    out
}

/// RIG's merge: `Enum.uniq(jwt_subs ++ query_subs)`.
pub fn merge(mut jwt_subs: Vec<Subscription>, manual: Vec<Subscription>) -> Vec<Subscription> {
    for s in manual {
        if !jwt_subs.contains(&s) {
            jwt_subs.push(s);
        }
    }
    jwt_subs
}

/// Runs an authorization check. `tokens` are the caller's bearer tokens; `body` is what the
/// external checker receives.
pub async fn check(shard: &Rc<Shard>, check: &Check, tokens: &[String], body: &[u8]) -> bool {
    match check {
        // jwt_claims decides on the parsed subscriptions or event (auth::privacy), not here.
        Check::None | Check::JwtClaims => true,
        Check::JwtValidation => {
            for t in tokens {
                if verify(shard, t).await.is_ok() {
                    return true;
                }
            }
            false
        }
        Check::Url(url) => {
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            for t in tokens {
                headers.push(("authorization".into(), format!("Bearer {t}")));
            }
            let call = Call {
                post: true,
                url: url.clone(),
                headers,
                body: body.to_vec(),
                timeout: CHECK_TIMEOUT,
            };
            match shard.globals.outbound.call(call).await {
                Ok((status, _)) if (200..300).contains(&status) => true,
                Ok((401 | 403, _)) => false,
                Ok((status, _)) => {
                    tracing::warn!(url = %url, status, "authorization check answered neither 2xx nor 401/403; denying");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, fault = %e.fault(), "authorization check unreachable; denying");
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn automatic_subscriptions_follow_rig() {
        let mut p = Vec::new();
        let x = Extractors::from_value(
            &json!({
                "greeting": {"name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}, "jwt": {"json_pointer": "/username"}},
                             "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}}},
                "other": {"uid": {"stable_field_index": 0, "event": {"json_pointer": "/data/uid"}, "jwt": {"json_pointer": "/sub"}}}
            }),
            &mut p,
        );
        assert!(p.is_empty());
        let subs = jwt_subscriptions(&json!({"username": "joe", "exp": 1}), &x);
        assert_eq!(
            subs.len(),
            1,
            "no claim for /sub: no subscription for other"
        );
        assert_eq!(
            subs[0].to_json(),
            json!({"eventType": "greeting", "oneOf": [{"name": "joe"}]})
        );
        let merged = merge(
            subs.clone(),
            vec![
                subs[0].clone(),
                Subscription {
                    event_type: "x".into(),
                    one_of: vec![],
                },
            ],
        );
        assert_eq!(merged.len(), 2);
    }
}
