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

/// `http.max_connections_per_address`: a client address holds at most that many connections
/// (streams included, until they close); other addresses are not affected.
#[test]
fn connections_per_client_address_are_capped() {
    use std::net::{SocketAddr, TcpStream};
    let srv = Server::start_with(2, "[http]\nmax_connections_per_address = 3\n", &[]);
    let from = |ip: &str| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&format!("{ip}:0").parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.connect(&SocketAddr::from(([127, 0, 0, 1], srv.inbound)).into())
            .unwrap();
        TcpStream::from(s)
    };
    let path = "/_rig/v1/connection/sse";
    let streams: Vec<SseClient> = (0..3)
        .map(|_| SseClient::at(from("127.0.0.1"), path))
        .collect();
    assert!(streams.iter().all(|s| s.head.status == 200));
    // The fourth from the same address: refused, saying why.
    let mut s = from("127.0.0.1");
    let r = {
        use std::io::Write;
        s.write_all(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        read_response(&mut std::io::BufReader::new(s))
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("max_connections_per_address"),
        "{}",
        r.text()
    );
    // Another address is not affected.
    let other = SseClient::at(from("127.0.0.2"), path);
    assert_eq!(other.head.status, 200);
    // A stream that closes gives its place back.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = SseClient::at(from("127.0.0.1"), path);
        if c.head.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed streams' places never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // At least the one above (the retries while the closes were being noticed count too).
    let m = request(srv.api, "GET", "/metrics", &[], b"").text();
    let refused: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("corebridge_address_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{m}");
}
