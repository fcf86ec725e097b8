//! SIGTERM (systemd stop): streams end cleanly so clients reconnect elsewhere, and the
//! process exits 0 within the drain time.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn sigterm_closes_streams_and_exits_cleanly() {
    let mut srv = Server::start();
    let mut sse = SseClient::connect(srv.inbound, None);
    // A second stream read raw, to see the retry hint (a field without data dispatches no
    // message).
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(
        &mut raw,
        b"GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .unwrap();
    let (mut ws, _) = tungstenite::connect(format!(
        "ws://127.0.0.1:{}/_rig/v1/connection/ws",
        srv.inbound
    ))
    .unwrap();
    for _ in 0..2 {
        ws.read().unwrap(); // rig.connection.create, rig.subscriptions_set
    }
    let status = srv
        .terminate(Duration::from_secs(10))
        .expect("exit within the drain time");
    assert!(status.success(), "{status:?}");
    // SSE: the chunked stream was terminated (last chunk), not cut.
    assert!(sse.try_next().is_none());
    assert!(sse.ended_cleanly, "the SSE stream was cut instead of ended");
    // ... after telling EventSource to come back in a second (elsewhere: this node is gone).
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("retry: 1000\n\n"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
    // WebSocket: close 1001 "going away".
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1001);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}
