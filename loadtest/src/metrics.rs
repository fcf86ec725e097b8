//! Best-effort scrape of the server's Prometheus counters (`GET /metrics` on the internal
//! port), to cross-check the clients' view with the server's: deliveries, slow-consumer closes,
//! dropped events.

use crate::net;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Metric families summed over their labels.
pub const FAMILIES: &[&str] = &[
    "corebridge_connections",
    "corebridge_connections_opened_total",
    "corebridge_events_received_total",
    "corebridge_events_delivered_total",
    "corebridge_events_dropped_total",
    "corebridge_slow_consumer_closes_total",
    "corebridge_kafka_records_consumed_total",
];

pub type Totals = BTreeMap<String, f64>;

/// Sums each family in [`FAMILIES`] over its label sets.
pub fn parse(text: &str) -> Totals {
    let mut out = Totals::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if FAMILIES.contains(&name) {
            if let Ok(v) = value.trim().parse::<f64>() {
                *out.entry(name.to_string()).or_default() += v;
            }
        }
    }
    out
}

/// `None` when the endpoint cannot be read (not fatal: the harness still measures).
pub async fn scrape(addr: SocketAddr) -> Option<Totals> {
    let scratch = RefCell::new(vec![0u8; 16 * 1024]);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = net::connect(addr, None, false).await.ok()?;
        // No `Connection: close`: we close first, so the TIME_WAIT stays on our side and the
        // server can be restarted on its port right away.
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        net::write_all(&s, req.as_bytes()).await.ok()?;
        let (head, body) = net::read_response(&mut s, &scratch, 8 << 20).await.ok()?;
        (head.status == 200).then(|| parse(&String::from_utf8_lossy(&body)))
    })
    .await;
    r.ok().flatten()
}

/// `after - before` for every family present in both.
pub fn delta(before: &Option<Totals>, after: &Option<Totals>) -> Option<Totals> {
    let (b, a) = (before.as_ref()?, after.as_ref()?);
    Some(
        a.iter()
            .filter_map(|(k, v)| b.get(k).map(|bv| (k.clone(), v - bv)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_labels() {
        let t = parse(
            "# HELP x\ncorebridge_events_delivered_total{transport=\"sse\"} 10\ncorebridge_events_delivered_total{transport=\"ws\"} 5\ncorebridge_shards 2\ncorebridge_connections 3\n",
        );
        assert_eq!(t["corebridge_events_delivered_total"], 15.0);
        assert_eq!(t["corebridge_connections"], 3.0);
        assert!(!t.contains_key("corebridge_shards"));
    }
}
