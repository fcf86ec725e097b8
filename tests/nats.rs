//! NATS (RIG's `NATS_SERVERS`) against Debian's nats-server, with a NATS client written here on
//! the wire protocol (INFO/CONNECT, PUB/HPUB, SUB, MSG/HMSG, PING/PONG): subjects consumed and
//! delivered to SSE clients (structured and binary CloudEvents, wildcards, bad messages
//! counted), the server restarted under a running node, and the proxy's `target: nats` with
//! and without `response_from: nats`.

mod common;

use common::client::Client;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server of this test (killed on drop), with its monitoring port.
struct NatsServer {
    child: Child,
    port: u16,
    monitor: u16,
}

impl NatsServer {
    fn start() -> NatsServer {
        NatsServer::on(free_port(), free_port())
    }

    fn on(port: u16, monitor: u16) -> NatsServer {
        let bin = ["nats-server", "/usr/sbin/nats-server"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("nats-server (apt-get install nats-server; scripts/test does)");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = NatsServer {
            child,
            port,
            monitor,
        };
        wait_until("nats-server up", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The subjects the gateway's connection (named `corebridge`) subscribes to, as the
    /// server's monitoring endpoint lists them.
    fn gateway_subscriptions(&self) -> Vec<String> {
        let r = request(self.monitor, "GET", "/connz?subs=1", &[], b"");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let mut subs: Vec<String> = v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == "corebridge")
            .flat_map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        subs.sort();
        subs
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(20), ok);
}

/// A NATS message as the test client received it.
#[derive(Debug)]
struct Msg {
    subject: String,
    reply: Option<String>,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

/// The NATS client protocol, by hand.
struct Nats {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Nats {
    fn connect(port: u16) -> Nats {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut n = Nats {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        assert!(n.line().starts_with("INFO "));
        n.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n");
        n.flush();
        n
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }

    fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).unwrap();
    }

    /// PING, and wait for the PONG: everything sent before is processed by the server.
    fn flush(&mut self) {
        self.send(b"PING\r\n");
        loop {
            match self.line().as_str() {
                "PONG" => return,
                "PING" => self.send(b"PONG\r\n"),
                l if l.starts_with("-ERR") => panic!("{l}"),
                _ => {}
            }
        }
    }

    fn publish(&mut self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
        if headers.is_empty() {
            self.send(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
        } else {
            let mut h = String::from("NATS/1.0\r\n");
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("\r\n");
            self.send(
                format!(
                    "HPUB {subject} {} {}\r\n{h}",
                    h.len(),
                    h.len() + payload.len()
                )
                .as_bytes(),
            );
        }
        self.send(payload);
        self.send(b"\r\n");
        self.flush();
    }

    fn subscribe(&mut self, subject: &str, sid: u32) {
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes());
        self.flush();
    }

    /// The next MSG or HMSG.
    fn next(&mut self) -> Msg {
        loop {
            let l = self.line();
            let parts: Vec<&str> = l.split(' ').collect();
            match parts[0] {
                "PING" => self.send(b"PONG\r\n"),
                "MSG" | "HMSG" => {
                    let with_headers = parts[0] == "HMSG";
                    // MSG subject sid [reply] len / HMSG subject sid [reply] hlen len
                    let fixed = if with_headers { 5 } else { 4 };
                    let reply = (parts.len() > fixed).then(|| parts[3].to_string());
                    let total: usize = parts.last().unwrap().parse().unwrap();
                    let hlen: usize = if with_headers {
                        parts[parts.len() - 2].parse().unwrap()
                    } else {
                        0
                    };
                    let mut data = vec![0; total + 2];
                    self.r.read_exact(&mut data).unwrap();
                    let head = String::from_utf8_lossy(&data[..hlen]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    return Msg {
                        subject: parts[1].to_string(),
                        reply,
                        headers,
                        payload: data[hlen..total].to_vec(),
                    };
                }
                _ => {}
            }
        }
    }
}

fn greeting(name: &str) -> Vec<u8> {
    json!({"specversion": "1.0", "type": "greeting", "source": "/nats", "id": name,
           "data": {"name": name}})
    .to_string()
    .into_bytes()
}

/// The names of the next `n` greetings on `c`.
fn names(c: &mut SseClient, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| c.next_event()["data"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn nats_subjects_reach_sse_clients_and_survive_a_server_restart() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let srv = Server::start_with(
        2,
        "",
        &[
            ("NATS_SERVERS", url.as_str()),
            ("NATS_SOURCE_TOPICS", "greetings.*, rig"),
            ("NATSTOFILTER_QUEUE_GROUP", "rig-nats-to-filter"),
        ],
    );
    // NATS keeps nothing: publish only once the node's two subscriptions are in place.
    let subscribed = |n: &NatsServer| n.gateway_subscriptions() == ["greetings.*", "rig"];
    wait_until("the node subscribed", || subscribed(&nats));
    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let mut only_ann = SseClient::connect(
        srv.inbound,
        Some(r#"[{"eventType":"greeting","oneOf":[{"name":"ann"}]}]"#),
    );
    let mut p = Nats::connect(nats.port);
    p.publish("greetings.new", &[], &greeting("ann"));
    // Binary mode: the attributes as ce_ headers, the data as the payload.
    p.publish(
        "rig",
        &[
            ("ce_specversion", "1.0"),
            ("ce_type", "greeting"),
            ("ce_source", "/nats"),
            ("ce_id", "b1"),
            ("content-type", "application/json"),
        ],
        br#"{"name":"bob"}"#,
    );
    // Not a CloudEvent, a subject not subscribed, one the wildcard does not match.
    p.publish("rig", &[], b"not json");
    p.publish("other", &[], &greeting("nobody"));
    p.publish("greetings.x.y", &[], &greeting("nobody"));
    // The CloudEvents NATS binding's spelling, ce-, as its SDKs write it.
    p.publish(
        "rig",
        &[
            ("ce-specversion", "1.0"),
            ("ce-type", "greeting"),
            ("ce-source", "/nats"),
            ("ce-id", "b2"),
            ("content-type", "application/json"),
        ],
        br#"{"name":"bea"}"#,
    );
    p.publish("greetings.late", &[], &greeting("cid"));
    assert_eq!(names(&mut c, 4), ["ann", "bob", "bea", "cid"]);
    assert_eq!(names(&mut only_ann, 1), ["ann"]);
    assert_eq!(
        metric(
            &srv,
            r#"corebridge_nats_messages_total{subject="greetings.*"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&srv, r#"corebridge_nats_messages_total{subject="rig"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &srv,
            r#"corebridge_nats_messages_failed_total{subject="rig"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &srv,
            r#"rig_consumed_events_failed_total{source="nats",topic="rig"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&srv, "corebridge_nats_up "), Some(1.0));
    assert_promtool_clean(&request(srv.api, "GET", "/metrics", &[], b"").text());
    let status: Value =
        serde_json::from_slice(&request(srv.api, "GET", "/v3/status", &[], b"").body).unwrap();
    assert_eq!(status["nats"], json!(true), "{status}");

    // The server goes away: the node says so, keeps its clients, and subscribes again once
    // a server is back on the address.
    let (port, monitor) = (nats.port, nats.monitor);
    drop(p);
    nats.stop();
    wait_until("corebridge_nats_up 0", || {
        metric(&srv, "corebridge_nats_up ") == Some(0.0)
    });
    let nats = NatsServer::on(port, monitor);
    wait_until("the node subscribed again", || subscribed(&nats));
    wait_until("corebridge_nats_up 1", || {
        metric(&srv, "corebridge_nats_up ") == Some(1.0)
    });
    let mut p = Nats::connect(nats.port);
    p.publish("greetings.again", &[], &greeting("dee"));
    assert_eq!(names(&mut c, 1), ["dee"]);
}

#[test]
fn bad_nats_settings_are_named_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_corebridge"))
        .arg("--check-config")
        .env_clear()
        .env("NATS_SERVERS", "nats://127.0.0.1:4222,http://x:1:2")
        .env("NATS_SOURCE_TOPICS", "ok.*,bad subject")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("NATS_SERVERS: \"http://x:1:2\""), "{text}");
    assert!(
        text.contains("NATS_SOURCE_TOPICS: \"bad subject\""),
        "{text}"
    );
}

/// POSTs `body` to `path` on a fresh connection and returns the response.
fn post(port: u16, path: &str, body: &str) -> common::client::Got {
    let mut c = Client::connect(port);
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nhost: gw.example\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.read(false).unwrap()
}

#[test]
fn proxy_nats_targets_publish_or_wait_for_the_nats_reply() {
    let nats = NatsServer::start();
    let url = nats.url();
    let apis = json!([
        {"id": "n", "name": "n", "proxy": {"target_url": "127.0.0.1", "port": 9},
         "version_data": {"default": {"endpoints": [
            {"id": "pub", "method": "POST", "path_regex": "/events", "target": "nats", "topic": "svc.events"},
            {"id": "rpc", "method": "POST", "path_regex": "/rpc", "target": "nats", "topic": "svc.rpc", "response_from": "nats"},
            {"id": "nobody", "method": "POST", "path_regex": "/nobody", "target": "nats", "topic": "svc.nobody", "response_from": "nats"},
            {"id": "silent", "method": "POST", "path_regex": "/silent", "target": "nats", "topic": "svc.silent", "response_from": "nats"}
         ]}}}
    ])
    .to_string();
    let srv = Server::start_with(
        2,
        "",
        &[
            ("NATS_SERVERS", url.as_str()),
            ("PROXY_CONFIG_FILE", apis.as_str()),
            ("PROXY_NATS_RESPONSE_TIMEOUT", "700"),
        ],
    );
    wait_until("the node connected", || {
        metric(&srv, "corebridge_nats_up ") == Some(1.0)
    });
    let mut sub = Nats::connect(nats.port);
    sub.subscribe("svc.events", 1);
    let mut silent = Nats::connect(nats.port);
    silent.subscribe("svc.silent", 1);
    let event = json!({"specversion": "1.0", "type": "order.placed", "id": "1", "source": "/t",
                       "data": {"n": 1}});

    // Fire and forget: 202 once the server has it; the subscriber gets the CloudEvent with
    // RIG's `rig` extension.
    let r = post(srv.inbound, "/events", &event.to_string());
    assert_eq!((r.status, r.text().as_str()), (202, "Accepted."));
    let m = sub.next();
    assert_eq!(m.subject, "svc.events");
    let got: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(got["data"], json!({"n": 1}), "{got}");
    assert_eq!(got["rig"]["path"], json!("/events"), "{got}");
    // Not a CloudEvent: refused before NATS. A content type NATS cannot carry as a header
    // (a line break): 400 naming it, and the island lives on.
    assert_eq!(post(srv.inbound, "/events", "[1]").status, 400);
    let mut bad = event.clone();
    bad["contenttype"] = json!("text/plain\r\nx-injected: 1");
    let r = post(srv.inbound, "/events", &bad.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ce_contenttype"), "{}", r.text());

    // Request-reply: a service answers on the reply subject, with a status and a header.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let service = std::thread::spawn(move || {
        let mut s = Nats::connect(nats.port);
        s.subscribe("svc.rpc", 7); // a PING/PONG after SUB: the server has it
        ready_tx.send(()).unwrap();
        let m = s.next();
        let asked: Value = serde_json::from_slice(&m.payload).unwrap();
        let reply = m.reply.clone().expect("a request carries a reply subject");
        let body = format!("made order {}", asked["id"].as_str().unwrap());
        s.publish(
            &reply,
            &[("rig-response-code", "201"), ("content-type", "text/plain")],
            body.as_bytes(),
        );
        (m, nats)
    });
    ready.recv().unwrap();
    let r = post(srv.inbound, "/rpc", &event.to_string());
    let (m, nats) = service.join().unwrap();
    assert!(
        m.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type")),
        "{m:?}"
    );
    assert_eq!((r.status, r.text().as_str()), (201, "made order 1"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("traceparent").is_some());

    // Nobody listens: 502 at once, naming the subject. A listener that never answers: 504
    // after PROXY_NATS_RESPONSE_TIMEOUT, with an empty body, as RIG.
    let r = post(srv.inbound, "/nobody", &event.to_string());
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("svc.nobody"), "{}", r.text());
    let t = Instant::now();
    let r = post(srv.inbound, "/silent", &event.to_string());
    assert_eq!((r.status, r.body.len()), (504, 0));
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(silent.next().subject, "svc.silent");
    // Published: the event, the answered request, and the two that went out unanswered; the
    // one NATS could not carry is the failure.
    assert_eq!(
        metric(&srv, r#"corebridge_nats_published_total{outcome="ok"}"#),
        Some(4.0)
    );
    assert_eq!(
        metric(&srv, r#"corebridge_nats_published_total{outcome="failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&srv, r#"rig_produced_events_total{target="nats"}"#),
        Some(4.0)
    );

    // NATS gone: 503 with Retry-After, not a hang.
    drop(nats);
    wait_until("corebridge_nats_up 0", || {
        metric(&srv, "corebridge_nats_up ") == Some(0.0)
    });
    let r = post(srv.inbound, "/events", &event.to_string());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
}

#[test]
fn nats_targets_and_replies_need_nats_and_each_other() {
    let srv = Server::start();
    let def = |ep: Value| {
        json!({"id": "v", "name": "v", "proxy": {"target_url": "127.0.0.1", "port": 9},
               "version_data": {"default": {"endpoints": [ep]}}})
        .to_string()
    };
    let r = request(
        srv.api,
        "POST",
        "/v3/apis",
        &[("content-type", "application/json")],
        def(json!({"id": "a", "method": "POST", "path_regex": "/a", "target": "nats", "topic": "s"}))
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("NATS_SERVERS"), "{}", r.text());
    let nats = NatsServer::start();
    let url = nats.url();
    let srv = Server::start_with(2, "", &[("NATS_SERVERS", url.as_str())]);
    let r = request(
        srv.api,
        "POST",
        "/v3/apis",
        &[("content-type", "application/json")],
        def(json!({"id": "b", "method": "POST", "path_regex": "/b", "response_from": "nats"}))
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("needs target nats"), "{}", r.text());
    let r = request(
        srv.api,
        "POST",
        "/v3/apis",
        &[("content-type", "application/json")],
        def(json!({"id": "c", "method": "POST", "path_regex": "/c", "target": "nats"})).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("topic"), "{}", r.text());
}
