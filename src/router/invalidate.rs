//! Registry invalidations: the SSE stream at `ER_SSE_URL` (with the registry's `authorization`
//! header). An event named `clickstream` with `{"appId": ...}` drops that app's cache entry;
//! `heartbeat` and anything else are ignored. On any error or end of stream it reconnects after
//! 5 s (as the original) with `Last-Event-ID`. The stream is bounded: an event that grows past
//! 1 MiB ends the connection (the parser would otherwise buffer it whole).

use super::registry::Registry;
use crate::proto::sse;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

const MAX_PENDING: usize = 1 << 20;

pub async fn run(url: String, registry: Rc<Registry>) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for registry invalidations");
            return;
        }
    };
    let mut last_id: Option<String> = None;
    loop {
        match stream(&client, &url, &registry, &mut last_id).await {
            Ok(()) => {
                tracing::info!(url = %url, "registry invalidation stream ended; reconnecting in 5 s")
            }
            Err(e) => tracing::warn!(url = %url, error = %e,
                "registry invalidation stream failed (whose fault: the registry or the network); reconnecting in 5 s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn stream(
    client: &reqwest::Client,
    url: &str,
    registry: &Registry,
    last_id: &mut Option<String>,
) -> Result<(), String> {
    let mut req = client.get(url).header("accept", "text/event-stream");
    if let Some(auth) = registry.auth_header().await.map_err(|e| e.to_string())? {
        req = req.header("authorization", auth);
    }
    if let Some(id) = last_id.as_deref() {
        req = req.header("last-event-id", id);
    }
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    tracing::info!(url = %url, "listening for registry invalidations");
    let mut parser = sse::Parser::new();
    let mut since_event = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        since_event += chunk.len();
        for m in parser.feed(&chunk) {
            since_event = 0;
            if m.id.is_some() {
                last_id.clone_from(&m.id);
            }
            if m.event.as_deref() != Some("clickstream") {
                continue;
            }
            match serde_json::from_str::<Value>(&m.data)
                .ok()
                .and_then(|v| v.get("appId").and_then(Value::as_str).map(str::to_string))
            {
                Some(app) => {
                    tracing::debug!(app = %app, "registry says an app changed");
                    registry.invalidate(&app);
                }
                None => tracing::debug!(data = %m.data, "clickstream event without appId ignored"),
            }
        }
        if since_event > MAX_PENDING {
            return Err("an event larger than 1 MiB".into());
        }
    }
    Ok(())
}
