//! A FlowX Events Gateway deployment switched to Corebridge by changing the image only: its
//! variables (`KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC_NAMING_*`, consumer groups), its topics
//! with the built-in record mapping, SSE under `/api/events`, consumer groups (librdkafka)
//! with committed offsets, and every Kafka client of the gateway through the test broker's
//! SASL front (PLAIN, SCRAM, OAUTHBEARER with a token refresh) and TLS front.

mod common;

use common::kafka::{broker_up, create, py};
use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SHARED_PORT: u16 = 19092;

/// A topic environment segment of its own, so each test's FlowX topics are new.
fn environment() -> String {
    format!("t{:x}.", fastrand::u32(..))
}

fn flowx_env<'a>(broker: &'a str, environment: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", broker),
        ("KAFKA_TOPIC_NAMING_ENVIRONMENT", environment),
        ("CB_KAFKA_START_OFFSET", "earliest"),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "500"),
    ]
}

fn produce(broker: &str, topic: &str, value: &str, extra: &[&str]) {
    let mut args = vec!["produce", topic, value];
    args.extend_from_slice(extra);
    py(broker, &args).unwrap();
}

fn sse(port: u16, path_prefix: &str, subscriptions: &Value) -> SseClient {
    let path = format!(
        "{path_prefix}/_rig/v1/connection/sse?subscriptions={}",
        enc(&subscriptions.to_string())
    );
    let c = SseClient::at(TcpStream::connect(("127.0.0.1", port)).unwrap(), &path);
    assert_eq!(c.head.status, 200, "{path}");
    c
}

/// Events until `n` arrived or `within` passed (heartbeats keep the socket busy, so the bound
/// is a deadline, not a read timeout).
fn drain(c: &mut SseClient, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Short reads: a heartbeat in time would otherwise restart a long timeout forever.
        c.set_timeout(left.min(Duration::from_millis(500)));
        match c.try_next() {
            Some(m) if m.event.as_deref().is_some_and(|e| !e.starts_with("rig.")) => {
                out.push(serde_json::from_str(&m.data).unwrap())
            }
            _ => {}
        }
    }
    out
}

fn committed(broker: &str, topic: &str, group: &str) -> HashMap<String, i64> {
    serde_json::from_str(py(broker, &["committed", topic, group]).unwrap().trim()).unwrap()
}

#[test]
fn flowx_topics_route_by_process_instance_and_user_under_api_events() {
    let broker = broker_up(SHARED_PORT);
    let env = environment();
    let pi_topic = format!("ai.flowx.{env}eventsgateway.engine.commands.message.v1");
    let user_topic = format!("ai.flowx.{env}core.designer.notification.user.v1");
    create(&broker, &pi_topic, 2);
    create(&broker, &user_topic, 1);
    let mut envs = flowx_env(&broker, &env);
    envs.push(("CB_NODE_ID", "n1"));
    let srv = Server::start_with(2, "", &envs);

    let mut a = sse(
        srv.inbound,
        "/api/events",
        &json!([{"eventType": "flowx.processinstance.message", "oneOf": [{"processInstanceUuid": "pi-A"}]}]),
    );
    // Proxies in front must not buffer the stream (FlowX's ingress note).
    assert_eq!(a.head.header("x-accel-buffering"), Some("no"));
    assert_eq!(a.head.header("cache-control"), Some("no-cache"));
    let mut b = sse(
        srv.inbound,
        "/api/events",
        &json!([{"eventType": "flowx.processinstance.message", "oneOf": [{"processInstanceUuid": "pi-B"}]}]),
    );
    let mut u = sse(
        srv.inbound,
        "",
        &json!([{"eventType": "flowx.user.message", "oneOf": [{"user": "alice"}]}]),
    );

    produce(&broker, &pi_topic, r#"{"n":1}"#, &["--key", "pi-A"]);
    produce(&broker, &pi_topic, r#"{"n":2}"#, &["--key", "pi-B"]);
    // A header names the process instance even when the key is something else.
    produce(
        &broker,
        &pi_topic,
        r#"{"n":3}"#,
        &["--key", "other", "--header", "processInstanceUuid=pi-A"],
    );
    produce(
        &broker,
        &user_topic,
        r#"{"text":"hi alice"}"#,
        &["--key", "alice"],
    );
    produce(
        &broker,
        &user_topic,
        r#"{"text":"hi bob"}"#,
        &["--key", "bob"],
    );

    let got_a = drain(&mut a, 3, Duration::from_secs(20));
    let mut ns: Vec<i64> = got_a
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, vec![1, 3], "{got_a:?}");
    for e in &got_a {
        assert_eq!(e["type"], "flowx.processinstance.message");
        assert_eq!(e["processinstanceuuid"], "pi-A");
        assert!(e["id"].as_str().unwrap().starts_with(&pi_topic), "{e}");
    }
    let got_b = drain(&mut b, 2, Duration::from_secs(3));
    assert_eq!(got_b.len(), 1, "{got_b:?}");
    assert_eq!(got_b[0]["data"]["n"], 2);
    let got_u = drain(&mut u, 2, Duration::from_secs(3));
    assert_eq!(got_u.len(), 1, "{got_u:?}");
    assert_eq!(got_u[0]["data"]["text"], "hi alice");
    assert_eq!(got_u[0]["username"], "alice");

    // Offsets are committed in the node's own group once the records were handed over.
    let group = "engine-commands-message.n1";
    wait_for("committed offsets", Duration::from_secs(15), || {
        committed(&broker, &pi_topic, group)
            .values()
            .filter(|o| **o > 0)
            .sum::<i64>()
            == 3
    });
    // Paths outside /_rig/ under the prefix stay the API gateway's.
    let r = request(srv.inbound, "GET", "/api/events/elsewhere", &[], b"");
    assert_eq!(r.status, 404);
}

#[test]
fn group_scope_node_copies_to_every_node_and_shared_splits() {
    let broker = broker_up(SHARED_PORT);
    let topic = format!("grp-{:x}", fastrand::u32(..));
    create(&broker, &topic, 4);
    let all = json!([{"eventType": "g.event"}]);
    let start = |node: &str, scope: &str| {
        Server::start_with(
            1,
            "",
            &[
                ("KAFKA_BROKERS", broker.as_str()),
                ("KAFKA_SOURCE_TOPICS", topic.as_str()),
                ("CB_KAFKA_PUBLISH_TOPIC", topic.as_str()),
                ("CB_KAFKA_SOURCE_GROUPS", &format!("{topic}=g-{topic}")),
                ("CB_KAFKA_GROUP_SCOPE", scope),
                ("CB_NODE_ID", node),
                ("CB_KAFKA_START_OFFSET", "earliest"),
                ("CB_KAFKA_TOPIC_REFRESH_MS", "500"),
            ],
        )
    };
    let event = |i: usize| {
        json!({"specversion": "1.0", "type": "g.event", "source": "t", "id": format!("e{i}"), "data": {"i": i}})
            .to_string()
    };

    // node scope: each node its own group, so both get every record.
    let (n1, n2) = (start("a", "node"), start("b", "node"));
    let (mut c1, mut c2) = (sse(n1.inbound, "", &all), sse(n2.inbound, "", &all));
    for i in 0..8 {
        produce(&broker, &topic, &event(i), &["--key", &format!("k{i}")]);
    }
    assert_eq!(drain(&mut c1, 8, Duration::from_secs(20)).len(), 8);
    assert_eq!(drain(&mut c2, 8, Duration::from_secs(20)).len(), 8);
    drop((c1, c2, n1, n2));

    // shared scope: one group for both nodes; each record reaches one of them, none both.
    let topic2 = format!("{topic}-s");
    create(&broker, &topic2, 4);
    let start2 = |node: &str| {
        Server::start_with(
            1,
            "",
            &[
                ("KAFKA_BROKERS", broker.as_str()),
                ("KAFKA_SOURCE_TOPICS", topic2.as_str()),
                ("CB_KAFKA_SOURCE_GROUPS", &format!("{topic2}=g-{topic2}")),
                ("CB_KAFKA_GROUP_SCOPE", "shared"),
                ("CB_NODE_ID", node),
                ("CB_KAFKA_START_OFFSET", "earliest"),
                ("CB_KAFKA_TOPIC_REFRESH_MS", "500"),
            ],
        )
    };
    let (s1, s2) = (start2("a"), start2("b"));
    let (mut c1, mut c2) = (sse(s1.inbound, "", &all), sse(s2.inbound, "", &all));
    for i in 0..16 {
        produce(&broker, &topic2, &event(i), &["--key", &format!("k{i}")]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<i64> = Vec::new();
    while seen.len() < 16 && Instant::now() < deadline {
        for c in [&mut c1, &mut c2] {
            for e in drain(c, 16, Duration::from_millis(300)) {
                seen.push(e["data"]["i"].as_i64().unwrap());
            }
        }
    }
    // A little longer: a copy delivered twice would show up now.
    for c in [&mut c1, &mut c2] {
        for e in drain(c, 16, Duration::from_secs(2)) {
            seen.push(e["data"]["i"].as_i64().unwrap());
        }
    }
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 16, "{seen:?}");
    assert_eq!(seen.len(), 16, "a record reached both nodes: {seen:?}");
}

fn stats(path: &str) -> Value {
    json_file(path)
}

fn ok_count(path: &str, mech: &str) -> u64 {
    stats(path)[mech]["ok"].as_u64().unwrap_or(0)
}

/// A RIG-profile node reading `topic` through `bootstrap` with `security`; one event produced
/// by the test's own client reaches an SSE client.
fn deliver_one(bootstrap: &str, client: &Value, security: &[(&str, &str)]) -> Server {
    let topic = &format!("sec-{:x}", fastrand::u32(..));
    python(
        "kafka_client.py",
        &[bootstrap, "create", topic, "1"],
        &[("KAFKA_CLIENT_CONFIG", &client.to_string())],
    )
    .unwrap();
    let mut envs = vec![
        ("KAFKA_BROKERS", bootstrap),
        ("KAFKA_SOURCE_TOPICS", topic),
        ("CB_KAFKA_START_OFFSET", "earliest"),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "500"),
    ];
    envs.extend_from_slice(security);
    let srv = Server::start_with(1, "", &envs);
    let mut c = sse(srv.inbound, "", &json!([{"eventType": "sec.event"}]));
    let id = format!("s{:x}", fastrand::u32(..));
    let ev = json!({"specversion": "1.0", "type": "sec.event", "source": "t", "id": id});
    let cfg = client.to_string();
    python(
        "kafka_client.py",
        &[bootstrap, "produce", topic, &ev.to_string()],
        &[("KAFKA_CLIENT_CONFIG", &cfg)],
    )
    .unwrap();
    let got = drain(&mut c, 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "nothing delivered with {security:?}");
    assert_eq!(got[0]["id"], id.as_str());
    srv
}

#[test]
fn gateway_kafka_through_the_sasl_and_tls_fronts() {
    let (kafka, front) = (19110u16, 19111u16);
    service(
        "kafka-up",
        &[&kafka.to_string()],
        &[("KAFKA_ADVERTISED_PORT", &front.to_string())],
    );
    let sasl = service(
        "kafka-sasl-up",
        &[&front.to_string(), &kafka.to_string()],
        &[],
    );
    let stats_file = sasl["KAFKA_SASL_STATS"].clone();
    let bootstrap = format!("127.0.0.1:{front}");
    // The test's own client uses SCRAM-SHA-512 only where the gateway does not.
    let client = json!({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                        "sasl.username": "alice", "sasl.password": "alice-secret"});
    for (mech, sasl_var) in [
        ("PLAIN", "plain:alice:alice-secret"),
        ("SCRAM-SHA-256", "scram-sha-256:alice:alice-secret"),
    ] {
        let before = ok_count(&stats_file, mech);
        let _srv = deliver_one(
            &bootstrap,
            &client,
            &[
                ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                ("KAFKA_SASL", sasl_var),
            ],
        );
        assert!(ok_count(&stats_file, mech) > before, "no {mech} login");
    }

    // OAUTHBEARER in the FlowX profile: the rskafka client (control topic, publishing) and the
    // group consumers (librdkafka) both log in with client-credentials tokens.
    let oauth_port = 4574u16;
    service(
        "oauth-up",
        &[&oauth_port.to_string()],
        &[("OAUTH_TOKEN_TTL", "6")],
    );
    let token_url = format!("http://127.0.0.1:{oauth_port}/token");
    let oauth = || -> Value {
        let r = request(oauth_port, "GET", "/stats", &[], b"");
        serde_json::from_str(&r.text()).unwrap_or_default()
    };
    let env = environment();
    let pi_topic = format!("ai.flowx.{env}eventsgateway.engine.commands.message.v1");
    python(
        "kafka_client.py",
        &[&bootstrap, "create", &pi_topic, "1"],
        &[("KAFKA_CLIENT_CONFIG", &client.to_string())],
    )
    .unwrap();
    let issued_before = oauth()["tokens_issued"].as_u64().unwrap_or(0);
    let before = ok_count(&stats_file, "OAUTHBEARER");
    let mut envs = flowx_env(&bootstrap, &env);
    envs.extend([
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("KAFKA_OAUTH_CLIENT_ID", "kafka"),
        ("KAFKA_OAUTH_CLIENT_SECRET", "kafka-secret"),
        ("KAFKA_OAUTH_TOKEN_ENDPOINT_URI", token_url.as_str()),
    ]);
    let srv = Server::start_with(1, "", &envs);
    let subs = json!([{"eventType": "flowx.processinstance.message", "oneOf": [{"processInstanceUuid": "pi-9"}]}]);
    let mut c = sse(srv.inbound, "/api/events", &subs);
    let send = |n: u32| {
        python(
            "kafka_client.py",
            &[
                &bootstrap,
                "produce",
                &pi_topic,
                &format!("{{\"n\":{n}}}"),
                "--key",
                "pi-9",
            ],
            &[("KAFKA_CLIENT_CONFIG", &client.to_string())],
        )
        .unwrap();
    };
    send(1);
    let got = drain(&mut c, 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "no FlowX event over OAUTHBEARER");
    // Two logins at least: the rskafka client and the group consumer.
    wait_for("OAUTHBEARER logins", Duration::from_secs(10), || {
        ok_count(&stats_file, "OAUTHBEARER") >= before + 2
    });
    // Tokens live 6 s; both clients fetch the next one before the current expires.
    wait_for("a refreshed token", Duration::from_secs(20), || {
        oauth()["tokens_issued"].as_u64().unwrap_or(0) >= issued_before + 4
    });
    // The front restarts after the first tokens expired: every client reconnects, with a
    // fresh token, and delivery goes on.
    std::thread::sleep(Duration::from_secs(3));
    service("kafka-sasl-down", &[&front.to_string()], &[]);
    service(
        "kafka-sasl-up",
        &[&front.to_string(), &kafka.to_string()],
        &[],
    );
    send(2);
    let got = drain(&mut c, 1, Duration::from_secs(40));
    assert_eq!(got.len(), 1, "nothing after the SASL front restarted");
    assert_eq!(got[0]["data"]["n"], 2);
    assert!(
        ok_count(&stats_file, "OAUTHBEARER") >= 1,
        "{}",
        stats(&stats_file)
    );
    drop((c, srv));
    service("oauth-down", &[&oauth_port.to_string()], &[]);
    service("kafka-sasl-down", &[&front.to_string()], &[]);
    service("kafka-down", &[&kafka.to_string()], &[]);

    // TLS through the TLS front, trusting the test CA (rustls in the gateway).
    let (kafka, front) = (19112u16, 19113u16);
    service(
        "kafka-up",
        &[&kafka.to_string()],
        &[("KAFKA_ADVERTISED_PORT", &front.to_string())],
    );
    let tls = service(
        "kafka-tls-up",
        &[&front.to_string(), &kafka.to_string()],
        &[],
    );
    let ca = tls["KAFKA_TLS_CA"].clone();
    let bootstrap = format!("127.0.0.1:{front}");
    let client = json!({"security.protocol": "SSL", "ssl.ca.location": ca});
    let _srv = deliver_one(
        &bootstrap,
        &client,
        &[
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_CA_CERTFILE", &ca),
        ],
    );
    service("kafka-tls-down", &[&front.to_string()], &[]);
    service("kafka-down", &[&kafka.to_string()], &[]);
}

/// SIGTERM: the group consumer commits what it stored before the process exits, so a restart
/// resumes exactly there. Auto-commit is pushed out of the way (10 minutes) so only the
/// shutdown commit can have written the offsets.
#[test]
fn sigterm_commits_the_offsets_a_group_stored() {
    let broker = broker_up(SHARED_PORT);
    let env = environment();
    let pi_topic = format!("ai.flowx.{env}eventsgateway.engine.commands.message.v1");
    create(&broker, &pi_topic, 1);
    let mut envs = flowx_env(&broker, &env);
    envs.push(("CB_NODE_ID", "n9"));
    envs.push(("CB_KAFKA_GROUP_COMMIT_MS", "600000"));
    let mut srv = Server::start_with(2, "", &envs);
    let mut a = sse(
        srv.inbound,
        "/api/events",
        &json!([{"eventType": "flowx.processinstance.message", "oneOf": [{"processInstanceUuid": "pi-Z"}]}]),
    );
    for n in 0..3 {
        produce(
            &broker,
            &pi_topic,
            &format!(r#"{{"n":{n}}}"#),
            &["--key", "pi-Z"],
        );
    }
    assert_eq!(drain(&mut a, 3, Duration::from_secs(20)).len(), 3);
    let group = "engine-commands-message.n9";
    let before = committed(&broker, &pi_topic, group);
    assert!(
        before.values().all(|o| *o < 3),
        "committed early: {before:?}"
    );
    let status = srv.terminate(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "{status:?}");
    let after = committed(&broker, &pi_topic, group);
    assert_eq!(after.get("0"), Some(&3), "{after:?}");
}
