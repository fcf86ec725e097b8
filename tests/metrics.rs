//! The Prometheus endpoint: counters merged across shards, and clean under `promtool check
//! metrics` (CI installs promtool; the test fails rather than skips without it).

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn metrics_count_and_pass_promtool() {
    let srv = Server::start_with(3, "", &[]);
    let mut clients: Vec<SseClient> = (0..6)
        .map(|_| SseClient::connect(srv.inbound, Some(r#"[{"eventType":"m"}]"#)))
        .collect();
    for n in 0..3 {
        assert_eq!(
            publish(srv.inbound, &ce("m", json!({ "n": n }))).status,
            202
        );
    }
    for c in clients.iter_mut() {
        for _ in 0..3 {
            c.next_event();
        }
    }
    let r = request(srv.api, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for want in [
        "corebridge_connections{transport=\"sse\"} 6\n",
        "corebridge_events_received_total{source=\"http\"} 3\n",
        "corebridge_events_delivered_total{transport=\"sse\"} 18\n",
        "corebridge_subscriptions 6\n",
        "corebridge_shards 3\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus); .ci/run does it");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped alert rules parse (`promtool check rules`) and name only metrics Corebridge
/// exposes.
#[test]
fn alert_rules_pass_promtool_and_name_real_metrics() {
    let rules = format!("{}/prometheus/alerts.yml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("promtool")
        .args(["check", "rules", &rules])
        .output()
        .expect("promtool (CI installs the prometheus package)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    let names = std::fs::read_to_string(format!(
        "{}/src/metrics/names.rs",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut checked = 0;
    for (i, _) in text.match_indices("corebridge_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        assert!(
            names.contains(&format!("\"{name}\"")),
            "{name} is in the alert rules but not among the metrics"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}
