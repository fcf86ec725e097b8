//! The harness end to end: against a real Corebridge a small run must come out clean with
//! every delivery counted and churned streams closed; against a stand-in that drops exactly
//! one delivery it must name that loss. The unit tests check the parsers; this checks the
//! path a run takes (workers, the SSE stream set, churn, the parent's summary).
//!
//! Corebridge is the binary `cargo test --workspace` builds beside this one; run this package
//! alone only after `cargo build -p corebridge`.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn harness() -> &'static str {
    env!("CARGO_BIN_EXE_corebridge-loadtest")
}

fn corebridge() -> PathBuf {
    let p = Path::new(harness()).with_file_name("corebridge");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p corebridge`; `cargo test --workspace` does)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    inbound: u16,
    api: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let (inbound, api) = (free_port(), free_port());
    let child = Command::new(corebridge())
        .env("INBOUND_PORT", inbound.to_string())
        .env("API_HTTP_PORT", api.to_string())
        .env("LOG_LEVEL", "warn")
        .env("MAX_CONNECTIONS_PER_MINUTE", "10000000")
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start corebridge");
    let s = Server {
        child,
        inbound,
        api,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(api, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "corebridge did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// The whole answer (head and body) to a plain GET, None if nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Runs `scenario` (TOML without host and ports) against the server at `inbound`/`api`
/// whose CPU is sampled from process `pid`; returns the exit status and the summary.
fn run(inbound: u16, api: u16, pid: u32, name: &str, scenario: &str) -> (i32, Value) {
    let dir = std::env::temp_dir().join(format!("cb-harness-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scenario.toml");
    let text = format!(
        "name = \"{name}\"\nhost = \"127.0.0.1\"\ninbound_port = {inbound}\napi_port = {api}\n{scenario}"
    );
    std::fs::write(&file, text).unwrap();
    let out = dir.join("run.json");
    let status = Command::new(harness())
        .arg("run")
        .arg(&file)
        .arg("--server-pid")
        .arg(pid.to_string())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the harness");
    let summary = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
    (status.code().unwrap_or(-1), summary)
}

const STEADY: &str = r#"
transport = "sse"
connections = 300
workers = 2
source_addresses = 2
connect_rate = 0
event_type = "load"
events = 40
rate = 200
payload_bytes = 200
publish_via = "http"
deadline_seconds = 60
"#;

#[test]
fn a_small_sse_run_is_clean_with_every_delivery_counted() {
    let s = start();
    let (code, summary) = run(s.inbound, s.api, s.child.id(), "steady", STEADY);
    assert_eq!(code, 0, "not clean: {}", summary["problems"]);
    let d = &summary["deliveries"];
    assert_eq!(d["expected"], 300 * 40, "{d}");
    assert_eq!(d["received"], 300 * 40, "{d}");
    assert_eq!(d["lost"], 0, "{d}");
    assert_eq!(d["duplicates"], 0, "{d}");
    assert!(
        summary["latency"]["p99_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
}

#[test]
fn churned_sse_streams_are_closed_and_replaced() {
    let s = start();
    // The server's count of open streams, sampled through the run: a churned stream the
    // harness forgot to close would push it past the 300 the scenario holds.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (api, done) = (s.api, done.clone());
        move || {
            let mut most = 0.0f64;
            while !done.load(Ordering::Relaxed) {
                if let Some(n) = metric(api, "corebridge_connections{transport=\"sse\"}") {
                    most = most.max(n);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        }
    });
    let scenario = STEADY.replace("rate = 200", "rate = 20\nchurn_per_second = 40");
    let (code, summary) = run(s.inbound, s.api, s.child.id(), "churn", &scenario);
    done.store(true, Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert_eq!(code, 0, "not clean: {}", summary["problems"]);
    let c = &summary["connections"];
    let churned = c["churn_closed"].as_u64().unwrap_or(0);
    assert!(churned >= 40, "{c}");
    assert_eq!(c["churn_closed"], c["churn_opened"], "{c}");
    // A few closes may be in flight while their replacements open.
    assert!(
        most <= 310.0,
        "the server held {most} SSE streams with {churned} churned: churned streams stay open"
    );
}

#[test]
fn one_lost_delivery_makes_the_run_not_clean_and_is_counted() {
    let (inbound, api) = lossy_server();
    let scenario = STEADY
        .replace("connections = 300", "connections = 20")
        .replace("events = 40", "events = 10")
        .replace("deadline_seconds = 60", "deadline_seconds = 15");
    // The harness samples a server process's CPU: this test's own stands in.
    let (code, summary) = run(inbound, api, std::process::id(), "lossy", &scenario);
    let d = &summary["deliveries"];
    assert_eq!(code, 3, "{}", summary["problems"]);
    assert_eq!(d["expected"], 20 * 10, "{d} {}", summary["problems"]);
    assert_eq!(d["lost"], 1, "{d}");
    assert_eq!(d["worst_connection_lost"], 1, "{d}");
}

/// A stand-in for a server that drops one delivery: it answers every publish (a POST, on
/// either port) with 202 and writes the event to every SSE stream, except the fourth event
/// to the first stream. Returns its inbound and api ports.
fn lossy_server() -> (u16, u16) {
    let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let published = Arc::new(Mutex::new(0u64));
    let mut ports = Vec::new();
    for _ in 0..2 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
        let (streams, published) = (streams.clone(), published.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (streams, published) = (streams.clone(), published.clone());
                std::thread::spawn(move || serve_lossy(c, &streams, &published));
            }
        });
    }
    (ports[0], ports[1])
}

fn serve_lossy(mut c: TcpStream, streams: &Mutex<Vec<TcpStream>>, published: &Mutex<u64>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut fill = |c: &mut TcpStream, buf: &mut Vec<u8>| match c.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if !fill(&mut c, &mut buf) {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            if !fill(&mut c, &mut buf) {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
        if head.starts_with("GET") && head.contains("/connection/sse") {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            streams.lock().unwrap().push(c);
            return;
        }
        if !head.starts_with("POST") {
            let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        let n = {
            let mut p = published.lock().unwrap();
            *p += 1;
            *p
        };
        let frame = [b"data: ", &body[..], b"\n\n"].concat();
        let out = [format!("{:x}\r\n", frame.len()).as_bytes(), &frame, b"\r\n"].concat();
        for (i, s) in streams.lock().unwrap().iter_mut().enumerate() {
            if !(n == 4 && i == 0) {
                let _ = s.write_all(&out);
            }
        }
        if c.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// One sample of the metrics endpoint, summed over its series that start with `name`.
fn metric(api: u16, name: &str) -> Option<f64> {
    let vals: Vec<f64> = get(api, "/metrics")?
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}
