//! Micro-benchmarks of the hot paths, each printing its cost per operation (p50/p99/p999 over
//! samples of many operations): HTTP parsing, SSE and WebSocket encoding, subscription matching
//! with 1,000 and 100,000 subscriptions, the shard-to-shard hop and the island-to-shard hop.
//! `cargo bench --bench hot_paths` (optionally a name filter: `cargo bench --bench hot_paths -- sse`).
//! CPU time, not wall time, is what matters on a shared machine: each line also gives the
//! process CPU time per operation.

use bytes::Bytes;
use corebridge::config::{Config, EnvMap};
use corebridge::metrics::{ShardMetrics, Transport};
use corebridge::proto::{http1, sse, ws};
use corebridge::route::subscription::{Limits, Subscription, SubscriptionSet};
use corebridge::route::Event;
use corebridge::session::Sessions;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts)
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// True when no name filter was given or one of them occurs in `name`.
fn selected(name: &str) -> bool {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
}

/// Runs `samples` samples of `per_sample` operations; prints per-op percentiles.
fn bench(name: &str, samples: usize, per_sample: u64, mut op: impl FnMut(u64)) {
    if !selected(name) {
        return;
    }
    for i in 0..per_sample.min(1000) {
        op(i); // warm-up
    }
    let mut per_op: Vec<f64> = Vec::with_capacity(samples);
    let cpu0 = cpu_time();
    for s in 0..samples {
        let t = Instant::now();
        for i in 0..per_sample {
            op(s as u64 * per_sample + i);
        }
        per_op.push(t.elapsed().as_nanos() as f64 / per_sample as f64);
    }
    let cpu = (cpu_time() - cpu0).as_nanos() as f64 / (samples as u64 * per_sample) as f64;
    per_op.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| per_op[((per_op.len() - 1) as f64 * p) as usize];
    println!(
        "{name:<44} p50 {:>9.1} ns/op  p99 {:>9.1}  p999 {:>9.1}  cpu {:>9.1} ns/op",
        q(0.5),
        q(0.99),
        q(0.999),
        cpu
    );
}

fn sessions_with(n: usize, constrained: bool) -> (Sessions, Vec<Event>) {
    let mut env = EnvMap::new();
    env.insert(
        "EXTRACTORS".into(),
        r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"}}}}"#
            .into(),
    );
    let cfg = Arc::new(Config::load(&env, None).unwrap());
    let extractors = cfg.extractors.clone();
    let mut s = Sessions::new(cfg, 1, 0, Arc::new(ShardMetrics::default()));
    let limits = Limits {
        max_subscriptions: 8,
        max_clauses: 8,
        max_bytes: 16 * 1024,
    };
    for i in 0..n {
        let sub = if constrained {
            serde_json::json!([{"eventType": "greeting", "oneOf": [{"name": format!("user{i}")}]}])
        } else {
            serde_json::json!([{"eventType": "greeting"}])
        };
        let subs = Subscription::parse_list(&sub, limits).unwrap();
        let set = SubscriptionSet::build(&subs, &extractors, limits).unwrap();
        s.open(Transport::Sse, set, None).unwrap();
    }
    let events = (0..64)
        .map(|i| {
            let v = serde_json::json!({"specversion":"1.0","type":"greeting","source":"b","id":i.to_string(),
                "data":{"name": format!("user{}", i * 7 % n.max(1)), "pad": "x".repeat(120)}});
            let ce = corebridge::proto::cloudevents::from_value(v).unwrap();
            Event::from_cloudevent(&ce, format!("0-{i}"), &extractors)
        })
        .collect();
    (s, events)
}

fn main() {
    let req = b"GET /_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D HTTP/1.1\r\n\
host: gateway.example\r\nuser-agent: Mozilla/5.0\r\naccept: text/event-stream\r\ncookie: a=b\r\n\r\n";
    let limits = http1::Limits {
        max_head_bytes: 32768,
        max_headers: 64,
        max_uri_bytes: 16384,
        max_body_bytes: 1 << 20,
    };
    bench("http1::parse_head (5 headers)", 200, 2000, |_| {
        black_box(http1::parse_head(black_box(req), &limits).unwrap());
    });

    let json = format!(
        r#"{{"specversion":"1.0","type":"greeting","source":"b","id":"1","data":"{}"}}"#,
        "x".repeat(130)
    );
    let mut out = Vec::with_capacity(512);
    bench("sse::encode_event (200 B event)", 200, 10_000, |_| {
        out.clear();
        sse::encode_event(&mut out, Some("0-1"), Some("greeting"), black_box(&json));
        black_box(&out);
    });
    bench("ws::encode_frame (200 B event)", 200, 10_000, |_| {
        out.clear();
        ws::encode_frame(&mut out, ws::OpCode::Text, black_box(json.as_bytes()));
        black_box(&out);
    });

    // permessage-deflate: compressing one event (done once per event per shard, the same
    // bytes then go to every deflate connection) and what it saves on the wire. Realistic
    // JSON (a CloudEvent with an object payload), not a run of one letter.
    let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
    for (label, items) in [("200 B", 2usize), ("2 KB", 28)] {
        let data: Vec<serde_json::Value> = (0..items)
            .map(|i| {
                let status = ["new", "paid", "shipped"][i % 3];
                serde_json::json!({"orderId": format!("ord-{:06}", 7919 * i), "status": status, "amount": 12.5 * i as f64, "currency": "EUR"})
            })
            .collect();
        let ev = serde_json::json!({"specversion":"1.0","type":"order.updated","source":"/orders","id":"4c1f0c2e-9a4b-4e2e-8f0a-1f1c2d3e4f5a","data": data}).to_string();
        ws::encode_deflated(&mut out, ev.as_bytes(), &mut c);
        if selected("deflate") {
            let mut plain = Vec::new();
            ws::encode_frame(&mut plain, ws::OpCode::Text, ev.as_bytes());
            out.clear();
            ws::encode_deflated(&mut out, ev.as_bytes(), &mut c);
            println!(
                "ws deflate {label} event: {} B JSON, frame {} B plain -> {} B compressed ({:.0}% saved)",
                ev.len(),
                plain.len(),
                out.len(),
                100.0 - 100.0 * out.len() as f64 / plain.len() as f64
            );
        }
        bench(
            &format!("ws::encode_deflated ({label} event)"),
            100,
            1_000,
            |_| {
                out.clear();
                ws::encode_deflated(&mut out, black_box(ev.as_bytes()), &mut c);
                black_box(&out);
            },
        );
    }

    // Matching + encoding once + queueing to every matching session (unconstrained: all
    // match). Eight events, so no queue reaches the slow-consumer bound.
    for n in [1_000usize, 100_000] {
        if !selected("deliver") {
            break;
        }
        let (mut s, events) = sessions_with(n, false);
        let (t, c) = (Instant::now(), cpu_time());
        let rounds = 8;
        for ev in events.iter().take(rounds) {
            black_box(s.deliver(ev));
        }
        let per = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
        let cpu = (cpu_time() - c).as_nanos() as f64 / (rounds * n) as f64;
        println!(
            "{:<44} {per:>9.1} ns/delivery  cpu {cpu:>7.1} ns/delivery",
            format!("deliver to {n} subscribers")
        );
    }
    // Constrained: one matching session among n; cost must not grow with n.
    for n in [1_000usize, 100_000] {
        let (mut s, events) = sessions_with(n, true);
        let mut k = 0usize;
        bench(
            &format!("match 1 of {n} constrained subscriptions"),
            100,
            100,
            |_| {
                black_box(s.deliver(&events[k % events.len()]));
                k += 1;
            },
        );
    }

    // The island-to-shard hop: a std thread sends batches of 256 events through the bounded
    // queue a shard drains; then shard to shard through the mesh.
    if selected("hop") {
        hops();
    }
}

fn hops() {
    let ev = Arc::new(Event {
        event_type: "t".into(),
        id: "1".into(),
        json: Bytes::from_static(b"{}"),
        fields: Vec::new(),
        pos: None,
    });
    let batch = Arc::new(vec![ev; 256]);
    let batches = 20_000u64;
    let (tx, rx) = async_channel::bounded::<Arc<Vec<Arc<Event>>>>(64);
    let consumer = on_shard(async move {
        let mut n = 0u64;
        while let Ok(b) = rx.recv().await {
            n += b.len() as u64;
        }
        n
    });
    let t = Instant::now();
    for _ in 0..batches {
        tx.send_blocking(batch.clone()).unwrap();
    }
    drop(tx);
    let n = consumer.join().unwrap();
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{:<44} {per:>9.1} ns/event ({:.1} M events/s, batches of 256)",
        "island -> shard hop",
        1e3 / per
    );

    // Shard to shard through the mesh (a bounded queue into each shard), batches of 256.
    let (tx, rx) = async_channel::bounded::<Arc<Vec<Arc<Event>>>>(64);
    let b = batch.clone();
    let receiver = on_shard(async move {
        let mut n = 0u64;
        while n < batches * 256 {
            match rx.recv().await {
                Ok(b) => n += b.len() as u64,
                _ => break,
            }
        }
        (n, Instant::now())
    });
    let sender = on_shard(async move {
        let t = Instant::now();
        for _ in 0..batches {
            tx.send(b.clone()).await.unwrap();
        }
        t
    });
    let t0 = sender.join().unwrap();
    let (n, t1) = receiver.join().unwrap();
    let per = (t1 - t0).as_nanos() as f64 / n as f64;
    println!(
        "{:<44} {per:>9.1} ns/event ({:.1} M events/s, batches of 256)",
        "shard -> shard hop (mesh)",
        1e3 / per
    );
}

/// Runs `f` on a thread of its own with a single-threaded runtime, as a shard does.
fn on_shard<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}
