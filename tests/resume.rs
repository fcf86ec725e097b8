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

    // Node a restarts while the client is away, and the client is back before the node knows
    // where its partitions stand (Kafka answers its first connection late): the resume waits
    // for that instead of starting at the end of the log, and replays from Kafka.
    drop(a);
    publish_n(b.inbound, 107, 50);
    let relay = common::relay::Relay::start(0, SHARED_PORT);
    relay.hold(Duration::from_millis(1500));
    let a = Server::start_with(
        2,
        "",
        &[
            ("KAFKA_BROKERS", &format!("127.0.0.1:{}", relay.port)),
            ("KAFKA_SOURCE_TOPICS", &topic),
        ],
    );
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

/// Produces `{"data": {"i": i}}` of type r.event to `topic` with an independent client.
fn produce(broker: &str, topic: &str, i: u64) {
    let ev = ce("r.event", json!({"i": i})).to_string();
    common::kafka::py(broker, &["produce", topic, &ev]).unwrap();
}

/// Waits until `srv` reads partition 0 of each of `topics`.
fn wait_reading(srv: &Server, topics: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = request(srv.api, "GET", "/metrics", &[], b"").text();
        if topics.iter().all(|t| {
            m.contains(&format!(
                "corebridge_kafka_consumer_lag{{topic=\"{t}\",partition=\"0\"}}"
            ))
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "node never read {topics:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn base36(mut n: u64) -> String {
    let mut out = Vec::new();
    while n > 0 {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// The client's node did not read topic b (a node started before b was added to its sources),
/// so its id does not name b. On a node that reads b, the resume brings what b got after the
/// client's last event, not what it had before, and announces no gap. An id whose time is
/// after every record of b gets nothing from it.
#[test]
fn a_partition_the_id_does_not_name_resumes_from_the_ids_time() {
    let broker = broker_up(SHARED_PORT);
    let n = fastrand::u32(..);
    let (ta, tb) = (format!("resume-na-{n:x}"), format!("resume-nb-{n:x}"));
    create(&broker, &ta, 1);
    create(&broker, &tb, 1);
    let refresh = ("CB_KAFKA_TOPIC_REFRESH_MS", "300");
    let one = Server::start_with(
        2,
        "",
        &[
            ("KAFKA_BROKERS", &broker),
            ("KAFKA_SOURCE_TOPICS", &ta),
            refresh,
        ],
    );
    wait_reading(&one, &[&ta]);
    produce(&broker, &tb, 100);
    let mut c = connect(one.inbound, None);
    std::thread::sleep(Duration::from_millis(50));
    produce(&broker, &ta, 0);
    let got = take(&mut c, 1, Duration::from_secs(20));
    assert_eq!(numbers(&got), vec![0], "{got:?}");
    let last = got[0].2.clone();
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    produce(&broker, &tb, 101);

    let both = format!("{ta},{tb}");
    let two = Server::start_with(
        2,
        "",
        &[
            ("KAFKA_BROKERS", &broker),
            ("KAFKA_SOURCE_TOPICS", &both),
            refresh,
        ],
    );
    wait_reading(&two, &[&ta, &tb]);
    let mut c = connect(two.inbound, Some(&last));
    let got = take(&mut c, 4, Duration::from_secs(5));
    assert!(got.iter().all(|(t, _, _)| t != "rig.replay_gap"), "{got:?}");
    assert_eq!(numbers(&got), vec![101], "{last}: {got:?}");
    drop(c);

    let (head, _) = last.rsplit_once(';').unwrap();
    let later = format!(
        "{head};{}",
        base36(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
                + 60_000
        )
    );
    let mut c = connect(two.inbound, Some(&later));
    let got = take(&mut c, 3, Duration::from_secs(3));
    assert!(got.iter().all(|(t, _, _)| t != "rig.replay_gap"), "{got:?}");
    assert!(numbers(&got).is_empty(), "{later}: {got:?}");
}

// Without Kafka: HTTP publishes are kept in the node's ring (and in Redis when configured).

const REDIS_PORT: &str = "6391";

fn user_event(i: usize, user: &str) -> Value {
    ce("r.event", json!({"i": i, "user": user}))
}

/// Publishes `from..from+n`, alternating users alice (even) and bob (odd).
fn publish_users(port: u16, from: usize, n: usize) {
    for i in from..from + n {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        let r = publish(port, &user_event(i, who));
        assert_eq!(r.status, 202, "{}", r.text());
    }
}

const USER_EXTRACTOR: &str =
    r#"{"r.event":{"user":{"stable_field_index":0,"event":{"json_pointer":"/data/user"}}}}"#;

/// Alice's stream: only her events (a per-user resume reads only her routing key).
fn connect_alice(port: u16, last_id: Option<&str>) -> SseClient {
    let subs = enc(&json!([{"eventType": "r.event", "oneOf": [{"user": "alice"}]}]).to_string());
    let path = format!("/_rig/v1/connection/sse?subscriptions={subs}");
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    match last_id {
        None => SseClient::at(s, &path),
        Some(id) => SseClient::at_with(s, &path, &format!("last-event-id: {id}\r\n")),
    }
}

fn evens(range: std::ops::Range<u64>) -> HashSet<u64> {
    range.filter(|i| i % 2 == 0).collect()
}

fn assert_once(got: &[u64], want: HashSet<u64>) {
    let set: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "duplicates: {got:?}");
    assert_eq!(set, want, "{got:?}");
}

#[test]
fn without_kafka_published_events_resume_from_the_nodes_ring() {
    let a = Server::start_with(2, "", &[]);
    let mut c = connect(a.inbound, None);
    publish_n(a.inbound, 0, 5);
    let got = take(&mut c, 5, Duration::from_secs(10));
    assert_exactly(&numbers(&got), 0..5);
    let last = got.last().unwrap().2.clone();
    assert!(last.starts_with('~') && last.contains(';'), "{last}");
    drop(c);

    // Away while 50 are published (through both shards: one connection per publish).
    publish_n(a.inbound, 5, 50);
    let mut c = connect_by(a.inbound, Some(&last), true);
    let got = take(&mut c, 52, Duration::from_secs(10));
    assert!(got.iter().all(|(t, _, _)| t != "rig.replay_gap"), "{got:?}");
    assert_exactly(&numbers(&got), 5..55);
    publish_n(a.inbound, 55, 5);
    let live = take(&mut c, 5, Duration::from_secs(10));
    assert_exactly(&numbers(&live), 55..60);
    let last = live.last().unwrap().2.clone();
    drop(c);

    // Again, several times (another shard each time, by chance), with nothing missed.
    for round in 0..3 {
        let mut c = connect(a.inbound, Some(&last));
        let got = take(&mut c, 3, Duration::from_millis(1500));
        assert!(numbers(&got).is_empty(), "round {round}: {got:?}");
    }
    assert!(metric(&a, "corebridge_resumes_total{result=\"replayed\"} ").unwrap() >= 4.0);
}

#[test]
fn without_kafka_or_redis_beyond_the_ring_and_other_nodes_ids_get_a_gap() {
    let tuning = "[sessions]\nresume_ring_events = 20\n";
    let a = Server::start_with(2, tuning, &[]);
    let b = Server::start_with(2, tuning, &[]);
    let mut c = connect(a.inbound, None);
    publish_n(a.inbound, 0, 1);
    let last = take(&mut c, 1, Duration::from_secs(10))[0].2.clone();
    drop(c);
    publish_n(a.inbound, 1, 50);
    let mut c = connect(a.inbound, Some(&last));
    let got = take(&mut c, 42, Duration::from_secs(5));
    assert_eq!(got[0].0, "rig.replay_gap", "{got:?}");
    assert!(
        got[0].1["reason"].as_str().unwrap().contains("ring"),
        "{got:?}"
    );
    let n = numbers(&got);
    assert_eq!(n.iter().collect::<HashSet<_>>().len(), n.len(), "{n:?}");
    assert!(
        (41..51).all(|i| n.contains(&i)),
        "the newest are kept: {n:?}"
    );
    drop(c);

    // An id of node a on node b, which has no Redis store: a gap, then live events.
    let mut c = connect(b.inbound, Some(&last));
    let got = take(&mut c, 1, Duration::from_secs(5));
    assert_eq!(got[0].0, "rig.replay_gap", "{got:?}");
    publish_n(b.inbound, 100, 1);
    assert_eq!(
        numbers(&take(&mut c, 1, Duration::from_secs(10))),
        vec![100]
    );
}

/// Alice away from node a while 40 events (20 hers) are published there; back on node b,
/// which has them only from the Redis store: exactly hers, then live ones on b. Returns the
/// nodes and her stream on b.
fn resumed_on_another_node_from_redis(envs: &[(&str, &str)]) -> (Server, Server, SseClient) {
    let prefix = format!("cbtest{:x}:", fastrand::u32(..));
    let mut all = vec![
        ("CB_REDIS_KEY_PREFIX", prefix.as_str()),
        ("EXTRACTORS", USER_EXTRACTOR),
    ];
    all.extend_from_slice(envs); // after the prefix: a caller's own prefix wins
    let a = Server::start_with(2, "", &all);
    let b = Server::start_with(2, "", &all);

    let mut c = connect_alice(a.inbound, None);
    publish_users(a.inbound, 0, 4);
    let got = take(&mut c, 2, Duration::from_secs(10));
    assert_once(&numbers(&got), evens(0..4));
    let last = got.last().unwrap().2.clone();
    drop(c);

    publish_users(a.inbound, 4, 40);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&a, "corebridge_redis_events_written_total ").unwrap_or(0.0) < 44.0 {
        assert!(Instant::now() < deadline, "node a never wrote to Redis");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = connect_alice(b.inbound, Some(&last));
    let got = take(&mut c, 22, Duration::from_secs(10));
    assert!(got.iter().all(|(t, _, _)| t != "rig.replay_gap"), "{got:?}");
    assert_once(&numbers(&got), evens(4..44));
    publish_users(b.inbound, 44, 4);
    let live = take(&mut c, 2, Duration::from_secs(10));
    assert_once(&numbers(&live), evens(44..48));
    (a, b, c)
}

#[test]
fn with_redis_a_published_event_resumes_on_another_node_and_redis_down_keeps_live() {
    service("redis-up", &[REDIS_PORT], &[]);
    let url = format!("redis://127.0.0.1:{REDIS_PORT}/0");
    let (a, b, mut c) = resumed_on_another_node_from_redis(&[("CB_REDIS_URL", url.as_str())]);

    // Redis killed mid-run: live delivery goes on, the store's gauge says so.
    service("redis-down", &[REDIS_PORT], &[]);
    publish_users(b.inbound, 48, 6);
    let live = take(&mut c, 3, Duration::from_secs(10));
    assert_once(&numbers(&live), evens(48..54));
    let last_b = live.last().unwrap().2.clone();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&b, "corebridge_redis_up ") != Some(0.0) {
        assert!(Instant::now() < deadline, "corebridge_redis_up stayed 1");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(&b, "corebridge_redis_write_failures_total ").unwrap() > 0.0);
    // Resume falls back to the node's own ring...
    publish_users(b.inbound, 54, 4);
    let mut c = connect_alice(b.inbound, Some(&last_b));
    let got = take(&mut c, 3, Duration::from_secs(10));
    assert!(got.iter().all(|(t, _, _)| t != "rig.replay_gap"), "{got:?}");
    assert_once(&numbers(&got), evens(54..58));
    drop(c);
    // ...and on the other node, which would need Redis, says it could not be read.
    let mut c = connect_alice(a.inbound, Some(&last_b));
    let got = take(&mut c, 1, Duration::from_secs(15));
    assert_eq!(got[0].0, "rig.replay_gap", "{got:?}");
    assert!(
        got[0].1["reason"].as_str().unwrap().contains("Redis"),
        "{got:?}"
    );
    publish_users(a.inbound, 60, 2);
    assert_eq!(numbers(&take(&mut c, 1, Duration::from_secs(10))), vec![60]);
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// A WebSocket asking for resume ids (`last_event_id` empty) or resuming from one.
fn ws_connect(port: u16, last_id: &str) -> Ws {
    let subs = enc(&json!([{"eventType": "r.event"}]).to_string());
    let url = format!(
        "ws://127.0.0.1:{port}/_rig/v1/connection/ws?subscriptions={subs}&last_event_id={}",
        enc(last_id)
    );
    let (ws, resp) = tungstenite::connect(url).expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The events (as JSON) of the text frames until `n` or `within`.
fn ws_take(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => out.push(serde_json::from_str(&t).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("websocket read failed: {e:?}"),
        }
    }
    out
}

fn ws_numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["type"] == "r.event")
        .map(|e| e["data"]["i"].as_u64().unwrap())
        .collect()
}

#[test]
fn websocket_clients_resume_from_the_lasteventid_they_were_sent() {
    let a = Server::start_with(2, "", &[]);
    // A plain WebSocket's events are RIG's, unchanged.
    let subs = enc(&json!([{"eventType": "r.event"}]).to_string());
    let (mut plain, _) = tungstenite::connect(format!(
        "ws://127.0.0.1:{}/_rig/v1/connection/ws?subscriptions={subs}",
        a.inbound
    ))
    .unwrap();
    let mut ws = ws_connect(a.inbound, "");
    let first = ws_take(&mut ws, 2, Duration::from_secs(5));
    assert_eq!(first[0]["type"], "rig.connection.create", "{first:?}");
    assert!(
        first[0]["lasteventid"].as_str().unwrap().starts_with("@;"),
        "{first:?}"
    );
    publish_n(a.inbound, 0, 3);
    let got = ws_take(&mut ws, 3, Duration::from_secs(10));
    assert_exactly(&ws_numbers(&got), 0..3);
    let last = got[2]["lasteventid"].as_str().unwrap().to_string();
    assert!(last.starts_with('~'), "{last}");
    let p = ws_take(&mut plain, 5, Duration::from_secs(10));
    assert_exactly(&ws_numbers(&p), 0..3);
    assert!(p.iter().all(|e| e.get("lasteventid").is_none()), "{p:?}");
    drop(ws);

    publish_n(a.inbound, 3, 20);
    let mut ws = ws_connect(a.inbound, &last);
    let got = ws_take(&mut ws, 22, Duration::from_secs(10));
    assert_eq!(got[0]["type"], "rig.connection.create", "{got:?}");
    assert!(got.iter().all(|e| e["type"] != "rig.replay_gap"), "{got:?}");
    assert_exactly(&ws_numbers(&got), 3..23);
    publish_n(a.inbound, 23, 2);
    let live = ws_take(&mut ws, 2, Duration::from_secs(10));
    assert_exactly(&ws_numbers(&live), 23..25);
}

#[test]
fn long_poll_sessions_that_are_gone_resume_from_the_cookie() {
    let a = Server::start_with(2, "", &[]);
    let subs = enc(&json!([{"eventType": "r.event"}]).to_string());
    let path = format!("/_rig/v1/connection/longpolling?subscriptions={subs}");
    let lp = "/_rig/v1/connection/longpolling";
    let r = request(a.inbound, "GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    let token = r.set_cookie("connection_token").unwrap();
    let poll = |token: &str, last: &str| {
        let cookie = format!("connection_token={token}; last_event_id={last}");
        let r = request(a.inbound, "GET", lp, &[("cookie", &cookie)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        (body, r.set_cookie("last_event_id").unwrap())
    };
    // A 202 means queued, not yet delivered: polls gather until `n` events arrived.
    let gather = |token: &str, last: String, n: usize| {
        let (mut events, mut last) = (Vec::new(), last);
        let deadline = Instant::now() + Duration::from_secs(10);
        while events.len() < n && Instant::now() < deadline {
            let (body, next) = poll(token, &last);
            events.extend(body["events"].as_array().unwrap().iter().cloned());
            last = next;
        }
        (events, last)
    };
    let (events, last) = gather(&token, "\"first_event\"".into(), 2);
    assert_eq!(events.len(), 2, "{events:?}");
    publish_n(a.inbound, 0, 2);
    let (events, last) = gather(&token, last, 2);
    assert_exactly(&ws_numbers(&events), 0..2);
    assert!(last.contains('|'), "{last}");

    // The session is gone (another node's or a restarted node's token): the cookie's resume
    // id opens a new one that starts with what was missed. (Clients poll the URL they opened
    // the session with: its subscriptions are the new session's.)
    publish_n(a.inbound, 2, 5);
    let r = request(
        a.inbound,
        "GET",
        &path,
        &[(
            "cookie",
            &format!("connection_token=gone; last_event_id={last}"),
        )],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""));
    let token = r.set_cookie("connection_token").unwrap();
    let (events, last) = gather(&token, "\"first_event\"".into(), 7);
    assert_eq!(events[0]["type"], "rig.connection.create", "{events:?}");
    assert_exactly(&ws_numbers(&events), 2..7);
    publish_n(a.inbound, 7, 1);
    let (events, _) = gather(&token, last, 1);
    assert_exactly(&ws_numbers(&events), 7..8);
}

/// `redis-server` processes this test owns (killed on drop), each on a free port.
struct RedisProcs(Vec<std::process::Child>, std::path::PathBuf);

impl Drop for RedisProcs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (installed with redis-server by redis-up)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir", dir.to_str().unwrap()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (installed by redis-up)");
    wait_for("redis-server up", || {
        redis_cli(port, &["ping"]).contains("PONG")
    });
    child
}

/// A Redis Sentinel with the configuration file `conf`.
fn sentinel_server(conf: &std::path::Path) -> std::process::Child {
    std::process::Command::new("redis-server")
        .arg(conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (installed by redis-up)")
}

#[test]
fn the_redis_store_works_through_sentinel_and_on_a_cluster() {
    // redis-up installs redis-server (and redis-cli) when missing; its own server is not used.
    service("redis-up", &[REDIS_PORT], &[]);
    let dir = std::env::temp_dir().join(format!("cb-redis-{:x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = RedisProcs(Vec::new(), dir.clone());

    // Sentinel: one master, one sentinel watching it; the gateway asks the sentinel.
    let master = free_port();
    procs.0.push(redis_server(&dir, master, &[]));
    let sentinel = free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel}\nbind 127.0.0.1\nsentinel monitor cbmaster 127.0.0.1 {master} 1\n"
        ),
    )
    .unwrap();
    procs.0.push(sentinel_server(&conf));
    wait_for("sentinel knows the master", || {
        redis_cli(
            sentinel,
            &["sentinel", "get-master-addr-by-name", "cbmaster"],
        )
        .contains(&master.to_string())
    });
    let nodes = format!("127.0.0.1:{sentinel}");
    let (_a, _b, _c) = resumed_on_another_node_from_redis(&[
        ("SPRING_DATA_REDIS_SENTINEL_MASTER", "cbmaster"),
        ("SPRING_DATA_REDIS_SENTINEL_NODES", nodes.as_str()),
    ]);
    assert!(
        redis_cli(master, &["dbsize"])
            .trim()
            .parse::<u64>()
            .unwrap()
            > 0
    );

    // Cluster: three masters, the keys spread over their slots.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for p in &ports {
        let nodes_file = format!("nodes-{p}.conf");
        procs.0.push(redis_server(
            &dir,
            *p,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &nodes_file,
            ],
        ));
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for("cluster ok", || {
        ports
            .iter()
            .all(|p| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
    });
    let seeds = addrs.join(",");
    // The three keys (the type's, alice's, bob's) land on one master for one random prefix in
    // nine: pick one whose keys' slots fall in at least two masters' ranges (`--cluster create`
    // splits the 16,384 slots in three equal runs).
    let prefix = std::iter::repeat_with(|| format!("cbtest{:x}:", fastrand::u32(..)))
        .find(|prefix| {
            // The names as the store writes them: the filter value is JSON, quoted.
            let ranges: HashSet<u64> = [
                "r.event",
                r#"r.event#user="alice""#,
                r#"r.event#user="bob""#,
            ]
            .iter()
            .map(|k| {
                let key = format!("{prefix}{k}");
                let slot = redis_cli(ports[0], &["cluster", "keyslot", &key]);
                // Masters hold 0-5460, 5461-10922 and 10923-16383.
                match slot.trim().parse::<u64>().unwrap() {
                    0..=5460 => 0,
                    5461..=10922 => 1,
                    _ => 2,
                }
            })
            .collect();
            ranges.len() >= 2
        })
        .unwrap();
    let (_a, _b, _c) = resumed_on_another_node_from_redis(&[
        ("SPRING_DATA_REDIS_CLUSTER_NODES", seeds.as_str()),
        ("CB_REDIS_KEY_PREFIX", prefix.as_str()),
    ]);
    let spread = ports
        .iter()
        .filter(|p| {
            redis_cli(**p, &["dbsize"])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                > 0
        })
        .count();
    let keys: Vec<String> = ports
        .iter()
        .map(|p| redis_cli(*p, &["keys", "*"]))
        .collect();
    assert!(
        spread >= 2,
        "keys on {spread} of 3 masters ({prefix}): {keys:?}"
    );
}

/// `redis-cli` over TLS with the test PKI's client certificate.
fn redis_cli_tls(port: u16, pki: &std::path::Path, args: &[&str]) -> String {
    let f = |n: &str| pki.join(n).to_str().unwrap().to_string();
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert", &f("ca.pem")])
        .args(["--cert", &f("client.pem"), "--key", &f("client.key")])
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (installed with redis-server by redis-up)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The server's side of TLS: its certificate, the test CA, and a client certificate demanded.
fn redis_tls_args(pki: &std::path::Path) -> Vec<String> {
    let f = |n: &str| pki.join(n).to_str().unwrap().to_string();
    [
        ("--tls-cert-file", f("redis.pem")),
        ("--tls-key-file", f("redis.key")),
        ("--tls-ca-cert-file", f("ca.pem")),
        ("--tls-auth-clients", "yes".into()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

#[test]
fn the_redis_store_works_over_tls_with_a_client_certificate_and_through_a_tls_sentinel() {
    // redis-up installs redis-server (built with TLS in Debian); its own server is not used.
    service("redis-up", &[REDIS_PORT], &[]);
    let pki = common::pki::pki(&["redis", "client"]);
    let mut procs = RedisProcs(Vec::new(), pki.clone());
    let f = |n: &str| pki.join(n).to_str().unwrap().to_string();

    // A server that speaks only TLS and demands a client certificate.
    let master = free_port();
    procs.0.push(
        std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &master.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", pki.to_str().unwrap()])
            .args(redis_tls_args(&pki))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by redis-up)"),
    );
    wait_for("redis-server up over TLS", || {
        redis_cli_tls(master, &pki, &["ping"]).contains("PONG")
    });
    let port = master.to_string();
    // A plain URL and Spring's flag: TLS all the same. (SPRING_DATA_REDIS_HOST would select
    // the FlowX profile and its Kafka.)
    let url = format!("redis://127.0.0.1:{master}/0");
    let base = [
        ("CB_REDIS_URL", url.as_str()),
        ("SPRING_DATA_REDIS_SSL_ENABLED", "true"),
    ];
    let (ca, cert, key) = (f("ca.pem"), f("client.pem"), f("client.key"));
    let mut full = base.to_vec();
    full.extend([
        ("CB_REDIS_TLS_CA_FILE", ca.as_str()),
        ("CB_REDIS_TLS_CERT_FILE", cert.as_str()),
        ("CB_REDIS_TLS_KEY_FILE", key.as_str()),
    ]);
    let (_a, _b, _c) = resumed_on_another_node_from_redis(&full);
    let kept = |port| {
        redis_cli_tls(port, &pki, &["dbsize"])
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(kept(master) > 0);

    // Without the client certificate, or trusting only the system's CAs (which never signed
    // the server's certificate), the store is unusable: live delivery goes on, the node says
    // the store is down and counts what it could not keep.
    let no_client_cert = [base.as_slice(), &[("CB_REDIS_TLS_CA_FILE", ca.as_str())]].concat();
    let system_roots = [
        base.as_slice(),
        &[
            ("CB_REDIS_TLS_CERT_FILE", cert.as_str()),
            ("CB_REDIS_TLS_KEY_FILE", key.as_str()),
        ],
    ]
    .concat();
    for envs in [no_client_cert, system_roots] {
        let mut envs = envs.clone();
        envs.push(("EXTRACTORS", USER_EXTRACTOR));
        let n = Server::start_with(2, "", &envs);
        let mut c = connect_alice(n.inbound, None);
        publish_users(n.inbound, 0, 2);
        assert_once(
            &numbers(&take(&mut c, 1, Duration::from_secs(10))),
            evens(0..2),
        );
        wait_for("the store refused", || {
            metric(&n, "corebridge_redis_write_failures_total ").unwrap_or(0.0) > 0.0
                && metric(&n, "corebridge_redis_up ") == Some(0.0)
        });
        assert_eq!(
            metric(&n, "corebridge_redis_events_written_total ").unwrap_or(0.0),
            0.0,
            "{envs:?}"
        );
    }

    // Sentinel over TLS (to the sentinel and to the master it names), configured the way a
    // FlowX deployment is: a Spring SSL bundle with the CA by `file:`, the client certificate
    // inline and its key by path.
    let sentinel = free_port();
    let conf = pki.join("sentinel.conf");
    let mut text = format!(
        "port 0\ntls-port {sentinel}\nbind 127.0.0.1\ntls-replication yes\n\
         sentinel monitor cbmaster 127.0.0.1 {master} 1\n"
    );
    for pair in redis_tls_args(&pki).chunks(2) {
        text.push_str(&format!(
            "{} {}\n",
            pair[0].trim_start_matches("--"),
            pair[1]
        ));
    }
    std::fs::write(&conf, text).unwrap();
    procs.0.push(sentinel_server(&conf));
    wait_for("the TLS sentinel knows the master", || {
        redis_cli_tls(
            sentinel,
            &pki,
            &["sentinel", "get-master-addr-by-name", "cbmaster"],
        )
        .contains(&port)
    });
    let before = kept(master);
    let (ca_url, cert_pem) = (
        format!("file:{ca}"),
        std::fs::read_to_string(&cert).unwrap(),
    );
    let nodes = format!("127.0.0.1:{sentinel}");
    let (_a, _b, _c) = resumed_on_another_node_from_redis(&[
        ("SPRING_DATA_REDIS_SENTINEL_MASTER", "cbmaster"),
        ("SPRING_DATA_REDIS_SENTINEL_NODES", nodes.as_str()),
        ("SPRING_DATA_REDIS_SSL_BUNDLE", "cb-redis"),
        (
            "SPRING_SSL_BUNDLE_PEM_CBREDIS_TRUSTSTORE_CERTIFICATE",
            ca_url.as_str(),
        ),
        (
            "SPRING_SSL_BUNDLE_PEM_CBREDIS_KEYSTORE_CERTIFICATE",
            cert_pem.as_str(),
        ),
        (
            "SPRING_SSL_BUNDLE_PEM_CBREDIS_KEYSTORE_PRIVATE_KEY",
            key.as_str(),
        ),
    ]);
    assert!(
        kept(master) > before,
        "nothing written through the sentinel"
    );
}
