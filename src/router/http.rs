//! The router's own small HTTP endpoint on `ER_SERVER_PORT`: `GET /health` (and `/healthz`),
//! `GET /integrations` (the cache, per app id) and `GET /metrics` (Prometheus). One request per
//! connection, heads parsed by `proto::http1` with small bounds.

use super::registry::Registry;
use crate::metrics::router::RouterMetrics;
use crate::proto::http1::{self, Limits};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener, registry: Rc<Registry>, metrics: Arc<RouterMetrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (registry, metrics) = (registry.clone(), metrics.clone());
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), one(stream, &registry, &metrics))
                .await;
        });
    }
}

async fn one(mut stream: TcpStream, registry: &Registry, metrics: &RouterMetrics) {
    let limits = Limits {
        max_head_bytes: 8192,
        max_headers: 64,
        max_uri_bytes: 2048,
        max_body_bytes: 0,
    };
    let mut buf = Vec::new();
    let head = loop {
        match http1::parse_head(&buf, &limits) {
            Ok(Some((h, _))) => break h,
            Ok(None) => {}
            Err(e) => {
                return write(
                    &mut stream,
                    e.status(),
                    "text/plain",
                    e.to_string().as_bytes(),
                )
                .await
            }
        }
        let mut chunk = [0u8; 2048];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if head.method != http1::Method::Get {
        return write(&mut stream, 405, "text/plain", b"Method not allowed.").await;
    }
    match head.path.as_str() {
        "/health" | "/healthz" | "/" => write(&mut stream, 200, "text/plain", b"OK").await,
        "/integrations" => {
            let body = registry.snapshot().to_string();
            write(&mut stream, 200, "application/json", body.as_bytes()).await
        }
        "/metrics" => {
            let body = metrics.render();
            write(
                &mut stream,
                200,
                "text/plain; version=0.0.4",
                body.as_bytes(),
            )
            .await
        }
        _ => {
            write(
                &mut stream,
                404,
                "application/json",
                br#"{"message":"Not Found"}"#,
            )
            .await
        }
    }
}

async fn write(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let bytes = http1::response(status, &[("content-type", content_type)], body, false);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}
