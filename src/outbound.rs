//! Outbound HTTP calls a shard needs answered (JWKS documents, `SUBSCRIPTION_CHECK` and
//! `SUBMISSION_CHECK` URLs). Like the broker island, the HTTP client (reqwest, tokio-based)
//! runs on a thread of its own with a current-thread tokio runtime; shards hand it a request
//! through a bounded runtime-agnostic channel and await the reply. Responses are bounded.

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

struct Job {
    call: Call,
    reply: async_channel::Sender<Result<(u16, Vec<u8>), String>>,
}

#[derive(Clone)]
pub struct Outbound {
    jobs: async_channel::Sender<Job>,
}

impl Outbound {
    pub fn start() -> Outbound {
        let (tx, rx) = async_channel::bounded::<Job>(1024);
        std::thread::Builder::new()
            .name("cb-outbound".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for outbound HTTP");
                rt.block_on(serve(rx));
            })
            .expect("spawn the outbound HTTP thread");
        Outbound { jobs: tx }
    }

    /// Status and body, or why there is none (the error names the URL and the cause).
    pub async fn call(&self, call: Call) -> Result<(u16, Vec<u8>), String> {
        let (tx, rx) = async_channel::bounded(1);
        let url = call.url.clone();
        self.jobs
            .send(Job { call, reply: tx })
            .await
            .map_err(|_| format!("{url}: the outbound HTTP thread has stopped"))?;
        rx.recv()
            .await
            .unwrap_or_else(|_| Err(format!("{url}: request dropped")))
    }
}

async fn serve(jobs: async_channel::Receiver<Job>) {
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
                let _ = job.reply.try_send(Err(format!("no HTTP client: {e}")));
            }
            return;
        }
    };
    while let Ok(job) = jobs.recv().await {
        let client = client.clone();
        tokio::spawn(async move {
            let r = run(&client, job.call).await;
            let _ = job.reply.try_send(r);
        });
    }
}

async fn run(client: &reqwest::Client, c: Call) -> Result<(u16, Vec<u8>), String> {
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
        .map_err(|e| format!("{}: {e}", c.url))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{}: {e}", c.url))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{}: response larger than {MAX_BODY} bytes", c.url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}
