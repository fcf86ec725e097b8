//! Kafka helpers shared by the tests: the test broker from ../shared/services and the
//! independent client (tests/kafka_client.py, confluent-kafka).

use std::process::Command;

fn services(script: &str) -> String {
    format!("{}/../shared/services/{script}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts (or finds running) the test broker on `port`; returns its address.
pub fn broker_up(port: u16) -> String {
    broker_up_advertising(port, port)
}

/// The test broker on `port`, naming `advertised` as its port in metadata (so that clients
/// reach it through a relay listening there).
pub fn broker_up_advertising(port: u16, advertised: u16) -> String {
    let out = Command::new(services("kafka-up"))
        .arg(port.to_string())
        .env("KAFKA_ADVERTISED_PORT", advertised.to_string())
        .output()
        .expect("run ../shared/services/kafka-up");
    assert!(
        out.status.success(),
        "kafka-up {port} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("127.0.0.1:{port}")
}

pub fn broker_down(port: u16) {
    let out = Command::new(services("kafka-down"))
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs tests/kafka_client.py against `broker`; stdout on success.
pub fn py(broker: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec![broker];
    all.extend_from_slice(args);
    super::python("kafka_client.py", &all, &[])
}

pub fn create(broker: &str, topic: &str, partitions: u32) {
    py(broker, &["create", topic, &partitions.to_string()]).unwrap();
}
