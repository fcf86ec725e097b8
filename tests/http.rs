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
