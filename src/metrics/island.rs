//! Probes of the broker island. All writers run on the island's single thread, so the
//! single-writer `Counter` applies; per-topic and per-partition entries are created under a
//! mutex once (when a partition is first consumed) and then updated lock-free. Labels: topic
//! and partition, bounded by the configured source topics.

use super::{escape, header, names, render_histogram, single, Counter, Histogram};
use crate::route::Control;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Default)]
pub struct TopicStats {
    pub consumed: Counter,
    pub failed: Counter,
    pub too_large: Counter,
    /// A partition's log ended below our position: lost or recreated; read from its start.
    pub log_resets: Counter,
    pub fetch_failures: Counter,
    /// Source records: time from their Kafka timestamp to their fetch (`AGE_BUCKETS`).
    pub age: Histogram<12>,
}

#[derive(Debug, Default)]
pub struct PartitionStats {
    pub lag: Counter,
}

/// Upper bounds (seconds) of the produce latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) of the record age histogram: live reading (milliseconds) up to a
/// replay from the start of a log (hours).
pub const AGE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

#[derive(Debug, Default)]
pub struct IslandMetrics {
    /// Set through `broker_lost` (0) and directly (1).
    pub up: Counter,
    /// How many times any part of the node found Kafka unreachable (see `broker_lost`).
    outages: Counter,
    pub connect_failures: Counter,
    pub produced: Counter,
    /// Events (publish API, proxy targets) Kafka acknowledged or refused: RIG's
    /// `rig_produced_events_*`, which leave out control, response and request-log records.
    pub events_produced: Counter,
    pub events_produce_failed: Counter,
    pub produce_unavailable: Counter,
    pub produce_rejected: Counter,
    /// Records decoded into events no shard has a taker for.
    pub unwanted: Counter,
    /// Response records naming this node but no shard of it (forged or from a bigger node).
    pub replies_dropped: Counter,
    latency: Histogram<12>,
    topics: Mutex<BTreeMap<String, Arc<TopicStats>>>,
    partitions: Mutex<BTreeMap<(String, i32), Arc<PartitionStats>>>,
    queues: OnceLock<Vec<async_channel::Sender<Control>>>,
}

impl IslandMetrics {
    /// Kafka was found unreachable. Also counted: a partition reader whose own call rskafka
    /// retried through the outage never sees an error, and must learn from the count that
    /// the broker it reads now may have lost the log it read before.
    pub fn broker_lost(&self) {
        self.up.set(0);
        self.outages.inc();
    }

    pub fn outages(&self) -> u64 {
        self.outages.get()
    }

    pub fn topic(&self, topic: &str) -> Arc<TopicStats> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(topic.to_string()).or_default().clone()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionStats> {
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.entry((topic.to_string(), partition)).or_default().clone()
    }

    pub fn observe_produce(&self, d: std::time::Duration) {
        self.latency.observe(&BUCKETS, d);
    }

    /// (topic, partition, lag) of every partition read (the status page).
    pub fn lags(&self) -> Vec<(String, i32, u64)> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((t, p), s)| (t.clone(), *p, s.lag.get()))
            .collect()
    }

    /// Each topic's counters, in name order.
    pub fn each_topic(&self, mut f: impl FnMut(&str, &TopicStats)) {
        for (t, s) in self.topics.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f(t, s);
        }
    }

    pub fn watch_queues(&self, queues: Vec<async_channel::Sender<Control>>) {
        let _ = self.queues.set(queues);
    }

    pub fn render(&self, o: &mut String) {
        single(o, names::KAFKA_UP, "gauge", self.up.get());
        header(o, names::KAFKA_CONNECT_FAILURES, "counter");
        let _ = writeln!(
            o,
            "{} {}",
            names::KAFKA_CONNECT_FAILURES.0,
            self.connect_failures.get()
        );
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for (m, f) in [
            (
                names::KAFKA_CONSUMED,
                (|t: &TopicStats| t.consumed.get()) as fn(&TopicStats) -> u64,
            ),
            (names::KAFKA_FAILED, |t| t.failed.get()),
            (names::KAFKA_TOO_LARGE, |t| t.too_large.get()),
            (names::KAFKA_LOG_RESETS, |t| t.log_resets.get()),
            (names::KAFKA_FETCH_FAILURES, |t| t.fetch_failures.get()),
        ] {
            header(o, m, "counter");
            for (name, t) in topics.iter() {
                let _ = writeln!(o, "{}{{topic=\"{}\"}} {}", m.0, escape(name), f(t));
            }
        }
        header(o, names::KAFKA_RECORD_AGE, "histogram");
        for (name, t) in topics.iter() {
            let labels = format!("topic=\"{}\",", escape(name));
            render_histogram(
                o,
                names::KAFKA_RECORD_AGE.0,
                &labels,
                &AGE_BUCKETS,
                &[&t.age],
            );
        }
        drop(topics);
        header(o, names::KAFKA_LAG, "gauge");
        for ((topic, p), s) in self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "{}{{topic=\"{}\",partition=\"{p}\"}} {}",
                names::KAFKA_LAG.0,
                escape(topic),
                s.lag.get()
            );
        }
        single(o, names::KAFKA_PRODUCED, "counter", self.produced.get());
        header(o, names::KAFKA_PRODUCE_FAILED, "counter");
        let _ = writeln!(
            o,
            "{}{{reason=\"unavailable\"}} {}\n{}{{reason=\"rejected\"}} {}",
            names::KAFKA_PRODUCE_FAILED.0,
            self.produce_unavailable.get(),
            names::KAFKA_PRODUCE_FAILED.0,
            self.produce_rejected.get()
        );
        header(o, names::KAFKA_PRODUCE_LATENCY, "histogram");
        render_histogram(
            o,
            names::KAFKA_PRODUCE_LATENCY.0,
            "",
            &BUCKETS,
            &[&self.latency],
        );
        header(o, names::ISLAND_QUEUE, "gauge");
        if let Some(queues) = self.queues.get() {
            for (i, q) in queues.iter().enumerate() {
                let _ = writeln!(o, "{}{{shard=\"{i}\"}} {}", names::ISLAND_QUEUE.0, q.len());
            }
        }
    }
}
