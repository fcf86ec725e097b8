//! Executors and their placement, the shard mesh, start-up checks and the accept loops.
//! One thread per shard, pinned to its CPU, running its own single-threaded runtime (`rt`), each
//! with its own SO_REUSEPORT listeners so the kernel spreads connections; shards share nothing
//! mutable.

pub mod island;
pub mod notify;
pub mod oneshot;
pub mod rt;
pub mod shard;
mod sys;

use rt::TcpListener;
use sys::{block_signals, listen, wait_for_signal};

use crate::config::Config;
use crate::conn;
use crate::error::Blame;
use crate::metrics::island::IslandMetrics;
use crate::metrics::{Listener, ShardMetrics};
use crate::route::Control;
use crate::session::CloseReason;
use shard::{Globals, Shard, ShardMsg};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("JWT configuration: {0}")]
    Jwt(crate::auth::jwt::KeyError),
    #[error("cannot start shard {shard} on cpu {cpu}: {reason}")]
    Executor {
        shard: usize,
        cpu: usize,
        reason: String,
    },
}

/// CPUs the shards run on, one entry per shard.
fn placement(cfg: &Config) -> Vec<usize> {
    let online = sys::allowed_cpus();
    let mut cpus = if cfg.tuning.runtime.cpus.is_empty() {
        online
    } else {
        cfg.tuning.runtime.cpus.clone()
    };
    cpus.sort_unstable();
    if cpus.is_empty() {
        cpus.push(0);
    }
    let n = cfg.shard_count(cpus.len());
    (0..n).map(|i| cpus[i % cpus.len()]).collect()
}

/// Refuses to share a port with a process that is not us: SO_REUSEPORT would otherwise let a
/// second instance silently take half the connections.
fn probe_port(addr: std::net::SocketAddr) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| StartError::Bind { addr, source })
}

/// How often shard 0 gives free heap memory back to the kernel, and how much must be free for
/// it to (a trim walks every arena, so not on every tick).
const HEAP_TRIM_EVERY: Duration = Duration::from_secs(5);
const HEAP_TRIM_FREE: usize = 8 << 20;

/// Starts every shard and blocks until they stop (SIGTERM or SIGINT).
pub fn run(cfg: Config) -> Result<(), StartError> {
    let signals = block_signals();
    probe_port(cfg.inbound)?;
    probe_port(cfg.api)?;
    if let Some(h) = &cfg.https {
        probe_port(h.inbound)?;
        probe_port(h.api)?;
    }
    let cpus = placement(&cfg);
    let n = cpus.len();
    let cfg = Arc::new(cfg);
    let island = Arc::new(IslandMetrics::default());
    // One bounded queue per shard from the broker island (Kafka only).
    let (island_tx, island_rx): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let depth = cfg.kafka.as_ref().map_or(64, |k| k.shard_queue);
            async_channel::bounded::<Control>(depth)
        })
        .unzip();
    island.watch_queues(island_tx.clone());
    let interest = crate::route::interest::Interest::new(cfg.tuning.runtime.interest_cells);
    // Random per process: tokens minted by another process are recognised as foreign.
    let node = fastrand::u32(..);
    let kinesis_metrics = Arc::new(crate::metrics::kinesis::KinesisMetrics::default());
    let kinesis = crate::broker::kinesis::start(
        node,
        cfg.clone(),
        island_tx.clone(),
        kinesis_metrics.clone(),
        interest.clone(),
    );
    let nats_metrics = Arc::new(crate::metrics::nats::NatsMetrics::default());
    let nats = crate::broker::nats::start(
        cfg.clone(),
        island_tx.clone(),
        interest.clone(),
        nats_metrics.clone(),
    );
    let broker = if cfg.kafka.is_some() {
        crate::broker::start(
            node,
            cfg.clone(),
            island_tx,
            island.clone(),
            interest.clone(),
        )
    } else {
        None
    };
    // HTTP publishes that go through no broker are kept for resuming (and in Redis when set).
    let publishes_via_kinesis = cfg
        .kinesis
        .as_ref()
        .is_some_and(|k| k.publish_stream.is_some());
    let local = (broker.is_none() && !publishes_via_kinesis).then(|| {
        let redis = crate::broker::redis::start(cfg.clone());
        crate::broker::local::LocalLog::new(node, &cfg, redis)
    });
    if broker.is_some() && cfg.redis.is_some() {
        tracing::info!("Redis is configured but not used: with Kafka, published events go through Kafka and resuming clients get them from there");
    }
    // Each shard's inbound queue: publishes and control records from every shard, in order.
    let (inbound_tx, inbound_rx): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| async_channel::bounded::<Control>(cfg.tuning.runtime.mesh_queue))
        .unzip();
    let jwt = match &cfg.jwt {
        None => None,
        Some(settings) => Some(std::sync::RwLock::new(
            crate::auth::jwt::Verifier::new(settings).map_err(StartError::Jwt)?,
        )),
    };
    let globals = Arc::new(Globals {
        broker,
        kinesis,
        kinesis_metrics,
        nats,
        nats_metrics,
        island,
        cfg: cfg.clone(),
        node,
        metrics: (0..n).map(|_| Arc::new(ShardMetrics::default())).collect(),
        shutdown: AtomicBool::new(false),
        connection_rate: Default::default(),
        jwt,
        jwks_fetched_ms: Default::default(),
        outbound: crate::broker::http::Outbound::start(),
        resolver: crate::broker::dns::Resolver::start(),
        inbound: inbound_tx,
        interest,
        write_pass: (0..n).map(|_| Default::default()).collect(),
        epoch: Instant::now(),
        beats: (0..n).map(|_| Default::default()).collect(),
        pending_heads: Default::default(),
        local,
        busy_us: (0..n).map(|_| Default::default()).collect(),
        address_caps: crate::session::address::AddressCaps::new(
            cfg.tuning.http.max_connections_per_address,
        ),
        started_ms: crate::auth::blacklist::now_ms(),
        tls: cfg
            .https
            .as_ref()
            .map(|h| Arc::new(crate::conn::tls::TlsServer::new(h))),
    });
    // The shard mesh: one bounded queue into each shard, every shard holding a sender to each.
    let (mesh_tx, mesh_rx): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| async_channel::bounded::<ShardMsg>(cfg.tuning.runtime.mesh_queue))
        .unzip();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let mut handles = Vec::with_capacity(n);
    for (id, &cpu) in cpus.iter().enumerate() {
        let pin = cfg.tuning.runtime.pin;
        let (globals, ready) = (globals.clone(), ready_tx.clone());
        let mesh = (mesh_tx.clone(), mesh_rx[id].clone());
        let queues = (island_rx[id].clone(), inbound_rx[id].clone());
        let spawned = std::thread::Builder::new()
            .name(format!("cb-shard-{id}"))
            .spawn(move || {
                if pin {
                    if let Err(e) = sys::pin_to(cpu) {
                        tracing::warn!(shard = id, cpu, error = %e,
                            "cannot pin the shard to its CPU; it runs unpinned (whose fault: the host's CPU affinity limits)");
                    }
                }
                let failed = ready.clone();
                if let Err(e) = rt::block_on(shard_main(id, globals, mesh, queues, ready)) {
                    let _ = failed.send(Err(StartError::Executor {
                        shard: id,
                        cpu,
                        reason: e.to_string(),
                    }));
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                return Err(StartError::Executor {
                    shard: id,
                    cpu,
                    reason: e.to_string(),
                })
            }
        }
    }
    drop((mesh_tx, mesh_rx));
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    tracing::info!(
        shards = n,
        cpus = ?cpus,
        inbound = %cfg.inbound,
        api = %cfg.api,
        "corebridge listening"
    );
    let mut notifier = None;
    if let Some(sd) = cfg.systemd.clone() {
        match notify::Notifier::new(&sd.socket) {
            Ok(n) => {
                let n = Arc::new(n);
                notifier = Some(n.clone());
                let g = globals.clone();
                std::thread::Builder::new()
                    .name("cb-notify".into())
                    .spawn(move || notify::run(g, n, sd.watchdog))
                    .expect("spawn the systemd notify thread");
            }
            Err(e) => tracing::warn!(socket = %sd.socket, error = %e,
                "NOTIFY_SOCKET is set but unusable (whose fault: the service manager's environment)"),
        }
    }
    let watcher = globals.clone();
    std::thread::Builder::new()
        .name("cb-signals".into())
        .spawn(move || {
            let sig = loop {
                let sig = wait_for_signal(signals);
                if sig != libc::SIGHUP {
                    break sig;
                }
                // SIGHUP: the HTTPS certificate and key are read again; open connections keep
                // theirs, new handshakes get the new ones.
                match &watcher.tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: HTTPS certificate reloaded"),
                        Err(e) => tracing::warn!(error = %e,
                            "SIGHUP: HTTPS certificate not reloaded, the old one stays (whose fault: the files)"),
                    },
                    None => tracing::info!("SIGHUP: nothing to reload (HTTPS is off)"),
                }
            };
            tracing::info!(signal = sig, "shutting down: closing streams");
            if let Some(n) = &notifier {
                n.send("STOPPING=1\nSTATUS=draining connections");
            }
            watcher.shutdown.store(true, Ordering::Relaxed);
        })
        .expect("spawn the signal thread");
    for h in handles {
        let _ = h.join();
    }
    // The shards are done: consumer groups commit what they stored before the process goes.
    crate::broker::kafka::group::commit_and_stop(Duration::from_secs(3));
    Ok(())
}

async fn shard_main(
    id: usize,
    globals: Arc<Globals>,
    (mesh, from_peers): (
        Vec<async_channel::Sender<ShardMsg>>,
        async_channel::Receiver<ShardMsg>,
    ),
    (from_island, from_shards): (
        async_channel::Receiver<Control>,
        async_channel::Receiver<Control>,
    ),
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let cfg = globals.cfg.clone();
    let bind = |addr| listen(addr).map_err(|source| StartError::Bind { addr, source });
    let listeners = bind(cfg.inbound).and_then(|i| Ok((i, bind(cfg.api)?)));
    let secure = match &cfg.https {
        None => Ok(None),
        Some(h) => bind(h.inbound).and_then(|i| Ok(Some((i, bind(h.api)?)))),
    };
    let (listeners, secure) = match (listeners, secure) {
        (Ok(l), Ok(s)) => (Ok(l), s),
        (Err(e), _) | (_, Err(e)) => (Err(e), None),
    };
    let (inbound, api) = match listeners {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let streams = match conn::stream::Streams::new() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(StartError::Executor {
                shard: id,
                cpu: 0,
                reason: format!("cannot create the shard's epoll set: {e}"),
            }));
            return;
        }
    };
    let shard = Rc::new(Shard::new(id, globals, mesh, streams));
    // The shard's standing tasks. tokio runs ready tasks in FIFO order; the writer steps aside
    // every millisecond of a pass (`conn::writer`), so a publish or a fetch's batch is applied
    // between writes and events pile up to be written together while the writer is busy.
    rt::spawn(shard.clone().apply_queue(from_island));
    rt::spawn(shard.clone().apply_queue(from_shards));
    rt::spawn(conn::writer::run(shard.clone()));
    rt::spawn(conn::stream::watch(shard.clone()));
    rt::spawn(shard.clone().tell_log_progress());
    rt::spawn(shard.clone().receive(from_peers));
    // The systemd watchdog's proof that this executor runs tasks.
    if shard
        .globals
        .cfg
        .systemd
        .as_ref()
        .is_some_and(|s| s.watchdog.is_some())
    {
        let beater = shard.clone();
        rt::spawn(async move {
            loop {
                let g = &beater.globals;
                g.beats[id].store(g.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                rt::sleep(notify::BEAT_EVERY).await;
            }
        });
    }
    // Presence changes go out as rig.presence events (or are forgotten) twice a second.
    let announcer = shard.clone();
    rt::spawn(async move {
        loop {
            rt::sleep(Duration::from_millis(500)).await;
            crate::api::presence::announce(&announcer).await;
        }
    });
    let ticker = shard.clone();
    rt::spawn(async move {
        let started = Instant::now();
        let every = ticker.sessions.borrow().tick_period();
        let mut last_trim = Instant::now();
        loop {
            rt::sleep(every).await;
            ticker.sessions.borrow_mut().tick(started.elapsed());
            let busy = sys::thread_cpu_time();
            ticker.globals.busy_us[id].store(busy.as_micros() as u64, Ordering::Relaxed);
            ticker.upstreams.sweep(Duration::from_millis(
                ticker.cfg().tuning.proxy.idle_timeout_ms,
            ));
            // One shard looks after the process heap (a trim covers every arena).
            if id == 0 && last_trim.elapsed() >= HEAP_TRIM_EVERY {
                last_trim = Instant::now();
                sys::trim_heap(HEAP_TRIM_FREE);
            }
        }
    });
    rt::spawn(accept_loop(shard.clone(), api, Listener::Api, false));
    let secure_inbound = secure.map(|(inbound, api)| {
        rt::spawn(accept_loop(shard.clone(), api, Listener::Api, true));
        inbound
    });
    if id == 0 && shard.globals.jwt.is_some() {
        // Shard 0 keeps the JWKS fresh: at start, then every 10 minutes (plus on unknown kids).
        let keeper = shard.clone();
        rt::spawn(async move {
            loop {
                let wait = match crate::api::access::refresh_jwks(&keeper).await {
                    Ok(0) => return, // a static key: nothing to refresh
                    Ok(n) => {
                        tracing::info!(keys = n, "JWKS loaded");
                        600
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, fault = %e.fault(), "JWKS fetch failed; retrying");
                        10
                    }
                };
                rt::sleep(Duration::from_secs(wait)).await;
            }
        });
    }
    let _ = ready.send(Ok(()));
    let stop = async {
        while !shard.globals.shutdown.load(Ordering::Relaxed) {
            rt::sleep(Duration::from_millis(100)).await;
        }
    };
    let inbound = futures_lite::future::zip(
        accept_loop(shard.clone(), inbound, Listener::Inbound, false),
        async {
            match secure_inbound {
                Some(l) => accept_loop(shard.clone(), l, Listener::Inbound, true).await,
                None => futures_lite::future::pending().await,
            }
        },
    );
    futures_lite::future::or(
        async {
            inbound.await;
        },
        stop,
    )
    .await;
    shard.sessions.borrow_mut().close_all(CloseReason::Shutdown);
    // Streams get their closing bytes (SSE: a retry hint and the last chunk; WebSocket: 1001)
    // and requests in flight their answers, for at most `shutdown.drain_s`.
    let deadline = Instant::now() + Duration::from_secs(shard.cfg().tuning.shutdown.drain_s);
    // Requests in flight (a proxied call waiting for its upstream, a publish) finish too.
    while (shard.sessions.borrow().streams() > 0 || shard.in_flight.get() > 0)
        && Instant::now() < deadline
    {
        rt::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, which: Listener, secure: bool) {
    let mut last_warn: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                rt::spawn(conn::serve(shard.clone(), stream, which, secure));
            }
            Err(e) => {
                // EMFILE/ENFILE: keep serving the connections we have; log once a second at most.
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(shard = shard.id, error = %e, "accept failed (whose fault: host limits)");
                    last_warn = Some(Instant::now());
                }
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
