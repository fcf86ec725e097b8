//! Executors and their placement, the shard mesh, start-up checks and the accept loops.
//! One glommio `LocalExecutor` per shard, pinned to its CPU, each with its own SO_REUSEPORT
//! listeners so the kernel spreads connections; shards share nothing mutable.

pub mod island;
pub mod notify;
pub mod oneshot;
pub mod shard;
mod sys;

pub use sys::check_io_uring;
use sys::{block_signals, listen, wait_for_signal};

use crate::config::Config;
use crate::conn;
use crate::error::Blame;
use crate::metrics::island::IslandMetrics;
use crate::metrics::{Listener, ShardMetrics};
use crate::route::Control;
use crate::session::CloseReason;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use shard::{Globals, Shard, ShardMsg};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("io_uring is not available: {0}")]
    IoUring(String),
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
    let online: Vec<usize> = glommio::CpuSet::online()
        .map(|set| set.iter().map(|l| l.cpu).collect())
        .unwrap_or_default();
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

/// How long a write pass runs before the executor looks at io_uring again (and at the other
/// task queues): a publish or a fetch that arrives meanwhile is taken in between, instead of
/// after a pass over every socket. (glommio's executor-wide `preempt_timer` is not used: set
/// below its default it made executors hang while joining the channel mesh.)
const WRITE_SLICE: Duration = Duration::from_millis(2);

/// Starts every shard and blocks until they stop (SIGTERM or SIGINT).
pub fn run(cfg: Config) -> Result<(), StartError> {
    check_io_uring()?;
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
    let mesh = MeshBuilder::<ShardMsg, _>::full(n, cfg.tuning.runtime.mesh_queue);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let mut handles = Vec::with_capacity(n);
    for (id, &cpu) in cpus.iter().enumerate() {
        let placement = if cfg.tuning.runtime.pin {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        };
        let (globals, mesh, ready) = (globals.clone(), mesh.clone(), ready_tx.clone());
        let queues = (island_rx[id].clone(), inbound_rx[id].clone());
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("cb-shard-{id}"))
            .io_memory(cfg.tuning.runtime.io_memory)
            .ring_depth(cfg.tuning.runtime.ring_depth)
            .spawn(move || shard_main(id, globals, mesh, queues, ready));
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
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
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
    let (senders, mut receivers) = match mesh.join().await {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(StartError::Executor {
                shard: id,
                cpu: 0,
                reason: format!("could not join the shard mesh: {e}"),
            }));
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
    let shard = Rc::new(Shard::new(id, globals, senders, streams));
    // Task queues: applying events (island and inbound queues, requests between shards) runs
    // before socket writing, so a publish or a fetch is never held up behind a write pass and
    // events pile up to be written together while the writer is busy.
    let ex = glommio::executor();
    let deliver = ex.create_task_queue(Shares::Static(1000), Latency::NotImportant, "deliver");
    let write = ex.create_task_queue(Shares::Static(250), Latency::Matters(WRITE_SLICE), "write");
    let spawn_into = |tq, fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        if let Ok(t) = glommio::spawn_local_into(fut, tq) {
            t.detach();
        }
    };
    spawn_into(
        deliver,
        Box::pin(shard.clone().apply_queue(from_island)) as _,
    );
    spawn_into(
        deliver,
        Box::pin(shard.clone().apply_queue(from_shards)) as _,
    );
    spawn_into(write, Box::pin(conn::writer::run(shard.clone())) as _);
    spawn_into(deliver, Box::pin(conn::stream::watch(shard.clone())) as _);
    spawn_into(deliver, Box::pin(shard.clone().tell_log_progress()) as _);
    for (_, rx) in receivers.streams() {
        spawn_into(deliver, Box::pin(shard.clone().receive(rx)) as _);
    }
    // The systemd watchdog's proof that this executor runs tasks.
    if shard
        .globals
        .cfg
        .systemd
        .as_ref()
        .is_some_and(|s| s.watchdog.is_some())
    {
        let beater = shard.clone();
        glommio::spawn_local(async move {
            loop {
                let g = &beater.globals;
                g.beats[id].store(g.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                glommio::timer::sleep(notify::BEAT_EVERY).await;
            }
        })
        .detach();
    }
    // Presence changes go out as rig.presence events (or are forgotten) twice a second.
    let announcer = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(500)).await;
            crate::api::presence::announce(&announcer).await;
        }
    })
    .detach();
    let ticker = shard.clone();
    glommio::spawn_local(async move {
        let started = Instant::now();
        let every = ticker.sessions.borrow().tick_period();
        let mut last_trim = Instant::now();
        loop {
            glommio::timer::sleep(every).await;
            ticker.sessions.borrow_mut().tick(started.elapsed());
            let busy = glommio::executor().executor_stats().total_runtime();
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
    })
    .detach();
    glommio::spawn_local(accept_loop(shard.clone(), api, Listener::Api, false)).detach();
    let secure_inbound = secure.map(|(inbound, api)| {
        glommio::spawn_local(accept_loop(shard.clone(), api, Listener::Api, true)).detach();
        inbound
    });
    if id == 0 && shard.globals.jwt.is_some() {
        // Shard 0 keeps the JWKS fresh: at start, then every 10 minutes (plus on unknown kids).
        let keeper = shard.clone();
        glommio::spawn_local(async move {
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
                glommio::timer::sleep(Duration::from_secs(wait)).await;
            }
        })
        .detach();
    }
    let _ = ready.send(Ok(()));
    let stop = async {
        while !shard.globals.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(100)).await;
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
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, which: Listener, secure: bool) {
    let mut last_warn: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(conn::serve(shard.clone(), stream, which, secure)).detach();
            }
            Err(e) => {
                // EMFILE/ENFILE: keep serving the connections we have; log once a second at most.
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(shard = shard.id, error = %e, "accept failed (whose fault: host limits)");
                    last_warn = Some(Instant::now());
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
