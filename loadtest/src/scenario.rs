//! Scenario files (TOML, unknown keys rejected) and the configuration handed to each worker.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Connections one worker process may hold: the per-process open-files cap is 20,000 and a
/// worker needs a few descriptors of its own.
pub const MAX_CONNECTIONS_PER_WORKER: u64 = 19_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Sse,
    Ws,
    Longpoll,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Longpoll => "longpoll",
        }
    }

    /// The connection path below `/_rig/v1/connection/`.
    pub fn path(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Longpoll => "longpolling",
        }
    }
}

/// The server under test: Corebridge (RIG's API) or Nchan as the comparison peer
/// (`../shared/peers/nchan-up`: `/sub` + `/pub` for broadcast, `/usub/<id>` + `/upub/<id>` per
/// user, one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Corebridge,
    Nchan,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Corebridge => "corebridge",
            Target::Nchan => "nchan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishVia {
    Http,
    Kafka,
}

fn d_host() -> String {
    "127.0.0.1".into()
}
fn d_inbound() -> u16 {
    4000
}
fn d_api() -> u16 {
    4010
}
fn d_transport() -> Transport {
    Transport::Sse
}
fn d_one() -> u32 {
    1
}
fn d_event_type() -> String {
    "load".into()
}
fn d_payload() -> usize {
    200
}
fn d_target() -> Target {
    Target::Corebridge
}
fn d_via() -> PublishVia {
    PublishVia::Http
}
fn d_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn d_topic() -> String {
    "rig".into()
}
fn d_deadline() -> f64 {
    120.0
}
fn d_connect_timeout() -> f64 {
    10.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// The server under test (`corebridge`, or `nchan` with the same clients for comparison).
    #[serde(default = "d_target")]
    pub target: Target,
    #[serde(default = "d_host")]
    pub host: String,
    #[serde(default = "d_inbound")]
    pub inbound_port: u16,
    #[serde(default = "d_api")]
    pub api_port: u16,
    #[serde(default = "d_transport")]
    pub transport: Transport,
    pub connections: u64,
    /// Worker processes; each holds `connections / workers` (the first ones one more).
    #[serde(default = "d_one")]
    pub workers: u32,
    /// Client sockets bind to 127.0.0.2 .. 127.0.0.(1+n) round-robin; 0 = let the kernel pick.
    #[serde(default = "d_one")]
    pub source_addresses: u32,
    /// New connections per second, all workers together; 0 = as fast as possible.
    #[serde(default)]
    pub connect_rate: f64,
    /// Seconds one connection attempt (TCP connect + handshake) may take.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout_seconds: f64,
    #[serde(default = "d_event_type")]
    pub event_type: String,
    /// Each connection subscribes to its own user (`u<index>`: a `oneOf` constraint on
    /// `data.user`, which the server's `EXTRACTORS` must declare; Nchan: its own channel) and
    /// event k goes to connection k mod `connections` only. Every connection must get exactly
    /// its own events; one of another's counts as misrouted.
    #[serde(default)]
    pub targeted: bool,
    /// Events to publish (M); 0 = connection-only scenario.
    #[serde(default)]
    pub events: u64,
    /// Events per second (R); 0 = as fast as possible.
    #[serde(default)]
    pub rate: f64,
    #[serde(default = "d_payload")]
    pub payload_bytes: usize,
    #[serde(default = "d_via")]
    pub publish_via: PublishVia,
    /// Parallel HTTP publishing connections (or Kafka produce requests in flight). More than
    /// one lets events overtake each other before the server sees them, which then shows up as
    /// reordering at the clients.
    #[serde(default = "d_one")]
    pub publish_connections: u32,
    #[serde(default = "d_brokers")]
    pub kafka_brokers: String,
    #[serde(default = "d_topic")]
    pub kafka_topic: String,
    /// Fraction of connections that stop reading after connecting.
    #[serde(default)]
    pub slow_readers: f64,
    /// Connections closed and reopened per second while events are published.
    #[serde(default)]
    pub churn_per_second: f64,
    /// With churn: this many connections are never churned (the steady ones whose loss is
    /// measured) and the rest are churned over and over, replacements included, so churn can
    /// run at any rate for any time. 0: each connection is churned at most once.
    #[serde(default)]
    pub steady_connections: u64,
    /// Idle hold after all are connected, before publishing.
    #[serde(default)]
    pub hold_seconds: f64,
    /// Every this many ms, from the start of the run to its end, a fresh connection asks the
    /// health page on the inbound and on the API port; the summary reports their latency and
    /// failures. 0 = no probes.
    #[serde(default)]
    pub health_probe_ms: u64,
    /// The whole run (connect, hold, publish, drain) ends by this many seconds.
    #[serde(default = "d_deadline")]
    pub deadline_seconds: f64,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        s.validate()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        match self.host.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => {
                if self.source_addresses > 0 && !ip.is_ipv4() {
                    problems.push("source_addresses needs an IPv4 host (use 0 for IPv6)".into());
                }
            }
            Ok(ip) => problems.push(format!("host {ip} is not a loopback address")),
            Err(_) => problems.push(format!("host {:?} is not an IP address", self.host)),
        }
        if self.workers == 0 {
            problems.push("workers must be at least 1".into());
        }
        if self.connections == 0 {
            problems.push("connections must be at least 1".into());
        }
        let per_worker = self.connections.div_ceil(u64::from(self.workers.max(1)));
        if per_worker > MAX_CONNECTIONS_PER_WORKER {
            problems.push(format!(
                "{per_worker} connections per worker is over {MAX_CONNECTIONS_PER_WORKER} \
                 (open files are capped at 20,000 per process): raise workers"
            ));
        }
        if self.source_addresses > 250 {
            problems.push("source_addresses must be at most 250".into());
        }
        for (k, v) in [
            ("connect_rate", self.connect_rate),
            ("rate", self.rate),
            ("churn_per_second", self.churn_per_second),
            ("hold_seconds", self.hold_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{k} must be a non-negative number"));
            }
        }
        for (k, v) in [
            ("deadline_seconds", self.deadline_seconds),
            ("connect_timeout_seconds", self.connect_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{k} must be positive"));
            }
        }
        if !(0.0..1.0).contains(&self.slow_readers) {
            problems.push("slow_readers must be in [0, 1)".into());
        }
        if self.event_type.is_empty()
            || !self
                .event_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
        {
            problems.push("event_type must be non-empty and use only A-Z a-z 0-9 . _ - : /".into());
        }
        if self.publish_connections == 0 || self.publish_connections > 64 {
            problems.push("publish_connections must be 1..=64".into());
        }
        if self.payload_bytes > 1 << 20 {
            problems.push("payload_bytes must be at most 1 MiB".into());
        }
        if self.target == Target::Nchan {
            if self.publish_via == PublishVia::Kafka {
                problems.push("target nchan publishes over HTTP only".into());
            }
            if self.transport == Transport::Longpoll {
                problems.push("target nchan: sse or ws only".into());
            }
        }
        if self.publish_via == PublishVia::Kafka && self.events > 0 {
            if let Err(e) = self.kafka_addrs() {
                problems.push(format!("{e:#}"));
            }
            if self.kafka_topic.is_empty() {
                problems.push("kafka_topic must not be empty".into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }

    pub fn inbound_addr(&self) -> Result<SocketAddr> {
        Ok(SocketAddr::new(self.host.parse()?, self.inbound_port))
    }

    pub fn api_addr(&self) -> Result<SocketAddr> {
        Ok(SocketAddr::new(self.host.parse()?, self.api_port))
    }

    /// Broker addresses; every one must resolve to loopback (the harness only talks to this
    /// machine).
    pub fn kafka_addrs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for b in self.kafka_brokers.split(',').map(str::trim) {
            if b.is_empty() {
                continue;
            }
            let addrs: Vec<SocketAddr> = b
                .to_socket_addrs()
                .with_context(|| format!("kafka broker {b:?}"))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
                bail!("kafka broker {b:?} is not a loopback address");
            }
            out.push(b.to_string());
        }
        if out.is_empty() {
            bail!("kafka_brokers is empty");
        }
        Ok(out)
    }

    /// Source address of global connection `i`, if any.
    pub fn source_addr(&self, i: u64) -> Option<Ipv4Addr> {
        (self.source_addresses > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % u64::from(self.source_addresses)) as u8))
    }

    /// Whether global connection `i` is a slow reader: exactly floor(n * fraction) of the
    /// first n connections are, spread evenly.
    pub fn is_slow(&self, i: u64) -> bool {
        let f = self.slow_readers;
        ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
    }

    /// The connection request target of global connection `i`, with `subscriptions`
    /// URL-encoded.
    pub fn connect_target(&self, i: u64) -> String {
        match (self.target, self.targeted) {
            (Target::Nchan, false) => "/sub".into(),
            (Target::Nchan, true) => format!("/usub/{i}"),
            (Target::Corebridge, targeted) => {
                let subs = if targeted {
                    format!(
                        "[{{\"eventType\":\"{}\",\"oneOf\":[{{\"user\":\"u{i}\"}}]}}]",
                        self.event_type
                    )
                } else {
                    format!("[{{\"eventType\":\"{}\"}}]", self.event_type)
                };
                format!(
                    "/_rig/v1/connection/{}?subscriptions={}",
                    self.transport.path(),
                    crate::proto::percent_encode(&subs)
                )
            }
        }
    }

    /// Where event k goes and its sequence number there: targeted, connection k mod n and its
    /// own count; broadcast, everyone and k.
    pub fn addressing(&self, k: u64) -> (Option<u64>, u64) {
        if self.targeted {
            (Some(k % self.connections), k / self.connections)
        } else {
            (None, k)
        }
    }

    /// Events global connection `i` must receive when the first `ok` were accepted.
    pub fn expected_for(&self, i: u64, ok: u64) -> u64 {
        if self.targeted {
            (ok + self.connections - 1 - i.min(self.connections - 1)) / self.connections
        } else {
            ok
        }
    }

    /// The HTTP publish: port and path (Corebridge's internal `/v3/messages`, Nchan's
    /// publisher locations on its one port).
    pub fn publish_target(&self, to: Option<u64>) -> (u16, String) {
        match (self.target, to) {
            (Target::Corebridge, _) => (self.api_port, "/v3/messages".into()),
            (Target::Nchan, None) => (self.inbound_port, "/pub".into()),
            (Target::Nchan, Some(t)) => (self.inbound_port, format!("/upub/{t}")),
        }
    }
}

/// Handed to each worker process as one JSON line on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub scenario: Scenario,
    pub index: u32,
    /// Global index of this worker's first connection.
    pub first: u64,
    pub count: u64,
    /// This worker's share of `connect_rate` (0 = unlimited).
    pub connect_rate: f64,
    /// This worker's share of `churn_per_second`.
    pub churn_rate: f64,
    /// This worker's share of `steady_connections`.
    #[serde(default)]
    pub steady: u64,
    /// Wall-clock end of the run (unix milliseconds).
    pub deadline_unix_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Scenario {
        toml::from_str("name = \"t\"\nconnections = 10\n").unwrap()
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let s = base();
        assert_eq!(s.inbound_port, 4000);
        assert_eq!(s.api_port, 4010);
        assert_eq!(s.transport, Transport::Sse);
        s.validate().unwrap();
        assert!(toml::from_str::<Scenario>("name=\"t\"\nconnections=1\nbogus=1\n").is_err());
    }

    #[test]
    fn rejects_non_loopback_and_too_many_per_worker() {
        let mut s = base();
        s.host = "10.0.0.1".into();
        assert!(s.validate().is_err());
        let mut s = base();
        s.connections = 40_000;
        assert!(s.validate().is_err());
        s.workers = 3;
        s.validate().unwrap();
    }

    #[test]
    fn slow_readers_are_spread_exactly() {
        let mut s = base();
        s.slow_readers = 0.1;
        assert_eq!((0..1000).filter(|&i| s.is_slow(i)).count(), 100);
        s.slow_readers = 0.0;
        assert_eq!((0..1000).filter(|&i| s.is_slow(i)).count(), 0);
    }

    #[test]
    fn source_addresses_round_robin() {
        let mut s = base();
        s.source_addresses = 3;
        assert_eq!(s.source_addr(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.source_addr(4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        s.source_addresses = 0;
        assert_eq!(s.source_addr(4), None);
    }

    #[test]
    fn target_is_encoded() {
        assert_eq!(
            base().connect_target(3),
            "/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22load%22%7D%5D"
        );
        let mut s = base();
        s.targeted = true;
        assert!(s
            .connect_target(3)
            .ends_with("%5B%7B%22user%22%3A%22u3%22%7D%5D%7D%5D"));
        s.target = Target::Nchan;
        assert_eq!(s.connect_target(3), "/usub/3");
        assert_eq!(s.publish_target(Some(3)), (4000, "/upub/3".into()));
    }

    #[test]
    fn targeted_addressing_and_expectations() {
        let mut s = base();
        s.targeted = true;
        // 10 connections, 25 events accepted: connections 0..4 get 3, the rest 2.
        assert_eq!(s.addressing(13), (Some(3), 1));
        let per: Vec<u64> = (0..10).map(|i| s.expected_for(i, 25)).collect();
        assert_eq!(per, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
        assert_eq!(per.iter().sum::<u64>(), 25);
        assert_eq!(s.expected_for(9, 0), 0);
    }
}
