//! Kinesis helpers shared by the tests: kinesis-local and dynalite from ../shared/services
//! (`kinesis-up`), and the independent client (tests/kinesis_client.py, boto3).

use std::process::Command;
use std::time::{Duration, Instant};

pub const PORT: u16 = 4568;
pub const DYNAMODB_PORT: u16 = 4567;

pub fn endpoint() -> String {
    format!("http://127.0.0.1:{PORT}")
}

pub fn dynamodb() -> String {
    format!("http://127.0.0.1:{DYNAMODB_PORT}")
}

/// Starts (or finds running) kinesis-local with dynalite beside it.
pub fn up() {
    let out = Command::new(format!(
        "{}/../shared/services/kinesis-up",
        env!("CARGO_MANIFEST_DIR")
    ))
    .arg(PORT.to_string())
    .env("DYNAMODB_PORT", DYNAMODB_PORT.to_string())
    .output()
    .expect("run ../shared/services/kinesis-up");
    assert!(
        out.status.success(),
        "kinesis-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn py(args: &[&str]) -> Result<String, String> {
    let endpoint = endpoint();
    let mut all = vec![endpoint.as_str()];
    all.extend_from_slice(args);
    super::python("kinesis_client.py", &all, &[])
}

pub fn stream(prefix: &str) -> String {
    format!("{prefix}-{:x}", fastrand::u32(..))
}

/// A stream that is deleted when the test ends (kinesis-local allows 50 shards in all).
#[must_use = "the stream is deleted when this is dropped"]
pub struct Created(String);

impl Drop for Created {
    fn drop(&mut self) {
        let _ = py(&["delete", &self.0]);
    }
}

pub fn create(stream: &str, shards: u32) -> Created {
    py(&["create", stream, &shards.to_string()]).unwrap();
    Created(stream.to_string())
}

/// Puts with boto3; returns (shard id, sequence number).
pub fn put(stream: &str, key: &str, data: &str) -> (String, String) {
    let out = py(&["put", stream, key, data]).unwrap();
    let mut it = out.split_whitespace().map(str::to_string);
    (it.next().unwrap(), it.next().unwrap())
}

/// Every record of the stream, read back with boto3 from TRIM_HORIZON.
pub fn read(stream: &str) -> Vec<serde_json::Value> {
    py(&["read", stream])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The environment of a node consuming `streams`.
pub fn node_env(streams: &str) -> Vec<(String, String)> {
    vec![
        ("KINESIS_ENABLED".into(), "true".into()),
        ("KINESIS_STREAM".into(), streams.into()),
        ("KINESIS_AWS_REGION".into(), "us-east-1".into()),
        ("PROXY_KINESIS_REQUEST_REGION".into(), "us-east-1".into()),
        ("KINESIS_ENDPOINT".into(), endpoint()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("CB_KINESIS_POLL_MS".into(), "100".into()),
        ("CB_KINESIS_SHARD_REFRESH_MS".into(), "300".into()),
    ]
}

/// Waits until the node's metrics show a successful read of `shards` shards of `stream` (its
/// iterators are in place: records put from now on reach it).
pub fn wait_reading(api: u16, stream: &str, shards: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = super::request(api, "GET", "/metrics", &[], b"").text();
        let n = m
            .lines()
            .filter(|l| {
                l.starts_with("corebridge_kinesis_iterator_age_milliseconds{")
                    && l.contains(&format!("stream=\"{stream}\""))
            })
            .count();
        if n >= shards {
            // One more poll interval: the first GetRecords answered, the next is in flight.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node never read {shards} shard(s) of {stream}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
