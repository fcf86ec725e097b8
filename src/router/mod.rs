//! The clickstream event router (`corebridge router start|mock`): Kafka in, Kafka out. Every
//! message of an application is copied, unchanged, to the topics of the integrations that
//! application enabled in the registry; failures go through the retry topic to S3, and input
//! offsets are committed only once every output was acknowledged. It runs on one thread (a
//! tokio current-thread runtime; librdkafka's own threads do the network work), so its cache is
//! that core's own; more throughput comes from more instances in the same consumer group.

mod http;
mod invalidate;
pub mod offsets;
mod pipeline;
pub mod registry;
mod s3;

use crate::config::router::RouterConfig;
use crate::metrics::router::RouterMetrics;
use std::rc::Rc;
use std::sync::Arc;

pub fn run(cfg: RouterConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(cfg))
}

async fn main(cfg: RouterConfig) -> Result<(), String> {
    let metrics = Arc::new(RouterMetrics::default());
    let registry = Rc::new(registry::Registry::new(
        cfg.registry.clone(),
        cfg.cache_ttl,
        metrics.clone(),
    )?);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", cfg.port))
        .await
        .map_err(|e| format!("cannot listen on :{}: {e}", cfg.port))?;
    tokio::task::spawn_local(http::serve(listener, registry.clone(), metrics.clone()));
    if let Some(url) = cfg.sse_url.clone() {
        tokio::task::spawn_local(invalidate::run(url, registry.clone()));
    }
    let bucket = s3::Bucket::new(
        cfg.s3_bucket.clone().unwrap_or_default(),
        cfg.s3_prefix.clone(),
        cfg.s3_region.clone(),
        cfg.s3_endpoint.clone(),
    )
    .await;
    let producer = pipeline::producer(&cfg)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::task::spawn_local(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing what is in flight");
        let _ = stop_tx.send(true);
    });
    let ctx = Rc::new(pipeline::Ctx::new(cfg, registry, producer, bucket, metrics));
    pipeline::run(ctx, stop_rx).await
}
