//! Avro (`KAFKA_SERIALIZER=avro`, `KAFKA_SCHEMA_REGISTRY_HOST`): records written by
//! confluent-kafka's own Avro serializer (binary mode with `ce_` headers, and a whole CloudEvent
//! as one Avro record) reach an SSE client as JSON; a proxy endpoint with a `schema` produces
//! Avro that confluent-kafka's deserializer reads back, and data that does not fit the schema
//! is a 400. The registry is a small one the test starts (`tests/schema_registry.py`).

mod common;

use common::kafka::{broker_up, create};
use common::*;
use serde_json::{json, Value};
use std::io::BufRead;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    child: Child,
    url: String,
    host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> Registry {
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(format!(
            "{}/tests/schema_registry.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Registry {
        child,
        url: format!("http://127.0.0.1:{port}"),
        host: format!("127.0.0.1:{port}"),
    }
}

fn avro_py(broker: &str, reg: &Registry, args: &[&str]) -> String {
    let mut all = vec![broker, reg.url.as_str()];
    all.extend_from_slice(args);
    python("avro_client.py", &all, &[]).unwrap()
}

#[test]
fn avro_records_reach_sse_as_json_and_endpoints_with_a_schema_produce_avro() {
    let broker = broker_up(19092);
    let reg = registry();
    let (input, output) = (
        format!("avro-in-{:x}", fastrand::u32(..)),
        format!("avro-out-{:x}", fastrand::u32(..)),
    );
    create(&broker, &input, 1);
    create(&broker, &output, 1);
    let apis = json!([{"id": "svc", "name": "svc",
        "proxy": {"target_url": "127.0.0.1", "port": 9},
        "version_data": {"default": {"endpoints": [
            {"id": "greet", "method": "POST", "path_regex": "/greet", "target": "kafka",
             "topic": output, "schema": "greeting-value"}]}}}])
    .to_string();
    let srv = Server::start_with(
        2,
        "",
        &[
            ("KAFKA_BROKERS", broker.as_str()),
            ("KAFKA_SOURCE_TOPICS", input.as_str()),
            ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
            ("CB_KAFKA_FETCH_WAIT_MS", "50"),
            ("KAFKA_SCHEMA_REGISTRY_HOST", reg.host.as_str()),
            ("KAFKA_SERIALIZER", "avro"),
            ("PROXY_CONFIG_FILE", apis.as_str()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !request(srv.api, "GET", "/metrics", &[], b"")
        .text()
        .contains(&format!("corebridge_kafka_consumer_lag{{topic=\"{input}\""))
    {
        assert!(Instant::now() < deadline, "the node never read {input}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Consuming: both modes, delivered as JSON.
    let subs = enc(&json!([{"eventType": "avro.greeting"}]).to_string());
    let mut c = SseClient::at(
        TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap(),
        &format!("/_rig/v1/connection/sse?subscriptions={subs}"),
    );
    assert_eq!(avro_py(&broker, &reg, &["produce", &input]).trim(), "ok");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 2 && Instant::now() < deadline {
        c.set_timeout(Duration::from_millis(300));
        if let Some(m) = c.try_next() {
            if m.event.as_deref() == Some("avro.greeting") {
                got.push(serde_json::from_str::<Value>(&m.data).unwrap());
            }
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["id"], "a1");
    assert_eq!(got[0]["data"], json!({"name": "bin", "age": 1}), "{got:?}");
    assert_eq!(got[1]["id"], "a2");
    assert_eq!(
        got[1]["data"],
        json!({"name": "structured", "age": 2}),
        "{got:?}"
    );

    // Producing: only `data` as Avro with the subject's schema, the rest in ce_ headers.
    avro_py(&broker, &reg, &["register", "greeting-value"]);
    let ev = json!({"specversion": "1.0", "type": "greeting", "source": "/t", "id": "p1",
                    "data": {"name": "ann", "age": 7}});
    let r = request(
        srv.inbound,
        "POST",
        "/greet",
        &[("content-type", "application/json")],
        ev.to_string().as_bytes(),
    );
    assert_eq!((r.status, r.text().as_str()), (202, "Accepted."));
    let out = avro_py(&broker, &reg, &["consume", &output, "1"]);
    let rec: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(rec["value"], json!({"name": "ann", "age": 7}), "{rec}");
    assert_eq!(rec["headers"]["ce_type"], "greeting", "{rec}");
    assert_eq!(rec["headers"]["ce_id"], "p1", "{rec}");
    assert_eq!(rec["headers"]["content-type"], "avro/binary", "{rec}");
    let rig: Value = serde_json::from_str(rec["headers"]["ce_rig"].as_str().unwrap()).unwrap();
    assert_eq!(rig["method"], "POST", "{rig}");

    let bad = json!({"specversion": "1.0", "type": "greeting", "source": "/t", "id": "p2",
                     "data": {"name": "no age"}});
    let r = request(
        srv.inbound,
        "POST",
        "/greet",
        &[("content-type", "application/json")],
        bad.to_string().as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("does not match the schema"),
        "{}",
        r.text()
    );
}
