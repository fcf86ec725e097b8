//! Resuming SSE streams from `Last-Event-ID` against the real broker: a client away while 50
//! events were published (over HTTP, through a three-partition topic) reconnects to the same
//! node, to another node, and to a restarted node, and gets exactly what it missed, in each
//! partition's order, then live events, with nothing twice; ids too old or foreign get a
//! `rig.replay_gap` event first.

mod common;

use common::kafka::{broker_up, create};
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SHARED_PORT: u16 = 19092;

fn node(broker: &str, topic: &str, tuning: &str, envs: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("KAFKA_BROKERS", broker),
        ("KAFKA_SOURCE_TOPICS", topic),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
    ];
    all.extend_from_slice(envs);
    let srv = Server::start_with(2, tuning, &all);
    // Resume needs the node to read every partition: wait for its lag gauges.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = request(srv.api, "GET", "/metrics", &[], b"").text();
        if (0..3).all(|p| {
            m.contains(&format!(
                "corebridge_kafka_consumer_lag{{topic=\"{topic}\",partition=\"{p}\"}}"
            ))
        }) {
            return srv;
        }
        assert!(Instant::now() < deadline, "node never read {topic}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn publish_n(port: u16, from: usize, n: usize) {
    for i in from..from + n {
        let r = publish(port, &ce("r.event", json!({"i": i})));
        assert_eq!(r.status, 202, "{}", r.text());
    }
}

/// SSE resuming from `last_id` (None: a fresh stream): by query parameter, or by the
/// `Last-Event-ID` header as EventSource sends it.
fn connect_by(port: u16, last_id: Option<&str>, header: bool) -> SseClient {
    let subs = enc(&json!([{"eventType": "r.event"}]).to_string());
    let path = format!("/_rig/v1/connection/sse?subscriptions={subs}");
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    match last_id {
        None => SseClient::at(s, &path),
        Some(id) if header => SseClient::at_with(s, &path, &format!("last-event-id: {id}\r\n")),
        Some(id) => SseClient::at(s, &format!("{path}&last_event_id={}", enc(id))),
    }
}

fn connect(port: u16, last_id: Option<&str>) -> SseClient {
    connect_by(port, last_id, false)
}

/// Waits until `srv` has read `n` records of `topic` in all (the client's absence lasts
/// until the node has them: otherwise they simply arrive live).
fn wait_read(srv: &Server, topic: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = format!("corebridge_kafka_records_consumed_total{{topic=\"{topic}\"}} ");
    loop {
        let m = request(srv.api, "GET", "/metrics", &[], b"").text();
        let got = m
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if got as u64 >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{topic}: {got} of {n} read");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (event type, data.i or gap data, SSE id) of everything until `n` events or `within`.
fn take(c: &mut SseClient, n: usize, within: Duration) -> Vec<(String, Value, String)> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        c.set_timeout(Duration::from_millis(300));
        if let Some(m) = c.try_next() {
            let v: Value = serde_json::from_str(&m.data).unwrap_or_default();
            let ty = m.event.clone().unwrap_or_default();
            let what = if ty == "r.event" {
                v["data"]["i"].clone()
            } else {
                v["data"].clone()
            };
            out.push((ty, what, m.id.clone().unwrap_or_default()));
        }
    }
    out
}

fn numbers(got: &[(String, Value, String)]) -> Vec<u64> {
    got.iter()
        .filter(|(t, _, _)| t == "r.event")
        .map(|(_, v, _)| v.as_u64().unwrap())
        .collect()
}

/// Exactly `want`, each once.
fn assert_exactly(got: &[u64], want: std::ops::Range<u64>) {
    let set: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "duplicates: {got:?}");
    assert_eq!(set, want.collect::<HashSet<u64>>(), "{got:?}");
}

#[test]
fn sse_resumes_on_the_same_node_another_node_and_after_a_restart() {
    let broker = broker_up(SHARED_PORT);
    let topic = format!("resume-{:x}", fastrand::u32(..));
    create(&broker, &topic, 3);
    let a = node(&broker, &topic, "", &[]);
    let b = node(&broker, &topic, "", &[]);

    let mut c = connect(a.inbound, None);
    publish_n(b.inbound, 0, 5);
    let got = take(&mut c, 5, Duration::from_secs(20));
    assert_exactly(&numbers(&got), 0..5);
    let last = got.last().unwrap().2.clone();
    assert!(
        last.contains(&format!("{topic}/")) && last.contains(';'),
        "{last}"
    );
    drop(c);

    // Away while 50 are published; back on the same node.
    publish_n(b.inbound, 5, 50);
    wait_read(&a, &topic, 55);
    let mut c = connect(a.inbound, Some(&last));
    let got = take(&mut c, 50, Duration::from_secs(20));
    assert_exactly(&numbers(&got), 5..55);
    // Then live, and nothing more of the past.
    publish_n(a.inbound, 55, 1);
    let got2 = take(&mut c, 2, Duration::from_secs(5));
    assert_eq!(numbers(&got2), vec![55], "{got2:?}");
    let last = got2.last().unwrap().2.clone();
    drop(c);

    // Away again; back on the other node.
    publish_n(a.inbound, 56, 50);
    wait_read(&b, &topic, 106);
    let mut c = connect(b.inbound, Some(&last));
    let got = take(&mut c, 50, Duration::from_secs(20));
    assert_exactly(&numbers(&got), 56..106);
    publish_n(b.inbound, 106, 1);
    let got2 = take(&mut c, 2, Duration::from_secs(5));
    assert_eq!(numbers(&got2), vec![106], "{got2:?}");
    let last = got2.last().unwrap().2.clone();
    drop(c);

    // Node a restarts while the client is away; it resumes there, from Kafka.
    drop(a);
    publish_n(b.inbound, 107, 50);
    let a = node(&broker, &topic, "", &[]);
    let mut c = connect(a.inbound, Some(&last));
    let got = take(&mut c, 50, Duration::from_secs(20));
    assert_exactly(&numbers(&got), 107..157);
    // The id as a header (EventSource's way) works the same.
    let last = got.last().unwrap().2.clone();
    drop(c);
    publish_n(b.inbound, 157, 3);
    wait_read(&b, &topic, 160);
    let mut c = connect_by(b.inbound, Some(&last), true);
    let got = take(&mut c, 4, Duration::from_secs(5));
    assert_exactly(&numbers(&got), 157..160);
    let text = request(b.api, "GET", "/metrics", &[], b"").text();
    assert!(
        text.contains("corebridge_resumes_total{result=\"replayed\"}"),
        "{text}"
    );
}

#[test]
fn ids_too_old_or_foreign_get_a_gap_event_first() {
    let broker = broker_up(SHARED_PORT);
    let topic = format!("resume-gap-{:x}", fastrand::u32(..));
    create(&broker, &topic, 3);
    let tuning = "[sessions]\nresume_max_events = 4\nqueue_events = 64\n";
    let a = node(&broker, &topic, tuning, &[]);
    let mut c = connect(a.inbound, None);
    publish_n(a.inbound, 0, 1);
    let got = take(&mut c, 1, Duration::from_secs(20));
    let last = got[0].2.clone();
    drop(c);
    publish_n(a.inbound, 1, 10);
    wait_read(&a, &topic, 11);
    let mut c = connect(a.inbound, Some(&last));
    let got = take(&mut c, 5, Duration::from_secs(20));
    assert_eq!(got[0].0, "rig.replay_gap", "{got:?}");
    assert_eq!(got[0].1["lost_at_least"], 6, "{got:?}");
    assert_eq!(got[0].1["from"], last.as_str());
    assert_eq!(numbers(&got).len(), 4, "{got:?}");
    drop(c);

    let mut c = connect(a.inbound, Some("some-other-system-42"));
    let got = take(&mut c, 1, Duration::from_secs(5));
    assert_eq!(got[0].0, "rig.replay_gap", "{got:?}");
    assert!(got[0].1["lost_at_least"].is_null());
    // A gap is not a dead end: live events follow.
    publish_n(a.inbound, 11, 1);
    let got = take(&mut c, 1, Duration::from_secs(10));
    assert_eq!(numbers(&got), vec![11]);
}
