//! The run's summary: the text printed at the end, the JSON result file and the SVG report
//! (latency by percentile on a log-scaled 1/(1-p) axis, plus the headline numbers).

use crate::publish::PublishStats;
use crate::scenario::Scenario;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Default, Serialize)]
pub struct Connections {
    pub requested: u64,
    pub established: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// From spawning the workers until every attempt was settled.
    pub connect_seconds: f64,
    pub connections_per_second: f64,
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub connect_ms_max: f64,
    pub slow_readers: u64,
    /// Connections whose loss is measured (established, not slow, not churned).
    pub tracked: u64,
    /// Tracked connections the server closed or that failed while open.
    pub disconnected: u64,
    pub churn_closed: u64,
    pub churn_opened: u64,
    pub churn_failed: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Deliveries {
    /// Accepted events x tracked connections.
    pub expected: u64,
    /// Distinct events received on tracked connections.
    pub received: u64,
    /// Every delivery on every connection (slow readers, churned ones and duplicates included).
    pub received_total: u64,
    pub lost: u64,
    /// Of `lost`: holes below the highest sequence number a connection saw.
    pub lost_in_gaps: u64,
    pub duplicates: u64,
    /// Targeted scenarios: deliveries to a connection the event was not for.
    pub misrouted: u64,
    /// Arrivals after a later event of the same ordering stream (Kafka partition, publishing
    /// connection): a defect.
    pub reordered: u64,
    /// Arrivals after a later event of another stream: expected (partitions are consumed
    /// independently), reported for information.
    pub interleaved: u64,
    pub worst_connection_lost: u64,
    pub worst_connection_duplicates: u64,
    pub worst_connection_reordered: u64,
    /// Tracked connections that did not receive every accepted event.
    pub incomplete_connections: u64,
    /// From the first publish to the last delivery.
    pub seconds: f64,
    pub per_second: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
    /// (percentile, ms) points of the plotted curve.
    pub curve: Vec<(f64, f64)>,
}

#[derive(Debug, Default, Serialize)]
pub struct Server {
    pub pid: Option<u32>,
    pub cpu_seconds_total: Option<f64>,
    pub cpu_seconds_connect: Option<f64>,
    /// From the start of publishing until the last worker finished.
    pub cpu_seconds_delivery: Option<f64>,
    pub rss_bytes_before: Option<u64>,
    pub rss_bytes_after_connect: Option<u64>,
    pub rss_bytes_after_hold: Option<u64>,
    pub rss_bytes_end: Option<u64>,
    pub rss_growth_connect_bytes: Option<i64>,
    pub rss_growth_total_bytes: Option<i64>,
    /// RSS growth during connect / connections established.
    pub rss_bytes_per_connection: Option<f64>,
    /// RSS growth from before connecting to after the hold / connections established.
    pub rss_bytes_per_connection_after_hold: Option<f64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub cpu_seconds_per_million_deliveries: Option<f64>,
    /// The server's own counters (`GET /metrics`, summed over labels) once all were connected.
    pub metrics_connected: Option<crate::metrics::Totals>,
    /// Their growth over the run.
    pub metrics_delta: Option<crate::metrics::Totals>,
}

#[derive(Debug, Default, Serialize)]
pub struct Harness {
    pub cpu_seconds: f64,
    pub cpu_seconds_parent: f64,
    pub cpu_seconds_workers: f64,
    /// Harness CPU (parent + workers) per delivery received.
    pub cpu_us_per_delivery: Option<f64>,
    /// Each worker's RSS at its end.
    pub worker_rss_bytes: Vec<u64>,
    /// Workers' RSS together / connections requested (includes each worker's fixed base).
    pub rss_bytes_per_connection: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub started_unix_ms: u64,
    pub duration_seconds: f64,
    pub deadline_hit: bool,
    /// Problems that make the run not clean (exit status 3).
    pub problems: Vec<String>,
    pub connections: Connections,
    pub publishing: Option<PublishStats>,
    pub deliveries: Deliveries,
    pub latency: Latency,
    /// Connect + handshake time of each established connection.
    pub connect_latency: Latency,
    pub server: Server,
    pub harness: Harness,
    /// hdrhistogram V2 (base64) of all delivery latencies, microseconds.
    pub latency_histogram: String,
    /// Health probes beside the run (`health_probe_ms`).
    pub health: Option<crate::probe::HealthProbes>,
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles on the plot: 50% .. 99.999%, evenly spaced in log10(1/(1-p)).
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (2f64.log10(), 5.0);
    let steps = 150;
    (0..=steps)
        .map(|i| {
            let x = lo + (hi - lo) * i as f64 / steps as f64;
            let p = 1.0 - 10f64.powf(-x);
            (p * 100.0, ms(h.value_at_quantile(p)))
        })
        .collect()
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p99_9_ms: ms(h.value_at_quantile(0.999)),
        p99_99_ms: ms(h.value_at_quantile(0.9999)),
        max_ms: ms(h.max()),
        curve: curve(h),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Headline rows shared by the text summary and the SVG table.
fn headline(s: &Summary) -> Vec<(String, String)> {
    let c = &s.connections;
    let d = &s.deliveries;
    let l = &s.latency;
    let sv = &s.server;
    let mut rows = vec![
        (
            "scenario".into(),
            format!(
                "{} against {} ({}, {} connections{})",
                s.scenario.name,
                s.scenario.target.name(),
                s.scenario.transport.name(),
                s.scenario.connections,
                if s.scenario.targeted {
                    ", each on its own user"
                } else {
                    ""
                }
            ),
        ),
        (
            "connections".into(),
            format!(
                "{} established, {} failed in {:.2} s ({:.0}/s); connect p50 {:.2} ms p99 {:.2} ms",
                c.established,
                c.failed,
                c.connect_seconds,
                c.connections_per_second,
                c.connect_ms_p50,
                c.connect_ms_p99
            ),
        ),
    ];
    if let Some(p) = &s.publishing {
        rows.push((
            "published".into(),
            format!(
                "{}/{} accepted via {} ({} failed, {} unsent) in {:.2} s ({:.0}/s)",
                p.ok, p.events, p.via, p.failed, p.unsent, p.seconds, p.events_per_second
            ),
        ));
        rows.push((
            "deliveries".into(),
            format!(
                "{} expected, {} received ({} total incl. slow/churned), {:.0}/s",
                d.expected, d.received, d.received_total, d.per_second
            ),
        ));
        if s.scenario.targeted {
            rows.push((
                "misrouted".into(),
                format!("{} (events for another user)", d.misrouted),
            ));
        }
        rows.push((
            "loss / dup / reorder".into(),
            format!(
                "{} / {} / {} (worst connection {} / {} / {}; {} incomplete; {} interleaved across streams)",
                d.lost,
                d.duplicates,
                d.reordered,
                d.worst_connection_lost,
                d.worst_connection_duplicates,
                d.worst_connection_reordered,
                d.incomplete_connections,
                d.interleaved
            ),
        ));
        rows.push((
            "latency".into(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                l.p50_ms, l.p99_ms, l.p99_9_ms, l.max_ms
            ),
        ));
    }
    if c.slow_readers > 0 || c.churn_closed > 0 {
        rows.push((
            "slow / churn".into(),
            format!(
                "{} slow readers; churn closed {}, reopened {} ({} failed); {} tracked disconnected",
                c.slow_readers, c.churn_closed, c.churn_opened, c.churn_failed, c.disconnected
            ),
        ));
    }
    rows.push((
        "server CPU".into(),
        format!(
            "{} s total, {} s connecting, {} s delivering; {} us/delivery, {} s per million",
            opt(sv.cpu_seconds_total.map(|v| format!("{v:.2}"))),
            opt(sv.cpu_seconds_connect.map(|v| format!("{v:.2}"))),
            opt(sv.cpu_seconds_delivery.map(|v| format!("{v:.2}"))),
            opt(sv.cpu_us_per_delivery.map(|v| format!("{v:.3}"))),
            opt(sv
                .cpu_seconds_per_million_deliveries
                .map(|v| format!("{v:.2}")))
        ),
    ));
    rows.push((
        "server RSS".into(),
        format!(
            "{} before, {} after connect, {} end; {} bytes/connection ({} after hold)",
            opt(sv.rss_bytes_before.map(mib)),
            opt(sv.rss_bytes_after_connect.map(mib)),
            opt(sv.rss_bytes_end.map(mib)),
            opt(sv.rss_bytes_per_connection.map(|v| format!("{v:.0}"))),
            opt(sv
                .rss_bytes_per_connection_after_hold
                .map(|v| format!("{v:.0}")))
        ),
    ));
    if let Some(m) = &sv.metrics_delta {
        let g = |k: &str| m.get(k).copied().unwrap_or(0.0);
        rows.push((
            "server counters".into(),
            format!(
                "{} connections opened, {} events received ({} Kafka records), {} delivered, {} dropped, {} slow-consumer closes",
                g("corebridge_connections_opened_total"),
                g("corebridge_events_received_total"),
                g("corebridge_kafka_records_consumed_total"),
                g("corebridge_events_delivered_total"),
                g("corebridge_events_dropped_total"),
                g("corebridge_slow_consumer_closes_total")
            ),
        ));
    }
    if let Some(h) = &s.health {
        for (port, p) in [("inbound", &h.inbound), ("API", &h.api)] {
            rows.push((
                format!("health ({port})"),
                format!(
                    "GET {} every {} ms: {} answered, {} failed; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    p.path,
                    h.interval_ms,
                    p.answered,
                    p.failed,
                    p.latency.p50_ms,
                    p.latency.p99_ms,
                    p.latency.max_ms
                ),
            ));
        }
    }
    let hr = &s.harness;
    rows.push((
        "harness".into(),
        format!(
            "CPU {:.2} s ({:.2} s parent, {:.2} s workers; {} us/delivery); workers' RSS {} ({:.0} bytes/connection)",
            hr.cpu_seconds,
            hr.cpu_seconds_parent,
            hr.cpu_seconds_workers,
            opt(hr.cpu_us_per_delivery.map(|v| format!("{v:.3}"))),
            mib(hr.worker_rss_bytes.iter().sum()),
            hr.rss_bytes_per_connection
        ),
    ));
    rows
}

pub fn text(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} finished in {:.1} s{}",
        s.scenario.name,
        s.duration_seconds,
        if s.deadline_hit {
            " (DEADLINE HIT)"
        } else {
            ""
        }
    );
    for (k, v) in headline(s) {
        let _ = writeln!(out, "  {k:<21} {v}");
    }
    for (k, v) in &s.connections.errors {
        let _ = writeln!(out, "  connect error ({v}x): {k}");
    }
    if let Some(p) = &s.publishing {
        for (k, v) in &p.errors {
            let _ = writeln!(out, "  publish error ({v}x): {k}");
        }
    }
    if s.problems.is_empty() {
        let _ = writeln!(out, "  result                clean");
    } else {
        let _ = writeln!(
            out,
            "  result                NOT CLEAN: {}",
            s.problems.join("; ")
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round axis maximum and tick step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

pub fn svg(s: &Summary) -> String {
    let (w, h) = (1000.0, 640.0);
    let (px, py, pw, ph) = (80.0, 50.0, 560.0, 330.0);
    let (xlo, xhi) = (2f64.log10(), 5.0);
    // Connection-only scenarios plot the connect + handshake time instead.
    let (plotted, what) = if s.latency.curve.is_empty() && !s.connect_latency.curve.is_empty() {
        (&s.connect_latency, "connect + handshake time by percentile")
    } else {
        (&s.latency, "delivery latency by percentile")
    };
    let curve = &plotted.curve;
    let ymax_data = curve.iter().map(|c| c.1).fold(0.0, f64::max);
    let (ymax, ystep) = nice(ymax_data);
    let x_of = |pct: f64| {
        let p = (pct / 100.0).min(0.999_999_9);
        let x = (1.0 / (1.0 - p)).log10();
        px + (x - xlo) / (xhi - xlo) * pw
    };
    let y_of = |v: f64| py + ph - v / ymax * ph;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{px}" y="28" font-size="16" font-weight="bold">{} — {what}</text>"#,
        esc(&s.scenario.name)
    );
    // Grid and axes.
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let y = y_of(v);
        let _ = writeln!(
            o,
            r##"<line x1="{px}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            px + pw,
            px - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
        v += ystep;
    }
    for (pct, label) in [
        (50.0, "50%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = x_of(pct);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            py + ph,
            py + ph + 18.0
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1/(1-p))</text>"#,
        px + pw / 2.0,
        py + ph + 38.0
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(24 {:.1}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        py + ph / 2.0
    );
    if curve.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
            px + pw / 2.0,
            py + ph / 2.0
        );
    } else {
        let pts: Vec<String> = curve
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x_of(*p), y_of(*v)))
            .collect();
        let _ = writeln!(
            o,
            r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
    }
    // Headline numbers at the side, the long rows below.
    let l = plotted;
    let sv = &s.server;
    let side = [
        ("p50", format!("{:.2} ms", l.p50_ms)),
        ("p99", format!("{:.2} ms", l.p99_ms)),
        ("p99.9", format!("{:.2} ms", l.p99_9_ms)),
        ("max", format!("{:.2} ms", l.max_ms)),
        ("deliveries/s", format!("{:.0}", s.deliveries.per_second)),
        ("lost", s.deliveries.lost.to_string()),
        ("duplicates", s.deliveries.duplicates.to_string()),
        ("reordered", s.deliveries.reordered.to_string()),
        (
            "server us/delivery",
            opt(sv.cpu_us_per_delivery.map(|v| format!("{v:.3}"))),
        ),
        (
            "server RSS/conn",
            opt(sv.rss_bytes_per_connection.map(|v| format!("{v:.0} B"))),
        ),
        (
            "connections",
            format!("{}/{}", s.connections.established, s.connections.requested),
        ),
    ];
    let tx = px + pw + 30.0;
    for (i, (k, v)) in side.iter().enumerate() {
        let y = py + 16.0 + i as f64 * 22.0;
        let _ = writeln!(
            o,
            r#"<text x="{tx}" y="{y}">{}</text><text x="{:.1}" y="{y}" text-anchor="end" font-weight="bold">{}</text>"#,
            esc(k),
            w - 20.0,
            esc(v)
        );
    }
    for (i, (k, v)) in headline(s).iter().enumerate() {
        let y = py + ph + 70.0 + i as f64 * 18.0;
        let _ = writeln!(
            o,
            r#"<text x="20" y="{y}" font-weight="bold">{}</text><text x="190" y="{y}">{}</text>"#,
            esc(k),
            esc(v)
        );
    }
    o.push_str("</svg>\n");
    o
}

fn fmt_tick(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else if (v * 10.0) == (v * 10.0).trunc() {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis() {
        assert_eq!(nice(7.3), (8.0, 2.0));
        assert_eq!(nice(0.0), (1.0, 0.2));
        assert_eq!(nice(120.0), (125.0, 25.0));
    }

    #[test]
    fn curve_spans_the_axis() {
        let mut h = crate::worker::new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert!((c[0].0 - 50.0).abs() < 1e-9);
        assert!((c.last().unwrap().0 - 99.999).abs() < 1e-6);
        assert!(c.windows(2).all(|w| w[1].1 >= w[0].1));
    }
}
