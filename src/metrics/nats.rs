//! Probes of the NATS island (its thread writes them; entries per configured subject, created
//! at start, so labels are bounded by the configuration).

use super::{escape, header, names, single, Counter};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct SubjectStats {
    pub received: Counter,
    pub failed: Counter,
}

#[derive(Debug, Default)]
pub struct NatsMetrics {
    pub up: Counter,
    pub slow_consumer: Counter,
    pub published_ok: Counter,
    pub published_failed: Counter,
    subjects: Mutex<BTreeMap<String, Arc<SubjectStats>>>,
}

impl NatsMetrics {
    /// The counters of one subscription (a configured subject, wildcards as written).
    pub fn subject(&self, subject: &str) -> Arc<SubjectStats> {
        let mut s = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(subject.to_string()).or_default().clone()
    }

    /// Each subscribed subject's counters, in name order.
    pub fn each_subject(&self, mut f: impl FnMut(&str, &SubjectStats)) {
        for (t, s) in self
            .subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(t, s);
        }
    }

    pub fn render(&self, o: &mut String) {
        single(o, names::NATS_UP, "gauge", self.up.get());
        let subjects = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        for (m, f) in [
            (
                names::NATS_RECEIVED,
                (|s: &SubjectStats| s.received.get()) as fn(&SubjectStats) -> u64,
            ),
            (names::NATS_FAILED, |s| s.failed.get()),
        ] {
            header(o, m, "counter");
            for (name, s) in subjects.iter() {
                let _ = writeln!(o, "{}{{subject=\"{}\"}} {}", m.0, escape(name), f(s));
            }
        }
        drop(subjects);
        single(o, names::NATS_SLOW, "counter", self.slow_consumer.get());
        header(o, names::NATS_PUBLISHED, "counter");
        let _ = writeln!(
            o,
            "{}{{outcome=\"ok\"}} {}\n{}{{outcome=\"failed\"}} {}",
            names::NATS_PUBLISHED.0,
            self.published_ok.get(),
            names::NATS_PUBLISHED.0,
            self.published_failed.get()
        );
    }
}
