//! Presence on two nodes sharing the test broker: who is online and on which devices, across
//! nodes; connections forgotten when they close and when their node dies; `rig.presence`
//! join/leave events on a topic, read back with confluent-kafka.

mod common;

use common::kafka::{broker_up, create, py};
use common::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SHARED_PORT: u16 = 19092;
const SECRET: &str = "presence-test-secret";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn sse_as(port: u16, user: &str) -> SseClient {
    let path = format!(
        "/_rig/v1/connection/sse?jwt={}&subscriptions={}",
        token(user),
        enc(&json!([{"eventType": "p.event"}]).to_string())
    );
    let c = SseClient::at(TcpStream::connect(("127.0.0.1", port)).unwrap(), &path);
    assert_eq!(c.head.status, 200);
    c
}

fn get(srv: &Server, path: &str) -> Value {
    let r = request(srv.api, "GET", path, &[], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_str(&r.text()).unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn presence_across_two_nodes_forgets_closed_connections_and_dead_nodes() {
    let broker = broker_up(SHARED_PORT);
    let topic = format!("presence-{:x}", fastrand::u32(..));
    let responses = format!("{topic}-responses");
    let events = format!("{topic}-events");
    create(&broker, &topic, 1);
    create(&broker, &responses, 1);
    create(&broker, &events, 1);
    let start = |node: &str| {
        Server::start_with(
            2,
            "",
            &[
                ("KAFKA_BROKERS", broker.as_str()),
                ("KAFKA_SOURCE_TOPICS", topic.as_str()),
                ("PROXY_KAFKA_RESPONSE_TOPICS", responses.as_str()),
                ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
                ("JWT_SECRET_KEY", SECRET),
                ("JWT_ALG", "HS256"),
                ("CB_NODE_ID", node),
                ("CB_PRESENCE_TOPIC", events.as_str()),
                ("CB_PRESENCE_WAIT_MS", "1500"),
            ],
        )
    };
    let a = start("node-a");
    let b = start("node-b");
    // Both nodes read the response topic before the first question.
    for srv in [&a, &b] {
        wait_for("the response topic", || {
            request(srv.api, "GET", "/metrics", &[], b"")
                .text()
                .contains(&format!("topic=\"{responses}\",partition=\"0\""))
        });
    }

    let alice_laptop = sse_as(a.inbound, "alice");
    let alice_phone = sse_as(b.inbound, "alice");
    let bob = sse_as(b.inbound, "bob");

    let v = get(&a, "/v3/users/alice/connections");
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{v}");
    let mut nodes: Vec<&str> = conns.iter().map(|c| c["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["node-a", "node-b"]);
    assert!(conns
        .iter()
        .all(|c| c["transport"] == "sse" && c["subscriptions"] == 1));
    assert!(conns[0]["connected_since"].as_str().unwrap().ends_with('Z'));

    let v = get(&b, "/v3/presence?users=alice,bob,carol");
    assert_eq!(v["users"]["alice"]["connections"], 2, "{v}");
    assert_eq!(v["users"]["bob"]["online"], true);
    assert_eq!(v["users"]["bob"]["nodes"], json!(["node-b"]));
    assert_eq!(v["users"]["carol"]["online"], false);
    let r = request(a.api, "GET", "/v3/presence", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());

    // A closed connection is forgotten.
    drop(alice_laptop);
    wait_for("alice's laptop gone", || {
        get(&b, "/v3/users/alice/connections")["connections"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });

    // (Its rig.presence leave goes out within half a second: before node b's, below.)
    std::thread::sleep(Duration::from_millis(1500));
    // A dead node's connections vanish with it: it no longer answers.
    drop((alice_phone, bob));
    drop(b);
    let v = get(&a, "/v3/presence?users=alice,bob");
    assert_eq!(v["users"]["alice"]["online"], false, "{v}");
    assert_eq!(v["users"]["bob"]["online"], false, "{v}");

    // The joins and leaves went out as rig.presence events, keyed by user.
    let out = py(&broker, &["consume", &events, "4", "--timeout", "20"]).unwrap();
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let changes: Vec<(String, String, String)> = got
        .iter()
        .map(|r| {
            let ce: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert_eq!(ce["type"], "rig.presence");
            assert_eq!(r["key"], ce["data"]["user"]);
            (
                ce["data"]["user"].as_str().unwrap().to_string(),
                ce["data"]["change"].as_str().unwrap().to_string(),
                ce["data"]["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("alice", "join", "node-a"),
        ("alice", "join", "node-b"),
        ("bob", "join", "node-b"),
        ("alice", "leave", "node-a"),
    ] {
        assert!(
            changes
                .iter()
                .any(|(u, c, n)| (u.as_str(), c.as_str(), n.as_str()) == want),
            "{want:?} missing from {changes:?}"
        );
    }
}
