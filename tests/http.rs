//! HTTP/1.1 on the wire: keep-alive, pipelining, chunked bodies, and every kind of bad input
//! answered with the right status without harming other connections.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn keep_alive_and_pipelining() {
    let srv = Server::start();
    let mut s = connect(srv.inbound);
    // Three requests in one write; answers come back in order on the same connection.
    s.write_all(
        b"GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /nope HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let a = read_response(&mut r);
    let b = read_response(&mut r);
    let c = read_response(&mut r);
    assert_eq!((a.status, a.text().as_str()), (200, "OK"));
    assert_eq!(
        (b.status, b.text().as_str()),
        (404, r#"{"message":"Not Found"}"#)
    );
    assert_eq!(c.status, 200);
    // And the connection is still usable.
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut r).status,
        404,
        "/health is on the internal port only"
    );
}

#[test]
fn http10_closes_unless_keep_alive() {
    let srv = Server::start();
    let mut s = connect(srv.inbound);
    s.write_all(b"GET /_rig/health HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

#[test]
fn chunked_request_body_publishes() {
    let srv = Server::start();
    let mut c = SseClient::connect(srv.inbound, Some(r#"[{"eventType":"chunky"}]"#));
    let body = json!({"specversion":"1.0","type":"chunky","source":"s","id":"1","data":{"x":1}})
        .to_string();
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let r = raw(srv.inbound, req.as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(c.next_event()["data"]["x"], 1);
}

#[test]
fn expect_continue_is_honoured() {
    let srv = Server::start();
    let mut s = connect(srv.api);
    let body = ce("x", json!({})).to_string();
    write!(
        s,
        "POST /v3/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).status, 100);
    s.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).status, 202);
}

#[test]
fn bad_input_gets_the_right_status() {
    let srv = Server::start_with(
        2,
        "[http]\nmax_head_bytes = 4096\nmax_uri_bytes = 1024\nmax_headers = 16\nmax_body_bytes = 2048\n",
        &[],
    );
    let p = srv.inbound;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n".to_vec(), 400),
        (b"GET /_rig/health HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (b"GET /_rig/health HTTP/2.0\r\nhost: x\r\n\r\n".to_vec(), 505),
        (format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(2000)).into_bytes(), 414),
        (format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(5000)).into_bytes(), 431),
        (
            format!(
                "GET / HTTP/1.1\r\nhost: x\r\n{}\r\n",
                (0..20).map(|i| format!("x-{i}: 1\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        (b"POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 999999\r\n\r\n".to_vec(), 413),
        (
            format!(
                "POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                3000,
                "a".repeat(3000)
            )
            .into_bytes(),
            413,
        ),
        (b"POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(), 400),
        (b"POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), 501),
        (b"DELETE /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec(), 405),
        (b"POST /_rig/v1/connection/sse HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_vec(), 405),
    ];
    // A healthy stream on the side must be untouched by all of it.
    let mut bystander = SseClient::connect(p, Some(r#"[{"eventType":"still"}]"#));
    for (req, want) in &cases {
        let r = raw(p, req);
        assert_eq!(
            r.status,
            *want,
            "request {:?} -> {} {}",
            String::from_utf8_lossy(&req[..req.len().min(80)]),
            r.status,
            r.text()
        );
        if *want != 405 {
            assert_eq!(r.header("connection"), Some("close"));
            assert!(!r.text().is_empty(), "errors carry a message");
        }
    }
    let r = request(p, "DELETE", "/_rig/v1/events", &[], b"");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(publish(p, &ce("still", json!({"ok": true}))).status, 202);
    assert_eq!(bystander.next_event()["data"]["ok"], true);
}

#[test]
fn slow_loris_gets_408() {
    let srv = Server::start_with(2, "[http]\nheader_timeout_ms = 300\n", &[]);
    let mut s = connect(srv.inbound);
    let t = Instant::now();
    s.write_all(b"GET /_rig/health HTTP/1.1\r\nhost:").unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A request that trickles in (a byte at a time, each well inside the old per-read timeout)
/// is cut when its total deadline passes: the head counted from its first byte, the body from
/// the end of the head. 500 such connections at once, while normal requests are served.
#[test]
fn trickling_requests_are_cut_at_their_deadline() {
    const DEADLINE_MS: u64 = 1500;
    let srv = Server::start_with(
        2,
        &format!("[http]\nheader_timeout_ms = {DEADLINE_MS}\nbody_timeout_ms = {DEADLINE_MS}\n"),
        &[],
    );
    struct Slow {
        s: TcpStream,
        closed: Option<Duration>,
        got_408: bool,
    }
    let t0 = Instant::now();
    let mut slow: Vec<Slow> = (0..500)
        .map(|i| {
            let mut s = connect(srv.inbound);
            // Half trickle a head, half a body after a complete head.
            let first: &[u8] = if i % 2 == 0 {
                b"GET /_rig/health HTTP/1.1\r\nx-slow: "
            } else {
                b"POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 1000\r\n\r\n{"
            };
            s.write_all(first).unwrap();
            s.set_nonblocking(true).unwrap();
            Slow {
                s,
                closed: None,
                got_408: false,
            }
        })
        .collect();
    let mut served = 0;
    while t0.elapsed() < Duration::from_secs(10) && slow.iter().any(|c| c.closed.is_none()) {
        std::thread::sleep(Duration::from_millis(250));
        for c in slow.iter_mut().filter(|c| c.closed.is_none()) {
            let mut buf = [0u8; 256];
            match c.s.read(&mut buf) {
                Ok(0) => c.closed = Some(t0.elapsed()),
                Ok(n) => {
                    c.got_408 |= buf[..n].starts_with(b"HTTP/1.1 408");
                    c.closed = Some(t0.elapsed());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if c.s.write_all(b"a").is_err() {
                        c.closed = Some(t0.elapsed());
                    }
                }
                Err(_) => c.closed = Some(t0.elapsed()),
            }
        }
        // Everyone else is served meanwhile.
        let r = request(srv.inbound, "GET", "/_rig/health", &[], b"");
        assert_eq!(r.status, 200);
        served += 1;
    }
    let open = slow.iter().filter(|c| c.closed.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} trickling connections still open after 10 s"
    );
    let earliest = slow.iter().filter_map(|c| c.closed).min().unwrap();
    let latest = slow.iter().filter_map(|c| c.closed).max().unwrap();
    assert!(
        earliest >= Duration::from_millis(DEADLINE_MS - 100),
        "cut before the deadline: {earliest:?}"
    );
    assert!(latest < Duration::from_secs(6), "last cut at {latest:?}");
    assert!(
        slow.iter().filter(|c| c.got_408).count() >= 400,
        "408s were sent"
    );
    assert!(served >= 3);
}

/// The internal port is not for browsers: none of its answers, errors included, carries CORS
/// headers; the public port's errors do (RIG #344).
#[test]
fn internal_port_sends_no_cors_headers() {
    let srv = Server::start();
    let bad = b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n";
    for (port, public) in [(srv.api, false), (srv.inbound, true)] {
        let r = raw(port, bad);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(
            r.header("access-control-allow-origin").is_some(),
            public,
            "port {port}: {:?}",
            r.headers
        );
    }
    for (method, path) in [("GET", "/nope"), ("GET", "/health"), ("PUT", "/metrics")] {
        let r = request(
            srv.api,
            method,
            path,
            &[("origin", "https://app.example")],
            b"",
        );
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-")),
            "{method} {path}: {:?}",
            r.headers
        );
    }
}

#[test]
fn internal_api_health_and_404() {
    let srv = Server::start();
    let r = request(srv.api, "GET", "/health", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    let r = request(srv.api, "GET", "/v3/nothing", &[], b"");
    assert_eq!(r.status, 404);
    let r = request(srv.api, "GET", "/v3/messages", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn preflight_for_events() {
    let srv = Server::start_with(2, "", &[("CORS", "https://app.example")]);
    let r = request(srv.inbound, "OPTIONS", "/_rig/v1/events", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    let r = publish(srv.inbound, &ce("x", json!({})));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}
