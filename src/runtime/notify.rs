//! systemd's notify protocol (`Type=notify`), spoken directly: one datagram per message to
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). No crate needed for four
//! messages.
//!
//! ```text
//! shards up, listeners bound ─> brokers connected (or 10 s passed: STATUS says which are not)
//!   ─> READY=1 + STATUS ─> every WATCHDOG_USEC/2: WATCHDOG=1 if every shard's executor has
//!   beaten within a second (a stalled shard stops the pings: systemd restarts the service)
//!   ─> STATUS every 5 s (connections); SIGTERM: STOPPING=1 (from the signal thread)
//! ```
//! Each shard runs a beat task (every 100 ms) while a watchdog is configured; the check here
//! only reads the beats, so a wedged executor cannot fake one.

use super::shard::Globals;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long READY=1 waits for configured brokers before going out anyway (the gateway serves
/// without them; STATUS says so).
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// A shard whose beat is older than this counts as stalled.
const STALLED_AFTER: Duration = Duration::from_secs(1);
pub const BEAT_EVERY: Duration = Duration::from_millis(100);
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    pub fn new(path: &str) -> std::io::Result<Notifier> {
        let sock = UnixDatagram::unbound()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier { sock, addr })
    }

    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, "cannot notify systemd (whose fault: the notify socket)");
        }
    }
}

/// Milliseconds since `epoch` of each shard's last beat.
pub type Beats = Vec<AtomicU64>;

fn connections(g: &Globals) -> u64 {
    g.metrics
        .iter()
        .map(|m| m.connections.iter().map(|c| c.get()).sum::<u64>())
        .sum()
}

/// Runs on its own thread until shutdown.
pub fn run(g: Arc<Globals>, notifier: Arc<Notifier>, watchdog: Option<Duration>) {
    let started = Instant::now();
    let kafka_up = || g.broker.is_none() || g.island.up.get() == 1;
    while !kafka_up() && started.elapsed() < BROKER_WAIT && !g.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let brokers = if kafka_up() {
        "brokers connected"
    } else {
        "Kafka unreachable, serving without it"
    };
    notifier.send(&format!(
        "READY=1\nSTATUS={} shards, {brokers}, 0 connections\nMAINPID={}",
        g.metrics.len(),
        std::process::id()
    ));
    tracing::info!(
        watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
        "told systemd READY=1"
    );
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut last_status = Instant::now();
    let mut stalled_logged = false;
    loop {
        std::thread::sleep(tick);
        // STOPPING=1 is the signal thread's, sent before the drain starts.
        if g.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if watchdog.is_some() {
            let now = g.epoch.elapsed().as_millis() as u64;
            let stalled: Vec<usize> = g
                .beats
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    now.saturating_sub(b.load(Ordering::Relaxed)) > STALLED_AFTER.as_millis() as u64
                })
                .map(|(i, _)| i)
                .collect();
            if stalled.is_empty() {
                notifier.send("WATCHDOG=1");
                stalled_logged = false;
            } else if !stalled_logged {
                tracing::error!(shards = ?stalled, "shard executor not responding: withholding the systemd watchdog ping");
                stalled_logged = true;
            }
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            notifier.send(&format!(
                "STATUS={} shards, {} connections{}",
                g.metrics.len(),
                connections(&g),
                if kafka_up() {
                    ""
                } else {
                    ", Kafka unreachable"
                }
            ));
        }
    }
}
