//! Outbound HTTP calls a shard needs answered (JWKS documents, `SUBSCRIPTION_CHECK` and
//! `SUBMISSION_CHECK` URLs). The HTTP client (reqwest, tokio-based) runs on an island thread of
//! its own; shards hand it a [`Call`] through the island handle and await the reply. Response
//! bodies are bounded.

use crate::error::{Blame, Fault};
use crate::runtime::island::{self, Handle, Job};
use std::time::Duration;

/// Largest response body read (a JWKS document or a check's answer).
const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
pub struct Call {
    pub post: bool,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// Why a call has no answer. Each names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Connect, TLS, timeout or a broken response: the other side or the network.
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("{url}: response larger than {MAX_BODY} bytes")]
    TooLarge { url: String },
    /// The HTTP client could not be built or its thread stopped.
    #[error("{url}: {reason}")]
    NoClient { url: String, reason: String },
}

impl Blame for CallError {
    fn fault(&self) -> Fault {
        match self {
            CallError::Failed { .. } | CallError::TooLarge { .. } => Fault::Upstream,
            CallError::NoClient { .. } => Fault::Ours,
        }
    }
}

/// Status and body.
pub type Answer = Result<(u16, Vec<u8>), CallError>;

#[derive(Clone)]
pub struct Outbound {
    calls: Handle<Call, Answer>,
}

impl Outbound {
    pub fn start() -> Outbound {
        Outbound {
            calls: island::spawn("cb-outbound", 1024, serve),
        }
    }

    pub async fn call(&self, call: Call) -> Answer {
        let url = call.url.clone();
        self.calls.call(call).await.unwrap_or_else(|e| {
            Err(CallError::NoClient {
                url,
                reason: e.to_string(),
            })
        })
    }
}

async fn serve(jobs: async_channel::Receiver<Job<Call, Answer>>) {
    // reqwest is built without a crypto provider; use the same one as the Kafka client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the outbound HTTP client");
            while let Ok(job) = jobs.recv().await {
                let (call, reply) = job.split();
                reply.send(Err(CallError::NoClient {
                    url: call.url,
                    reason: format!("no HTTP client: {e}"),
                }));
            }
            return;
        }
    };
    while let Ok(job) = jobs.recv().await {
        let client = client.clone();
        let (call, reply) = job.split();
        tokio::spawn(async move { reply.send(run(&client, call).await) });
    }
}

async fn run(client: &reqwest::Client, c: Call) -> Answer {
    let failed = |url: &str, e: reqwest::Error| CallError::Failed {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let mut req = if c.post {
        client.post(&c.url)
    } else {
        client.get(&c.url)
    };
    for (k, v) in &c.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if c.post {
        req = req.body(c.body);
    }
    let mut resp = req
        .timeout(c.timeout)
        .send()
        .await
        .map_err(|e| failed(&c.url, e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(&c.url, e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::TooLarge { url: c.url });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}
