//! The status page (`GET /dashboard` on the internal port) in a real browser: Debian's
//! chromium, headless, runs the page's script against `/v3/status` and the test reads the DOM
//! it produced (connections, shards, API definitions, blacklist) and keeps a screenshot.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::Command;

fn chromium(args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .expect("chromium (scripts/test installs Debian's chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_the_node_in_a_browser() {
    let apis = json!([{"id": "orders", "name": "orders",
        "proxy": {"target_url": "127.0.0.1", "port": 9},
        "version_data": {"default": {"endpoints": [{"id": "e", "method": "GET", "path_regex": "/o"}]}}}])
    .to_string();
    let srv = Server::start_with(2, "", &[("PROXY_CONFIG_FILE", &apis)]);
    let subs = enc(&json!([{"eventType": "greeting"}]).to_string());
    let path = format!("/_rig/v1/connection/sse?subscriptions={subs}");
    let _streams: Vec<SseClient> = (0..3)
        .map(|_| {
            SseClient::at(
                TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap(),
                &path,
            )
        })
        .collect();
    let r = request(
        srv.api,
        "POST",
        "/v3/session-blacklist",
        &[("content-type", "application/json")],
        br#"{"sessionId":"s-1","validityInSeconds":60}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // The JSON the page reads.
    let status: Value =
        serde_json::from_slice(&request(srv.api, "GET", "/v3/status", &[], b"").body).unwrap();
    let sse: u64 = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["connections"]["sse"].as_u64().unwrap())
        .sum();
    assert_eq!(sse, 3, "{status}");
    let metrics = request(srv.api, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("corebridge_shard_busy_seconds_total{shard=\"1\"}")
            && metrics.contains("corebridge_shard_inbound_queue{shard=\"0\"} 0"),
        "{metrics}"
    );

    let url = format!("http://127.0.0.1:{}/dashboard", srv.api);
    let dom = chromium(&["--dump-dom", &url]);
    assert!(dom.contains(r#"<b id="conns">3</b>"#), "{dom}");
    assert!(dom.contains(r#"<b id="bl">1</b>"#), "{dom}");
    assert!(
        dom.contains("<td>0</td>") && dom.contains("<td>1</td>"),
        "{dom}"
    );
    assert!(dom.contains(r#"<div id="apis">orders</div>"#), "{dom}");
    assert!(
        dom.contains("Kafka</h2><div id=\"kafka\">not configured"),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<div id="err"></div>"#),
        "the page's script failed: {dom}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    chromium(&[
        "--window-size=1000,700",
        &format!("--screenshot={}", shot.display()),
        &url,
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
}
