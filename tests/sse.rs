//! SSE end to end: curl and a Rust client, RIG's constraint semantics, publishing in both
//! CloudEvents modes and versions, subscription replacement, fan-out across every shard.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn curl_receives_a_published_event() {
    let srv = Server::start();
    let url = format!(
        "http://127.0.0.1:{}/_rig/v1/connection/sse?subscriptions={}",
        srv.inbound,
        enc(r#"[{"eventType":"greeting"}]"#)
    );
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "20", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    // Wait for the subscription to be in place before publishing.
    let mut seen_set = false;
    for line in lines.by_ref() {
        if line.unwrap() == "event: rig.subscriptions_set" {
            seen_set = true;
            break;
        }
    }
    assert!(seen_set);
    let r = publish(srv.inbound, &ce("greeting", json!({"hello": "world"})));
    assert_eq!(r.status, 202, "{}", r.text());
    let mut got = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("data: ") && line.contains("\"hello\":\"world\"") {
            got.push(line);
            break;
        }
        got.push(line);
    }
    let _ = curl.kill();
    let _ = curl.wait();
    let joined = got.join("\n");
    assert!(joined.contains("event: greeting"), "{joined}");
    assert!(joined.contains("\"hello\":\"world\""), "{joined}");
    assert!(
        got.iter().any(|l| l.starts_with("id: ")),
        "every SSE event carries an id: {joined}"
    );
}

#[test]
fn response_head_is_rigs() {
    let srv = Server::start();
    let c = SseClient::connect(srv.inbound, None);
    assert_eq!(c.head.status, 200);
    assert_eq!(
        c.head.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(c.head.header("cache-control"), Some("no-cache"));
    assert_eq!(c.head.header("access-control-allow-origin"), Some("*"));
    assert_eq!(c.head.header("transfer-encoding"), Some("chunked"));
    assert!(!c.token.is_empty());
}

#[test]
fn bad_subscriptions_are_400_with_rigs_message() {
    let srv = Server::start();
    let r = request(
        srv.inbound,
        "GET",
        &format!("/_rig/v1/connection/sse?subscriptions={}", enc("[{nope")),
        &[],
        b"",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("Failed to decode subscription list:"),
        "{}",
        r.text()
    );
    let r = request(
        srv.inbound,
        "GET",
        &format!(
            "/_rig/v1/connection/sse?subscriptions={}",
            enc(r#"[{"oneOf":[]}]"#)
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("event-type not found"), "{}", r.text());
}

/// Sends `events` in order, then a marker event, and returns the `data.n` of every event the
/// client got before the marker.
fn received(srv: &Server, c: &mut SseClient, events: &[serde_json::Value]) -> Vec<i64> {
    for e in events {
        assert_eq!(publish(srv.inbound, e).status, 202);
    }
    assert_eq!(publish(srv.inbound, &ce("marker", json!({}))).status, 202);
    let mut got = Vec::new();
    loop {
        let e = c.next_event();
        if e["type"] == "marker" {
            return got;
        }
        got.push(e["data"]["n"].as_i64().unwrap());
    }
}

#[test]
fn constraint_matching_follows_rig() {
    let srv = Server::start();
    let greet =
        |n: i64, name: &str, age: i64| ce("greeting", json!({"n": n, "name": name, "age": age}));
    let events = vec![
        greet(1, "joe", 30),
        greet(2, "joe", 31),
        greet(3, "ann", 30),
        ce("greetings", json!({"n": 4, "name": "joe", "age": 30})),
        ce("greeting", json!({"n": 5, "name": "joe"})),
    ];
    let cases: &[(&str, &[i64])] = &[
        // name=joe matches joe with any age (and joe without an age).
        (
            r#"[{"eventType":"greeting","oneOf":[{"name":"joe"}]},{"eventType":"marker"}]"#,
            &[1, 2, 5],
        ),
        // name=joe AND age=30 matches only joe/30.
        (
            r#"[{"eventType":"greeting","oneOf":[{"name":"joe","age":30}]},{"eventType":"marker"}]"#,
            &[1],
        ),
        // OR of clauses.
        (
            r#"[{"eventType":"greeting","oneOf":[{"name":"ann"},{"age":31}]},{"eventType":"marker"}]"#,
            &[2, 3],
        ),
        // A field the extractors do not know is ignored.
        (
            r#"[{"eventType":"greeting","oneOf":[{"shoe":"red"}]},{"eventType":"marker"}]"#,
            &[1, 2, 3, 5],
        ),
        // Event types match exactly: no prefix, no wildcard.
        (
            r#"[{"eventType":"greet"},{"eventType":"greeting*"},{"eventType":"marker"}]"#,
            &[],
        ),
        (
            r#"[{"eventType":"greetings"},{"eventType":"marker"}]"#,
            &[4],
        ),
    ];
    let mut clients: Vec<SseClient> = cases
        .iter()
        .map(|(subs, _)| SseClient::connect(srv.inbound, Some(subs)))
        .collect();
    for e in &events {
        assert_eq!(publish(srv.inbound, e).status, 202);
    }
    assert_eq!(publish(srv.inbound, &ce("marker", json!({}))).status, 202);
    for (c, (subs, want)) in clients.iter_mut().zip(cases) {
        let mut got = Vec::new();
        loop {
            let e = c.next_event();
            if e["type"] == "marker" {
                break;
            }
            got.push(e["data"]["n"].as_i64().unwrap());
        }
        assert_eq!(&got, want, "subscriptions {subs}");
    }
}

#[test]
fn put_replaces_subscriptions_from_any_shard() {
    let srv = Server::start_with(4, "", &[]);
    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"marker"}]"#));
    assert_eq!(
        received(
            &srv,
            &mut c,
            &[ce("greeting", json!({"n": 1, "name": "joe"}))]
        ),
        Vec::<i64>::new()
    );
    // Several PUTs on fresh connections land on different shards; all must reach the owner.
    for round in 0..6 {
        let name = if round % 2 == 0 { "joe" } else { "ann" };
        let body = json!({"subscriptions": [
            {"eventType": "greeting", "oneOf": [{"name": name}]}, {"eventType": "marker"}]});
        let r = request(
            srv.inbound,
            "PUT",
            &format!("/_rig/v1/connection/sse/{}/subscriptions", c.token),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 204, "{}", r.text());
        let set = c.next();
        assert_eq!(set.event.as_deref(), Some("rig.subscriptions_set"));
        let set: serde_json::Value = serde_json::from_str(&set.data).unwrap();
        assert_eq!(set["data"][0]["oneOf"][0]["name"], name);
        let got = received(
            &srv,
            &mut c,
            &[
                ce("greeting", json!({"n": 1, "name": "joe"})),
                ce("greeting", json!({"n": 2, "name": "ann"})),
            ],
        );
        assert_eq!(got, vec![if name == "joe" { 1 } else { 2 }]);
    }
}

#[test]
fn put_status_codes() {
    let srv = Server::start();
    let c = SseClient::connect(srv.inbound, None);
    let path = format!("/_rig/v1/connection/ws/{}/subscriptions", c.token);
    let put = |path: &str, headers: &[(&str, &str)], body: &str| {
        request(srv.inbound, "PUT", path, headers, body.as_bytes())
    };
    let json_ct = [("content-type", "application/json")];
    assert_eq!(put(&path, &json_ct, r#"{"subscriptions":[]}"#).status, 204);
    let r = put(&path, &json_ct, "{not json");
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("Expected JSON encoded body"),
        "{}",
        r.text()
    );
    let r = put(&path, &json_ct, r#"{"subs":[]}"#);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("\"subscriptions\" is not present"),
        "{}",
        r.text()
    );
    let r = put(&path, &json_ct, r#"{"subscriptions":[{"oneOf":[]}]}"#);
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("cannot accept subscription request:"),
        "{}",
        r.text()
    );
    let r = put(
        "/_rig/v1/connection/sse/garbage/subscriptions",
        &json_ct,
        r#"{"subscriptions":[]}"#,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Invalid connection token.")
    );
    let r = put(&path, &[("accept", "text/html")], r#"{"subscriptions":[]}"#);
    assert_eq!(r.status, 406);
    let r = request(srv.inbound, "OPTIONS", &path, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type,authorization")
    );
    drop(c);
    // The connection is gone once the server notices the close.
    let mut status = 0;
    for _ in 0..100 {
        status = put(&path, &json_ct, r#"{"subscriptions":[]}"#).status;
        if status == 410 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 410);
}

/// Subscription state is bounded per connection in bytes (`sessions.max_subscription_bytes`),
/// at connect and on PUT, with a 400 naming the key; constraints on fields `EXTRACTORS` does
/// not declare are not stored, so they cost nothing against it; and a refused PUT leaves the
/// connection's subscriptions as they were.
#[test]
fn subscription_state_is_bounded() {
    let srv = Server::start_with(2, "[sessions]\nmax_subscription_bytes = 4096\n", &[]);
    let clauses = |field: &str| -> Vec<serde_json::Value> {
        (0..64)
            .map(|k| json!({ field: format!("user-{k}") }))
            .collect()
    };
    let heavy = json!([{"eventType": "greeting", "oneOf": clauses("name")}]).to_string();
    let c = SseClient::connect(srv.inbound, Some(&heavy));
    assert_eq!(c.head.status, 400);
    let text = c.head.text();
    assert!(text.contains("sessions.max_subscription_bytes"), "{text}");

    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let path = format!("/_rig/v1/connection/sse/{}/subscriptions", c.token);
    let json_ct = [("content-type", "application/json")];
    let body = format!(r#"{{"subscriptions":{heavy}}}"#);
    let r = request(srv.inbound, "PUT", &path, &json_ct, body.as_bytes());
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .starts_with("cannot accept subscription request: the subscriptions take"),
        "{}",
        r.text()
    );
    // Undeclared fields: accepted whatever their number, and they do not narrow the match.
    let junk: Vec<serde_json::Value> = (0..30)
        .map(|t| json!({"eventType": format!("t{t}"), "oneOf": clauses("shoe")}))
        .collect();
    let body = json!({ "subscriptions": junk }).to_string();
    let r = request(srv.inbound, "PUT", &path, &json_ct, body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.next().event.as_deref(), Some("rig.subscriptions_set"));
    let ev = ce("t7", json!({"shoe": "anything"}));
    assert_eq!(publish(srv.inbound, &ev).status, 202);
    assert_eq!(c.next_event(), ev);
}

#[test]
fn publish_modes_and_versions() {
    let srv = Server::start();
    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    // Structured 1.0 and 0.2, on both listeners.
    let v10 = json!({"specversion":"1.0","type":"greeting","source":"s","id":"a","data":{"v":"1.0"},"ext":"kept"});
    let r = publish(srv.inbound, &v10);
    assert_eq!(r.status, 202);
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo, v10, "202 echoes the event, unknown fields kept");
    assert_eq!(c.next_event(), v10);
    let v02 =
        json!({"specversion":"0.2","type":"greeting","source":"s","id":"b","data":{"v":"0.2"}});
    let r = request(
        srv.api,
        "POST",
        "/v3/messages",
        &[("content-type", "application/json")],
        v02.to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(c.next_event(), v02);
    // Binary 1.0 and 0.2.
    for (ver, id) in [("1.0", "c"), ("0.2", "d")] {
        let r = request(
            srv.inbound,
            "POST",
            "/_rig/v1/events",
            &[
                ("content-type", "application/json"),
                ("ce-specversion", ver),
                ("ce-type", "greeting"),
                ("ce-source", "s"),
                ("ce-id", id),
            ],
            br#"{"v":"binary"}"#,
        );
        assert_eq!(r.status, 202, "{}", r.text());
        let got = c.next_event();
        assert_eq!(got["specversion"], ver);
        assert_eq!(got["id"], id);
        assert_eq!(got["data"], json!({"v": "binary"}));
    }
    // Errors: not a CloudEvent, a wrong version, batch mode.
    let r = request(
        srv.inbound,
        "POST",
        "/_rig/v1/events",
        &[("content-type", "application/cloudevents+json")],
        br#"{"specversion":"1.0","type":"greeting"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .starts_with("The request body does not look like a CloudEvent"),
        "{}",
        r.text()
    );
    let r = request(
        srv.inbound,
        "POST",
        "/_rig/v1/events",
        &[("content-type", "text/plain"), ("ce-specversion", "0.3")],
        b"x",
    );
    assert_eq!(r.status, 400);
    let r = request(
        srv.inbound,
        "POST",
        "/_rig/v1/events",
        &[("content-type", "application/cloudevents-batch+json")],
        b"[]",
    );
    assert_eq!(r.status, 415);
}

/// An idle stream gets `: heartbeat` within the interval (+1 s) of its last event, every time:
/// RIG sends one every 15 s, and a proxy with an idle timeout of twice that must never see a
/// quiet stream (before the fix the first one came up to two intervals after connect).
#[test]
fn idle_stream_heartbeats_within_the_interval() {
    const INTERVAL_MS: u64 = 3000;
    let srv = Server::start_with(
        2,
        &format!("[sessions]\nheartbeat_interval_ms = {INTERVAL_MS}\n"),
        &[],
    );
    let mut s = TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    // Reads until `want` has arrived; returns when it did.
    let mut seen = Vec::new();
    let mut wait_for = |want: &[u8], from: usize| -> (Instant, usize) {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = seen[from..].windows(want.len()).position(|w| w == want) {
                return (Instant::now(), from + i + want.len());
            }
            let n = s.read(&mut buf).expect("stream stays open");
            assert!(n > 0, "stream closed");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    let (connected, at) = wait_for(b"event: rig.subscriptions_set", 0);
    let (first, at) = wait_for(b": heartbeat", at);
    let (second, _) = wait_for(b": heartbeat", at);
    let limit = Duration::from_millis(INTERVAL_MS + 1000);
    let gap1 = first - connected;
    let gap2 = second - first;
    assert!(gap1 <= limit, "first heartbeat {gap1:?} after connect");
    assert!(gap2 <= limit, "second heartbeat {gap2:?} after the first");
    assert!(
        gap2 >= Duration::from_millis(INTERVAL_MS / 2),
        "heartbeats {gap2:?} apart: more often than needed"
    );
}

/// CloudEvents 1.0's `data_base64` must be a base64 string and never come with `data`; a
/// valid one is delivered as sent.
#[test]
fn data_base64_is_validated() {
    let srv = Server::start();
    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"blob"}]"#));
    let ev = |extra: serde_json::Value| {
        let mut v = json!({"specversion":"1.0","type":"blob","source":"s","id":"b"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    for (extra, why) in [
        (json!({"data_base64": "***"}), "is not valid base64"),
        (
            json!({"data_base64": {"x": 1}}),
            "must be a base64 string, got an object",
        ),
        (json!({"data": "x", "data_base64": "eA=="}), "not both"),
    ] {
        for port in [srv.inbound, srv.api] {
            let path = if port == srv.api {
                "/v3/messages"
            } else {
                "/_rig/v1/events"
            };
            let body = ev(extra.clone()).to_string();
            let r = request(
                port,
                "POST",
                path,
                &[("content-type", "application/cloudevents+json")],
                body.as_bytes(),
            );
            assert_eq!(r.status, 400, "{extra}: {}", r.text());
            assert!(r.text().contains(why), "{extra}: {}", r.text());
        }
    }
    let good = ev(json!({"data_base64": "/wCAYQ=="}));
    assert_eq!(publish(srv.inbound, &good).status, 202);
    assert_eq!(
        c.next_event(),
        good,
        "nothing invalid reached the subscriber before it"
    );
}

#[test]
fn fan_out_reaches_every_shard() {
    let shards = 4;
    let srv = Server::start_with(shards, "", &[]);
    let mut clients: Vec<SseClient> = Vec::new();
    let mut seen = vec![0usize; shards];
    // SO_REUSEPORT spreads by connection hash; open until every shard has clients.
    while seen.iter().any(|&n| n < 2) && clients.len() < 400 {
        let c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"fan"}]"#));
        seen[c.shard() as usize] += 1;
        clients.push(c);
    }
    assert!(
        seen.iter().all(|&n| n >= 2),
        "connections per shard: {seen:?}"
    );
    for n in 0..5 {
        assert_eq!(
            publish(srv.inbound, &ce("fan", json!({"n": n}))).status,
            202
        );
    }
    for c in clients.iter_mut() {
        for n in 0..5 {
            let e = c.next_event();
            assert_eq!(
                e["data"]["n"],
                n,
                "shard {} got events out of order",
                c.shard()
            );
        }
    }
}

/// Publishing under load: a publish is answered once its event is queued on every shard, so
/// each publisher's events arrive in its order on every shard; a shard whose inbound queue is
/// full refuses the publish with 503 and Retry-After, and a refused event is delivered nowhere
/// (all or nothing), while every accepted one is delivered exactly once.
#[test]
fn publishes_are_ordered_and_pushed_back_when_queues_fill() {
    let srv = Server::start_with(2, "mesh_queue = 2\n", &[]);
    let mut clients: Vec<SseClient> = Vec::new();
    let mut seen = [0usize; 2];
    while (seen[0] < 4 || seen[1] < 4) && clients.len() < 200 {
        let c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"order"}]"#));
        seen[c.shard() as usize] += 1;
        clients.push(c);
    }
    const PUBLISHERS: usize = 12;
    const EACH: usize = 150;
    let port = srv.inbound;
    let outcomes: Vec<Vec<(usize, u16, Option<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                s.spawn(move || {
                    (0..EACH)
                        .map(|n| {
                            let r = publish(port, &ce("order", json!({"p": p, "n": n})));
                            (n, r.status, r.header("retry-after").map(str::to_string))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut accepted = std::collections::HashSet::new();
    let mut refused = 0;
    for (p, list) in outcomes.iter().enumerate() {
        for (n, status, retry) in list {
            match status {
                202 => {
                    accepted.insert((p, *n));
                }
                503 => {
                    refused += 1;
                    assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                }
                other => panic!("publish answered {other}"),
            }
        }
    }
    assert!(
        refused > 0,
        "2-message queues never filled up: the test proves nothing"
    );
    // A marker published last tells each client it has seen everything before it.
    assert_eq!(
        publish(port, &ce("order", json!({"p": 99, "n": 0}))).status,
        202
    );
    for c in clients.iter_mut() {
        let mut last = [None::<u64>; PUBLISHERS];
        let mut got = std::collections::HashSet::new();
        loop {
            let e = c.next_event();
            let (p, n) = (
                e["data"]["p"].as_u64().unwrap(),
                e["data"]["n"].as_u64().unwrap(),
            );
            if p == 99 {
                break;
            }
            let p = p as usize;
            assert!(last[p] < Some(n), "publisher {p}: {n} after {:?}", last[p]);
            last[p] = Some(n);
            assert!(got.insert((p, n as usize)), "duplicate ({p}, {n})");
        }
        assert_eq!(got, accepted, "shard {}: delivered != accepted", c.shard());
    }
}

/// An event nobody on the node subscribes to is accepted, counted and sent to no shard; one a
/// client subscribed to arrives, also just after it subscribed (the interest table is updated
/// before `rig.subscriptions_set` goes out).
#[test]
fn unwanted_events_stop_where_they_enter() {
    let srv = Server::start_with(2, "", &[]);
    for n in 0..3 {
        assert_eq!(
            publish(srv.inbound, &ce("nobody", json!({"n": n}))).status,
            202
        );
    }
    let metrics = request(srv.api, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("corebridge_events_unwanted_total{source=\"http\"} 3\n"),
        "{metrics}"
    );
    for round in 0..20 {
        let ty = format!("fresh{round}");
        let mut c = SseClient::connect(srv.inbound, Some(&format!(r#"[{{"eventType":"{ty}"}}]"#)));
        assert_eq!(
            publish(srv.inbound, &ce(&ty, json!({"round": round}))).status,
            202
        );
        assert_eq!(c.next_event()["data"]["round"], round);
    }
}
