//! The API gateway's probes, one set per shard: RIG's `rig_proxy_requests_total` with its
//! labels, but bounded (`path` is `<api id>/<endpoint id>`, or `N/A` when nothing matched;
//! RIG put the raw request path there, one series per distinct URL), the upstream latency
//! histogram, parked requests and dropped replies.
//!
//! Request counters are keyed by label set (the endpoint by its label's address) in a map
//! behind a mutex the owning shard takes once per proxied request (uncontended: the exporter
//! takes it once per scrape). A proxied request costs tens of microseconds; this is not on
//! the per-event fan-out path.

use super::{escape, header, names, render_histogram, Counter, Histogram};
use crate::proxy::table::Match;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// RIG's `status` label values, plus `unauthorized` (RIG did not count those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    Unauthorized,
    Unreachable,
    RequestTimeout,
    ResponseTimeout,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadRequest => "bad_request",
            Status::NotFound => "not_found",
            Status::Unauthorized => "unauthorized",
            Status::Unreachable => "unreachable",
            Status::RequestTimeout => "request_timeout",
            Status::ResponseTimeout => "response_timeout",
        }
    }
}

/// Methods as a bounded label: anything else is `OTHER`.
fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Where a request is counted on its shard: the label set with the endpoint named by its
/// label's address, so a request hashes a few words and clones nothing (the map's entry holds
/// the label, which keeps the address from being reused while the entry exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    method: &'static str,
    endpoint: usize,
    target: &'static str,
    response_from: &'static str,
    status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: &'static str,
    endpoint: Option<Arc<str>>,
    target: &'static str,
    response_from: &'static str,
    status: Status,
}

/// Upper bounds (seconds) of the upstream latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct ProxyMetrics {
    requests: Mutex<HashMap<Slot, (Key, u64), foldhash::fast::FixedState>>,
    /// Requests parked for a correlated response (a gauge: up when parked, down when done).
    pub pending: Counter,
    /// Replies that found no parked request (unknown, answered or expired correlation).
    pub replies_dropped: Counter,
    /// Replies delivered to a parked request.
    pub replies_delivered: Counter,
    upstream_failures: Counter,
    latency: Histogram<12>,
}

impl ProxyMetrics {
    pub fn count(&self, method: &str, m: Option<&Match>, status: Status) {
        let ep = m.map(Match::endpoint);
        let slot = Slot {
            method: method_label(method),
            endpoint: ep.map_or(0, |e| Arc::as_ptr(&e.metric_label) as *const u8 as usize),
            target: ep.map_or("N/A", |e| e.target.label()),
            response_from: ep.map_or("N/A", |e| e.response_from.label()),
            status,
        };
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = requests.get_mut(&slot) {
            *n += 1;
            return;
        }
        let key = Key {
            method: slot.method,
            endpoint: ep.map(|e| e.metric_label.clone()),
            target: slot.target,
            response_from: slot.response_from,
            status,
        };
        requests.insert(slot, (key, 1));
    }

    pub fn upstream_failed(&self) {
        self.upstream_failures.inc();
    }

    /// Time from sending the request to the upstream's response head.
    pub fn observe_upstream(&self, d: std::time::Duration) {
        self.latency.observe(&BUCKETS, d);
    }
}

/// Renders every shard's gateway probes, summed. `island_dropped`: replies the broker island
/// dropped (naming no shard of this node).
pub fn render(o: &mut String, shards: &[&ProxyMetrics], island_dropped: u64) {
    let mut requests: HashMap<Key, u64> = HashMap::new();
    for s in shards {
        for (k, v) in s
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            *requests.entry(k.clone()).or_insert(0) += v;
        }
    }
    let mut lines: Vec<String> = requests
        .iter()
        .map(|(k, v)| {
            format!(
                "{}{{method=\"{}\",path=\"{}\",target=\"{}\",response_from=\"{}\",status=\"{}\"}} {v}",
                names::PROXY_REQUESTS.0,
                k.method,
                k.endpoint.as_deref().map_or_else(|| "N/A".to_string(), escape),
                k.target,
                k.response_from,
                k.status.label()
            )
        })
        .collect();
    lines.sort();
    header(o, names::PROXY_REQUESTS, "counter");
    for l in lines {
        let _ = writeln!(o, "{l}");
    }
    let sum = |f: &dyn Fn(&ProxyMetrics) -> u64| {
        shards.iter().map(|s| f(s)).fold(0u64, u64::wrapping_add)
    };
    header(o, names::PROXY_PENDING, "gauge");
    let _ = writeln!(
        o,
        "{} {}",
        names::PROXY_PENDING.0,
        sum(&|s| s.pending.get()) as i64
    );
    header(o, names::PROXY_REPLIES, "counter");
    let _ = writeln!(
        o,
        "{}{{outcome=\"delivered\"}} {}\n{}{{outcome=\"dropped\"}} {}",
        names::PROXY_REPLIES.0,
        sum(&|s| s.replies_delivered.get()),
        names::PROXY_REPLIES.0,
        sum(&|s| s.replies_dropped.get()).wrapping_add(island_dropped)
    );
    header(o, names::PROXY_UPSTREAM_FAILURES, "counter");
    let _ = writeln!(
        o,
        "{} {}",
        names::PROXY_UPSTREAM_FAILURES.0,
        sum(&|s| s.upstream_failures.get())
    );
    header(o, names::PROXY_UPSTREAM_LATENCY, "histogram");
    let parts: Vec<_> = shards.iter().map(|s| &s.latency).collect();
    render_histogram(o, names::PROXY_UPSTREAM_LATENCY.0, "", &BUCKETS, &parts);
}
