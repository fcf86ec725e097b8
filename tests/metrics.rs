//! The Prometheus endpoint: counters merged across shards, and clean under `promtool check
//! metrics` (CI installs promtool; the test fails rather than skips without it).

mod common;

use common::*;
use serde_json::json;
use std::process::Command;

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
        "rig_subscriptions_total 6\n",
        "corebridge_shards 3\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Each of the 18 deliveries went out in some write, at most one write each; every write
    // was in a pass, which took some time.
    let value = |name: &str| {
        metric_value(&text, &format!("{name} ")).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let writes = value("corebridge_stream_writes_total");
    assert!((1.0..=18.0 + 6.0).contains(&writes), "{writes} writes");
    let passes = value("corebridge_writer_passes_total");
    assert!(
        passes >= 1.0 && passes <= writes,
        "{passes} passes, {writes} writes"
    );
    assert!(value("corebridge_writer_pass_seconds_total") > 0.0);
    // This machine's kernel takes batched sends: every shard's writer uses them.
    assert_eq!(value("corebridge_writer_batched_shards"), 3.0);
    assert_promtool_clean(&text);
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

/// `grafana/corebridge.json`: valid JSON, every panel queries Prometheus through the
/// dashboard's datasource variable, and every metric it names exists (histograms by their
/// `_bucket` series).
#[test]
fn the_grafana_dashboard_names_only_metrics_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/grafana/corebridge.json")).unwrap(),
    )
    .unwrap();
    let names = std::fs::read_to_string(format!("{root}/src/metrics/names.rs")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 12, "{}", panels.len());
    let mut seen = std::collections::BTreeSet::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for prefix in ["corebridge_", "rig_"] {
                for (i, _) in expr.match_indices(prefix) {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    let base = name.strip_suffix("_bucket").unwrap_or(&name);
                    assert!(
                        names.contains(&format!("\"{base}\"")),
                        "{name} is on the dashboard but not among the metrics"
                    );
                    seen.insert(base.to_string());
                }
            }
        }
    }
    for must in [
        "corebridge_connections",
        "corebridge_events_delivered_total",
        "corebridge_events_dropped_total",
        "corebridge_slow_consumer_closes_total",
        "corebridge_kafka_consumer_lag",
        "corebridge_kafka_record_age_seconds",
        "corebridge_kinesis_iterator_age_milliseconds",
        "rig_proxy_requests_total",
        "corebridge_shard_busy_seconds_total",
    ] {
        assert!(seen.contains(must), "{must} has no panel");
    }
}
