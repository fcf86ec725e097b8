//! A worker process: holds its share of the client connections on a single-threaded tokio
//! runtime (one task per connection), tracks every delivery and reports on stdout:
//!
//! - `connected N failed F` as connections open, `ready N F` once every attempt is settled,
//! - `progress R` (deliveries so far) twice a second after that,
//! - `result {json}` at the end ([`WorkerResult`]).
//!
//! Its stdin carries the [`WorkerConfig`] as the first line, then `start` (publishing began:
//! churn may start) and `done OK` (publishing ended, OK events were accepted). It finishes when
//! every tracked connection has received OK events, at the deadline, or when stdin closes.

use crate::net::{self, read_with};
use crate::proto::{self, WsDecoder, WsOut};
use crate::scenario::{Transport, WorkerConfig};
use crate::streams::{Reading, StreamSet};
use crate::track::SeqTracker;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

/// Connection attempts (connect + handshake) in flight at once per worker.
const MAX_IN_FLIGHT: usize = 256;
/// Attempts per connection before it counts as failed.
const ATTEMPTS: u32 = 3;
/// Distinct error messages kept.
const MAX_ERROR_KINDS: usize = 16;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Latency histogram in microseconds, 1 us .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut v = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut v)
        .expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    Failed,
    Closed,
}

#[derive(Debug)]
struct Conn {
    /// The connection's global index (its user, in targeted scenarios).
    global: u64,
    tracker: SeqTracker,
    /// Targeted events that were for another connection.
    misrouted: u64,
    state: State,
    slow: bool,
    /// Closed by churn.
    churned: bool,
    /// Opened by churn to replace one.
    replacement: bool,
    /// Counted in `Shared::waiting`.
    waiting: bool,
    abort: Option<AbortHandle>,
}

impl Conn {
    /// Connections whose loss is measured: opened, not slow, not touched by churn.
    fn tracked(&self) -> bool {
        !self.slow
            && !self.churned
            && !self.replacement
            && matches!(self.state, State::Open | State::Closed)
    }
}

struct Shared {
    cfg: WorkerConfig,
    dst: SocketAddr,
    conns: RefCell<Vec<Conn>>,
    /// Cycling churn: the slots that may be churned next (past the steady ones; a churned
    /// slot leaves, its replacement joins).
    churnable: RefCell<Vec<usize>>,
    latency: RefCell<Histogram<u64>>,
    connect_latency: RefCell<Histogram<u64>>,
    scratch: RefCell<Vec<u8>>,
    in_flight: Arc<Semaphore>,
    connected: Cell<u64>,
    failed: Cell<u64>,
    settled: Cell<u64>,
    disconnected: Cell<u64>,
    churn_closed: Cell<u64>,
    churn_opened: Cell<u64>,
    churn_failed: Cell<u64>,
    received: Cell<u64>,
    first_recv_ns: Cell<u64>,
    last_recv_ns: Cell<u64>,
    connect_started: Instant,
    connect_done: Cell<Option<Instant>>,
    /// Events accepted by the server (`done OK`); what each connection expects follows.
    expected: Cell<Option<u64>>,
    /// Tracked, open connections still short of `expected` (valid once it is set).
    waiting: Cell<u64>,
    errors: RefCell<BTreeMap<String, u64>>,
    /// Open SSE streams, read by one task.
    streams: StreamSet,
}

impl Shared {
    fn error(&self, e: &anyhow::Error) {
        let mut msg = format!("{e:#}");
        msg.truncate(160);
        let mut errors = self.errors.borrow_mut();
        if errors.len() >= MAX_ERROR_KINDS && !errors.contains_key(&msg) {
            msg = "(other errors)".into();
        }
        *errors.entry(msg).or_default() += 1;
    }

    fn deliver(&self, slot: usize, m: proto::Marks, now: u64) {
        self.received.set(self.received.get() + 1);
        if self.first_recv_ns.get() == 0 {
            self.first_recv_ns.set(now);
        }
        self.last_recv_ns.set(now);
        let us = now.saturating_sub(m.ts) / 1000;
        self.latency.borrow_mut().saturating_record(us.max(1));
        let mut conns = self.conns.borrow_mut();
        let c = &mut conns[slot];
        if m.to.is_some_and(|to| to != c.global) {
            c.misrouted += 1;
            return;
        }
        c.tracker.observe(m.seq, m.stream);
        if c.waiting && c.tracker.unique >= self.expected_for(c.global).unwrap_or(u64::MAX) {
            c.waiting = false;
            self.waiting.set(self.waiting.get() - 1);
        }
    }

    /// What connection `global` must receive, once publishing has ended.
    fn expected_for(&self, global: u64) -> Option<u64> {
        let ok = self.expected.get()?;
        Some(self.cfg.scenario.expected_for(global, ok))
    }

    fn opened(&self, slot: usize, took: Duration) {
        let mut conns = self.conns.borrow_mut();
        let c = &mut conns[slot];
        c.state = State::Open;
        if c.replacement {
            self.churn_opened.set(self.churn_opened.get() + 1);
        } else {
            self.connected.set(self.connected.get() + 1);
            self.settle_one();
            self.connect_latency
                .borrow_mut()
                .saturating_record((took.as_micros() as u64).max(1));
        }
    }

    fn failed(&self, slot: usize, e: &anyhow::Error) {
        self.error(e);
        let mut conns = self.conns.borrow_mut();
        let c = &mut conns[slot];
        c.state = State::Failed;
        if c.replacement {
            self.churn_failed.set(self.churn_failed.get() + 1);
        } else {
            self.failed.set(self.failed.get() + 1);
            self.settle_one();
        }
    }

    fn settle_one(&self) {
        self.settled.set(self.settled.get() + 1);
        if self.settled.get() == self.cfg.count {
            self.connect_done.set(Some(Instant::now()));
        }
    }

    /// The server ended an open connection (or it failed).
    fn closed(&self, slot: usize, why: Option<anyhow::Error>) {
        if let Some(e) = &why {
            self.error(&anyhow!("open connection: {e:#}"));
        }
        let mut conns = self.conns.borrow_mut();
        let c = &mut conns[slot];
        c.state = State::Closed;
        if !c.slow && !c.replacement {
            self.disconnected.set(self.disconnected.get() + 1);
        }
        if c.waiting {
            c.waiting = false;
            self.waiting.set(self.waiting.get() - 1);
        }
    }

    fn set_expected(&self, n: u64) {
        self.expected.set(Some(n));
        let mut waiting = 0;
        let s = &self.cfg.scenario;
        for c in self.conns.borrow_mut().iter_mut() {
            c.waiting = c.tracked()
                && c.state == State::Open
                && c.tracker.unique < s.expected_for(c.global, n);
            waiting += u64::from(c.waiting);
        }
        self.waiting.set(waiting);
    }
}

/// Per-worker totals, printed as `result {json}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub index: u32,
    pub connections: u64,
    pub connected: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub slow: u64,
    pub tracked: u64,
    pub disconnected: u64,
    pub churn_closed: u64,
    pub churn_opened: u64,
    pub churn_failed: u64,
    /// Events each tracked connection should have received (targeted: the most any one
    /// connection should have).
    pub expected_per_connection: u64,
    /// Targeted events that reached a connection they were not for.
    #[serde(default)]
    pub misrouted: u64,
    /// What the tracked connections should have received, summed.
    #[serde(default)]
    pub expected_tracked: u64,
    /// Tracked connections short of that at the end.
    pub incomplete: u64,
    /// Every delivery on every connection, duplicates included.
    pub received_total: u64,
    /// Distinct events received on tracked connections.
    pub received_tracked: u64,
    pub lost: u64,
    /// Of `lost`: holes below the highest sequence number seen (the rest never arrived at the
    /// tail).
    pub lost_in_gaps: u64,
    pub duplicates: u64,
    /// Arrived after a later event of the same ordering stream.
    pub reordered: u64,
    /// Arrived after a later event of another stream (legitimate: see `track`).
    #[serde(default)]
    pub interleaved: u64,
    pub worst_lost: u64,
    pub worst_duplicates: u64,
    pub worst_reordered: u64,
    pub first_recv_unix_ns: u64,
    pub last_recv_unix_ns: u64,
    /// From the first connection attempt until every attempt was settled.
    pub connect_seconds: f64,
    pub cpu_seconds: f64,
    /// RSS at the end, all connections still open.
    pub rss_bytes: u64,
    pub deadline_hit: bool,
    /// hdrhistogram V2, base64: delivery latency (us).
    pub latency_hist: String,
    /// hdrhistogram V2, base64: connect + handshake time (us).
    pub connect_hist: String,
}

enum Cmd {
    Start,
    Done(u64),
    Eof,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn main() -> Result<()> {
    let limit = crate::procfs::raise_nofile();
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .context("reading the worker configuration")?;
    let cfg: WorkerConfig =
        serde_json::from_str(first.trim()).context("parsing the worker configuration")?;
    if cfg.count + 64 > limit {
        bail!(
            "worker {}: {} connections but only {limit} open files allowed",
            cfg.index,
            cfg.count
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace();
            let cmd = match (w.next(), w.next().and_then(|n| n.parse().ok())) {
                (Some("start"), _) => Cmd::Start,
                (Some("done"), Some(n)) => Cmd::Done(n),
                _ => continue,
            };
            if tx.send(cmd).is_err() {
                return;
            }
        }
        let _ = tx.send(Cmd::Eof);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run(cfg, rx))?;
    say(&format!("result {}", serde_json::to_string(&result)?));
    // Exiting drops every socket at once; no need to unwind 20,000 tasks.
    std::process::exit(0);
}

async fn run(cfg: WorkerConfig, mut rx: mpsc::UnboundedReceiver<Cmd>) -> Result<WorkerResult> {
    let s = &cfg.scenario;
    let deadline = {
        let left = cfg.deadline_unix_ms.saturating_sub(now_ns() / 1_000_000);
        tokio::time::Instant::now() + Duration::from_millis(left)
    };
    let conns = (0..cfg.count)
        .map(|i| Conn {
            global: cfg.first + i,
            misrouted: 0,
            tracker: SeqTracker::default(),
            state: State::Connecting,
            slow: s.is_slow(cfg.first + i),
            churned: false,
            replacement: false,
            waiting: false,
            abort: None,
        })
        .collect();
    let sh = Rc::new(Shared {
        dst: s.inbound_addr()?,
        churnable: RefCell::new((cfg.steady.min(cfg.count) as usize..cfg.count as usize).collect()),
        conns: RefCell::new(conns),
        latency: RefCell::new(new_histogram()),
        connect_latency: RefCell::new(new_histogram()),
        scratch: RefCell::new(vec![0; net::SCRATCH_BYTES]),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        connected: Cell::new(0),
        failed: Cell::new(0),
        settled: Cell::new(0),
        disconnected: Cell::new(0),
        churn_closed: Cell::new(0),
        churn_opened: Cell::new(0),
        churn_failed: Cell::new(0),
        received: Cell::new(0),
        first_recv_ns: Cell::new(0),
        last_recv_ns: Cell::new(0),
        connect_started: Instant::now(),
        connect_done: Cell::new(None),
        expected: Cell::new(None),
        waiting: Cell::new(0),
        errors: RefCell::new(BTreeMap::new()),
        streams: StreamSet::new()?,
        cfg,
    });
    {
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            let r = sh
                .streams
                .run(
                    &sh.scratch,
                    |slot, m, now| sh.deliver(slot, m, now),
                    |slot, why| sh.closed(slot, Some(why)),
                )
                .await;
            if let Err(e) = r {
                sh.error(&e);
            }
        });
    }

    // Open connections at the configured pace.
    {
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            let t0 = tokio::time::Instant::now();
            let rate = sh.cfg.connect_rate;
            for i in 0..sh.cfg.count {
                if rate > 0.0 {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
                }
                let Ok(permit) = sh.in_flight.clone().acquire_owned().await else {
                    return;
                };
                spawn_conn(&sh, i as usize, sh.cfg.first + i, Some(permit));
            }
        });
    }

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_report = Instant::now();
    let mut last_connected = u64::MAX;
    let mut ready = false;
    let mut churning = false;
    let mut churn_credit = 0.0;
    let mut last_tick = Instant::now();
    let mut deadline_hit = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Start) => churning = sh.cfg.churn_rate > 0.0,
                Some(Cmd::Done(n)) => {
                    churning = false;
                    sh.set_expected(n);
                }
                Some(Cmd::Eof) | None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                deadline_hit = true;
                break;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if churning {
                    churn_credit += sh.cfg.churn_rate * now.duration_since(last_tick).as_secs_f64();
                    while churn_credit >= 1.0 {
                        churn_credit -= 1.0;
                        churn_one(&sh);
                    }
                }
                last_tick = now;
                if !ready {
                    let c = sh.connected.get();
                    if c != last_connected && now.duration_since(last_report) >= Duration::from_millis(250) {
                        say(&format!("connected {c} failed {}", sh.failed.get()));
                        last_connected = c;
                        last_report = now;
                    }
                    if sh.settled.get() == sh.cfg.count {
                        ready = true;
                        say(&format!("connected {c} failed {}", sh.failed.get()));
                        say(&format!("ready {c} {}", sh.failed.get()));
                    }
                } else if now.duration_since(last_report) >= Duration::from_millis(500) {
                    say(&format!("progress {}", sh.received.get()));
                    last_report = now;
                }
                if ready && sh.expected.get().is_some() && sh.waiting.get() == 0 {
                    break;
                }
            }
        }
    }
    Ok(summarize(&sh, deadline_hit))
}

fn spawn_conn(
    sh: &Rc<Shared>,
    slot: usize,
    global: u64,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let fut = conn_task(sh.clone(), slot, global, permit);
    let task = tokio::task::spawn_local(fut);
    sh.conns.borrow_mut()[slot].abort = Some(task.abort_handle());
}

/// Closes one random tracked connection and opens a replacement.
fn churn_one(sh: &Rc<Shared>) {
    let n = sh.cfg.count as usize;
    // Cycling churn (`steady_connections`): any open connection past the steady ones,
    // replacements included; otherwise each original connection at most once.
    let cycling = sh.cfg.scenario.steady_connections > 0;
    for _ in 0..32 {
        let (slot, pick) = if cycling {
            let churnable = sh.churnable.borrow();
            if churnable.is_empty() {
                return;
            }
            let i = fastrand::usize(..churnable.len());
            (churnable[i], Some(i))
        } else {
            (fastrand::usize(..n), None)
        };
        let mut conns = sh.conns.borrow_mut();
        let global = conns[slot].global;
        let c = &mut conns[slot];
        if c.state != State::Open || c.slow || c.churned {
            continue;
        }
        if let Some(a) = c.abort.take() {
            a.abort();
        }
        sh.streams.remove(slot);
        c.churned = true;
        c.state = State::Closed;
        sh.churn_closed.set(sh.churn_closed.get() + 1);
        conns.push(Conn {
            global,
            misrouted: 0,
            tracker: SeqTracker::starting_anywhere(),
            state: State::Connecting,
            slow: false,
            churned: false,
            replacement: true,
            waiting: false,
            abort: None,
        });
        let new_slot = conns.len() - 1;
        drop(conns);
        if let Some(i) = pick {
            let mut churnable = sh.churnable.borrow_mut();
            churnable.swap_remove(i);
            churnable.push(new_slot);
        }
        spawn_conn(sh, new_slot, global, None);
        return;
    }
}

fn summarize(sh: &Shared, deadline_hit: bool) -> WorkerResult {
    let expected = sh.expected.get().unwrap_or(0);
    let mut r = WorkerResult {
        index: sh.cfg.index,
        connections: sh.cfg.count,
        connected: sh.connected.get(),
        failed: sh.failed.get(),
        errors: sh.errors.borrow().clone(),
        disconnected: sh.disconnected.get(),
        churn_closed: sh.churn_closed.get(),
        churn_opened: sh.churn_opened.get(),
        churn_failed: sh.churn_failed.get(),
        expected_per_connection: expected,
        received_total: sh.received.get(),
        first_recv_unix_ns: sh.first_recv_ns.get(),
        last_recv_unix_ns: sh.last_recv_ns.get(),
        connect_seconds: sh
            .connect_done
            .get()
            .unwrap_or_else(Instant::now)
            .duration_since(sh.connect_started)
            .as_secs_f64(),
        cpu_seconds: crate::procfs::self_cpu_seconds(),
        rss_bytes: crate::procfs::rss_bytes(std::process::id()).unwrap_or(0),
        deadline_hit,
        latency_hist: encode_histogram(&sh.latency.borrow()),
        connect_hist: encode_histogram(&sh.connect_latency.borrow()),
        ..WorkerResult::default()
    };
    for c in sh.conns.borrow().iter() {
        let t = &c.tracker;
        let expected = sh.cfg.scenario.expected_for(c.global, expected);
        r.misrouted += c.misrouted;
        r.slow += u64::from(c.slow);
        r.duplicates += t.duplicates;
        r.reordered += t.reordered;
        r.interleaved += t.interleaved;
        r.worst_duplicates = r.worst_duplicates.max(t.duplicates);
        r.worst_reordered = r.worst_reordered.max(t.reordered);
        if c.tracked() {
            r.tracked += 1;
            r.expected_tracked += expected;
            let lost = t.lost(expected);
            r.lost += lost;
            r.lost_in_gaps += t.gaps();
            r.worst_lost = r.worst_lost.max(lost);
            r.incomplete += u64::from(lost > 0);
            r.received_tracked += t.unique.min(expected);
        }
    }
    r
}

async fn conn_task(
    sh: Rc<Shared>,
    slot: usize,
    global: u64,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let slow = sh.conns.borrow()[slot].slow;
    let src = sh.cfg.scenario.source_addr(global);
    let t0 = Instant::now();
    // Boxed: the handshake's state is freed once it is done, so the long-lived task stays
    // small.
    let opened = Box::pin(establish(&sh, src, slow, global)).await;
    drop(permit);
    let o = match opened {
        Ok(o) => o,
        Err(e) => {
            sh.failed(slot, &e);
            return;
        }
    };
    sh.opened(slot, t0.elapsed());
    if slow {
        // Hold the socket and never read again.
        let _keep = o;
        std::future::pending::<()>().await;
        return;
    }
    let end = match o {
        Opened::Sse(stream, rest, chunked) => match hand_over(&sh, slot, stream, &rest, chunked) {
            // The worker's stream set reads it from now on and reports its end.
            Ok(()) => return,
            Err(e) => Err(e),
        },
        Opened::Ws(stream, rest) => Box::pin(read_ws(&sh, slot, stream, rest)).await,
        Opened::LongPoll(stream, session) => {
            Box::pin(long_poll(&sh, slot, stream, session, src, global)).await
        }
    };
    sh.closed(slot, end.err());
}

/// Connects and handshakes, retrying transport failures and timeouts.
async fn establish(
    sh: &Shared,
    src: Option<std::net::Ipv4Addr>,
    slow: bool,
    global: u64,
) -> Result<Opened> {
    let timeout = Duration::from_secs_f64(sh.cfg.scenario.connect_timeout_seconds);
    let mut last_err = anyhow!("no attempt");
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match tokio::time::timeout(timeout, open(sh, src, slow, global)).await {
            Ok(Ok(o)) => return Ok(o),
            Ok(Err(e)) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Ok(Err(e)) => last_err = e,
            Err(_) => last_err = anyhow!("connect + handshake timed out"),
        }
    }
    Err(last_err)
}

/// The server refused the connection with an HTTP status: not retried.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(status: u16, body: &[u8]) -> anyhow::Error {
    let mut text = String::from_utf8_lossy(body).into_owned();
    text.truncate(80);
    anyhow::Error::new(Refused(format!("HTTP {status}: {}", text.trim())))
}

struct LpSession {
    token: String,
    last: String,
}

enum Opened {
    /// Stream, bytes read past the head, chunked.
    Sse(TcpStream, Vec<u8>, bool),
    Ws(TcpStream, Vec<u8>),
    LongPoll(TcpStream, LpSession),
}

fn request(sh: &Shared, global: u64, extra: &str) -> String {
    let s = &sh.cfg.scenario;
    format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\n{extra}\r\n",
        s.connect_target(global),
        s.host,
        s.inbound_port
    )
}

async fn open(
    sh: &Shared,
    src: Option<std::net::Ipv4Addr>,
    slow: bool,
    global: u64,
) -> Result<Opened> {
    let mut stream = net::connect(sh.dst, src, slow)
        .await
        .with_context(|| format!("connect from {src:?}"))?;
    match sh.cfg.scenario.transport {
        Transport::Sse => {
            let req = request(sh, global, "Accept: text/event-stream\r\n");
            net::write_all(&stream, req.as_bytes()).await?;
            let mut buf = Vec::new();
            let head = net::read_head(&mut stream, &sh.scratch, &mut buf).await?;
            if head.status != 200 {
                return Err(refused(head.status, &buf[head.len..]));
            }
            let rest = buf.split_off(head.len);
            Ok(Opened::Sse(stream, rest, head.chunked))
        }
        Transport::Ws => {
            let key = proto::ws_key();
            let req = request(
                sh,
                global,
                &format!(
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                ),
            );
            net::write_all(&stream, req.as_bytes()).await?;
            let mut buf = Vec::new();
            let head = net::read_head(&mut stream, &sh.scratch, &mut buf).await?;
            if head.status != 101 {
                return Err(refused(head.status, &buf[head.len..]));
            }
            if head.ws_accept.as_deref() != Some(proto::ws_accept(&key).as_str()) {
                bail!("bad Sec-WebSocket-Accept");
            }
            let rest = buf.split_off(head.len);
            Ok(Opened::Ws(stream, rest))
        }
        Transport::Longpoll => {
            let req = request(sh, global, "");
            net::write_all(&stream, req.as_bytes()).await?;
            let (head, body) = net::read_response(&mut stream, &sh.scratch, 1 << 20).await?;
            if head.status != 200 {
                return Err(refused(head.status, &body));
            }
            let mut session = LpSession {
                token: String::new(),
                last: "\"first_event\"".into(),
            };
            update_cookies(&mut session, &head);
            if session.token.is_empty() {
                bail!("long-poll: no connection_token cookie");
            }
            Ok(Opened::LongPoll(stream, session))
        }
    }
}

fn update_cookies(session: &mut LpSession, head: &proto::Head) {
    for c in &head.set_cookies {
        if let Some(v) = proto::cookie_value(c, "connection_token") {
            session.token = v.to_string();
        } else if let Some(v) = proto::cookie_value(c, "last_event_id") {
            session.last = v.to_string();
        }
    }
}

/// Gives an open SSE stream to the worker's stream set, after the events that came with the
/// response head.
fn hand_over(
    sh: &Shared,
    slot: usize,
    stream: TcpStream,
    rest: &[u8],
    chunked: bool,
) -> Result<()> {
    let mut r = Reading::new(stream.into_std()?, chunked);
    let now = now_ns();
    r.feed(rest, &mut |m| sh.deliver(slot, m, now))
        .map_err(|e| anyhow!(e))?;
    sh.streams.add(slot, r)
}

async fn read_ws(sh: &Shared, slot: usize, mut stream: TcpStream, rest: Vec<u8>) -> Result<()> {
    let mut dec = WsDecoder::default();
    let mut out = WsOut::default();
    let mut feed = |bytes: &[u8], out: &mut WsOut| -> Result<(), String> {
        let now = now_ns();
        dec.feed(bytes, out, &mut |m| sh.deliver(slot, m, now))
    };
    feed(&rest, &mut out).map_err(|e| anyhow!(e))?;
    drop(rest);
    loop {
        if !out.reply.is_empty() {
            net::write_all(&stream, &out.reply).await?;
            out.reply = Vec::new();
        }
        if out.closed {
            bail!("server closed the WebSocket");
        }
        match read_with(&mut stream, &sh.scratch, |b| feed(b, &mut out)).await? {
            None => bail!("server closed the connection"),
            Some(Err(e)) => bail!(e),
            Some(Ok(())) => {}
        }
    }
}

async fn long_poll(
    sh: &Shared,
    slot: usize,
    mut stream: TcpStream,
    mut session: LpSession,
    src: Option<std::net::Ipv4Addr>,
    global: u64,
) -> Result<()> {
    let hold = Duration::from_secs(60);
    let mut failures = 0u32;
    loop {
        let req = request(
            sh,
            global,
            &format!(
                "Cookie: connection_token={}; last_event_id={}\r\n",
                session.token, session.last
            ),
        );
        let attempt = async {
            net::write_all(&stream, req.as_bytes()).await?;
            net::read_response(&mut stream, &sh.scratch, 64 << 20).await
        };
        let reconnect = match tokio::time::timeout(hold, attempt).await {
            Ok(Ok((head, body))) => {
                if head.status != 200 {
                    return Err(refused(head.status, &body));
                }
                failures = 0;
                update_cookies(&mut session, &head);
                let now = now_ns();
                proto::each_marks(&body, |m| sh.deliver(slot, m, now));
                head.close
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(e.context("long-poll"));
                }
                true
            }
            Err(_) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    bail!("long-poll timed out");
                }
                true
            }
        };
        if reconnect {
            stream = net::connect(sh.dst, src, false).await?;
        }
    }
}
