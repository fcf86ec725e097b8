//! Long-polling end to end (rig-contract.md 1.2-1.4): session creation and RIG's cookies,
//! the first poll's set-up events, holding, early wake-up on publish, polls forwarded to the
//! owner shard, the per-session ring buffer, bad cookies and subscriptions, the preflight, and
//! a curl cookie-jar client.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const LP: &str = "/_rig/v1/connection/longpolling";

fn lp_path(subscriptions: Option<&str>) -> String {
    match subscriptions {
        Some(s) => format!("{LP}?subscriptions={}", enc(s)),
        None => LP.to_string(),
    }
}

/// A long-poll client keeping RIG's two cookies as a browser would.
struct Lp {
    port: u16,
    token: String,
    /// The `last_event_id` cookie value as set (a JSON string, quotes included).
    last: String,
}

impl Lp {
    /// Creates a session: the first GET, asserting RIG's `"ok"` answer.
    fn create(port: u16, subscriptions: Option<&str>) -> Lp {
        let r = request(port, "GET", &lp_path(subscriptions), &[], b"");
        assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""), "{r:?}");
        Lp {
            port,
            token: r
                .set_cookie("connection_token")
                .expect("connection_token cookie"),
            last: r.set_cookie("last_event_id").expect("last_event_id cookie"),
        }
    }

    fn shard(&self) -> u16 {
        token_shard(&self.token)
    }

    /// One poll with the current cookies on a fresh connection; returns the events and how
    /// long the poll took, and takes the refreshed cookies.
    fn poll(&mut self) -> (Vec<Value>, Duration) {
        let cookie = format!(
            "connection_token={}; last_event_id={}",
            self.token, self.last
        );
        let t0 = Instant::now();
        let r = request(self.port, "GET", LP, &[("cookie", &cookie)], b"");
        let took = t0.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("poll body is not JSON ({e}): {}", r.text()));
        let id = body["last_event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no last_event_id: {body}"));
        assert_eq!(
            r.set_cookie("last_event_id"),
            Some(format!("\"{id}\"")),
            "cookie and body agree"
        );
        assert_eq!(
            r.set_cookie("connection_token").as_deref(),
            Some(self.token.as_str()),
            "the session keeps its token"
        );
        self.last = format!("\"{id}\"");
        let events = body["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events array: {body}"))
            .clone();
        (events, took)
    }

    /// RIG's counter in the `last_event_id` cookie (what comes before `|RESUME`).
    fn last_id(&self) -> &str {
        counter(self.last.trim_matches('"'))
    }
}

/// The counter part of a `last_event_id` value: `N`, or `N|RESUME` where events can be
/// resumed (the resume id of everything answered so far).
fn counter(v: &str) -> &str {
    v.split_once('|').map_or(v, |(n, _)| n)
}

/// A poll body with the counter part of its `last_event_id` only.
fn rig_body(mut body: Value) -> Value {
    let last = counter(body["last_event_id"].as_str().unwrap()).to_string();
    body["last_event_id"] = json!(last);
    body
}

#[test]
fn first_get_creates_a_session_with_rigs_cookies() {
    let srv = Server::start();
    let r = request(
        srv.inbound,
        "GET",
        &lp_path(Some(r#"[{"eventType":"greeting"}]"#)),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "\"ok\"");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let cookies = r.headers_all("set-cookie");
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let token = r.set_cookie("connection_token").unwrap();
    assert!(!token.is_empty());
    assert!((token_shard(&token) as usize) < 2);
    assert_eq!(
        cookies[0],
        format!("connection_token={token}; Path=/; HttpOnly")
    );
    assert_eq!(
        cookies[1],
        "last_event_id=\"first_event\"; Path=/; HttpOnly"
    );
}

#[test]
fn second_get_returns_the_set_up_events_at_once() {
    let srv = Server::start(); // default hold: 5 s
    let mut lp = Lp::create(
        srv.inbound,
        Some(r#"[{"eventType":"greeting","oneOf":[{"name":"joe"}]}]"#),
    );
    assert_eq!(lp.last, "\"first_event\"");
    let (events, took) = lp.poll();
    assert!(
        took < Duration::from_secs(1),
        "buffered events are not held: {took:?}"
    );
    assert_eq!(lp.last_id(), "1");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "rig.connection.create");
    assert_eq!(events[0]["specversion"], "0.2");
    assert_eq!(events[0]["data"]["connection_token"], lp.token.as_str());
    assert_eq!(events[1]["type"], "rig.subscriptions_set");
    assert_eq!(
        events[1]["data"],
        json!([{"eventType": "greeting", "oneOf": [{"name": "joe"}]}])
    );
    // The whole body, exactly RIG's shape.
    let cookie = format!(
        "connection_token={}; last_event_id=\"first_event\"",
        lp.token
    );
    let r = request(srv.inbound, "GET", LP, &[("cookie", &cookie)], b"");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        rig_body(body),
        json!({"last_event_id": "1", "events": events})
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[test]
fn idle_poll_is_held_then_answers_no_events() {
    let srv = Server::start_with(2, "[longpoll]\nhold_ms = 300\n", &[]);
    let mut lp = Lp::create(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    assert_eq!(lp.poll().0.len(), 2);
    let (events, took) = lp.poll();
    assert_eq!(events, Vec::<Value>::new());
    assert_eq!(lp.last_id(), "1", "nothing new: the id stays");
    assert!(took >= Duration::from_millis(250), "held only {took:?}");
    assert!(took < Duration::from_secs(3), "held {took:?}");
}

#[test]
fn held_poll_returns_early_with_a_published_event() {
    let srv = Server::start(); // default hold: 5 s
    let mut lp = Lp::create(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    assert_eq!(lp.poll().0.len(), 2);
    let ev = ce("greeting", json!({"name": "joe"}));
    let port = srv.inbound;
    let publisher = {
        let ev = ev.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            publish(port, &ev).status
        })
    };
    let (events, took) = lp.poll();
    assert_eq!(publisher.join().unwrap(), 202);
    assert_eq!(events, vec![ev]);
    assert_eq!(lp.last_id(), "2");
    assert!(
        took >= Duration::from_millis(90),
        "answered before the publish: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "not woken by the event: {took:?}"
    );
}

#[test]
fn polls_on_any_shard_reach_the_owner() {
    let shards = 4;
    let srv = Server::start_with(shards, "[longpoll]\nhold_ms = 300\n", &[]);
    // Sessions live on the shard that accepted their first GET; spread over several shards
    // shows that connections (and so the polls below, each on a fresh connection) are spread
    // too, so most polls are forwarded to another shard.
    let mut sessions: Vec<Lp> = (0..8)
        .map(|_| Lp::create(srv.inbound, Some(r#"[{"eventType":"lp"}]"#)))
        .collect();
    let mut per_shard = vec![0usize; shards];
    for s in &sessions {
        per_shard[s.shard() as usize] += 1;
    }
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() > 1,
        "sessions per shard: {per_shard:?}"
    );
    for s in sessions.iter_mut() {
        let (events, _) = s.poll();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["rig.connection.create", "rig.subscriptions_set"]);
    }
    let mut got: Vec<Vec<i64>> = vec![Vec::new(); sessions.len()];
    for round in 0..4i64 {
        // Two events per round; every session polls once per round, on a fresh connection.
        for k in 0..2 {
            let n = round * 2 + k;
            assert_eq!(publish(srv.inbound, &ce("lp", json!({"n": n}))).status, 202);
        }
        for (i, s) in sessions.iter_mut().enumerate() {
            // A publish is answered once queued: a poll may come between the two events.
            let want = (round * 2 + 3).to_string();
            for _ in 0..5 {
                let (events, _) = s.poll();
                got[i].extend(events.iter().map(|e| e["data"]["n"].as_i64().unwrap()));
                if s.last_id() == want {
                    break;
                }
            }
            assert_eq!(s.last_id(), want, "session {i}");
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            g,
            &(0..8).collect::<Vec<i64>>(),
            "session {i} on shard {}",
            sessions[i].shard()
        );
    }
    // Nothing more: each poll is held and empty, wherever it lands.
    for s in sessions.iter_mut().take(3) {
        assert_eq!(s.poll().0, Vec::<Value>::new());
    }
}

#[test]
fn ring_buffer_keeps_the_newest_events() {
    let srv = Server::start_with(2, "[longpoll]\nbuffer_events = 5\nhold_ms = 300\n", &[]);
    let mut lp = Lp::create(srv.inbound, Some(r#"[{"eventType":"ring"}]"#));
    assert_eq!(lp.poll().0.len(), 2);
    assert_eq!(lp.last_id(), "1");
    for n in 0..8 {
        assert_eq!(
            publish(srv.inbound, &ce("ring", json!({"n": n}))).status,
            202
        );
    }
    // A publish is answered once queued, not delivered: wait until all 8 reached the session.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !request(srv.api, "GET", "/metrics", &[], b"")
        .text()
        .contains("corebridge_events_delivered_total{transport=\"longpoll\"} 8\n")
    {
        assert!(std::time::Instant::now() < deadline, "8 deliveries");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The id "1" fell out of the 5-event ring (it holds ids 5..=9). We answer with what is
    // left, the newest 5; RIG answered `events: []` with the newest id in this case
    // (rig-contract.md 1.4), losing all 8. Both lose the 3 that were overwritten.
    let (events, _) = lp.poll();
    let ns: Vec<i64> = events
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![3, 4, 5, 6, 7]);
    assert_eq!(lp.last_id(), "9");
    // And it continues from there.
    assert_eq!(
        publish(srv.inbound, &ce("ring", json!({"n": 8}))).status,
        202
    );
    let (events, _) = lp.poll();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["n"], 8);
    assert_eq!(lp.last_id(), "10");
}

#[test]
fn a_garbage_or_foreign_cookie_token_starts_a_new_session() {
    let srv = Server::start();
    let other = Server::start();
    let foreign = Lp::create(other.inbound, None).token;
    let out_of_range = corebridge::proto::token::Token {
        node: 1,
        shard: 99,
        slot: 0,
        gen: 0,
        secret: 0,
    }
    .encode();
    for bad in [
        "garbage",
        "%%%not-base64%%%",
        "",
        foreign.as_str(),
        out_of_range.as_str(),
    ] {
        let cookie = format!("connection_token={bad}; last_event_id=\"3\"");
        let r = request(
            srv.inbound,
            "GET",
            &lp_path(Some(r#"[{"eventType":"x"}]"#)),
            &[("cookie", &cookie)],
            b"",
        );
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "\"ok\""),
            "cookie {bad:?}"
        );
        let token = r.set_cookie("connection_token").unwrap();
        assert_ne!(token, bad);
        assert!((token_shard(&token) as usize) < 2);
        assert_eq!(
            r.set_cookie("last_event_id").as_deref(),
            Some("\"first_event\"")
        );
        // The new session works.
        let mut lp = Lp {
            port: srv.inbound,
            token,
            last: "\"first_event\"".into(),
        };
        assert_eq!(lp.poll().0.len(), 2, "cookie {bad:?}");
    }
}

#[test]
fn bad_subscriptions_are_400() {
    let srv = Server::start();
    let r = request(srv.inbound, "GET", &lp_path(Some("[{nope")), &[], b"");
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("Failed to decode subscription list"),
        "{}",
        r.text()
    );
    assert!(
        r.headers_all("set-cookie").is_empty(),
        "no session on error"
    );
    let r = request(
        srv.inbound,
        "GET",
        &lp_path(Some(r#"[{"oneOf":[]}]"#)),
        &[],
        b"",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("event-type not found"), "{}", r.text());
}

#[test]
fn options_preflight() {
    let srv = Server::start();
    let r = request(srv.inbound, "OPTIONS", LP, &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(r.header("access-control-allow-headers"), Some("*"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.body.is_empty());
}

#[test]
fn curl_cookie_jar_flow() {
    let srv = Server::start_with(2, "[longpoll]\nhold_ms = 300\n", &[]);
    let jar = srv.dir.join("jar.txt");
    let jar = jar.to_str().unwrap();
    let url = format!(
        "http://127.0.0.1:{}{}",
        srv.inbound,
        lp_path(Some(r#"[{"eventType":"greeting"}]"#))
    );
    let curl = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-c", jar, "-b", jar, &url])
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl exit {:?}", out.status);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl(), "\"ok\"");
    let first: Value = serde_json::from_str(&curl()).unwrap();
    let types: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["rig.connection.create", "rig.subscriptions_set"]);
    assert_eq!(counter(first["last_event_id"].as_str().unwrap()), "1");
    let ev = ce("greeting", json!({"via": "curl"}));
    assert_eq!(publish(srv.inbound, &ev).status, 202);
    let second: Value = serde_json::from_str(&curl()).unwrap();
    assert_eq!(
        rig_body(second),
        json!({"last_event_id": "2", "events": [ev]})
    );
    // The jar holds RIG's cookies.
    let text = std::fs::read_to_string(jar).unwrap();
    assert!(text.contains("\tlast_event_id\t\"2|"), "{text}");
    assert!(text.contains("\tconnection_token\t"), "{text}");
}
