//! Probes of the Kinesis consumer and producer (island thread writers; entries per stream and
//! per shard created once under a mutex). Labels: stream and shard, bounded by the configured
//! streams and their shard counts.

use super::{escape, header, single, Counter};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

pub const UP: (&str, &str) = (
    "corebridge_kinesis_up",
    "1 while the last Kinesis call succeeded, 0 while Kinesis is unreachable.",
);
const RECEIVED: (&str, &str) = (
    "corebridge_kinesis_records_total",
    "Kinesis records read and decoded into events, per stream.",
);
const FAILED: (&str, &str) = (
    "corebridge_kinesis_records_failed_total",
    "Kinesis records skipped because they are not CloudEvents, per stream.",
);
const THROTTLED: (&str, &str) = (
    "corebridge_kinesis_throttled_total",
    "Kinesis reads refused for throughput (ProvisionedThroughputExceeded), per stream.",
);
const RESETS: (&str, &str) = (
    "corebridge_kinesis_position_resets_total",
    "Times a shard's position was not in the stream any more (the stream was deleted and created again, or lost its data), per stream; reading went on from the shard's oldest record.",
);
const AGE: (&str, &str) = (
    "corebridge_kinesis_iterator_age_milliseconds",
    "How far behind the tip of its shard this node reads (MillisBehindLatest).",
);
const PUT: (&str, &str) = (
    "corebridge_kinesis_put_records_total",
    "Records put to Kinesis, by outcome (ok, failed after retries).",
);

#[derive(Debug, Default)]
pub struct StreamStats {
    pub received: Counter,
    pub failed: Counter,
    pub throttled: Counter,
    pub resets: Counter,
}

#[derive(Debug, Default)]
pub struct KinesisMetrics {
    pub up: Counter,
    pub put_ok: Counter,
    pub put_failed: Counter,
    streams: Mutex<BTreeMap<String, Arc<StreamStats>>>,
    shards: Mutex<BTreeMap<(String, String), Arc<Counter>>>,
}

impl KinesisMetrics {
    pub fn stream(&self, stream: &str) -> Arc<StreamStats> {
        let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(stream.to_string()).or_default().clone()
    }

    /// The iterator age gauge of one shard.
    pub fn shard_age(&self, stream: &str, shard: &str) -> Arc<Counter> {
        let mut s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        s.entry((stream.to_string(), shard.to_string()))
            .or_default()
            .clone()
    }

    pub fn render(&self, o: &mut String) {
        single(o, UP, "gauge", self.up.get());
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for (m, f) in [
            (
                RECEIVED,
                (|s: &StreamStats| s.received.get()) as fn(&StreamStats) -> u64,
            ),
            (FAILED, |s| s.failed.get()),
            (THROTTLED, |s| s.throttled.get()),
            (RESETS, |s| s.resets.get()),
        ] {
            header(o, m, "counter");
            for (name, s) in streams.iter() {
                let _ = writeln!(o, "{}{{stream=\"{}\"}} {}", m.0, escape(name), f(s));
            }
        }
        drop(streams);
        header(o, AGE, "gauge");
        for ((stream, shard), age) in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                o,
                "{}{{stream=\"{}\",shard=\"{}\"}} {}",
                AGE.0,
                escape(stream),
                escape(shard),
                age.get()
            );
        }
        header(o, PUT, "counter");
        let _ = writeln!(
            o,
            "{}{{outcome=\"ok\"}} {}\n{}{{outcome=\"failed\"}} {}",
            PUT.0,
            self.put_ok.get(),
            PUT.0,
            self.put_failed.get()
        );
    }
}
