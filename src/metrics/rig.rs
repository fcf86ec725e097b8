//! RIG's own metric names, so the dashboards and alerts a RIG deployment has keep working
//! after the switch. They are the counters behind the `corebridge_*` series, under RIG's
//! names and labels: `rig_consumed_events_total` and `rig_consumed_events_failed_total`
//! {source, topic}, `rig_produced_events_total` and `rig_produced_events_failed_total`
//! {target} (Corebridge counts produced records per target, not per topic), and
//! `rig_subscriptions_total`. `rig_proxy_requests_total` is the proxy's own (`proxy.rs`).
//! Not kept: `rig_consumed_events_forwarded_total` (RIG counts it only at debug log level),
//! the processing-duration histogram, `rig_distributed_set_items_*` and `erlang_vm_*`.

use super::island::IslandMetrics;
use super::kinesis::KinesisMetrics;
use super::nats::NatsMetrics;
use super::{escape, header, names, single};
use std::fmt::Write;

/// The sources and targets this node has (None: not configured).
pub struct Brokers<'a> {
    pub kafka: Option<&'a IslandMetrics>,
    /// Which Kafka topics are event sources (control and response topics are not: RIG did
    /// not count them). Replays of a source topic count, as records read again.
    pub kafka_source: &'a dyn Fn(&str) -> bool,
    pub kinesis: Option<&'a KinesisMetrics>,
    pub nats: Option<&'a NatsMetrics>,
}

pub fn render(o: &mut String, b: &Brokers, shards: &[std::sync::Arc<super::ShardMetrics>]) {
    // (source, topic, consumed, failed)
    let mut consumed: Vec<(&str, String, u64, u64)> = Vec::new();
    if let Some(k) = b.kafka {
        k.each_topic(|t, s| {
            if (b.kafka_source)(t) {
                let failed = s.failed.get() + s.too_large.get();
                consumed.push(("kafka", t.to_string(), s.consumed.get(), failed));
            }
        });
    }
    if let Some(k) = b.kinesis {
        k.each_stream(|t, s| {
            consumed.push(("kinesis", t.to_string(), s.received.get(), s.failed.get()));
        });
    }
    if let Some(n) = b.nats {
        n.each_subject(|t, s| {
            consumed.push(("nats", t.to_string(), s.received.get(), s.failed.get()));
        });
    }
    for (m, failed) in [
        (names::RIG_CONSUMED, false),
        (names::RIG_CONSUMED_FAILED, true),
    ] {
        header(o, m, "counter");
        for (source, topic, ok, bad) in &consumed {
            let v = if failed { bad } else { ok };
            let _ = writeln!(
                o,
                "{}{{source=\"{source}\",topic=\"{}\"}} {v}",
                m.0,
                escape(topic)
            );
        }
    }
    // (target, produced, failed)
    let mut produced: Vec<(&str, u64, u64)> = Vec::new();
    if let Some(k) = b.kafka {
        produced.push((
            "kafka",
            k.events_produced.get(),
            k.events_produce_failed.get(),
        ));
    }
    if let Some(k) = b.kinesis {
        produced.push(("kinesis", k.put_ok.get(), k.put_failed.get()));
    }
    if let Some(n) = b.nats {
        produced.push(("nats", n.published_ok.get(), n.published_failed.get()));
    }
    for (m, failed) in [
        (names::RIG_PRODUCED, false),
        (names::RIG_PRODUCED_FAILED, true),
    ] {
        header(o, m, "counter");
        for (target, ok, bad) in &produced {
            let v = if failed { bad } else { ok };
            let _ = writeln!(o, "{}{{target=\"{target}\"}} {v}", m.0);
        }
    }
    // Gauges are summed as wrapping u64, as `corebridge_subscriptions`. Untyped: RIG called
    // it a gauge, but a gauge named `_total` fails Prometheus's lint.
    let subscriptions = super::sum(shards, |s| s.subscriptions.get()) as i64;
    single(o, names::RIG_SUBSCRIPTIONS, "untyped", subscriptions);
}
