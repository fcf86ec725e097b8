//! The Kafka bridge against a real Kafka-protocol broker (Tansu, started with
//! ../shared/services/kafka-up) and an independent client (Python confluent-kafka, i.e.
//! librdkafka): produce with either side, structured and binary CloudEvents to SSE and
//! WebSocket, regex sources picking up new topics, two nodes sharing a broker, record
//! mappings, bad records, and a broker outage with clients staying connected.

mod common;

use common::kafka::{broker_down, broker_up, broker_up_advertising, create, py};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const SHARED_PORT: u16 = 19092;
const OUTAGE_PORT: u16 = 19093;
const REPLACED_PORT: u16 = 19094;
const REPLACED_RELAY_PORT: u16 = 19101;
const SILENT_PORT: u16 = 19095;
const SILENT_RELAY_PORT: u16 = 19100;

fn topic(prefix: &str) -> String {
    format!("{prefix}-{:x}", fastrand::u32(..))
}

/// Produces with confluent-kafka; returns (partition, offset).
fn produce(broker: &str, topic: &str, value: &str, extra: &[&str]) -> (i32, i64) {
    let mut args = vec!["produce", topic, value];
    args.extend_from_slice(extra);
    let out = py(broker, &args).unwrap();
    let mut it = out.split_whitespace().map(|s| s.parse::<i64>().unwrap());
    (it.next().unwrap() as i32, it.next().unwrap())
}

fn node(broker: &str, envs: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("KAFKA_BROKERS", broker),
        ("CB_KAFKA_START_OFFSET", "earliest"),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
    ];
    all.extend_from_slice(envs);
    Server::start_with(2, "", &all)
}

fn metrics(srv: &Server) -> String {
    request(srv.api, "GET", "/metrics", &[], b"").text()
}

/// Waits until the node consumes every partition of `topic` (its lag gauge exists).
fn wait_consuming(srv: &Server, topic: &str, partitions: u32) {
    wait_for(
        &format!("consumers of {topic}"),
        Duration::from_secs(20),
        || {
            let text = metrics(srv);
            (0..partitions).all(|p| {
                text.contains(&format!(
                    "corebridge_kafka_consumer_lag{{topic=\"{topic}\",partition=\"{p}\"}}"
                ))
            })
        },
    );
}

#[test]
fn structured_and_binary_records_reach_sse_and_websocket() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("ce");
    create(&broker, &t, 3);
    let srv = node(&broker, &[("KAFKA_SOURCE_TOPICS", &t)]);
    wait_consuming(&srv, &t, 3);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let url = format!(
        "ws://127.0.0.1:{}/_rig/v1/connection/ws?subscriptions={}",
        srv.inbound,
        enc(r#"[{"eventType":"greeting"}]"#)
    );
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    for _ in 0..2 {
        ws.read().unwrap();
    }
    let structured = json!({"specversion":"1.0","type":"greeting","source":"py","id":"s1","data":{"mode":"structured"}});
    let (p, o) = produce(&broker, &t, &structured.to_string(), &[]);
    let m = sse.next();
    // The SSE id names topic/partition/offset, then the resume frontier.
    let id = m.id.clone().unwrap_or_default();
    assert!(
        id.starts_with(&format!("{t}/{p}/{o};")),
        "SSE id names topic/partition/offset: {id}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&m.data).unwrap(),
        structured
    );
    let frame = ws.read().unwrap().into_text().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&frame).unwrap(),
        structured
    );

    produce(
        &broker,
        &t,
        r#"{"mode":"binary"}"#,
        &[
            "--header",
            "ce_specversion=1.0",
            "--header",
            "ce_type=greeting",
            "--header",
            "ce_source=py",
            "--header",
            "ce_id=b1",
            "--header",
            "content-type=application/json",
        ],
    );
    let e = sse.next_event();
    assert_eq!(
        (e["id"].as_str(), &e["data"]),
        (Some("b1"), &json!({"mode": "binary"}))
    );
    let frame: serde_json::Value =
        serde_json::from_str(&ws.read().unwrap().into_text().unwrap()).unwrap();
    assert_eq!(frame["data"]["mode"], "binary");

    // Not a CloudEvent: counted and skipped; the next good record still arrives.
    produce(&broker, &t, "hello, not json", &[]);
    let after = json!({"specversion":"1.0","type":"greeting","source":"py","id":"s2"});
    produce(&broker, &t, &after.to_string(), &[]);
    assert_eq!(sse.next_event()["id"], "s2");
    // The bad record may sit on another partition than s2, read by another task: wait for it.
    let failed = format!("corebridge_kafka_records_failed_total{{topic=\"{t}\"}}");
    wait_for(
        "the bad record to be counted",
        Duration::from_secs(10),
        || metric(&srv, &failed) == Some(1.0),
    );
    assert_eq!(
        metric(
            &srv,
            &format!("corebridge_kafka_records_consumed_total{{topic=\"{t}\"}}")
        ),
        Some(3.0)
    );
    // The same under RIG's names, for dashboards made for RIG.
    let rig = |m: &str| metric(&srv, &format!("{m}{{source=\"kafka\",topic=\"{t}\"}}"));
    assert_eq!(rig("rig_consumed_events_total"), Some(3.0));
    assert_eq!(rig("rig_consumed_events_failed_total"), Some(1.0));
}

#[test]
fn record_age_is_measured_from_the_records_timestamp() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("age");
    create(&broker, &t, 1);
    let srv = node(&broker, &[("KAFKA_SOURCE_TOPICS", &t)]);
    wait_consuming(&srv, &t, 1);
    let ten_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 600_000;
    let ev = json!({"specversion":"1.0","type":"aged","source":"py","id":"a"}).to_string();
    produce(
        &broker,
        &t,
        &ev,
        &["--timestamp-ms", &ten_minutes_ago.to_string()],
    );
    produce(&broker, &t, &ev, &[]);
    let m = "corebridge_kafka_record_age_seconds";
    let count = format!("{m}_count{{topic=\"{t}\"}}");
    wait_for(
        "both records to be measured",
        Duration::from_secs(10),
        || metric(&srv, &count) == Some(2.0),
    );
    let text = metrics(&srv);
    let bucket =
        |le: &str| metric_value(&text, &format!("{m}_bucket{{topic=\"{t}\",le=\"{le}\"}}"));
    // The fresh record was fetched within a second of its production; the other is 600 s old.
    assert_eq!(bucket("1"), Some(1.0), "{text}");
    assert_eq!(bucket("300"), Some(1.0), "{text}");
    assert_eq!(bucket("3600"), Some(2.0), "{text}");
    let sum = metric_value(&text, &format!("{m}_sum{{topic=\"{t}\"}}")).unwrap();
    assert!((600.0..610.0).contains(&sum), "{sum}");
}

#[test]
fn publish_produces_keyed_records_where_java_would() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("pub");
    create(&broker, &t, 6);
    let srv = node(&broker, &[("KAFKA_SOURCE_TOPICS", &t)]);
    wait_consuming(&srv, &t, 6);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"order"}]"#));
    for (round, key) in ["user-42", "abc", "a-little-bit-longer-string"]
        .into_iter()
        .enumerate()
    {
        let ev =
            json!({"specversion":"1.0","type":"order","source":"http","id":key,"partitionkey":key});
        let r = publish(srv.inbound, &ev);
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(
            sse.next_event()["id"],
            key,
            "the product's own consumer delivers it"
        );
        // librdkafka's Java-compatible partitioner is the reference.
        let (java_partition, _) = produce(&broker, &t, "{}", &["--key", key, "--java-partitioner"]);
        // Two records per round so far: ours and the reference.
        let total = (2 * (round + 1)).to_string();
        let out = py(&broker, &["consume", &t, &total, "--timeout", "10"]).unwrap();
        let ours = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["key"] == key && r["value"] != "{}")
            .unwrap_or_else(|| panic!("record {key} not found in {out}"));
        assert_eq!(ours["partition"], java_partition, "key {key}");
        assert_eq!(
            ours["headers"]["content-type"],
            "application/cloudevents+json"
        );
    }
}

#[test]
fn regex_source_picks_up_a_topic_created_later() {
    let broker = broker_up(SHARED_PORT);
    let base = topic("re");
    let pattern = format!("{base}-.*");
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", &pattern),
            ("CB_KAFKA_PUBLISH_TOPIC", &format!("{base}-pub")),
        ],
    );
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"late"}]"#));
    std::thread::sleep(Duration::from_millis(500));
    let t = format!("{base}-created-later");
    create(&broker, &t, 2);
    wait_consuming(&srv, &t, 2);
    produce(
        &broker,
        &t,
        &json!({"specversion":"1.0","type":"late","source":"py","id":"x"}).to_string(),
        &[],
    );
    assert_eq!(sse.next_event()["id"], "x");
}

/// With `CB_KAFKA_START_OFFSET=latest`, a topic created while the node runs is still read from
/// its start: a record written before the node's next listing found the topic is delivered.
#[test]
fn a_topic_created_later_is_read_from_its_start_even_with_latest() {
    let broker = broker_up(SHARED_PORT);
    let base = topic("re-latest");
    let first = format!("{base}-first");
    create(&broker, &first, 1);
    let pattern = format!("{base}-.*");
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", &pattern),
            ("CB_KAFKA_START_OFFSET", "latest"),
            ("CB_KAFKA_TOPIC_REFRESH_MS", "4000"),
            ("CB_KAFKA_PUBLISH_TOPIC", &first),
        ],
    );
    // The node has listed once: it reads the topic that was there.
    wait_consuming(&srv, &first, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"late"}]"#));
    let ev = json!({"specversion":"1.0","type":"late","source":"py","id":"early"}).to_string();
    // The record must be written before the node finds the topic; a listing may fall between
    // create and produce, so a few topics are tried.
    let found = (0..3).any(|i| {
        let t = format!("{base}-later{i}");
        create(&broker, &t, 1);
        produce(&broker, &t, &ev, &[]);
        !metrics(&srv).contains(&format!("corebridge_kafka_consumer_lag{{topic=\"{t}\""))
    });
    assert!(found, "every topic was found before its record was written");
    sse.set_timeout(Duration::from_secs(15));
    assert_eq!(sse.next_event()["id"], "early");
}

#[test]
fn two_nodes_sharing_a_broker_both_deliver() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("nodes");
    create(&broker, &t, 2);
    let a = node(&broker, &[("KAFKA_SOURCE_TOPICS", &t)]);
    let b = node(&broker, &[("KAFKA_SOURCE_TOPICS", &t)]);
    wait_consuming(&a, &t, 2);
    wait_consuming(&b, &t, 2);
    let mut ca = SseClient::connect(a.inbound, Some(r#"[{"eventType":"both"}]"#));
    let mut cb = SseClient::connect(b.inbound, Some(r#"[{"eventType":"both"}]"#));
    for (via, id) in [(&a, "via-a"), (&b, "via-b")] {
        let r = publish(
            via.inbound,
            &json!({"specversion":"1.0","type":"both","source":"t","id":id}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(ca.next_event()["id"], id);
        assert_eq!(cb.next_event()["id"], id);
    }
}

#[test]
fn record_mapping_routes_non_cloudevents() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("flowx");
    create(&broker, &t, 1);
    let mapping = format!(r#"[{{"topics":"{t}","event_type":"header:fxType"}}]"#);
    let extractors = r#"{"process.update":{"user":{"stable_field_index":0,"event":{"json_pointer":"/kafkaheaders/userid"}}}}"#;
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", &t),
            ("CB_KAFKA_RECORD_MAPPING", &mapping),
            ("EXTRACTORS", extractors),
        ],
    );
    wait_consuming(&srv, &t, 1);
    let mut ann = SseClient::connect(
        srv.inbound,
        Some(r#"[{"eventType":"process.update","oneOf":[{"user":"ann"}]}]"#),
    );
    produce(
        &broker,
        &t,
        r#"{"pid":1}"#,
        &[
            "--header",
            "fxType=process.update",
            "--header",
            "userId=joe",
        ],
    );
    produce(
        &broker,
        &t,
        r#"{"pid":2}"#,
        &[
            "--header",
            "fxType=process.update",
            "--header",
            "userId=ann",
        ],
    );
    let e = ann.next_event();
    assert_eq!(
        (e["type"].as_str(), &e["data"]["pid"]),
        (Some("process.update"), &json!(2))
    );
}

#[test]
fn broker_outage_keeps_clients_and_resumes() {
    // A broker of its own, started empty (one left by an earlier run would hold old records).
    broker_down(OUTAGE_PORT);
    let broker = broker_up(OUTAGE_PORT);
    let t = "outage";
    create(&broker, t, 1);
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", t),
            ("CB_KAFKA_PRODUCE_TIMEOUT_MS", "2000"),
        ],
    );
    wait_consuming(&srv, t, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"tick"}]"#));
    let tick =
        |id: &str| json!({"specversion":"1.0","type":"tick","source":"t","id":id}).to_string();
    produce(&broker, t, &tick("before"), &[]);
    assert_eq!(sse.next_event()["id"], "before");

    broker_down(OUTAGE_PORT);
    let r = publish(
        srv.inbound,
        &json!({"specversion":"1.0","type":"tick","source":"t","id":"during"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    wait_for("kafka_up 0", Duration::from_secs(20), || {
        metric(&srv, "corebridge_kafka_up ") == Some(0.0)
    });

    // The broker comes back empty (in-memory): the topic is recreated, its log starts at 0
    // again, below the node's position (1). The node notices (the high watermark is below its
    // position), counts it and reads the new log from its start: the first record arrives.
    // (Offsets alone cannot tell a recreated log that already holds as many records as the
    // old position: the node must see it shorter first, so the test waits for that before
    // producing.)
    broker_up(OUTAGE_PORT);
    create(&broker, t, 1);
    wait_for("the log reset counted", Duration::from_secs(30), || {
        metric(
            &srv,
            &format!("corebridge_kafka_log_resets_total{{topic=\"{t}\"}}"),
        )
        .is_some_and(|v| v >= 1.0)
    });
    produce(&broker, t, &tick("after-1"), &[]);
    // Short reads against a deadline: heartbeats would keep one long read alive forever.
    sse.set_timeout(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        if let Some(m) = sse.try_next() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not resume with the new log's first record"
        );
    };
    let e: serde_json::Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!(e["id"], "after-1", "{e}");
    // The same SSE connection survived the outage; publishing works again.
    let r = publish(
        srv.inbound,
        &json!({"specversion":"1.0","type":"tick","source":"t","id":"final"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    loop {
        let e = sse.next_event();
        if e["id"] == "final" {
            break;
        }
    }
    broker_down(OUTAGE_PORT);
}

#[test]
fn a_restarted_broker_already_holding_more_records_is_read_from_its_start() {
    // The case offsets cannot tell: the broker comes back empty and takes more records than
    // the node had read before the node fetches again. The node must notice that the record
    // it read last is gone, rather than go on from its old position and skip the new log's
    // first records. A relay (the broker advertises it) keeps the node, and only the node
    // (by its Kafka client id), away until the new log has filled.
    broker_down(REPLACED_PORT);
    broker_up_advertising(REPLACED_PORT, REPLACED_RELAY_PORT);
    let relay = common::relay::Relay::start(REPLACED_RELAY_PORT, REPLACED_PORT);
    let broker = format!("127.0.0.1:{REPLACED_RELAY_PORT}");
    let t = "replaced";
    create(&broker, t, 1);
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", t),
            ("CB_KAFKA_CLIENT_ID", "node-kept-away"),
        ],
    );
    wait_consuming(&srv, t, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"tick"}]"#));
    let ticks = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                json!({"specversion":"1.0","type":"tick","source":"t","id":format!("{prefix}-{i}")})
                    .to_string()
            })
            .collect()
    };
    let produce_all = |values: &[String]| {
        let mut args = vec!["produce-all", t];
        args.extend(values.iter().map(String::as_str));
        py(&broker, &args).unwrap();
    };
    produce_all(&ticks("old", 3));
    for i in 0..3 {
        assert_eq!(sse.next_event()["id"], format!("old-{i}"));
    }
    relay.refuse_sending(Some(b"node-kept-away"));
    broker_down(REPLACED_PORT);
    // The node has seen the failure before the broker is back.
    wait_for("kafka_up 0", Duration::from_secs(20), || {
        metric(&srv, "corebridge_kafka_up ") == Some(0.0)
    });
    broker_up_advertising(REPLACED_PORT, REPLACED_RELAY_PORT);
    create(&broker, t, 1);
    produce_all(&ticks("new", 5));
    relay.refuse_sending(None);
    // While the broker was away the node's retry backoff grew to its 5 s cap, and a call
    // under way retries within rskafka's own 5 s deadline: recovery may take longer than
    // the client's usual 10 s wait on a loaded CI box, and what is checked here is what
    // arrives, not how soon.
    sse.set_timeout(Duration::from_secs(30));
    for i in 0..5 {
        assert_eq!(sse.next_event()["id"], format!("new-{i}"));
    }
    assert!(metric(
        &srv,
        &format!("corebridge_kafka_log_resets_total{{topic=\"{t}\"}}")
    )
    .is_some_and(|v| v >= 1.0));
    broker_down(REPLACED_PORT);
}

#[test]
fn a_broker_connection_that_stops_answering_is_given_up() {
    // Without a timeout of its own the node would wait on the silent connection until the
    // kernel gives it up (15 minutes); with one it opens a new connection and goes on.
    broker_down(SILENT_PORT);
    broker_up_advertising(SILENT_PORT, SILENT_RELAY_PORT);
    let relay = common::relay::Relay::start(SILENT_RELAY_PORT, SILENT_PORT);
    let broker = format!("127.0.0.1:{SILENT_RELAY_PORT}");
    let t = "silent";
    create(&broker, t, 1);
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", t),
            ("CB_KAFKA_REQUEST_TIMEOUT_MS", "1000"),
            ("CB_KAFKA_PRODUCE_TIMEOUT_MS", "1500"),
            ("CB_KAFKA_FETCH_WAIT_MS", "50"),
        ],
    );
    wait_consuming(&srv, t, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"tick"}]"#));
    let tick = |id: &str| json!({"specversion":"1.0","type":"tick","source":"t","id":id});
    // Published through the node, so its producer holds a connection that goes silent too.
    assert_eq!(publish(srv.inbound, &tick("before")).status, 202);
    assert_eq!(sse.next_event()["id"], "before");
    relay.silence();
    // A publish on the silent connection times out (503); the next ones use new connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = publish(srv.inbound, &tick("after"));
        if r.status == 202 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "publishing did not recover after the broker connection went silent"
        );
    }
    sse.set_timeout(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        if let Some(m) = sse.try_next() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered after the broker connection went silent"
        );
    };
    assert!(m.data.contains(r#""id":"after""#), "{}", m.data);
    assert!(metric(
        &srv,
        &format!("corebridge_kafka_fetch_failures_total{{topic=\"{t}\"}}")
    )
    .is_some_and(|v| v >= 1.0));
    broker_down(SILENT_PORT);
}

#[test]
fn oversized_records_are_skipped_and_counted() {
    let broker = broker_up(SHARED_PORT);
    let t = topic("big");
    create(&broker, &t, 1);
    let srv = node(
        &broker,
        &[
            ("KAFKA_SOURCE_TOPICS", &t),
            ("KAFKA_MESSAGE_MAX_BYTES", "1000"),
        ],
    );
    wait_consuming(&srv, &t, 1);
    let mut sse = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"sized"}]"#));
    let big =
        json!({"specversion":"1.0","type":"sized","source":"t","id":"big","data":"x".repeat(2000)});
    let small = json!({"specversion":"1.0","type":"sized","source":"t","id":"small"});
    produce(&broker, &t, &big.to_string(), &[]);
    produce(&broker, &t, &small.to_string(), &[]);
    assert_eq!(sse.next_event()["id"], "small");
    assert_eq!(
        metric(
            &srv,
            &format!("corebridge_kafka_records_too_large_total{{topic=\"{t}\"}}")
        ),
        Some(1.0)
    );
}
