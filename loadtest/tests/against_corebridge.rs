//! The harness end to end against a real Corebridge: a small run must come out clean with
//! every delivery counted, and a server that stops delivering must make it not clean. The
//! unit tests check the parsers; this checks the path a run takes (workers, the SSE stream
//! set, churn, the parent's summary).
//!
//! Corebridge is the binary `cargo test --workspace` builds beside this one; run this package
//! alone only after `cargo build -p corebridge`.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Runs `scenario` (TOML with the server's ports filled in) and returns the exit status and
/// the summary.
fn run(server: &Server, name: &str, scenario: &str) -> (i32, Value) {
    let dir = std::env::temp_dir().join(format!("cb-harness-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scenario.toml");
    let text = format!(
        "name = \"{name}\"\nhost = \"127.0.0.1\"\ninbound_port = {}\napi_port = {}\n{scenario}",
        server.inbound, server.api
    );
    std::fs::write(&file, text).unwrap();
    let out = dir.join("run.json");
    let status = Command::new(harness())
        .arg("run")
        .arg(&file)
        .arg("--server-pid")
        .arg(server.child.id().to_string())
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
    let (code, summary) = run(&s, "steady", STEADY);
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
    let scenario = STEADY.replace("rate = 200", "rate = 20\nchurn_per_second = 40");
    let (code, summary) = run(&s, "churn", &scenario);
    assert_eq!(code, 0, "not clean: {}", summary["problems"]);
    let c = &summary["connections"];
    assert!(c["churn_closed"].as_u64().unwrap_or(0) > 0, "{c}");
    assert_eq!(c["churn_closed"], c["churn_opened"], "{c}");
}

#[test]
fn a_server_that_stops_delivering_makes_the_run_not_clean() {
    let mut s = start();
    // Frozen once every stream is open: connected, then nothing arrives.
    let pid = s.child.id().to_string();
    let stopper = std::thread::spawn({
        let api = s.api;
        move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let open = metric(api, "corebridge_connections{transport=\"sse\"}");
                if open.is_some_and(|n| n >= 300.0) {
                    let _ = Command::new("kill").args(["-STOP", &pid]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let scenario = STEADY.replace("deadline_seconds = 60", "deadline_seconds = 12");
    let (code, summary) = run(&s, "frozen", &scenario);
    stopper.join().unwrap();
    let _ = Command::new("kill")
        .args(["-CONT", &s.child.id().to_string()])
        .status();
    assert_ne!(code, 0, "a frozen server's run came out clean: {summary}");
    let _ = s.child.kill();
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
