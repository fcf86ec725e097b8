//! Kinesis against kinesis-local and dynalite (../shared/services/kinesis-up) with boto3 as
//! the independent client: records to SSE and WebSocket on two nodes, a node restarted
//! mid-stream resuming from its DynamoDB checkpoints, a shard split keeping per-key order,
//! the proxy's `target: kinesis` and `response_from: kinesis`, bad records, and Kinesis going
//! away and coming back.

mod common;

use common::client::Client;
use common::kinesis::{self, create, put, read, stream, wait_reading};
use common::upstream::{Act, Upstream};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn node(envs: &[(&str, &str)], streams: &str) -> Server {
    let base = kinesis::node_env(streams);
    let mut all: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(envs);
    Server::start_with(2, "", &all)
}

fn greeting(id: &str, n: u64) -> String {
    json!({"specversion":"1.0","type":"greeting","source":"/boto3","id":id,"data":{"n":n}})
        .to_string()
}

fn ws_open(
    port: u16,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let url = format!(
        "ws://127.0.0.1:{port}/_rig/v1/connection/ws?subscriptions={}",
        enc(r#"[{"eventType":"greeting"}]"#)
    );
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    // rig.connection.create and rig.subscriptions_set.
    for _ in 0..2 {
        ws.read().unwrap();
    }
    ws
}

fn metric(api: u16, line_prefix: &str) -> Option<f64> {
    metric_value(
        &request(api, "GET", "/metrics", &[], b"").text(),
        line_prefix,
    )
}

#[test]
fn records_put_with_boto3_reach_sse_and_websocket_clients_on_two_nodes() {
    kinesis::up();
    let s = stream("ev");
    let _stream1 = create(&s, 2);
    let a = node(&[], &s);
    let b = node(&[], &s);
    wait_reading(a.api, &s, 2);
    wait_reading(b.api, &s, 2);
    let mut sse = SseClient::connect(a.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let mut ws = ws_open(b.inbound);
    let mut sent = Vec::new();
    for (i, key) in ["k1", "k2", "k3", "k4"].iter().enumerate() {
        let data = greeting(&format!("e{i}"), i as u64);
        let (shard, seq) = put(&s, key, &data);
        sent.push((data, format!("{s}/{shard}/{seq}")));
    }
    // Per shard in order; across shards in any order.
    let mut got_sse = Vec::new();
    let mut got_ws = Vec::new();
    for _ in 0..sent.len() {
        let m = sse.next();
        got_sse.push((m.data.clone(), m.id.clone().unwrap()));
        got_ws.push(ws.read().unwrap().into_text().unwrap().to_string());
    }
    for (data, id) in &sent {
        let want: Value = serde_json::from_str(data).unwrap();
        assert!(
            got_sse
                .iter()
                .any(|(d, i)| serde_json::from_str::<Value>(d).unwrap() == want && i == id),
            "SSE missed {data} with id {id}: {got_sse:?}"
        );
        assert!(got_ws
            .iter()
            .any(|d| serde_json::from_str::<Value>(d).unwrap() == want));
    }
    assert_eq!(
        metric(
            a.api,
            &format!("corebridge_kinesis_records_total{{stream=\"{s}\"}}")
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            a.api,
            &format!("rig_consumed_events_total{{source=\"kinesis\",topic=\"{s}\"}}")
        ),
        Some(4.0)
    );
    assert_eq!(metric(a.api, "corebridge_kinesis_up "), Some(1.0));

    // A record that is not a CloudEvent is counted and skipped; the next one still arrives.
    put(&s, "k1", "not a cloudevent");
    put(&s, "k1", &greeting("after-bad", 9));
    assert_eq!(sse.next_event()["id"], "after-bad");
    assert_eq!(
        metric(
            a.api,
            &format!("corebridge_kinesis_records_failed_total{{stream=\"{s}\"}}")
        ),
        Some(1.0)
    );
}

#[test]
fn enhanced_fan_out_registers_a_consumer_per_node_and_delivers() {
    kinesis::up();
    let s = stream("efo");
    let _stream2 = create(&s, 2);
    let efo = [("CB_KINESIS_EFO", "true"), ("CB_NODE_ID", "efo-a")];
    let a = node(&efo, &s);
    let b = node(&[("CB_KINESIS_EFO", "true"), ("CB_NODE_ID", "efo-b")], &s);
    let mut sa = SseClient::connect(a.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let mut sb = SseClient::connect(b.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    // Subscriptions start at LATEST once each consumer is active: put until both see one
    // (bounded: 20 x 0.5 s), then everything after it arrives in order per key.
    sa.set_timeout(Duration::from_millis(500));
    sb.set_timeout(Duration::from_millis(500));
    let (mut got_a, mut got_b) = (false, false);
    for i in 0..20 {
        put(&s, "warm", &greeting(&format!("warm-{i}"), i));
        got_a |= sa.try_next().is_some();
        got_b |= sb.try_next().is_some();
        if got_a && got_b {
            break;
        }
    }
    assert!(
        got_a && got_b,
        "enhanced fan-out never delivered to both nodes"
    );
    sa.set_timeout(Duration::from_secs(10));
    sb.set_timeout(Duration::from_secs(10));
    let skip_warm = |c: &mut SseClient| loop {
        let v = c.next_event();
        if !v["id"].as_str().unwrap().starts_with("warm") {
            return v;
        }
    };
    for i in 0..5 {
        put(&s, "order-key", &greeting(&format!("o{i}"), i));
    }
    assert_eq!(skip_warm(&mut sa)["id"], "o0");
    assert_eq!(skip_warm(&mut sb)["id"], "o0");
    for i in 1..5 {
        assert_eq!(sa.next_event()["id"], format!("o{i}"));
        assert_eq!(sb.next_event()["id"], format!("o{i}"));
    }
    let consumers = kinesis::py(&["consumers", &s]).unwrap();
    assert!(
        consumers.contains("Reactive-Interaction-Gateway-efo-a ACTIVE"),
        "{consumers}"
    );
    assert!(
        consumers.contains("Reactive-Interaction-Gateway-efo-b ACTIVE"),
        "{consumers}"
    );
}

#[test]
fn a_restarted_node_delivers_what_was_put_while_it_was_down() {
    kinesis::up();
    let s = stream("resume");
    let _stream3 = create(&s, 1);
    let table = format!("cb-test-{:x}", fastrand::u32(..));
    let node_id = format!("node-{:x}", fastrand::u32(..));
    let envs = [
        ("KINESIS_DYNAMODB_ENDPOINT", kinesis::dynamodb()),
        ("KINESIS_APP_NAME", table.clone()),
        ("CB_NODE_ID", node_id.clone()),
        ("CB_KINESIS_RESUME_DELAY_MS", "1500".to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = node(&envs, &s);
    wait_reading(first.api, &s, 1);
    let mut sse = SseClient::connect(first.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    put(&s, "k", &greeting("before", 0));
    assert_eq!(sse.next_event()["id"], "before");
    // Let the checkpoint after "before" be written (at most 1 s after the read).
    std::thread::sleep(Duration::from_millis(1500));
    first.terminate(Duration::from_secs(10));
    drop(sse);
    for i in 1..=3 {
        put(&s, "k", &greeting(&format!("while-down-{i}"), i));
    }
    let second = node(&envs, &s);
    let mut sse = SseClient::connect(second.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    for i in 1..=3 {
        assert_eq!(sse.next_event()["id"], format!("while-down-{i}"));
    }
    // Nothing else: "before" was checkpointed, and each record came once.
    sse.set_timeout(Duration::from_millis(1500));
    assert!(sse.try_next().is_none(), "a record was delivered twice");
}

#[test]
fn a_shard_split_mid_stream_loses_nothing_and_keeps_per_key_order() {
    kinesis::up();
    let s = stream("split");
    let _stream4 = create(&s, 1);
    let srv = node(&[], &s);
    wait_reading(srv.api, &s, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    for i in 0..5 {
        put(&s, "same-key", &greeting(&format!("e{i}"), i));
    }
    kinesis::py(&["split", &s]).unwrap();
    for i in 5..10 {
        put(&s, "same-key", &greeting(&format!("e{i}"), i));
    }
    for i in 0..10 {
        assert_eq!(
            sse.next_event()["id"],
            format!("e{i}"),
            "records of one key in order across the split"
        );
    }
    let shards = kinesis::py(&["shards", &s]).unwrap();
    assert_eq!(shards.lines().count(), 3, "{shards}");
}

#[test]
fn proxy_kinesis_targets_put_records_and_kinesis_replies_reach_waiting_requests() {
    kinesis::up();
    let (target, responses) = (stream("px-target"), stream("px-resp"));
    let _stream5 = create(&target, 1);
    let _stream6 = create(&responses, 1);
    // The backend of the request-reply endpoint: it takes the request and answers later.
    let up = Upstream::start(|_| {
        Act::Send(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let apis = json!([
        {"id": "k", "name": "k", "proxy": {"target_url": "127.0.0.1", "port": up.port},
         "version_data": {"default": {"endpoints": [
            {"id": "pub", "method": "POST", "path_regex": "/events", "target": "kinesis", "topic": target},
            {"id": "rpc", "method": "POST", "path_regex": "/rpc", "response_from": "kinesis"}
         ]}}}
    ])
    .to_string();
    let srv = node(
        &[
            ("PROXY_CONFIG_FILE", &apis),
            ("PROXY_KINESIS_RESPONSE_STREAM", &responses),
            ("PROXY_KINESIS_RESPONSE_TIMEOUT", "8000"),
        ],
        "unused-stream",
    );
    let mut c = Client::connect(srv.inbound);
    let event = json!({"specversion": "1.0", "type": "order.placed", "id": "1", "source": "/t",
                       "data": {"n": 1}, "rig": {"target_partition": "user-7"}});
    let body = event.to_string();
    c.send(
        format!(
            "POST /events?a=b HTTP/1.1\r\nhost: gw.example\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (202, "Accepted."));
    let recs = read(&target);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        recs[0]["key"], "user-7",
        "partition key from rig.target_partition"
    );
    let v: Value = serde_json::from_str(recs[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(v["type"], "order.placed");
    assert_eq!(v["rig"]["path"], "/events");
    assert_eq!(v["rig"]["query"], "a=b");
    assert_eq!(v["rig"]["method"], "POST");
    assert!(v["traceparent"].as_str().unwrap().starts_with("00-"));

    // Request-reply over Kinesis (RIG's always ended in 504).
    wait_reading(srv.api, &responses, 1);
    let mut c2 = Client::connect(srv.inbound);
    c2.send(b"POST /rpc HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let corr = loop {
        if let Some(seen) = up.requests().last() {
            let target = seen.target.clone();
            let corr = target
                .split_once("correlation=")
                .map(|(_, c)| c.split('&').next().unwrap().to_string());
            if let Some(c) = corr {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the backend never got the request"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let envelope = json!({"rig-correlation": corr, "rig-response-code": 201,
                          "headers": {"content-type": "application/json", "x-from": "kinesis"},
                          "body": {"answer": 42}});
    put(&responses, "r", &envelope.to_string());
    let r = c2.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (201, r#"{"answer":42}"#));
    assert_eq!(r.header("x-from"), Some("kinesis"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn kinesis_going_away_keeps_clients_connected_and_comes_back() {
    going_away_and_back(4578, &[], true);
}

#[test]
fn kinesis_going_away_and_back_with_enhanced_fan_out() {
    // Also the consumer is gone with the old stream (consumers belong to a stream's ARN): the
    // node must register it anew.
    // (kinesis-local starts a new consumer's subscription after an unknown sequence number
    // at the shard's start, so no position reset is counted here.)
    going_away_and_back(
        4583,
        &[("CB_KINESIS_EFO", "true"), ("CB_NODE_ID", "efo-outage")],
        false,
    );
}

/// Kinesis (a mock of its own on `port`, HTTPS on `port` + 1: this stops it) goes away while
/// the node holds an SSE client, and comes back empty; `reset_counted`: the node must have
/// found its old position refused.
fn going_away_and_back(port: u16, envs: &[(&str, &str)], reset_counted: bool) {
    let services = format!("{}/../shared/services", env!("CARGO_MANIFEST_DIR"));
    let up = || {
        let out = std::process::Command::new(format!("{services}/kinesis-up"))
            .arg(port.to_string())
            .env("KINESIS_TLS_PORT", (port + 1).to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let down = || {
        let _ = std::process::Command::new(format!("{services}/kinesis-down"))
            .arg(port.to_string())
            .output();
    };
    up();
    let endpoint = format!("http://127.0.0.1:{port}");
    let boto = |args: &[&str]| {
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(args);
        common::python("kinesis_client.py", &all, &[]).unwrap();
    };
    let s = stream("outage");
    boto(&["create", &s, "1"]);
    // The node reaches Kinesis through a relay, so the test can keep it away while the
    // stream is created again and filled (kinesis-local accepts any position in an empty
    // shard, which would hide the case).
    let relay = common::relay::Relay::start(0, port);
    let via_relay = format!("http://127.0.0.1:{}", relay.port);
    let mut all = vec![("KINESIS_ENDPOINT", via_relay.as_str())];
    all.extend_from_slice(envs);
    let srv = node(&all, &s);
    wait_reading(srv.api, &s, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    // A record read before the outage: the node then resumes after its sequence number,
    // which the recreated stream does not know (it refuses it: without noticing, the node
    // would ask for it forever and never read the new stream).
    for i in 0..3 {
        boto(&["put", &s, "k", &greeting(&format!("before-{i}"), i)]);
        assert_eq!(sse.next_event()["id"], format!("before-{i}"));
    }
    relay.refuse(true);
    down();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(srv.api, "corebridge_kinesis_up ") != Some(0.0) {
        assert!(Instant::now() < deadline, "kinesis_up never went to 0");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Back (empty: kinesis-local keeps streams in memory), the stream created again and
    // given records while the node cannot see it yet; then the node gets through.
    up();
    boto(&["create", &s, "1"]);
    for i in 0..3 {
        boto(&["put", &s, "k", &greeting(&format!("back-{i}"), i)]);
    }
    relay.refuse(false);
    // The SSE client stayed connected through it and gets the new stream from its start.
    for i in 0..3 {
        assert_eq!(sse.next_event()["id"], format!("back-{i}"));
    }
    assert_eq!(metric(srv.api, "corebridge_kinesis_up "), Some(1.0));
    down();
    if reset_counted {
        assert_eq!(
            metric(srv.api, "corebridge_kinesis_position_resets_total{"),
            Some(1.0)
        );
    }
}

#[test]
fn publishing_through_kinesis_reaches_subscribers_on_every_node() {
    kinesis::up();
    let s = stream("pub");
    let _stream = create(&s, 1);
    let envs = [("CB_KINESIS_PUBLISH_STREAM", s.as_str())];
    let a = node(&envs, &s);
    let b = node(&envs, &s);
    wait_reading(a.api, &s, 1);
    wait_reading(b.api, &s, 1);
    let mut sb = SseClient::connect(b.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let ev = json!({"specversion":"1.0","type":"greeting","source":"/http","id":"via-kinesis",
                    "partitionkey":"user-3","data":{"n":1}});
    let r = publish(a.inbound, &ev);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        sb.next_event()["id"],
        "via-kinesis",
        "published on A, delivered on B"
    );
    let recs = read(&s);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["key"], "user-3");
    // A publish stream that is not consumed is a configuration error, named up front.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corebridge"))
        .arg("--check-config")
        .env_clear()
        .env("KINESIS_ENABLED", "true")
        .env("KINESIS_STREAM", "a")
        .env("CB_KINESIS_PUBLISH_STREAM", "b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never be delivered"));
}
