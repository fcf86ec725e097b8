//! The API gateway against a real upstream (`common/upstream.rs`, a socket server recording
//! what it receives) with raw HTTP clients: routing, RIG's header rules, streaming and
//! framing both ways, keep-alive pools, misbehaving upstreams, authentication, the management
//! API, `http_async` request-reply through `/v3/responses`, metrics and the console log.

mod common;

use common::client::Client;
use common::upstream::{ok, Act, Upstream};
use common::Server;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn api(id: &str, port: u16, endpoints: Value) -> Value {
    json!({"id": id, "name": id, "proxy": {"target_url": "127.0.0.1", "port": port},
           "version_data": {"default": {"endpoints": endpoints}}})
}

fn start(apis: &Value, envs: &[(&str, &str)]) -> Server {
    let apis = apis.to_string();
    let mut all: Vec<(&str, &str)> = vec![("PROXY_CONFIG_FILE", apis.as_str())];
    all.extend_from_slice(envs);
    Server::start_with(2, "", &all)
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn routes_rewrites_and_follows_rigs_header_rules() {
    let up = Upstream::start(|_| ok("hello"));
    let mut apis = api(
        "svc",
        up.port,
        json!([
            {"id": "user", "method": "GET", "path_regex": "/users/(\\d+)/posts/(\\w+)",
             "path_replacement": "/v1/posts/\\2?of=\\1", "transform_request_headers": true},
            {"id": "trace", "method": "TRACE", "path_regex": "/trace"}
        ]),
    );
    apis["version_data"]["default"]["transform_request_headers"] =
        json!({"add_headers": {"x-api-key": "configured", "host": "virtual.example"}});
    let srv = start(&json!([apis]), &[]);
    let mut c = Client::connect(srv.inbound);
    let r = c.get(
        "/USERS/42/posts/abc?q=1",
        "connection: keep-alive, x-hop\r\nx-hop: secret\r\nkeep-alive: timeout=5\r\n\
         forwarded: for=spoofed\r\nx-api-key: client\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(
        r.header("x-upstream"),
        Some("yes"),
        "upstream headers pass through"
    );
    let seen = up.last();
    // Anchored, case-insensitive match; the rewrite uses capture groups; the query is kept.
    assert_eq!(seen.target, "/v1/posts/abc?of=42?q=1");
    assert_eq!(
        seen.header("host"),
        Some("virtual.example"),
        "add_headers win"
    );
    assert_eq!(seen.header("x-api-key"), Some("configured"));
    assert_eq!(seen.header("forwarded"), Some("for=127.0.0.1;by=127.0.0.1"));
    for hop in ["connection", "keep-alive", "x-hop"] {
        assert_eq!(seen.header(hop), None, "{hop} is hop-by-hop");
    }
    let tp = seen.header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway's span is the parent"
    );

    // Nothing matches: RIG's 404; a method RIG does not forward: 405.
    let r = c.get("/users/42", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, r#"{"message":"Not Found"}"#)
    );
    c.send(b"TRACE /trace HTTP/1.1\r\nhost: x\r\n\r\n");
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (405, "Method not allowed."));
    // Our own endpoints are not proxied.
    assert_eq!(c.get("/_rig/health", "").status, 200);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn bodies_stream_both_ways_with_their_framing() {
    let big = "x".repeat(300_000);
    let big2 = big.clone();
    let up = Upstream::start(move |s| match s.target.as_str() {
        "/chunked" => Act::Trickle(vec![
            (
                Duration::ZERO,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            ),
            (
                Duration::from_millis(50),
                b"6\r\n world\r\n0\r\n\r\n".to_vec(),
            ),
        ]),
        "/close" => Act::SendClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()),
        "/big" => Act::Send(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big2}",
                big2.len()
            )
            .into_bytes(),
        ),
        "/head" => Act::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n".to_vec()),
        _ => Act::Send(
            format!(
                "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n{}",
                s.body.len(),
                String::from_utf8_lossy(&s.body)
            )
            .into_bytes(),
        ),
    });
    let srv = start(
        &json!([api(
            "svc",
            up.port,
            json!([
                {"id": "any", "method": "POST", "path_regex": "/.*"},
                {"id": "get", "method": "GET", "path_regex": "/.*"},
                {"id": "head", "method": "HEAD", "path_regex": "/.*"}
            ])
        )]),
        &[],
    );
    let mut c = Client::connect(srv.inbound);
    // A chunked request goes upstream chunked, its content intact.
    c.send(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n");
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (201, "wikipedia"));
    let seen = up.last();
    assert!(seen.chunked && seen.body == b"wikipedia");
    // A large body with a length arrives whole.
    let body = "y".repeat(200_000);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read(false).unwrap();
    assert_eq!(r.body.len(), 200_000);
    assert_eq!(up.last().header("content-length"), Some("200000"));
    // Chunked from the upstream is chunked to the client; so is a close-delimited body.
    let r = c.get("/chunked", "");
    assert!(r.chunked);
    assert_eq!(r.text(), "hello world");
    let r = c.get("/close", "");
    assert!(r.chunked);
    assert_eq!(r.text(), "until close");
    let r = c.get("/big", "");
    assert_eq!(r.body.len(), 300_000);
    // HEAD keeps the upstream's content-length and sends no body; the connection goes on.
    c.send(b"HEAD /head HTTP/1.1\r\nhost: x\r\n\r\n");
    let r = c.read(true).unwrap();
    assert_eq!(r.header("content-length"), Some("1234"));
    assert_eq!(c.get("/big", "").body.len(), 300_000);
    // HTTP/1.0 clients get a close-delimited body instead of chunks.
    let mut c10 = Client::connect(srv.inbound);
    c10.send(b"GET /chunked HTTP/1.0\r\n\r\n");
    let r = c10.read(false).unwrap();
    assert!(!r.chunked);
    assert_eq!(r.text(), "hello world");
}

#[test]
fn keep_alive_reuses_upstream_connections_and_survives_upstream_closes() {
    let up = Upstream::start(|s| {
        if s.target == "/bye" {
            Act::SendClose(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye".to_vec(),
            )
        } else {
            ok("x")
        }
    });
    let srv = start(
        &json!([api(
            "svc",
            up.port,
            json!([{"id": "g", "method": "GET", "path_regex": "/.*"}])
        )]),
        &[],
    );
    let mut c = Client::connect(srv.inbound);
    for _ in 0..20 {
        assert_eq!(c.get("/a", "").status, 200);
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection for 20 requests"
    );
    // The upstream closes: the next request opens a new connection and succeeds.
    assert_eq!(c.get("/bye", "").status, 200);
    assert_eq!(c.get("/a", "").status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // Pipelined requests are answered in order.
    c.send(b"GET /p1 HTTP/1.1\r\nhost: x\r\n\r\nGET /p2 HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(c.read(false).unwrap().status, 200);
    assert_eq!(c.read(false).unwrap().status, 200);
    let targets: Vec<String> = up.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(&targets[targets.len() - 2..], ["/p1", "/p2"]);
}

#[test]
fn misbehaving_upstreams_get_502_and_leave_client_and_pool_healthy() {
    let up = Upstream::start(|s| {
        match s.target.as_str() {
        "/hang" => Act::Hang,
        "/close" => Act::Close,
        "/garbage" => Act::SendClose(b"SPDY/9 what\r\n\r\n".to_vec()),
        "/huge-head" => Act::SendClose(
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "h".repeat(100_000)).into_bytes(),
        ),
        "/short" => {
            Act::SendClose(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec())
        }
        // A response and then bytes nobody asked for: the connection is out of step and must
        // not answer the next request with them.
        "/extra" => Act::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale"
                .to_vec(),
        ),
        "/smuggle" => Act::SendClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        _ => ok("fine"),
    }
    });
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let srv = start(
        // File order decides between overlapping endpoints.
        &json!([
            api(
                "dead",
                dead_port,
                json!([{"id": "d", "method": "GET", "path_regex": "/dead/.*"}])
            ),
            api(
                "svc",
                up.port,
                json!([{"id": "g", "method": "GET", "path_regex": "/.*"}])
            )
        ]),
        &[("PROXY_RECV_TIMEOUT", "500")],
    );
    let mut c = Client::connect(srv.inbound);
    let r = c.get("/dead/x", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, "Bad gateway."),
        "connection refused"
    );
    for path in ["/hang", "/close", "/garbage", "/huge-head", "/smuggle"] {
        let t = Instant::now();
        let r = c.get(path, "");
        assert_eq!(
            (r.status, r.text().as_str()),
            (502, "Bad gateway."),
            "{path}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            t.elapsed()
        );
        // The client connection and the pool still work.
        assert_eq!(c.get("/ok", "").text(), "fine", "after {path}");
    }
    let accepted = up.accepted.load(Ordering::SeqCst);
    assert_eq!(c.get("/extra", "").text(), "ok");
    assert_eq!(c.get("/ok", "").text(), "fine", "after /extra");
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        accepted + 1,
        "the connection that sent extra bytes is not reused"
    );
    // A body cut short after the head was sent: the client's connection is closed (the only
    // way to say the response is incomplete).
    c.send(b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(
        c.read(false).is_none(),
        "truncated body ends the client connection"
    );
    let mut c = Client::connect(srv.inbound);
    assert_eq!(c.get("/ok", "").text(), "fine");
}

#[test]
fn a_client_that_leaves_frees_its_upstream_connection() {
    let up = Upstream::start(|s| {
        if s.target == "/hang" {
            Act::Hang
        } else {
            ok("x")
        }
    });
    let srv = start(
        &json!([api(
            "svc",
            up.port,
            json!([{"id": "g", "method": "GET", "path_regex": "/.*"}])
        )]),
        &[("PROXY_RECV_TIMEOUT", "30000")],
    );
    let mut c = Client::connect(srv.inbound);
    c.send(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n");
    wait_until(
        "the upstream to get the request",
        Duration::from_secs(5),
        || !up.requests().is_empty(),
    );
    drop(c);
    wait_until(
        "the gateway to close the upstream connection",
        Duration::from_secs(3),
        || up.closed_by_peer.load(Ordering::SeqCst) >= 1,
    );
}

#[test]
fn oversized_and_slow_request_bodies_are_refused() {
    let up = Upstream::start(|_| ok("x"));
    let srv = Server::start_with(
        2,
        "[proxy]\nmax_request_body_bytes = 1000\n[http]\nbody_timeout_ms = 400\n",
        &[(
            "PROXY_CONFIG_FILE",
            &json!([api(
                "svc",
                up.port,
                json!([{"id": "p", "method": "POST", "path_regex": "/.*"}])
            )])
            .to_string(),
        )],
    );
    let mut c = Client::connect(srv.inbound);
    c.send(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n");
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let mut c = Client::connect(srv.inbound);
    c.send(b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n");
    c.send(&vec![b'z'; 2000]);
    c.send(b"\r\n0\r\n\r\n");
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let mut c = Client::connect(srv.inbound);
    c.send(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc");
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(up.requests().iter().all(|s| s.body.len() <= 10));
}

const SECRET: &str = "proxy-test-secret";

fn token(jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u", "jti": jti, "exp": now + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn secured_endpoints_need_a_valid_unlisted_token() {
    let up = Upstream::start(|_| ok("secret stuff"));
    let ep = json!([{"id": "s", "method": "GET", "path_regex": "/s", "secured": true}]);
    let mut by_header = api("h", up.port, ep.clone());
    by_header["auth_type"] = json!("jwt");
    let mut by_query = api(
        "q",
        up.port,
        json!([{"id": "s", "method": "GET", "path_regex": "/q", "secured": true}]),
    );
    by_query["auth_type"] = json!("jwt");
    by_query["auth"] = json!({"use_query": true, "query_name": "token", "use_header": true, "header_name": "x-token"});
    let srv = start(
        &json!([by_header, by_query]),
        &[("JWT_SECRET_KEY", SECRET), ("CORS", "https://app.example")],
    );
    let mut c = Client::connect(srv.inbound);
    let r = c.get("/s", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "Authentication failed.")
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    let r = c.get("/s", "authorization: Bearer not.a.jwt\r\n");
    assert_eq!(r.status, 401);
    let good = token("session-1");
    let r = c.get("/s", &format!("authorization: Bearer {good}\r\n"));
    assert_eq!((r.status, r.text().as_str()), (200, "secret stuff"));
    assert_eq!(
        up.last().header("authorization"),
        Some(format!("Bearer {good}").as_str())
    );
    // Query (comma list, one valid is enough) and a custom x- header.
    assert_eq!(c.get(&format!("/q?token=junk,{good}"), "").status, 200);
    assert_eq!(c.get("/q", &format!("x-token: {good}\r\n")).status, 200);
    assert_eq!(
        c.get("/q", &format!("authorization: Bearer {good}\r\n"))
            .status,
        401,
        "not configured for this API"
    );
    // A blacklisted session is refused.
    let r = common::request(
        srv.api,
        "POST",
        "/v3/session-blacklist",
        &[("content-type", "application/json")],
        br#"{"sessionId":"session-1","validityInSeconds":60}"#,
    );
    assert_eq!(r.status, 201);
    let r = c.get("/s", &format!("authorization: Bearer {good}\r\n"));
    assert_eq!(r.status, 401);
    assert_eq!(
        c.get(
            "/s",
            &format!("authorization: Bearer {}\r\n", token("other"))
        )
        .status,
        200
    );
}

fn internal(srv: &Server, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = common::request(
        srv.api,
        method,
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[test]
fn management_api_codes_and_bodies() {
    let up = Upstream::start(|_| ok("managed"));
    let srv = Server::start_with(2, "", &[]);
    let def = api(
        "new-svc",
        up.port,
        json!([{"id": "e", "method": "GET", "path_regex": "/managed"}]),
    );
    let (s, v) = internal(&srv, "POST", "/v3/apis", &def);
    assert_eq!((s, v), (201, json!({"message": "ok"})));
    let (s, v) = internal(&srv, "POST", "/v3/apis", &def);
    assert_eq!(
        (s, v),
        (
            409,
            json!({"message": "API with id=new-svc already exists."})
        )
    );
    // Every shard routes it once the POST is answered.
    for _ in 0..6 {
        assert_eq!(
            Client::connect(srv.inbound).get("/managed", "").text(),
            "managed"
        );
    }
    let (s, v) = internal(&srv, "GET", "/v3/apis/new-svc", &Value::Null);
    assert_eq!(s, 200);
    assert_eq!(
        (v["active"].clone(), v["ref_number"].clone()),
        (json!(true), json!(0))
    );
    assert!(
        v["timestamp"].is_string() && v["node_name"].is_string(),
        "{v}"
    );
    assert_eq!(v["auth_type"], "none");
    let (s, v) = internal(&srv, "GET", "/v2/apis", &Value::Null);
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    // Invalid: 400 with the validation map, nothing applied.
    let (s, v) = internal(&srv, "PUT", "/v3/apis/new-svc", &json!({}));
    assert_eq!(s, 400);
    assert_eq!(v["api"][0], json!({"name": "must be string"}));
    assert_eq!(Client::connect(srv.inbound).get("/managed", "").status, 200);
    // Update: merged, one version later, routed at once.
    let mut changed = def.clone();
    changed["version_data"]["default"]["endpoints"][0]["path_regex"] = json!("/moved");
    let (s, _) = internal(&srv, "PUT", "/v3/apis/new-svc", &changed);
    assert_eq!(s, 200);
    assert_eq!(
        internal(&srv, "GET", "/v3/apis/new-svc", &Value::Null).1["ref_number"],
        1
    );
    assert_eq!(Client::connect(srv.inbound).get("/managed", "").status, 404);
    assert_eq!(Client::connect(srv.inbound).get("/moved", "").status, 200);
    let (s, v) = internal(&srv, "PUT", "/v3/apis/nope", &def);
    assert_eq!(
        (s, v),
        (404, json!({"message": "API with id=nope doesn't exists."}))
    );
    // Soft delete: 204, then gone from GET and routing; re-created one version later.
    let r = common::request(srv.api, "DELETE", "/v3/apis/new-svc", &[], b"");
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(
        internal(&srv, "GET", "/v3/apis/new-svc", &Value::Null).0,
        404
    );
    assert_eq!(
        internal(&srv, "DELETE", "/v3/apis/new-svc", &Value::Null).0,
        404
    );
    assert_eq!(Client::connect(srv.inbound).get("/moved", "").status, 404);
    assert_eq!(internal(&srv, "POST", "/v3/apis", &def).0, 201);
    assert_eq!(
        internal(&srv, "GET", "/v3/apis/new-svc", &Value::Null).1["ref_number"],
        3
    );
    // RIG's validation messages for a Kafka endpoint without a topic, and ours for a node
    // without Kafka.
    let bad = api(
        "k",
        up.port,
        json!([{"id": "e", "method": "POST", "path_regex": "/k", "target": "kafka"}]),
    );
    let (s, v) = internal(&srv, "POST", "/v3/apis", &bad);
    assert_eq!(s, 400);
    assert_eq!(v["k/e"][0], json!({"topic": "must be present"}));
    assert!(
        v["k/e"][1]["target"]
            .as_str()
            .unwrap()
            .contains("KAFKA_BROKERS"),
        "{v}"
    );
}

#[test]
fn http_async_waits_for_the_correlated_response_posted_to_v3_responses() {
    let up = Upstream::start(|s| {
        if s.target.starts_with("/sync") {
            ok("answered at once")
        } else {
            Act::Send(b"HTTP/1.1 202 Accepted\r\ncontent-length: 7\r\n\r\nqueued!".to_vec())
        }
    });
    let srv = start(
        &json!([api(
            "svc",
            up.port,
            json!([
                {"id": "a", "method": "POST", "path_regex": "/.*", "response_from": "http_async"}
            ])
        )]),
        &[("PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT", "1500")],
    );
    // The backend answers a 202 with its response through the internal API.
    let api_port = srv.api;
    let backend = |up: &Upstream, n: usize, status: &'static str| {
        wait_until(
            "the upstream to get the request",
            Duration::from_secs(5),
            || up.requests().len() >= n,
        );
        let target = up.requests()[n - 1].target.clone();
        let corr = target
            .split("correlation=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string();
        let r = common::request(
            api_port,
            "POST",
            "/v3/responses",
            &[
                ("rig-correlation", &corr),
                ("rig-response-code", status),
                ("content-type", "application/json"),
                ("x-extra", "1"),
            ],
            br#"{"done":true}"#,
        );
        (r.status, r.text(), corr)
    };
    let mut c = Client::connect(srv.inbound);
    c.send(b"POST /job?correlation=forged HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}");
    let (status, text, corr) = backend(&up, 1, "201");
    assert_eq!(
        (status, text.as_str()),
        (202, "message sent to correlated reverse proxy request")
    );
    assert_ne!(corr, "forged");
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (201, r#"{"done":true}"#));
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("traceparent").is_some());
    assert!(
        r.header("host").is_none(),
        "the backend's request headers are not copied"
    );
    // The same correlation again finds nobody: accepted and counted.
    let again = common::request(
        api_port,
        "POST",
        "/v3/responses",
        &[("rig-correlation", &corr), ("rig-response-code", "200")],
        b"",
    );
    assert_eq!(again.status, 202);
    // A status that is not a number: RIG's 400.
    let bad = common::request(
        api_port,
        "POST",
        "/v3/responses",
        &[("rig-correlation", &corr), ("rig-response-code", "abc201")],
        b"",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.text(),
        r#"Failed to parse request body: {:error, {:not_an_integer, "abc201"}}"#
    );
    // Any status but 202 is the answer.
    c.send(b"POST /sync HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(c.read(false).unwrap().text(), "answered at once");
    // Nobody answers: 504 with an empty body after the timeout.
    let t = Instant::now();
    c.send(b"POST /job HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n");
    let r = c.read(false).unwrap();
    assert_eq!((r.status, r.body.len()), (504, 0));
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    let metrics = common::request(api_port, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("corebridge_proxy_replies_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corebridge_proxy_replies_total{outcome=\"dropped\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corebridge_proxy_pending_requests 0"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "rig_proxy_requests_total{method=\"POST\",path=\"svc/a\",target=\"http\",response_from=\"http_async\",status=\"response_timeout\"} 1"
    ), "{metrics}");
}

#[test]
fn metrics_and_console_request_log() {
    let up = Upstream::start(|_| ok("x"));
    let srv = start(
        &json!([api(
            "svc",
            up.port,
            json!([{"id": "g", "method": "GET", "path_regex": "/g/.*"}])
        )]),
        &[("REQUEST_LOG", "console")],
    );
    let mut c = Client::connect(srv.inbound);
    for i in 0..3 {
        assert_eq!(c.get(&format!("/g/{i}"), "").status, 200);
    }
    assert_eq!(c.get("/nothing/here", "").status, 404);
    let m = common::request(srv.api, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("rig_proxy_requests_total{method=\"GET\",path=\"svc/g\",target=\"http\",response_from=\"http\",status=\"ok\"} 3"), "{m}");
    assert!(m.contains("rig_proxy_requests_total{method=\"GET\",path=\"N/A\",target=\"N/A\",response_from=\"N/A\",status=\"not_found\"} 1"), "{m}");
    assert!(!m.contains("/g/1"), "raw paths never become labels");
    assert!(
        m.contains("corebridge_proxy_upstream_latency_seconds_count 3"),
        "{m}"
    );
    wait_until("the console log", Duration::from_secs(3), || {
        srv.stdout()
            .matches("CALL: [g] GET /g/.* => 127.0.0.1")
            .count()
            == 3
    });
}

#[test]
fn bad_proxy_config_is_reported_whole_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corebridge"))
        .arg("--check-config")
        .env_clear()
        .env(
            "PROXY_CONFIG_FILE",
            r#"[{"id":"a"},{"id":"b","name":"b","proxy":{"target_url":"h","port":1},"version_data":{"default":{"endpoints":[{"id":"e","method":"GET","path_regex":"/("}]}}}]"#,
        )
        .env("REQUEST_LOG", "console,paper")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("definition #0") && err.contains("name must be string"),
        "{err}"
    );
    assert!(
        err.contains("definition #1") && err.contains("regular expression"),
        "{err}"
    );
    assert!(err.contains("paper"), "{err}");
}

/// A TLS upstream: Python's HTTP server behind `ssl`, with a certificate for `localhost` made
/// by openssl for this test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream, its port and the directory of its certificates (`ca.pem` signed its own).
fn tls_upstream() -> (KillOnDrop, u16, std::path::PathBuf) {
    let dir = common::pki::pki(&["up"]);
    let (cert, key) = (dir.join("up.pem"), dir.join("up.key"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        r#"
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = ("tls ok " + self.headers.get("host", "")).encode()
        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", {port}), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain({cert:?}, {key:?})
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        cert = cert.display().to_string(),
        key = key.display().to_string()
    );
    let child = KillOnDrop(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .spawn()
            .unwrap(),
    );
    wait_until("the TLS upstream", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, port, dir)
}

#[test]
fn https_upstreams_are_verified_against_the_configured_cas() {
    let (child, port, dir) = tls_upstream();
    let ca = dir.join("ca.pem");
    let def = json!([{"id": "tls", "name": "tls", "proxy": {"target_url": "https://localhost", "port": port},
                      "version_data": {"default": {"endpoints": [{"id": "g", "method": "GET", "path_regex": "/tls"}]}}}]);
    let trusted = start(&def, &[("CB_PROXY_CA_CERTFILE", ca.to_str().unwrap())]);
    let mut c = Client::connect(trusted.inbound);
    let r = c.get("/tls", "");
    assert_eq!(
        (r.status, r.text()),
        (200, format!("tls ok localhost:{port}"))
    );
    assert_eq!(
        c.get("/tls", "").status,
        200,
        "the TLS connection is reused"
    );
    // Without the CA the certificate does not verify: 502, nothing sent.
    let untrusted = start(&def, &[]);
    assert_eq!(
        Client::connect(untrusted.inbound).get("/tls", "").status,
        502
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_lets_a_proxied_request_in_flight_finish() {
    let up = Upstream::start(|_| {
        Act::Trickle(vec![(
            Duration::from_millis(1500),
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate".to_vec(),
        )])
    });
    let apis = json!([api(
        "slow",
        up.port,
        json!([{"id": "e", "method": "GET", "path_regex": "/slow"}])
    )]);
    let mut srv = start(&apis, &[]);
    let port = srv.inbound;
    let client = std::thread::spawn(move || common::request(port, "GET", "/slow", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let status = srv.terminate(Duration::from_secs(10)).expect("exited");
    let r = client.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "late"));
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "exited before the answer: {:?}",
        t0.elapsed()
    );
}
