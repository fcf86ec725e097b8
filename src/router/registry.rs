//! Which integrations an application has enabled: a cache in front of the registry (Houston's
//! GraphQL API, or the fixed list of `router mock`). A miss asks the registry once per app id
//! however many messages wait for it (they share one lookup); an invalidation from the SSE
//! channel drops the entry so the next message reads it again, and so does age with a TTL
//! (`CB_ROUTER_CACHE_TTL_S`). The router runs on one thread,
//! so this cache is that core's own (no locks shared with other cores).

use crate::config::router::{HoustonAuth, Registry as Source};
use crate::metrics::router::RouterMetrics;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Enabled integrations of one application: name -> topic, first one wins for a name.
pub type Integrations = Arc<BTreeMap<String, String>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    #[error("registry answered an error: {0}")]
    Refused(String),
}

/// One app's entry: its lookup, shared by the messages waiting for it; the answer carries when
/// it arrived (the TTL runs from there: a lookup that failed and was retried later does not
/// start old).
type Cell = Rc<tokio::sync::OnceCell<(Integrations, Instant)>>;

pub struct Registry {
    source: Source,
    client: reqwest::Client,
    cache: RefCell<HashMap<String, Cell>>,
    ttl: Option<Duration>,
    token: RefCell<Option<(String, Instant)>>,
    metrics: Arc<RouterMetrics>,
}

impl Registry {
    pub fn new(
        source: Source,
        ttl: Option<Duration>,
        metrics: Arc<RouterMetrics>,
    ) -> Result<Registry, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("registry HTTP client: {e}"))?;
        Ok(Registry {
            source,
            client,
            cache: RefCell::default(),
            ttl,
            token: RefCell::default(),
            metrics,
        })
    }

    /// The app's enabled integrations, from the cache or (once for all waiters) the registry.
    pub async fn get(&self, app: &str) -> Result<Integrations, LookupError> {
        let cell = {
            let mut cache = self.cache.borrow_mut();
            let entry = cache.entry(app.to_string()).or_default();
            // An answer older than the TTL is asked for again (a lookup still running is
            // left to finish: its waiters get it).
            let expired =
                |(_, at): &(Integrations, Instant)| self.ttl.is_some_and(|ttl| at.elapsed() >= ttl);
            if entry.get().is_some_and(expired) {
                *entry = Rc::default();
                self.metrics.expirations.inc();
            }
            entry.clone()
        };
        if let Some((v, _)) = cell.get() {
            self.metrics.cache_hits.inc();
            return Ok(v.clone());
        }
        let (v, _) = cell
            .get_or_try_init(|| async {
                self.metrics.cache_misses.inc();
                let started = Instant::now();
                let r = self.lookup(app).await;
                self.metrics.observe_lookup(started.elapsed());
                r.map(|v| (v, Instant::now()))
            })
            .await?;
        Ok(v.clone())
    }

    /// An invalidation: the next message of this app asks the registry again.
    pub fn invalidate(&self, app: &str) {
        if self.cache.borrow_mut().remove(app).is_some() {
            self.metrics.invalidations.inc();
        }
    }

    /// The cache as `GET /integrations` shows it.
    pub fn snapshot(&self) -> Value {
        let cache = self.cache.borrow();
        let mut out = serde_json::Map::new();
        for (app, cell) in cache.iter() {
            if let Some((v, _)) = cell.get() {
                out.insert(app.clone(), json!(v.as_ref()));
            }
        }
        Value::Object(out)
    }

    async fn lookup(&self, app: &str) -> Result<Integrations, LookupError> {
        let (url, auth) = match &self.source {
            Source::Mock(m) => return Ok(Arc::new(m.clone())),
            Source::Houston { url, auth } => (url, auth),
        };
        let token = self.token(url, auth).await?;
        let query = format!(
            "query sources {{ sources(id:{}) {{ clickstream {{ name topic: code enabled }} }} }}",
            Value::String(app.to_string())
        );
        let answer = self.graphql(url, Some(&token), &query).await?;
        Ok(Arc::new(parse_sources(&answer)?))
    }

    /// The `authorization` value: the API key as it is, or a `createToken` token renewed a
    /// minute before its `exp`.
    pub async fn auth_header(&self) -> Result<Option<String>, LookupError> {
        match &self.source {
            Source::Mock(_) => Ok(None),
            Source::Houston { url, auth } => self.token(url, auth).await.map(Some),
        }
    }

    async fn token(&self, url: &str, auth: &HoustonAuth) -> Result<String, LookupError> {
        let (username, password) = match auth {
            HoustonAuth::ApiKey(k) => return Ok(k.clone()),
            HoustonAuth::Login { username, password } => (username, password),
        };
        if let Some((t, until)) = self.token.borrow().as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let mutation = format!(
            "mutation createToken {{ createToken(username:{}, password:{}) {{ success message token decoded {{ exp }} }} }}",
            Value::String(username.clone()),
            Value::String(password.clone())
        );
        let answer = self.graphql(url, None, &mutation).await?;
        let t = &answer["data"]["createToken"];
        let token = t["token"]
            .as_str()
            .filter(|_| t["success"].as_bool() != Some(false))
            .ok_or_else(|| {
                LookupError::Refused(format!(
                    "createToken failed: {}",
                    t["message"].as_str().unwrap_or("no token in the answer")
                ))
            })?
            .to_string();
        let now_s = crate::auth::blacklist::now_ms() / 1000;
        let exp = t["decoded"]["exp"].as_u64().unwrap_or(now_s + 3600);
        let valid = Duration::from_secs(exp.saturating_sub(now_s).saturating_sub(60).max(1));
        *self.token.borrow_mut() = Some((token.clone(), Instant::now() + valid));
        Ok(token)
    }

    async fn graphql(
        &self,
        url: &str,
        token: Option<&str>,
        query: &str,
    ) -> Result<Value, LookupError> {
        let mut req = self
            .client
            .post(url)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(json!({ "query": query }).to_string());
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| LookupError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| LookupError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(LookupError::Refused(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| LookupError::Refused(format!("not JSON: {e}")))?;
        if let Some(errors) = v.get("errors").filter(|e| !e.is_null()) {
            return Err(LookupError::Refused(errors.to_string()));
        }
        Ok(v)
    }
}

/// `{"data": {"sources": [{"clickstream": [{"name", "topic", "enabled"}]}]}}`: the enabled
/// integrations, first topic per name.
pub fn parse_sources(answer: &Value) -> Result<BTreeMap<String, String>, LookupError> {
    let sources = answer["data"]["sources"]
        .as_array()
        .ok_or_else(|| LookupError::Refused("no data.sources in the answer".into()))?;
    let mut out = BTreeMap::new();
    for s in sources {
        for i in s["clickstream"].as_array().into_iter().flatten() {
            if i["enabled"].as_bool() != Some(true) {
                continue;
            }
            if let (Some(name), Some(topic)) = (i["name"].as_str(), i["topic"].as_str()) {
                out.entry(name.to_string())
                    .or_insert_with(|| topic.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_integrations_first_topic_wins() {
        let v = json!({"data": {"sources": [{"clickstream": [
            {"name": "ga", "topic": "ga-events", "enabled": true},
            {"name": "mixpanel", "topic": "mp", "enabled": false},
            {"name": "ga", "topic": "ga-other", "enabled": true}
        ]}, {"clickstream": [{"name": "amp", "topic": "amp-t", "enabled": true}]}]}});
        let m = parse_sources(&v).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["ga"], "ga-events");
        assert_eq!(m["amp"], "amp-t");
        assert!(parse_sources(&json!({"data": null})).is_err());
    }
}
