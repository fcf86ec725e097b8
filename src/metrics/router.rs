//! The clickstream router's probes (one process, its own Prometheus page on `ER_SERVER_PORT`).
//! Labels: the integration's topic (bounded by the registry's integrations) and partition.

use super::{escape, header, names, render_histogram, single, Counter, Histogram};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

const BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub retries: Counter,
    pub to_retry_topic: Counter,
    pub to_s3: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub invalidations: Counter,
    /// Entries read again because they outlived `CB_ROUTER_CACHE_TTL_S`.
    pub expirations: Counter,
    pub in_flight: Counter,
    lookup: Histogram<8>,
    consumed: Mutex<BTreeMap<String, Arc<Counter>>>,
    routed: Mutex<BTreeMap<String, Arc<Counter>>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl RouterMetrics {
    pub fn consumed(&self, topic: &str) -> Arc<Counter> {
        let mut m = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(topic.to_string()).or_default().clone()
    }

    pub fn routed(&self, topic: &str) -> Arc<Counter> {
        let mut m = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(topic.to_string()).or_default().clone()
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        let mut m = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((topic.to_string(), partition), lag.max(0));
    }

    pub fn observe_lookup(&self, d: std::time::Duration) {
        self.lookup.observe(&BUCKETS, d);
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for (m, map) in [
            (names::ROUTER_CONSUMED, &self.consumed),
            (names::ROUTER_ROUTED, &self.routed),
        ] {
            header(&mut o, m, "counter");
            for (t, c) in map.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = writeln!(o, "{}{{topic=\"{}\"}} {}", m.0, escape(t), c.get());
            }
        }
        for (m, c) in [
            (names::ROUTER_RETRIED, &self.retries),
            (names::ROUTER_TO_RETRY_TOPIC, &self.to_retry_topic),
            (names::ROUTER_TO_S3, &self.to_s3),
        ] {
            single(&mut o, m, "counter", c.get());
        }
        header(&mut o, names::ROUTER_CACHE, "counter");
        for (r, c) in [
            ("hit", &self.cache_hits),
            ("miss", &self.cache_misses),
            ("invalidation", &self.invalidations),
            ("expired", &self.expirations),
        ] {
            let _ = writeln!(o, "{}{{result=\"{r}\"}} {}", names::ROUTER_CACHE.0, c.get());
        }
        header(&mut o, names::ROUTER_LOOKUP, "histogram");
        render_histogram(
            &mut o,
            names::ROUTER_LOOKUP.0,
            "",
            &BUCKETS,
            &[&self.lookup],
        );
        single(
            &mut o,
            names::ROUTER_IN_FLIGHT,
            "gauge",
            self.in_flight.get(),
        );
        header(&mut o, names::ROUTER_LAG, "gauge");
        for ((t, p), l) in self.lag.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                o,
                "{}{{topic=\"{}\",partition=\"{p}\"}} {l}",
                names::ROUTER_LAG.0,
                escape(t)
            );
        }
        o
    }
}
