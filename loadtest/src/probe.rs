//! Health probes beside a run (`health_probe_ms`): how responsive the server stays while a
//! storm or a failure goes on. Each probe is a fresh connection asking for the health page, on
//! the inbound port (behind the same accept queue as the clients) and on the API port (what an
//! orchestrator's liveness check would ask).

use crate::report::{latency, Latency};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A probe not answered within this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct HealthProbes {
    pub interval_ms: u64,
    pub inbound: ProbeStats,
    pub api: ProbeStats,
}

#[derive(Debug, Serialize)]
pub struct ProbeStats {
    pub path: String,
    pub answered: u64,
    pub failed: u64,
    pub latency: Latency,
}

struct Target {
    addr: SocketAddr,
    path: &'static str,
    hist: RefCell<Histogram<u64>>,
    failed: Cell<u64>,
}

pub struct Prober {
    interval: Duration,
    targets: Vec<Rc<Target>>,
    stop: Rc<Cell<bool>>,
}

impl Prober {
    /// Starts probing both ports every `interval` until `finish`.
    pub fn start(inbound: SocketAddr, api: SocketAddr, interval: Duration) -> Prober {
        let stop = Rc::new(Cell::new(false));
        let targets: Vec<Rc<Target>> = [(inbound, "/_rig/health"), (api, "/health")]
            .into_iter()
            .map(|(addr, path)| {
                Rc::new(Target {
                    addr,
                    path,
                    hist: RefCell::new(Histogram::new(3).expect("3 significant digits")),
                    failed: Cell::new(0),
                })
            })
            .collect();
        for t in &targets {
            let (t, stop) = (t.clone(), stop.clone());
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.get() {
                    tick.tick().await;
                    // One at a time per port: a slow answer delays the next probe, it does
                    // not pile probes onto a struggling server.
                    match tokio::time::timeout(PROBE_TIMEOUT, once(t.addr, t.path)).await {
                        Ok(Ok(d)) => {
                            let _ = t.hist.borrow_mut().record(d.as_micros() as u64);
                        }
                        _ => t.failed.set(t.failed.get() + 1),
                    }
                }
            });
        }
        Prober {
            interval,
            targets,
            stop,
        }
    }

    pub fn finish(self) -> HealthProbes {
        self.stop.set(true);
        let stats = |t: &Target| ProbeStats {
            path: t.path.to_string(),
            answered: t.hist.borrow().len(),
            failed: t.failed.get(),
            latency: latency(&t.hist.borrow()),
        };
        HealthProbes {
            interval_ms: self.interval.as_millis() as u64,
            inbound: stats(&self.targets[0]),
            api: stats(&self.targets[1]),
        }
    }
}

/// One probe: connect, ask, read the whole answer (the server closes); its time if it was 200.
async fn once(addr: SocketAddr, path: &str) -> std::io::Result<Duration> {
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).await?;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(t0.elapsed())
    } else {
        Err(std::io::Error::other("not 200"))
    }
}
