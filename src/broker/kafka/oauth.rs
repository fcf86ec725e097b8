//! OAUTHBEARER tokens for the rskafka client (FlowX's `KAFKA_OAUTH_*`): OAuth 2.0 client
//! credentials (RFC 6749 4.4) against the token endpoint, cached, and refreshed in the
//! background when 80% of a token's lifetime has passed, so a connection opened at any moment
//! (a reconnect after an outage, a new broker) authenticates with a token that is not about to
//! expire. librdkafka (the group consumers) fetches and refreshes its own.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rskafka::client::{OauthBearerCredentials, OauthCallback};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lifetime assumed when the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The largest token endpoint answer read.
const MAX_ANSWER: usize = 64 << 10;

/// Why no token was issued: the endpoint's answer or the network (names the URL).
#[derive(Debug, thiserror::Error)]
#[error("token endpoint {url}: {reason}")]
pub struct TokenError {
    url: String,
    reason: String,
}

struct Token {
    value: String,
    /// When 80% of its lifetime has passed.
    stale_at: Instant,
}

pub struct TokenSource {
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
    url: String,
    current: Mutex<Option<Token>>,
}

impl TokenSource {
    pub fn new(client_id: &str, client_secret: &str, url: &str) -> Result<Arc<Self>, TokenError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TokenError {
                url: url.into(),
                reason: format!("no HTTP client: {e}"),
            })?;
        Ok(Arc::new(TokenSource {
            http,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            url: url.into(),
            current: Mutex::new(None),
        }))
    }

    /// The cached token while fresh, else a new one.
    pub async fn token(&self) -> Result<String, TokenError> {
        if let Some(t) = self.lock().as_ref().filter(|t| Instant::now() < t.stale_at) {
            return Ok(t.value.clone());
        }
        self.fetch().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch(&self) -> Result<String, TokenError> {
        let fail = |reason: String| TokenError {
            url: self.url.clone(),
            reason,
        };
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        // Basic auth with form-encoded id and secret (RFC 6749 2.3.1).
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(enc(&self.client_id), Some(enc(&self.client_secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_ANSWER {
            return Err(fail(format!("answer larger than {MAX_ANSWER} bytes")));
        }
        if !status.is_success() {
            return Err(fail(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        let value = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("no access_token in the answer".into()))?
            .to_string();
        let lifetime = v["expires_in"]
            .as_u64()
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        *self.lock() = Some(Token {
            value: value.clone(),
            stale_at: Instant::now() + lifetime * 4 / 5,
        });
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "Kafka OAUTHBEARER token issued"
        );
        Ok(value)
    }

    /// Keeps the cached token fresh; failures are logged and retried, never fatal.
    pub async fn refresh_forever(self: Arc<Self>, retry: Duration) {
        loop {
            let wait = match self.token().await {
                Ok(_) => {
                    let stale_at = self.lock().as_ref().map(|t| t.stale_at);
                    stale_at.map_or(retry, |s| s.saturating_duration_since(Instant::now()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = retry.as_secs(),
                        "cannot get a Kafka OAUTHBEARER token (whose fault: the token endpoint or its client credentials)");
                    retry
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
        }
    }

    pub fn credentials(self: &Arc<Self>) -> OauthBearerCredentials {
        let me = self.clone();
        let callback: OauthCallback = Arc::new(move || {
            let me = me.clone();
            Box::pin(async move {
                me.token()
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
        });
        OauthBearerCredentials {
            callback,
            authz_id: None,
            bearer_kvs: Vec::new(),
        }
    }
}
