//! Probes of the Kinesis consumer and producer (island thread writers; entries per stream and
//! per shard created once under a mutex). Labels: stream and shard, bounded by the configured
//! streams and their shard counts.

use super::{escape, header, names, single, Counter};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

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

    /// Each stream's counters, in name order.
    pub fn each_stream(&self, mut f: impl FnMut(&str, &StreamStats)) {
        for (t, s) in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(t, s);
        }
    }

    /// The iterator age gauge of one shard.
    pub fn shard_age(&self, stream: &str, shard: &str) -> Arc<Counter> {
        let mut s = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        s.entry((stream.to_string(), shard.to_string()))
            .or_default()
            .clone()
    }

    pub fn render(&self, o: &mut String) {
        single(o, names::KINESIS_UP, "gauge", self.up.get());
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for (m, f) in [
            (
                names::KINESIS_RECEIVED,
                (|s: &StreamStats| s.received.get()) as fn(&StreamStats) -> u64,
            ),
            (names::KINESIS_FAILED, |s| s.failed.get()),
            (names::KINESIS_THROTTLED, |s| s.throttled.get()),
            (names::KINESIS_RESETS, |s| s.resets.get()),
        ] {
            header(o, m, "counter");
            for (name, s) in streams.iter() {
                let _ = writeln!(o, "{}{{stream=\"{}\"}} {}", m.0, escape(name), f(s));
            }
        }
        drop(streams);
        header(o, names::KINESIS_AGE, "gauge");
        for ((stream, shard), age) in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                o,
                "{}{{stream=\"{}\",shard=\"{}\"}} {}",
                names::KINESIS_AGE.0,
                escape(stream),
                escape(shard),
                age.get()
            );
        }
        header(o, names::KINESIS_PUT, "counter");
        let _ = writeln!(
            o,
            "{}{{outcome=\"ok\"}} {}\n{}{{outcome=\"failed\"}} {}",
            names::KINESIS_PUT.0,
            self.put_ok.get(),
            names::KINESIS_PUT.0,
            self.put_failed.get()
        );
    }
}
