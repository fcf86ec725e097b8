//! The systemd notify protocol, against a datagram socket standing in for systemd: READY=1
//! once health answers, WATCHDOG=1 at half the configured interval, no pings while a shard's
//! executor is stalled, STOPPING=1 on SIGTERM.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn recv(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_watchdog_stall_and_stopping() {
    let dir = std::env::temp_dir().join(format!(
        "cb-notify-{}-{:x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut srv = Server::start_with(
        2,
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("CB_TEST_HOOKS", "1"),
        ],
    );
    let ready = recv(&sock, Duration::from_secs(10)).expect("READY=1");
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=2 shards"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", srv.pid())), "{ready}");
    // Health answered before READY was sent (the listeners were bound first).
    assert_eq!(request(srv.api, "GET", "/health", &[], b"").status, 200);

    // WATCHDOG=1 every 200 ms (half of 400 ms).
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_secs(2) {
        if let Some(m) = recv(&sock, Duration::from_millis(500)) {
            pings += usize::from(m == "WATCHDOG=1");
        }
    }
    assert!((6..=12).contains(&pings), "{pings} pings in 2 s");

    // One shard stalls for 3 s: the pings stop while it does, and come back.
    let api = srv.api;
    let staller =
        std::thread::spawn(move || request(api, "POST", "/v3/debug/stall?ms=3000", &[], b""));
    std::thread::sleep(Duration::from_millis(1500));
    // Drain what was sent before the stall was noticed (within a second of it).
    while recv(&sock, Duration::from_millis(10)).is_some() {}
    let quiet_from = Instant::now();
    let mut during = Vec::new();
    while quiet_from.elapsed() < Duration::from_millis(1000) {
        if let Some(m) = recv(&sock, Duration::from_millis(200)) {
            during.push(m);
        }
    }
    assert!(
        !during.iter().any(|m| m == "WATCHDOG=1"),
        "pinged while a shard was stalled: {during:?}"
    );
    assert_eq!(staller.join().unwrap().status, 200);
    let back =
        (0..20).any(|_| recv(&sock, Duration::from_millis(500)).as_deref() == Some("WATCHDOG=1"));
    assert!(back, "the pings did not come back after the stall");

    // SIGTERM: STOPPING=1 before the process exits.
    let status = srv.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut rest = Vec::new();
    while let Some(m) = recv(&sock, Duration::from_millis(200)) {
        rest.push(m);
    }
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_the_hook_there_is_no_stall_endpoint() {
    let srv = Server::start();
    assert_eq!(
        request(srv.api, "POST", "/v3/debug/stall", &[], b"").status,
        404
    );
}
