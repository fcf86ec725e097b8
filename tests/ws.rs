//! WebSocket end to end (rig-contract.md 1.2-1.5): a tungstenite client and Python's
//! `websockets`, RIG's set-up events, one text frame per event, subscription replacement,
//! control frames, RIG's close frames, handshake refusals, server pings, fan-out across shards.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

const TWO_WAY: &str = "This WebSocket endpoint cannot be used for two-way communication.";

fn ws_url(port: u16, subscriptions: Option<&str>) -> String {
    match subscriptions {
        Some(s) => format!(
            "ws://127.0.0.1:{port}/_rig/v1/connection/ws?subscriptions={}",
            enc(s)
        ),
        None => format!("ws://127.0.0.1:{port}/_rig/v1/connection/ws"),
    }
}

fn set_timeout(ws: &mut Ws, d: Duration) {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.set_read_timeout(Some(d)).unwrap(),
        _ => unreachable!("plain ws:// only"),
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io)
        if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Opens a WebSocket (asserting the 101) with a 5 s read timeout.
fn open(port: u16, subscriptions: Option<&str>) -> Ws {
    let (mut ws, resp) = tungstenite::connect(ws_url(port, subscriptions)).expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    set_timeout(&mut ws, Duration::from_secs(5));
    ws
}

/// The next frame, or None when nothing arrives within `within`.
fn next_within(ws: &mut Ws, within: Duration) -> Option<Message> {
    set_timeout(ws, within);
    let r = ws.read();
    set_timeout(ws, Duration::from_secs(5));
    match r {
        Ok(m) => Some(m),
        Err(e) if is_timeout(&e) => None,
        Err(e) => panic!("websocket read failed: {e:?}"),
    }
}

/// The next text frame as JSON. Server pings (allowed at any time) are skipped; anything else
/// (binary, close, timeout) fails the test with what arrived instead.
fn next_text(ws: &mut Ws) -> Value {
    for _ in 0..8 {
        match next_within(ws, Duration::from_secs(5)) {
            Some(Message::Text(t)) => {
                return serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {t}"))
            }
            Some(Message::Ping(_)) => continue,
            Some(other) => panic!("expected a text frame, got {other:?}"),
            None => panic!("expected a text frame, got nothing within 5 s"),
        }
    }
    panic!("only pings arrived");
}

/// Reads frames until a close frame (at most a few, within a few seconds) and returns it.
fn next_close(ws: &mut Ws) -> CloseFrame {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..8 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no close frame within 5 s");
        match next_within(ws, left) {
            Some(Message::Close(Some(f))) => return f,
            Some(Message::Close(None)) => panic!("close frame without a code"),
            Some(Message::Ping(_)) => continue,
            Some(other) => panic!("expected a close frame, got {other:?}"),
            None => panic!("no close frame within 5 s"),
        }
    }
    panic!("no close frame among the first frames");
}

/// A connected client that has read RIG's two set-up events.
struct Client {
    ws: Ws,
    token: String,
    /// `data` of the initial `rig.subscriptions_set`.
    subs: Value,
}

impl Client {
    fn connect(port: u16, subscriptions: Option<&str>) -> Client {
        let mut ws = open(port, subscriptions);
        let create = next_text(&mut ws);
        assert_eq!(create["type"], "rig.connection.create", "{create}");
        let token = create["data"]["connection_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no connection_token: {create}"))
            .to_string();
        let set = next_text(&mut ws);
        assert_eq!(set["type"], "rig.subscriptions_set", "{set}");
        Client {
            ws,
            token,
            subs: set["data"].clone(),
        }
    }

    fn shard(&self) -> u16 {
        token_shard(&self.token)
    }
}

#[test]
fn first_frames_are_connection_create_then_subscriptions_set() {
    let srv = Server::start();
    let mut ws = open(
        srv.inbound,
        Some(r#"[{"eventType":"greeting"},{"eventType":"greeting","oneOf":[{"name":"joe"}]}]"#),
    );
    let create = next_text(&mut ws);
    assert_eq!(create["type"], "rig.connection.create");
    assert_eq!(create["specversion"], "0.2");
    assert_eq!(create["source"], "rig");
    assert!(
        create["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{create}"
    );
    let token = create["data"]["connection_token"].as_str().unwrap();
    assert!(!token.is_empty());
    assert!(
        (token_shard(token) as usize) < 2,
        "token names a shard of this server"
    );
    let set = next_text(&mut ws);
    assert_eq!(set["type"], "rig.subscriptions_set");
    assert_eq!(set["specversion"], "0.2");
    assert_eq!(set["source"], "rig");
    assert_eq!(
        set["data"],
        json!([
            {"eventType": "greeting", "oneOf": []},
            {"eventType": "greeting", "oneOf": [{"name": "joe"}]}
        ])
    );
    // Nothing else is sent unasked.
    assert_eq!(next_within(&mut ws, Duration::from_millis(300)), None);

    // Without the query parameter: no subscriptions.
    let c = Client::connect(srv.inbound, None);
    assert_eq!(c.subs, json!([]));
    assert_ne!(c.token, token, "every connection gets its own token");
}

#[test]
fn published_event_arrives_as_one_text_frame() {
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, Some(r#"[{"eventType":"greeting"}]"#));
    let ev = json!({"specversion":"1.0","type":"greeting","source":"/test","id":"e-1",
                    "data":{"hello":"world"},"ext":"kept"});
    let r = publish(srv.inbound, &ev);
    assert_eq!(r.status, 202, "{}", r.text());
    match next_within(&mut c.ws, Duration::from_secs(5)) {
        Some(Message::Text(t)) => {
            let got: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(got, ev);
        }
        other => panic!("expected one text frame, got {other:?}"),
    }
    // Events of other types are not delivered.
    assert_eq!(publish(srv.inbound, &ce("other", json!({}))).status, 202);
    assert_eq!(next_within(&mut c.ws, Duration::from_millis(300)), None);
}

#[test]
fn connection_stays_open_across_events() {
    // Events arriving while the server also waits for client frames, one at a time.
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, Some(r#"[{"eventType":"seq"}]"#));
    for n in 0..5 {
        assert_eq!(
            publish(srv.inbound, &ce("seq", json!({"n": n}))).status,
            202
        );
        let e = next_text(&mut c.ws);
        assert_eq!(e["data"]["n"], n, "{e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn put_subscriptions_replaces_them_and_announces_the_new_set() {
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, Some(r#"[{"eventType":"old"}]"#));
    assert_eq!(c.subs, json!([{"eventType": "old", "oneOf": []}]));
    let body = json!({"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "ann"}]}]});
    let r = request(
        srv.inbound,
        "PUT",
        &format!("/_rig/v1/connection/ws/{}/subscriptions", c.token),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let set = next_text(&mut c.ws);
    assert_eq!(set["type"], "rig.subscriptions_set");
    assert_eq!(
        set["data"],
        json!([{"eventType": "greeting", "oneOf": [{"name": "ann"}]}])
    );
    // The old type no longer arrives; only matching greetings do, in order.
    let events = [
        ce("old", json!({"n": 1})),
        ce("greeting", json!({"n": 2, "name": "joe"})),
        ce("greeting", json!({"n": 3, "name": "ann"})),
        ce("greeting", json!({"n": 4, "name": "ann"})),
    ];
    for e in &events {
        assert_eq!(publish(srv.inbound, e).status, 202);
    }
    assert_eq!(next_text(&mut c.ws), events[2]);
    assert_eq!(next_text(&mut c.ws), events[3]);
    assert_eq!(next_within(&mut c.ws, Duration::from_millis(300)), None);
}

#[test]
fn client_ping_gets_pong_with_the_same_payload() {
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, None);
    for payload in [&b"hello ping"[..], &b""[..], &[7u8; 125][..]] {
        c.ws.send(Message::Ping(payload.to_vec().into())).unwrap();
        match next_within(&mut c.ws, Duration::from_secs(5)) {
            Some(Message::Pong(p)) => assert_eq!(&p[..], payload),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

#[test]
fn pings_interleaved_with_events_all_get_pongs() {
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, Some(r#"[{"eventType":"mix"}]"#));
    for n in 0..10u8 {
        if let Err(e) = c.ws.send(Message::Ping(vec![b'p', n].into())) {
            // Show why the server dropped us rather than just the broken pipe.
            set_timeout(&mut c.ws, Duration::from_millis(500));
            let mut sent = Vec::new();
            while let (true, Ok(m)) = (sent.len() < 30, c.ws.read()) {
                sent.push(m);
            }
            panic!("ping {n} not sent ({e}); the server had sent {sent:?}");
        }
        assert_eq!(
            publish(srv.inbound, &ce("mix", json!({"n": n}))).status,
            202
        );
    }
    let (mut pongs, mut events) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        match next_within(&mut c.ws, Duration::from_secs(5)) {
            Some(Message::Pong(p)) => pongs.push(p.to_vec()),
            Some(Message::Text(t)) => {
                let e: Value = serde_json::from_str(t.as_str()).unwrap();
                events.push(e["data"]["n"].as_i64().unwrap());
            }
            other => panic!("after {pongs:?} / {events:?} got {other:?}"),
        }
    }
    assert_eq!(pongs, (0..10u8).map(|n| vec![b'p', n]).collect::<Vec<_>>());
    assert_eq!(events, (0..10).collect::<Vec<i64>>());
}

#[test]
fn client_data_frame_gets_rigs_close() {
    let srv = Server::start();
    let mut c = Client::connect(srv.inbound, None);
    c.ws.send(Message::text("hello")).unwrap();
    let f = next_close(&mut c.ws);
    assert_eq!(u16::from(f.code), 1000);
    assert_eq!(f.reason.as_str(), TWO_WAY);

    let mut c = Client::connect(srv.inbound, None);
    c.ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    let f = next_close(&mut c.ws);
    assert_eq!((u16::from(f.code), f.reason.as_str()), (1000, TWO_WAY));
}

#[test]
fn bad_subscriptions_upgrade_then_close_1000() {
    let srv = Server::start();
    // The handshake itself succeeds (101 asserted in `open`); then RIG's refusal.
    let mut ws = open(srv.inbound, Some("[{nope"));
    let f = next_close(&mut ws);
    assert_eq!(u16::from(f.code), 1000);
    assert!(
        f.reason.starts_with("Failed to decode subscription list"),
        "{:?}",
        f.reason
    );
}

#[test]
fn handshake_refusals() {
    let srv = Server::start();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = |version: &str| {
        format!(
            "GET /_rig/v1/connection/ws HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-key: {key}\r\nsec-websocket-version: {version}\r\n\r\n"
        )
    };
    let r = raw(srv.inbound, req("8").as_bytes());
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    // A plain GET without upgrade headers.
    let r = request(srv.inbound, "GET", "/_rig/v1/connection/ws", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "request is not a websocket upgrade");

    // Control: the same raw request with version 13 upgrades with RFC 6455's accept key.
    let mut s = TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, req("13").as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols\r\n");
    let mut accept = None;
    for _ in 0..20 {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(v.trim().to_string());
            }
        }
    }
    assert_eq!(accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

#[test]
fn server_pings_an_idle_connection() {
    let srv = Server::start_with(2, "[sessions]\nheartbeat_interval_ms = 200\n", &[]);
    let mut c = Client::connect(srv.inbound, Some(r#"[{"eventType":"after"}]"#));
    // An idle connection gets only pings: the first frame within 2 s must be one.
    match next_within(&mut c.ws, Duration::from_secs(2)) {
        Some(Message::Ping(p)) => assert!(p.is_empty(), "server ping payload {p:?}"),
        Some(other) => panic!("idle connection got {other:?}"),
        None => panic!("no ping within 2 s with heartbeat_interval_ms = 200"),
    }
    // tungstenite answered with a pong; the connection is still usable.
    let ev = ce("after", json!({"n": 1}));
    assert_eq!(publish(srv.inbound, &ev).status, 202);
    assert_eq!(next_text(&mut c.ws), ev);
}

#[test]
fn fan_out_to_many_clients_on_every_shard() {
    let shards = 4;
    let srv = Server::start_with(shards, "", &[]);
    let mut clients: Vec<Client> = (0..40)
        .map(|_| Client::connect(srv.inbound, Some(r#"[{"eventType":"fan"}]"#)))
        .collect();
    let mut per_shard = vec![0usize; shards];
    for c in &clients {
        per_shard[c.shard() as usize] += 1;
    }
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() > 1,
        "clients per shard: {per_shard:?}"
    );
    let events: Vec<Value> = (0..3).map(|n| ce("fan", json!({"n": n}))).collect();
    for e in &events {
        assert_eq!(publish(srv.inbound, e).status, 202);
    }
    for c in clients.iter_mut() {
        for e in &events {
            assert_eq!(&next_text(&mut c.ws), e, "client on shard {}", c.shard());
        }
    }
}

/// Makes `import websockets` work, installing it with pip if needed; fails (never skips) if
/// that is impossible.
fn ensure_python_websockets() {
    let ok = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if ok(&["-c", "import websockets"]) {
        return;
    }
    assert!(
        ok(&["-m", "pip", "install", "--quiet", "websockets"]),
        "python3 -m pip install websockets failed"
    );
    assert!(
        ok(&["-c", "import websockets"]),
        "websockets installed but not importable"
    );
}

const PY_CLIENT: &str = r#"
import asyncio, json, sys
import websockets

async def main(url):
    async with websockets.connect(url) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        second = json.loads(await asyncio.wait_for(ws.recv(), 5))
        print("READY", first["type"], second["type"], flush=True)
        headers = getattr(getattr(ws, "response", None), "headers", None) or getattr(ws, "response_headers", {})
        print("EXT", headers.get("Sec-WebSocket-Extensions"), flush=True)
        third = await asyncio.wait_for(ws.recv(), 10)
        print("EVENT", third, flush=True)

asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
"#;

#[test]
fn python_websockets_client_receives_an_event() {
    ensure_python_websockets();
    let srv = Server::start();
    let url = ws_url(srv.inbound, Some(r#"[{"eventType":"py"}]"#));
    let mut child = Command::new("python3")
        .args(["-c", PY_CLIENT, &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<(String, Value), String> {
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("no READY line: {e}"))?;
        let ext = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("no EXT line: {e}"))?;
        // websockets offers permessage-deflate by default: negotiated, and a large event
        // arrives compressed and whole.
        if ext != "EXT permessage-deflate; server_no_context_takeover" {
            return Err(format!("extension not negotiated: {ext}"));
        }
        let ev = ce(
            "py",
            json!({"from": "rust", "n": 42, "pad": "abc ".repeat(500)}),
        );
        let r = publish(srv.inbound, &ev);
        if r.status != 202 {
            return Err(format!("publish: {} {}", r.status, r.text()));
        }
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("no EVENT line: {e}"))?;
        let got = line
            .strip_prefix("EVENT ")
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let got: Value = serde_json::from_str(got).map_err(|e| format!("{e}: {got}"))?;
        if got != ev {
            return Err(format!("python got {got}, published {ev}"));
        }
        Ok((ready, got))
    })();
    // Bounded: the script ends on its own after printing; kill it otherwise.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let (ready, _) = result.unwrap();
    assert_eq!(ready, "READY rig.connection.create rig.subscriptions_set");
    assert!(
        status.is_some_and(|s| s.success()),
        "python exit: {status:?}"
    );
}

#[test]
fn paused_reader_gets_every_frame_intact() {
    let srv = Server::start_with(2, "[sessions]\nqueue_bytes = 16777216\n", &[]);
    let stream = MaybeTlsStream::Plain(small_window(srv.inbound));
    let (mut ws, resp) = tungstenite::client(
        ws_url(srv.inbound, Some(r#"[{"eventType":"load"}]"#)),
        stream,
    )
    .expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    set_timeout(&mut ws, Duration::from_secs(5));
    assert_eq!(next_text(&mut ws)["type"], "rig.connection.create");
    assert_eq!(next_text(&mut ws)["type"], "rig.subscriptions_set");
    // ~6 MB: more than the server's socket buffer takes, less than the queue bound: writes
    // stop mid-frame and resume; every frame must still arrive whole and in order.
    let total = 300;
    for n in 0..total {
        let pad = format!("{n:04}").repeat(5000);
        assert_eq!(
            publish(srv.inbound, &ce("load", json!({"n": n, "pad": pad}))).status,
            202
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..total {
        let e = next_text(&mut ws);
        assert_eq!(e["data"]["n"], n, "lost or reordered");
        assert_eq!(
            e["data"]["pad"],
            format!("{n:04}").repeat(5000),
            "corrupted"
        );
    }
}

/// Reads one server frame: (first byte, payload).
fn read_frame(r: &mut impl std::io::Read) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    (h[0], payload)
}

#[test]
fn permessage_deflate_compresses_large_events_once_and_leaves_small_ones_plain() {
    use std::io::Write;
    let srv = Server::start();
    let subs = enc(r#"[{"eventType":"z"}]"#);
    let mut s = TcpStream::connect(("127.0.0.1", srv.inbound)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /_rig/v1/connection/ws?subscriptions={subs} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let head = read_response(&mut r);
    assert_eq!(head.status, 101);
    assert_eq!(
        head.header("sec-websocket-extensions"),
        Some("permessage-deflate; server_no_context_takeover")
    );
    for _ in 0..2 {
        read_frame(&mut r); // rig.connection.create, rig.subscriptions_set
    }
    let big = ce(
        "z",
        json!({"text": "lorem ipsum dolor sit amet ".repeat(80), "n": 1}),
    );
    let small = ce("z", json!({"n": 2}));
    for ev in [&big, &small, &big] {
        assert_eq!(publish(srv.inbound, ev).status, 202);
    }
    let inflate = |payload: &[u8]| {
        let mut body = payload.to_vec();
        body.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut d = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(64 * 1024);
        d.decompress_vec(&body, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    let (b0, p) = read_frame(&mut r);
    assert_eq!(b0, 0xC1, "FIN, RSV1 (compressed), text");
    let plain_len = serde_json::to_vec(&big).unwrap().len();
    assert!(p.len() * 4 < plain_len, "{} of {plain_len} bytes", p.len());
    assert_eq!(inflate(&p), big);
    let (b0, p) = read_frame(&mut r);
    assert_eq!(b0, 0x81, "below ws_deflate_min_bytes: plain");
    assert_eq!(serde_json::from_slice::<Value>(&p).unwrap(), small);
    // No context kept between messages: the second big one decodes on its own.
    let (b0, p) = read_frame(&mut r);
    assert_eq!(b0, 0xC1);
    assert_eq!(inflate(&p), big);
}
