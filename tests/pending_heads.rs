//! `http.max_pending_heads`: connections that connect and never speak are capped per node, so
//! they cannot take every file descriptor; the node keeps answering the others. Its own test
//! binary: it counts a node's connections, which other tests' load would blur.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn connections_that_never_speak_are_capped_and_the_node_stays_responsive() {
    use std::io::{Read, Write};
    let srv = Server::start_with(1, "[http]\nmax_pending_heads = 5\n", &[]);
    // Five connections that send nothing hold the node's budget...
    let silent: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap())
        .collect();
    // ...so, once the node has taken them all, the next connection is answered 503 at once
    // (until then, health answers 200: the silent ones are not all accepted yet).
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = request(srv.inbound, "GET", "/_rig/health", &[], b"");
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "never refused: the cap does not hold"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(r.text().contains("max_pending_heads"), "{}", r.text());
    // A connection that has spoken no longer counts: one silent client speaks, and frees a place.
    let mut first = silent.into_iter().next().unwrap();
    first
        .write_all(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut got = [0u8; 12];
    first.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200");
    let r = request(srv.inbound, "GET", "/_rig/health", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = request(srv.api, "GET", "/metrics", &[], b"").text();
    let refused: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("corebridge_pending_heads_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{m}");
    drop(first);
}
