//! Shared test harness: starts the real `corebridge` binary on free loopback ports and talks to
//! it with plain sockets (a Rust SSE client, raw HTTP), so tests exercise the wire.
#![allow(dead_code)]

pub mod client;

/// Runs `tests/<script>` with python3 (the independent clients); stdout, or stdout and stderr
/// as the error.
pub fn python(script: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
    let out = std::process::Command::new("python3")
        .arg(format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{script} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
pub mod kafka;
pub mod kinesis;
pub mod pki;
pub mod relay;
pub mod upstream;

/// Runs `../shared/services/<script>` and returns its eval-able `KEY=value` lines
/// (`kafka-tls-up`, `kafka-sasl-up`), quotes removed; panics with its stderr on failure.
pub fn service(
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::collections::HashMap<String, String> {
    let out = std::process::Command::new(format!(
        "{}/../shared/services/{script}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(args)
    .envs(envs.iter().copied())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['\'', '"']).to_string()))
        .collect()
}

/// A JSON file (a service's stats), or `{}` when it cannot be read.
pub fn json_file(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into()))
        .unwrap_or_default()
}

use corebridge::proto::sse;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub inbound: u16,
    pub api: u16,
    pub dir: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const EXTRACTORS: &str = r#"{"greeting":{
    "name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"}},
    "age":{"stable_field_index":1,"event":{"json_pointer":"/data/age"}}}}"#;

impl Server {
    /// Starts with `shards` shards (unpinned, so tests may ask for more shards than cores), the
    /// extra tuning TOML appended under its own sections, and extra environment variables.
    pub fn start_with(shards: usize, tuning_extra: &str, envs: &[(&str, &str)]) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "cb-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let tuning = dir.join("tuning.toml");
        let mut text = format!("[runtime]\nshards = {shards}\npin = false\n");
        text.push_str(tuning_extra);
        std::fs::write(&tuning, text).unwrap();
        for _ in 0..5 {
            let (inbound, api) = (free_port(), free_port());
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_corebridge"));
            cmd.arg("--tuning")
                .arg(&tuning)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("INBOUND_PORT", inbound.to_string())
                .env("API_HTTP_PORT", api.to_string())
                .env("CB_INBOUND_BIND", "127.0.0.1")
                .env("EXTRACTORS", EXTRACTORS)
                .env("LOG_LEVEL", "warn")
                .stdout(
                    std::fs::File::create(dir.join("stdout.log"))
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                )
                .stderr(Stdio::inherit());
            for (k, v) in envs {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn corebridge");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port race or bad config: try again with other ports
                }
                if TcpStream::connect(("127.0.0.1", inbound)).is_ok()
                    && TcpStream::connect(("127.0.0.1", api)).is_ok()
                {
                    return Server {
                        child,
                        inbound,
                        api,
                        dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("corebridge did not start");
    }

    pub fn start() -> Server {
        Server::start_with(2, "", &[])
    }
}

impl Server {
    /// What the server printed on stdout so far (the console request log).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM)
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The value of the cookie `name` this response sets (`set-cookie: name=value; ...`).
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers_all("set-cookie").into_iter().find_map(|h| {
            let (pair, _) = h.split_once(';').unwrap_or((h, ""));
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length or no body) from a buffered reader.
pub fn read_response<R: BufRead>(r: &mut R) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Response {
        status,
        headers,
        body,
    }
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(port: u16, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut BufReader::new(s))
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes)
}

/// Fails the test unless `promtool check metrics` finds `text` clean (CI installs promtool;
/// a test fails rather than skips without it).
pub fn assert_promtool_clean(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus); .ci/run does it");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `ok` until it holds; fails the test naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One series of a node's `/metrics` (see [`metric_value`]).
pub fn metric(srv: &Server, line_prefix: &str) -> Option<f64> {
    metric_value(
        &request(srv.api, "GET", "/metrics", &[], b"").text(),
        line_prefix,
    )
}

/// The value of the first line of a `/metrics` text that starts with `line_prefix` (a name,
/// with its labels for one series).
pub fn metric_value(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn publish(port: u16, event: &serde_json::Value) -> Response {
    request(
        port,
        "POST",
        "/_rig/v1/events",
        &[("content-type", "application/cloudevents+json")],
        event.to_string().as_bytes(),
    )
}

pub fn ce(ty: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "type": ty,
        "source": "/test",
        "id": format!("{:x}", fastrand::u64(..)),
        "data": data,
    })
}

pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A minimal SSE client over a raw socket: reads the response head, then decodes the chunked
/// body with a real SSE parser.
pub struct SseClient {
    reader: BufReader<TcpStream>,
    parser: sse::Parser,
    queue: std::collections::VecDeque<sse::Message>,
    pub head: Response,
    pub token: String,
    /// The server ended the chunked stream properly (last chunk), rather than cutting it.
    pub ended_cleanly: bool,
    /// How long `try_next` waits for a message. Heartbeat comments arrive within the socket's
    /// read timeout, so that alone would let a test wait forever for an event that never comes.
    wait: Duration,
}

impl SseClient {
    pub fn connect(port: u16, subscriptions: Option<&str>) -> SseClient {
        SseClient::over(
            TcpStream::connect(("127.0.0.1", port)).unwrap(),
            subscriptions,
        )
    }

    /// Connects over a socket the test made (a small receive buffer, say).
    pub fn over(s: TcpStream, subscriptions: Option<&str>) -> SseClient {
        let path = match subscriptions {
            Some(s) => format!("/_rig/v1/connection/sse?subscriptions={}", enc(s)),
            None => "/_rig/v1/connection/sse".into(),
        };
        SseClient::at(s, &path)
    }

    /// Connects to `path` (with its query) as given.
    pub fn at(s: TcpStream, path: &str) -> SseClient {
        SseClient::at_with(s, path, "")
    }

    /// With extra header lines (each ending in `\r\n`), e.g. `last-event-id: ...`.
    pub fn at_with(s: TcpStream, path: &str, headers: &str) -> SseClient {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n{headers}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let head = read_response(&mut reader);
        let mut c = SseClient {
            reader,
            parser: sse::Parser::new(),
            queue: Default::default(),
            head,
            token: String::new(),
            ended_cleanly: false,
            wait: Duration::from_secs(10),
        };
        if c.head.status == 200 {
            let create = c.next();
            assert_eq!(create.event.as_deref(), Some("rig.connection.create"));
            let v: serde_json::Value = serde_json::from_str(&create.data).unwrap();
            c.token = v["data"]["connection_token"].as_str().unwrap().to_string();
            let set = c.next();
            assert_eq!(set.event.as_deref(), Some("rig.subscriptions_set"));
        }
        c
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.reader.get_ref().set_read_timeout(Some(d)).unwrap();
        self.wait = d;
    }

    /// The next message, or None on timeout/EOF.
    pub fn try_next(&mut self) -> Option<sse::Message> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Some(m);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(line.trim_end(), 16).ok()?;
            if size == 0 {
                self.ended_cleanly = true;
                return None;
            }
            let mut data = vec![0; size + 2];
            self.reader.read_exact(&mut data).ok()?;
            data.truncate(size);
            self.queue.extend(self.parser.feed(&data));
        }
    }

    pub fn next(&mut self) -> sse::Message {
        self.try_next().expect("an SSE message")
    }

    /// The next message that is not a heartbeat comment (comments produce no message anyway).
    pub fn next_event(&mut self) -> serde_json::Value {
        let m = self.next();
        serde_json::from_str(&m.data).unwrap()
    }

    pub fn shard(&self) -> u16 {
        token_shard(&self.token)
    }
}

/// The owner shard named in a connection token (see session/token.rs).
/// A loopback connection with a small receive buffer: the server's writes to it fill up
/// after a few KiB, so it must wait for room and resume mid-frame.
pub fn small_window(port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    s.into()
}

pub fn token_shard(token: &str) -> u16 {
    let t = corebridge::proto::token::Token::decode(token).expect("token");
    t.shard
}
