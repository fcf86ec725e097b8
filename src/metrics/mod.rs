//! Per-shard probes and the Prometheus exporter. Each shard owns one `ShardMetrics` and is its
//! only writer: increments are a relaxed load and store (plain moves on x86, no lock prefix), so
//! counting costs the hot path almost nothing. The exporter, on whichever shard serves
//! `/metrics`, reads every shard's probes and sums them. Nothing here is per event or per user.

pub mod island;
pub mod kinesis;
pub mod names;
pub mod nats;
pub mod proxy;
pub mod rig;
pub mod router;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Metrics are kept per transport (an array index and a bounded label).
pub use crate::proto::Transport;

#[derive(Debug, Clone, Copy)]
pub enum Source {
    Http = 0,
}
const SOURCES: [&str; 1] = ["http"];

#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// Dropped by the drop-oldest policy or a full long-poll buffer.
    SlowConsumer = 0,
    /// Still queued when the connection closed.
    Closed = 1,
}
const DROP_REASONS: [&str; 2] = ["slow_consumer", "closed"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Inbound = 0,
    Api = 1,
}
const LISTENERS: [&str; 2] = ["inbound", "api"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A counter with exactly one writing thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    /// For gauges: the owning shard counts up and down; the sum over shards is the gauge.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.add(n.wrapping_neg())
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// For gauges with one writer.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed)
    }
}

/// A histogram of durations with one writing thread. Its upper bounds (seconds) belong to the
/// owner, which passes the same array when observing and rendering; the type fixes their number.
/// Each observation counts in its own bucket only, so observing costs one increment whatever
/// the number of buckets; rendering makes the counts cumulative.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    /// `buckets[i]`: observations above bound `i - 1` and at most bound `i`; beyond the last
    /// bound they are only in `count`.
    buckets: [Counter; N],
    count: Counter,
    sum_us: Counter,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| Counter::default()),
            count: Counter::default(),
            sum_us: Counter::default(),
        }
    }
}

impl<const N: usize> Histogram<N> {
    pub fn observe(&self, bounds: &[f64; N], d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| s <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(d.as_micros() as u64);
    }
}

/// The samples (no header) of histogram `name`, summed over `parts` (one per shard, or a single
/// one). `labels`: written before `le`, e.g. `topic="orders",`, or empty.
pub(crate) fn render_histogram<const N: usize>(
    o: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64; N],
    parts: &[&Histogram<N>],
) {
    let total =
        |f: &dyn Fn(&Histogram<N>) -> u64| parts.iter().map(|h| f(h)).fold(0u64, u64::wrapping_add);
    let mut below = 0u64;
    for (i, b) in bounds.iter().enumerate() {
        below = below.wrapping_add(total(&|h| h.buckets[i].get()));
        let _ = writeln!(o, "{name}_bucket{{{labels}le=\"{b}\"}} {below}");
    }
    let n = total(&|h| h.count.get());
    let sum = total(&|h| h.sum_us.get()) as f64 / 1e6;
    let _ = writeln!(o, "{name}_bucket{{{labels}le=\"+Inf\"}} {n}");
    let plain = labels.trim_end_matches(',');
    if plain.is_empty() {
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {n}");
    } else {
        let _ = writeln!(
            o,
            "{name}_sum{{{plain}}} {sum}\n{name}_count{{{plain}}} {n}"
        );
    }
}

#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub connections: [Counter; 3],
    pub connections_opened: [Counter; 3],
    pub delivered: [Counter; 3],
    pub dropped: [[Counter; 2]; 3],
    pub slow_consumer_closes: [Counter; 3],
    pub received: [Counter; 1],
    pub subscriptions: Counter,
    /// Publishes refused with 503 because a shard's inbound queue was full.
    pub publish_busy: Counter,
    /// Published events no connection on this node subscribes to.
    pub unwanted: Counter,
    pub responses: [[Counter; 5]; 2],
    pub proxy: proxy::ProxyMetrics,
    /// By [`ResumeResult`].
    pub resumes: [Counter; 3],
    pub resumed_events: Counter,
    /// SSE streams ended by the idle clean-up (`EVENTS_SSE_CLEANUP_*`).
    pub idle_closes: Counter,
    /// The writer's passes, their wall time in microseconds, and its socket writes.
    pub writer_passes: Counter,
    pub writer_pass_us: Counter,
    pub stream_writes: Counter,
    /// 1 while this shard's writer sends through its io_uring in batches.
    pub batched_writer: Counter,
    /// Connections refused because too many had not sent a request yet.
    pub pending_refused: Counter,
    /// TLS handshakes completed, and those that failed or timed out.
    pub tls_handshakes: Counter,
    /// Connections refused by `http.max_connections_per_address`.
    pub address_refused: Counter,
    pub tls_failures: Counter,
}

#[derive(Debug, Clone, Copy)]
pub enum ResumeResult {
    Replayed,
    Gap,
    Failed,
}
const RESUME_RESULTS: [&str; 3] = ["replayed", "gap", "failed"];

impl ShardMetrics {
    pub fn response(&self, listener: Listener, status: u16) {
        let class = ((status / 100).clamp(1, 5) - 1) as usize;
        self.responses[listener as usize][class].inc();
    }
    /// Events dropped on this shard, every transport and reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().flatten().map(Counter::get).sum()
    }

    pub fn dropped(&self, t: Transport, reason: DropReason, n: u64) {
        self.dropped[t as usize][reason as usize].add(n);
    }
}

fn sum(shards: &[std::sync::Arc<ShardMetrics>], f: impl Fn(&ShardMetrics) -> u64) -> u64 {
    shards.iter().map(|s| f(s)).fold(0u64, u64::wrapping_add)
}

/// Label values: escape backslash, quote and newline (a label must never break the
/// exposition format, whatever a topic, stream or shard is called).
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Connections that have not sent a whole request yet (`http.max_pending_heads`).
pub fn render_pending_heads(out: &mut String, n: usize) {
    single(out, names::PENDING_HEADS, "gauge", n);
}

/// Per shard: busy time and inbound queue depth (which core is the limit).
pub fn render_shards(out: &mut String, busy_us: &[u64], inbound: &[usize]) {
    header(out, names::SHARD_BUSY, "counter");
    for (i, b) in busy_us.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{{shard=\"{i}\"}} {}",
            names::SHARD_BUSY.0,
            *b as f64 / 1e6
        );
    }
    header(out, names::SHARD_INBOUND_QUEUE, "gauge");
    for (i, n) in inbound.iter().enumerate() {
        let _ = writeln!(out, "{}{{shard=\"{i}\"}} {n}", names::SHARD_INBOUND_QUEUE.0);
    }
}

/// The node's replay ring (see `broker::Recent`).
pub fn render_ring(out: &mut String, events: usize, bytes: usize) {
    single(out, names::RESUME_RING_EVENTS, "gauge", events);
    single(out, names::RESUME_RING_BYTES, "gauge", bytes);
}

pub(crate) fn header(out: &mut String, (name, help): (&str, &str), kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric without labels: its header and its one sample.
pub(crate) fn single(out: &mut String, m: (&str, &str), kind: &str, value: impl std::fmt::Display) {
    header(out, m, kind);
    let _ = writeln!(out, "{} {value}", m.0);
}

/// Prometheus text exposition format 0.0.4.
/// `island`: the broker island's metrics, when Kafka is on.
pub fn render(
    shards: &[std::sync::Arc<ShardMetrics>],
    island: Option<&island::IslandMetrics>,
) -> String {
    let mut o = String::with_capacity(4096);
    header(&mut o, names::BUILD_INFO, "gauge");
    let _ = writeln!(
        o,
        "{}{{version=\"{}\"}} 1",
        names::BUILD_INFO.0,
        env!("CARGO_PKG_VERSION")
    );
    single(&mut o, names::SHARDS, "gauge", shards.len());

    let per_transport =
        |o: &mut String, m: (&str, &str), kind: &str, f: &dyn Fn(&ShardMetrics, usize) -> u64| {
            header(o, m, kind);
            for t in Transport::ALL {
                let v = sum(shards, |s| f(s, t as usize));
                // Gauges are summed as wrapping u64; a transient negative per shard cancels out.
                let _ = writeln!(o, "{}{{transport=\"{}\"}} {}", m.0, t.label(), v as i64);
            }
        };
    // A metric without labels, summed over the shards.
    let summed = |o: &mut String, m: (&str, &str), kind: &str, f: &dyn Fn(&ShardMetrics) -> u64| {
        single(o, m, kind, sum(shards, f));
    };
    per_transport(&mut o, names::CONNECTIONS, "gauge", &|s, t| {
        s.connections[t].get()
    });
    per_transport(&mut o, names::CONNECTIONS_OPENED, "counter", &|s, t| {
        s.connections_opened[t].get()
    });
    per_transport(&mut o, names::EVENTS_DELIVERED, "counter", &|s, t| {
        s.delivered[t].get()
    });
    per_transport(&mut o, names::SLOW_CONSUMER_CLOSES, "counter", &|s, t| {
        s.slow_consumer_closes[t].get()
    });

    header(&mut o, names::EVENTS_DROPPED, "counter");
    for t in Transport::ALL {
        for (r, reason) in DROP_REASONS.iter().enumerate() {
            let v = sum(shards, |s| s.dropped[t as usize][r].get());
            let _ = writeln!(
                o,
                "{}{{transport=\"{}\",reason=\"{reason}\"}} {v}",
                names::EVENTS_DROPPED.0,
                t.label()
            );
        }
    }

    header(&mut o, names::EVENTS_RECEIVED, "counter");
    for (i, src) in SOURCES.iter().enumerate() {
        let v = sum(shards, |s| s.received[i].get());
        let _ = writeln!(o, "{}{{source=\"{src}\"}} {v}", names::EVENTS_RECEIVED.0);
    }

    header(&mut o, names::EVENTS_UNWANTED, "counter");
    let _ = writeln!(
        o,
        "{}{{source=\"http\"}} {}",
        names::EVENTS_UNWANTED.0,
        sum(shards, |s| s.unwanted.get())
    );
    if let Some(i) = island {
        let _ = writeln!(
            o,
            "{}{{source=\"kafka\"}} {}",
            names::EVENTS_UNWANTED.0,
            i.unwanted.get()
        );
    }

    header(&mut o, names::RESUMES, "counter");
    for (i, r) in RESUME_RESULTS.iter().enumerate() {
        let v = sum(shards, |s| s.resumes[i].get());
        let _ = writeln!(o, "{}{{result=\"{r}\"}} {v}", names::RESUMES.0);
    }
    summed(&mut o, names::RESUMED_EVENTS, "counter", &|s| {
        s.resumed_events.get()
    });

    summed(&mut o, names::WRITER_PASSES, "counter", &|s| {
        s.writer_passes.get()
    });
    single(
        &mut o,
        names::WRITER_PASS_SECONDS,
        "counter",
        sum(shards, |s| s.writer_pass_us.get()) as f64 / 1e6,
    );
    summed(&mut o, names::STREAM_WRITES, "counter", &|s| {
        s.stream_writes.get()
    });
    summed(&mut o, names::WRITER_BATCHED_SHARDS, "gauge", &|s| {
        s.batched_writer.get()
    });

    summed(&mut o, names::IDLE_CLOSES, "counter", &|s| {
        s.idle_closes.get()
    });

    summed(&mut o, names::PENDING_REFUSED, "counter", &|s| {
        s.pending_refused.get()
    });

    summed(&mut o, names::ADDRESS_REFUSED, "counter", &|s| {
        s.address_refused.get()
    });

    header(&mut o, names::TLS_HANDSHAKES, "counter");
    let _ = writeln!(
        o,
        "{}{{result=\"ok\"}} {}\n{}{{result=\"failed\"}} {}",
        names::TLS_HANDSHAKES.0,
        sum(shards, |s| s.tls_handshakes.get()),
        names::TLS_HANDSHAKES.0,
        sum(shards, |s| s.tls_failures.get())
    );

    single(
        &mut o,
        names::SUBSCRIPTIONS,
        "gauge",
        sum(shards, |s| s.subscriptions.get()) as i64,
    );

    header(&mut o, names::HTTP_RESPONSES, "counter");
    for (l, listener) in LISTENERS.iter().enumerate() {
        for (c, class) in STATUS_CLASSES.iter().enumerate() {
            let v = sum(shards, |s| s.responses[l][c].get());
            let _ = writeln!(
                o,
                "{}{{listener=\"{listener}\",code=\"{class}\"}} {v}",
                names::HTTP_RESPONSES.0
            );
        }
    }
    let gateway: Vec<&proxy::ProxyMetrics> = shards.iter().map(|s| &s.proxy).collect();
    proxy::render(
        &mut o,
        &gateway,
        island.map_or(0, |i| i.replies_dropped.get()),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn histogram_buckets_are_cumulative_and_summed_over_parts() {
        use std::time::Duration;
        const B: [f64; 3] = [0.01, 0.1, 1.0];
        let (a, b) = (Histogram::<3>::default(), Histogram::<3>::default());
        a.observe(&B, Duration::from_millis(10)); // on a bound: in that bucket
        a.observe(&B, Duration::from_millis(50));
        b.observe(&B, Duration::from_millis(50));
        b.observe(&B, Duration::from_secs(7)); // beyond every bound: +Inf only
        let mut o = String::new();
        render_histogram(&mut o, "x_seconds", "topic=\"t\",", &B, &[&a, &b]);
        assert_eq!(
            o,
            "x_seconds_bucket{topic=\"t\",le=\"0.01\"} 1\n\
             x_seconds_bucket{topic=\"t\",le=\"0.1\"} 3\n\
             x_seconds_bucket{topic=\"t\",le=\"1\"} 3\n\
             x_seconds_bucket{topic=\"t\",le=\"+Inf\"} 4\n\
             x_seconds_sum{topic=\"t\"} 7.11\n\
             x_seconds_count{topic=\"t\"} 4\n"
        );
        let mut o = String::new();
        render_histogram(&mut o, "y", "", &B, &[&a]);
        assert!(
            o.ends_with("y_bucket{le=\"+Inf\"} 2\ny_sum 0.06\ny_count 2\n"),
            "{o}"
        );
    }

    #[test]
    fn gauges_sum_across_shards_even_when_one_goes_negative() {
        let a = Arc::new(ShardMetrics::default());
        let b = Arc::new(ShardMetrics::default());
        a.connections[0].add(3);
        b.connections[0].sub(1); // a connection counted up on a, down on b (cannot happen today, but must not wrap)
        a.received[Source::Http as usize].inc();
        let text = render(&[a, b], None);
        assert!(
            text.contains("corebridge_connections{transport=\"sse\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("corebridge_events_received_total{source=\"http\"} 1\n"));
    }
}
