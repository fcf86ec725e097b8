//! A client that stops reading is closed by the slow-consumer policy and counted, while the
//! others keep receiving every event; the server's memory does not grow with its backlog.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn metric(srv: &Server, line_prefix: &str) -> u64 {
    let text = request(srv.api, "GET", "/metrics", &[], b"").text();
    metric_value(&text, line_prefix).unwrap_or_else(|| panic!("no {line_prefix} in\n{text}")) as u64
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn corebridge_pid(port: u16) -> u32 {
    // The harness's child is the only corebridge listening on this port.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ss -ltnpH 'sport = :{port}' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// An SSE client with a tiny receive buffer that never reads after its request.
fn stalled_client(port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: TcpStream = s.into();
    write!(
        s,
        "GET /_rig/v1/connection/sse?subscriptions={} HTTP/1.1\r\nhost: x\r\n\r\n",
        enc(r#"[{"eventType":"load"}]"#)
    )
    .unwrap();
    s
}

#[test]
fn stalled_reader_is_closed_and_others_keep_receiving() {
    let srv = Server::start_with(
        2,
        "[sessions]\nqueue_events = 64\nqueue_bytes = 262144\n",
        &[],
    );
    let stalled = stalled_client(srv.inbound);
    let mut readers: Vec<SseClient> = (0..4)
        .map(|_| SseClient::connect(srv.inbound, Some(r#"[{"eventType":"load"}]"#)))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pid = corebridge_pid(srv.inbound);
    let rss_before = rss_kib(pid);

    // More than the kernel send buffer can absorb (tcp_wmem max is 4 MiB here).
    let payload = "x".repeat(12_000);
    let total = 600;
    // Readers drain concurrently while the publisher pushes ~7 MB per client.
    let handles: Vec<_> = readers
        .drain(..)
        .map(|mut c| {
            std::thread::spawn(move || {
                for n in 0..total {
                    let e = c.next_event();
                    assert_eq!(
                        e["data"]["n"], n,
                        "a healthy reader lost or reordered events"
                    );
                }
            })
        })
        .collect();
    for n in 0..total {
        let r = publish(srv.inbound, &ce("load", json!({"n": n, "pad": payload})));
        assert_eq!(r.status, 202);
    }
    for h in handles {
        h.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &srv,
        "corebridge_slow_consumer_closes_total{transport=\"sse\"}",
    ) < 1
    {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metric(
            &srv,
            "corebridge_events_dropped_total{transport=\"sse\",reason=\"slow_consumer\"}"
        ) >= 1
    );
    // The stalled client's backlog is bounded by the queue, not by what was published.
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    // The healthy readers hung up when their threads ended; the shard notices a client that
    // left at its next look at the sockets (every 100 ms), not at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while metric(&srv, "corebridge_connections{transport=\"sse\"}") != 0 {
        assert!(
            Instant::now() < deadline,
            "closed connections were never removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stalled);
}

#[test]
fn a_capped_send_buffer_meets_a_stalled_client_early() {
    // With the kernel's autotuning a client that stops reading absorbs up to 4 MiB (tcp_wmem's
    // maximum here) before its queue even starts to fill: ~340 of these events. Capped at
    // 32 KiB (64 KiB in the kernel) + a 64 KiB queue, it is closed after a dozen or so.
    let srv = Server::start_with(
        2,
        "[sessions]\nqueue_events = 64\nqueue_bytes = 65536\nsocket_send_buffer = 32768\n",
        &[],
    );
    let stalled = stalled_client(srv.inbound);
    std::thread::sleep(Duration::from_millis(100));
    let payload = "x".repeat(12_000);
    let closes = || {
        metric(
            &srv,
            "corebridge_slow_consumer_closes_total{transport=\"sse\"}",
        )
    };
    let mut published = 0;
    while closes() == 0 {
        assert!(
            published < 100,
            "the stalled client was not closed after {published} events of 12 KB"
        );
        let r = publish(
            srv.inbound,
            &ce("load", json!({"n": published, "pad": payload})),
        );
        assert_eq!(r.status, 202);
        published += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(stalled);
}

#[test]
fn paused_reader_within_its_queue_gets_every_event_intact() {
    // Both write paths: batches through io_uring (the default) and one sendmsg per write.
    for batched in ["true", "false"] {
        paused_reader_gets_every_event(batched);
    }
}

fn paused_reader_gets_every_event(batched: &str) {
    let tuning = format!("batched_sends = {batched}\n[sessions]\nqueue_bytes = 16777216\n");
    // One shard, so its passes hold all four streams: a batch needs several.
    let srv = Server::start_with(1, &tuning, &[]);
    let mut paused: Vec<SseClient> = (0..4)
        .map(|_| SseClient::over(small_window(srv.inbound), Some(r#"[{"eventType":"load"}]"#)))
        .collect();
    // ~6 MB: more than the server's socket buffer takes (it grows to a few MiB), less than
    // the queue bound, so the server's writes stop mid-frame and resume; nothing is dropped.
    let total = 300;
    for n in 0..total {
        let pad = format!("{n:04}").repeat(5000);
        let r = publish(srv.inbound, &ce("load", json!({"n": n, "pad": pad})));
        assert_eq!(r.status, 202);
    }
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut paused {
        for n in 0..total {
            let e = c.next_event();
            assert_eq!(e["data"]["n"], n, "lost or reordered");
            assert_eq!(
                e["data"]["pad"],
                format!("{n:04}").repeat(5000),
                "corrupted"
            );
        }
    }
    assert_eq!(
        metric(
            &srv,
            "corebridge_slow_consumer_closes_total{transport=\"sse\"}"
        ),
        0
    );
    // The path under test was the one taken.
    assert_eq!(
        metric(&srv, "corebridge_writer_batched_shards"),
        u64::from(batched == "true")
    );
}
