//! The API gateway with the real test broker: Kafka targets (RIG's record, Java's partition
//! for the key), synchronous request-reply over a response topic, API definitions replicated
//! between nodes and replayed after every node restarted, responses posted to another node,
//! and the Kafka request log. The independent client is confluent-kafka (tests/kafka_client.py).

mod common;

use common::client::Client;
use common::kafka::{broker_up, create, py};
use common::upstream::{ok, Act, Upstream};
use common::{request, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PORT: u16 = 19092;

fn topic(prefix: &str) -> String {
    format!("{prefix}-{:x}", fastrand::u32(..))
}

fn node(broker: &str, envs: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("KAFKA_BROKERS", broker),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
        ("CB_KAFKA_FETCH_WAIT_MS", "50"),
    ];
    all.extend_from_slice(envs);
    Server::start_with(2, "", &all)
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn metrics(srv: &Server) -> String {
    request(srv.api, "GET", "/metrics", &[], b"").text()
}

/// The node reads every partition of `topic` (response topics start at the latest offset, so
/// a response produced before this would be missed).
fn wait_consuming(srv: &Server, topic: &str) {
    wait_for(
        &format!("a consumer of {topic}"),
        Duration::from_secs(20),
        || metrics(srv).contains(&format!("corebridge_kafka_consumer_lag{{topic=\"{topic}\"")),
    );
}

fn consume(broker: &str, topic: &str, n: usize) -> Vec<Value> {
    py(
        broker,
        &["consume", topic, &n.to_string(), "--timeout", "20"],
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn api(id: &str, port: u16, endpoints: Value) -> Value {
    json!({"id": id, "name": id, "proxy": {"target_url": "127.0.0.1", "port": port},
           "version_data": {"default": {"endpoints": endpoints}}})
}

fn post(port: u16, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: gw.example:{port}\r\ncontent-type: application/json\r\nx-client: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn kafka_targets_produce_rigs_record_and_wait_for_kafka_replies() {
    let broker = broker_up(PORT);
    let (target, responses) = (topic("px-target"), topic("px-resp"));
    create(&broker, &target, 3);
    create(&broker, &responses, 1);
    let apis = json!([api("svc", 1, json!([
        {"id": "pub", "method": "POST", "path_regex": "/events", "target": "kafka", "topic": target},
        {"id": "pre", "method": "OPTIONS", "path_regex": "/events", "target": "kafka", "topic": target},
        {"id": "rpc", "method": "POST", "path_regex": "/rpc", "target": "kafka", "topic": target,
         "response_from": "kafka"}
    ]))])
    .to_string();
    let srv = node(
        &broker,
        &[
            ("PROXY_CONFIG_FILE", &apis),
            ("PROXY_KAFKA_RESPONSE_TOPICS", &responses),
            ("PROXY_KAFKA_RESPONSE_TIMEOUT", "1500"),
        ],
    );
    let mut c = Client::connect(srv.inbound);
    let event = json!({"specversion": "0.2", "type": "order.placed", "id": "1", "source": "/t",
                       "contenttype": "application/json", "data": {"n": 1},
                       "rig": {"target_partition": "user-7"}});
    c.send(post(srv.inbound, "/events?a=b", &event.to_string()).as_bytes());
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (202, "Accepted."));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type,authorization")
    );
    let rec = &consume(&broker, &target, 1)[0];
    assert_eq!(rec["key"], "user-7");
    // The partition Kafka's Java producer picks for the key (librdkafka's murmur2_random).
    let out = py(
        &broker,
        &[
            "produce",
            &target,
            "{}",
            "--key",
            "user-7",
            "--java-partitioner",
        ],
    )
    .unwrap();
    let java: i64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(rec["partition"].as_i64().unwrap(), java);
    let v: Value = serde_json::from_str(rec["value"].as_str().unwrap()).unwrap();
    assert_eq!(v["type"], "order.placed");
    assert_eq!(v["rig"]["remoteip"], "127.0.0.1");
    assert_eq!(v["rig"]["method"], "POST");
    assert_eq!(v["rig"]["path"], "/events");
    assert_eq!(v["rig"]["query"], "a=b");
    assert_eq!(v["rig"]["host"], "gw.example");
    assert!(v["rig"]["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-client", "1"])));
    assert!(v["rig"]["correlation"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(v["traceparent"].as_str().unwrap().starts_with("00-"));
    assert_eq!(rec["headers"]["ce_contenttype"], "application/json");
    // Preflight, and bodies RIG refuses.
    c.send(b"OPTIONS /events HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(c.read(false).unwrap().status, 204);
    c.send(post(srv.inbound, "/events", "not json").as_bytes());
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 400);
    assert!(r
        .text()
        .starts_with("Bad request: expected a JSON encoded request body.\n\n# Usage"));
    c.send(post(srv.inbound, "/events", r#"{"type":"x"}"#).as_bytes());
    assert!(c
        .read(false)
        .unwrap()
        .text()
        .contains("does not look like a CloudEvent"));

    // Request-reply: the backend reads the request from the topic and answers, in binary
    // mode, on the response topic.
    wait_consuming(&srv, &responses);
    c.send(
        post(
            srv.inbound,
            "/rpc",
            r#"{"specversion":"1.0","type":"q","id":"2","source":"/t"}"#,
        )
        .as_bytes(),
    );
    let rec = consume(&broker, &target, 3)
        .into_iter()
        .find(|r| r["value"].as_str().unwrap().contains("\"type\":\"q\""))
        .expect("the rpc request record");
    let v: Value = serde_json::from_str(rec["value"].as_str().unwrap()).unwrap();
    let corr = v["rig"]["correlation"].as_str().unwrap().to_string();
    py(
        &broker,
        &[
            "produce",
            &responses,
            r#"{"answer":42}"#,
            "--header",
            &format!("rig-correlation={corr}"),
            "--header",
            "rig-response-code=200",
            "--header",
            "content-type=application/json",
        ],
    )
    .unwrap();
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"answer":42}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Nobody answers: 504, empty body.
    c.send(
        post(
            srv.inbound,
            "/rpc",
            r#"{"specversion":"1.0","type":"q2","id":"3","source":"/t"}"#,
        )
        .as_bytes(),
    );
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.body.len()), (504, 0));
    let m = metrics(&srv);
    assert!(
        m.contains("corebridge_proxy_replies_total{outcome=\"delivered\"} 1"),
        "{m}"
    );
}

#[test]
fn api_changes_reach_every_node_and_survive_a_restart_of_all() {
    let broker = broker_up(PORT);
    let (control, responses) = (topic("px-control"), topic("px-resp"));
    create(&broker, &control, 1);
    create(&broker, &responses, 1);
    let up = Upstream::start(|s| ok(&format!("upstream saw {}", s.target)));
    let envs = [
        ("CB_KAFKA_CONTROL_TOPIC", control.as_str()),
        ("PROXY_KAFKA_RESPONSE_TOPICS", responses.as_str()),
    ];
    let a = node(&broker, &envs);
    let b = node(&broker, &envs);
    wait_consuming(&a, &control);
    wait_consuming(&b, &control);
    let def = api(
        "shared",
        up.port,
        json!([{"id": "e", "method": "GET", "path_regex": "/shared"}]),
    );
    let r = request(
        a.api,
        "POST",
        "/v3/apis",
        &[("content-type", "application/json")],
        def.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let took = wait_for(
        "node B to route the new API",
        Duration::from_secs(5),
        || Client::connect(b.inbound).get("/shared", "").status == 200,
    );
    eprintln!("an API created on node A was routable on node B after {took:?}");
    // Changed on B, seen on A.
    let mut moved = def.clone();
    moved["version_data"]["default"]["endpoints"][0]["path_regex"] = json!("/moved");
    let r = request(
        b.api,
        "PUT",
        "/v3/apis/shared",
        &[],
        moved.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Each shard of A applies the change from the control topic on its own, a few ms apart,
    // and a new connection may land on any of them: wait until one sees both sides of it.
    wait_for("node A to route the change", Duration::from_secs(5), || {
        Client::connect(a.inbound).get("/moved", "").status == 200
    });
    // ...and soon on all of them: eight new connections in a row find the old path gone.
    wait_for(
        "every shard of A to drop the old path",
        Duration::from_secs(5),
        || (0..8).all(|_| Client::connect(a.inbound).get("/shared", "").status == 404),
    );
    drop(a);
    drop(b);
    // Every node stopped; a new one replays the control topic from its beginning.
    let c = node(&broker, &envs);
    wait_for(
        "the new node to replay the definitions",
        Duration::from_secs(10),
        || Client::connect(c.inbound).get("/moved", "").text() == "upstream saw /moved",
    );
    let got: Value =
        serde_json::from_slice(&request(c.api, "GET", "/v3/apis/shared", &[], b"").body).unwrap();
    assert_eq!(got["ref_number"], 1);
    let r = request(c.api, "DELETE", "/v3/apis/shared", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(Client::connect(c.inbound).get("/moved", "").status, 404);
}

#[test]
fn a_response_posted_to_another_node_reaches_the_waiting_request() {
    let broker = broker_up(PORT);
    let responses = topic("px-resp");
    create(&broker, &responses, 2);
    let up = Upstream::start(|_| {
        Act::Send(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let apis = json!([api(
        "svc",
        up.port,
        json!([
            {"id": "job", "method": "POST", "path_regex": "/job", "response_from": "http_async"}
        ])
    )])
    .to_string();
    let envs = [
        ("PROXY_CONFIG_FILE", apis.as_str()),
        ("PROXY_KAFKA_RESPONSE_TOPICS", responses.as_str()),
        ("PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT", "10000"),
    ];
    let a = node(&broker, &envs);
    let b = node(&broker, &envs);
    wait_consuming(&a, &responses);
    let mut c = Client::connect(a.inbound);
    c.send(b"POST /job HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
    wait_for("the upstream", Duration::from_secs(5), || {
        !up.requests().is_empty()
    });
    let target = up.last().target;
    let corr = target.split("correlation=").nth(1).unwrap().to_string();
    let r = request(
        b.api,
        "POST",
        "/v3/responses",
        &[
            ("rig-correlation", &corr),
            ("rig-response-code", "200"),
            ("content-type", "text/plain"),
        ],
        b"from node B",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "from node B"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[test]
fn the_request_log_goes_to_kafka_in_rigs_shape() {
    let broker = broker_up(PORT);
    let (log, events) = (topic("px-log"), topic("px-events"));
    create(&broker, &log, 1);
    create(&broker, &events, 1);
    let up = Upstream::start(|_| ok("x"));
    let apis = json!([api(
        "svc",
        up.port,
        json!([{"id": "logged", "method": "GET", "path_regex": "/l/.*"}])
    )])
    .to_string();
    let srv = node(
        &broker,
        &[
            ("PROXY_CONFIG_FILE", &apis),
            ("REQUEST_LOG", "kafka"),
            ("KAFKA_LOG_TOPIC", &log),
            ("CB_KAFKA_PUBLISH_TOPIC", &events),
        ],
    );
    assert_eq!(Client::connect(srv.inbound).get("/l/1", "").status, 200);
    let rec = &consume(&broker, &log, 1)[0];
    assert_eq!(rec["key"], "partition");
    let v: Value = serde_json::from_str(rec["value"].as_str().unwrap()).unwrap();
    assert_eq!(v["type"], "com.rig.proxy.api.call");
    assert_eq!(v["specversion"], "0.2");
    assert_eq!(v["source"], "/rig");
    assert_eq!(v["data"]["endpoint"]["id"], "logged");
    assert_eq!(v["data"]["request_path"], "/l/1");
    assert_eq!(v["data"]["remote_ip"], "127.0.0.1");
    assert!(v["traceparent"].is_string());
    // A request-log record is the gateway's own, not an event: RIG's produced count, unlike
    // ours, leaves it out; a published event counts.
    let m = |name: &str| common::metric_value(&metrics(&srv), name);
    let rig = "rig_produced_events_total{target=\"kafka\"}";
    assert!(m("corebridge_kafka_produced_total ").unwrap() >= 1.0);
    assert_eq!(m(rig), Some(0.0));
    let r = common::publish(srv.inbound, &common::ce("greeting", json!({"n": 1})));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(m(rig), Some(1.0));
}

#[test]
fn subscriptions_put_on_another_node_is_forwarded_to_the_owner() {
    let broker = broker_up(PORT);
    let (events, responses) = (topic("px-events"), topic("px-resp"));
    create(&broker, &events, 1);
    create(&broker, &responses, 1);
    let envs = [
        ("KAFKA_SOURCE_TOPICS", events.as_str()),
        ("CB_KAFKA_PUBLISH_TOPIC", events.as_str()),
        ("PROXY_KAFKA_RESPONSE_TOPICS", responses.as_str()),
    ];
    let a = node(&broker, &envs);
    let b = node(&broker, &envs);
    wait_consuming(&a, &responses);
    wait_consuming(&a, &events);
    let mut sse = common::SseClient::connect(a.inbound, None);
    let path = format!("/_rig/v1/connection/sse/{}/subscriptions", sse.token);
    let r = request(
        b.inbound,
        "PUT",
        &path,
        &[("content-type", "application/json")],
        br#"{"subscriptions":[{"eventType":"forwarded.type"}]}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let set = sse.next();
    assert_eq!(set.event.as_deref(), Some("rig.subscriptions_set"));
    let r = common::publish(
        b.inbound,
        &json!({"specversion": "1.0", "type": "forwarded.type", "source": "t", "id": "f1"}),
    );
    assert_eq!(r.status, 202);
    assert_eq!(sse.next_event()["id"], "f1");
    // The owner's answers come back as they are: a bad body is the owner's 400.
    let r = request(b.inbound, "PUT", &path, &[], b"{not json");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Expected JSON encoded body"),
        "{}",
        r.text()
    );
    // A connection that ended: 410 from its owner.
    drop(sse);
    std::thread::sleep(Duration::from_millis(300));
    let r = request(b.inbound, "PUT", &path, &[], br#"{"subscriptions":[]}"#);
    assert!(matches!(r.status, 410 | 400), "{} {}", r.status, r.text());
}
