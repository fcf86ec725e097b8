//! The parent: spawns the workers, waits until they are connected, measures the server,
//! publishes, collects the workers' results and writes the summary, JSON and SVG.

use crate::metrics;
use crate::procfs::{self, Sample};
use crate::publish::{self, Live, PublishStats};
use crate::report::{self, Connections, Deliveries, Harness, Server, Summary};
use crate::scenario::{Scenario, WorkerConfig};
use crate::worker::{self, now_ns, WorkerResult};
use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long past the deadline the parent waits for the workers' results before killing them.
const RESULT_GRACE: Duration = Duration::from_secs(15);

pub struct RunArgs {
    pub scenario: PathBuf,
    pub out: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub server_pid: Option<u32>,
    /// Overrides the scenario's target; Nchan listens on its one port, 8090.
    pub target: Option<crate::scenario::Target>,
}

/// Where `../shared/peers/nchan-up` listens.
const NCHAN_PORT: u16 = 8090;

#[derive(Default)]
struct WorkerView {
    connected: u64,
    failed: u64,
    ready: bool,
    received: u64,
    exited: bool,
    result: Option<WorkerResult>,
}

#[derive(Default)]
struct View {
    workers: Vec<WorkerView>,
    phase: &'static str,
}

impl View {
    fn all(&self, f: impl Fn(&WorkerView) -> bool) -> bool {
        self.workers.iter().all(f)
    }
    fn connected(&self) -> u64 {
        self.workers.iter().map(|w| w.connected).sum()
    }
    fn received(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.result.as_ref().map_or(w.received, |r| r.received_total))
            .sum()
    }
}

enum Msg {
    Line(usize, String),
    Exit(usize),
}

pub fn run(args: RunArgs) -> Result<i32> {
    let mut s = Scenario::load(&args.scenario)?;
    if let Some(t) = args.target {
        s.target = t;
        if t == crate::scenario::Target::Nchan {
            s.inbound_port = NCHAN_PORT;
            s.name = format!("{}-nchan", s.name);
        }
        s.validate()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let summary = local.block_on(&rt, orchestrate(s, args.server_pid))?;
    eprint!("{}", report::text(&summary));
    if let Some(p) = &args.out {
        std::fs::write(p, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("  wrote {}", p.display());
    }
    if let Some(p) = &args.report {
        std::fs::write(p, report::svg(&summary))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("  wrote {}", p.display());
    }
    Ok(if summary.problems.is_empty() { 0 } else { 3 })
}

fn spawn_workers(
    s: &Scenario,
    deadline_unix_ms: u64,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<(Vec<Child>, Vec<Option<ChildStdin>>)> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let w = u64::from(s.workers);
    let (base, extra) = (s.connections / w, s.connections % w);
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    let mut first = 0;
    for i in 0..s.workers {
        let count = base + u64::from(u64::from(i) < extra);
        let cfg = WorkerConfig {
            scenario: s.clone(),
            index: i,
            first,
            count,
            connect_rate: s.connect_rate / w as f64,
            churn_rate: s.churn_per_second / w as f64,
            steady: s.steady_connections * count / s.connections.max(1),
            deadline_unix_ms,
        };
        first += count;
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning a worker")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        writeln!(stdin, "{}", serde_json::to_string(&cfg)?)?;
        stdin.flush()?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Msg::Line(idx, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::Exit(idx));
        });
        children.push(child);
        stdins.push(Some(stdin));
    }
    Ok((children, stdins))
}

fn tell(stdins: &mut [Option<ChildStdin>], line: &str) {
    for s in stdins.iter_mut() {
        if let Some(w) = s {
            if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
                *s = None;
            }
        }
    }
}

fn apply(view: &mut View, msg: Msg) {
    match msg {
        Msg::Exit(i) => view.workers[i].exited = true,
        Msg::Line(i, line) => {
            let w = &mut view.workers[i];
            let mut it = line.splitn(2, ' ');
            let (kind, rest) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            let nums: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            match kind {
                "connected" => {
                    w.connected = nums.first().copied().unwrap_or(w.connected);
                    w.failed = nums.get(1).copied().unwrap_or(w.failed);
                }
                "ready" => {
                    w.ready = true;
                    w.connected = nums.first().copied().unwrap_or(w.connected);
                    w.failed = nums.get(1).copied().unwrap_or(w.failed);
                }
                "progress" => w.received = nums.first().copied().unwrap_or(w.received),
                "result" => match serde_json::from_str::<WorkerResult>(rest) {
                    Ok(r) => w.result = Some(r),
                    Err(e) => eprintln!("worker {i}: unreadable result: {e}"),
                },
                _ => eprintln!("worker {i}: {line}"),
            }
        }
    }
}

/// Waits until `done(view)` holds or `until` passes; false on timeout.
async fn wait_for(
    view: &RefCell<View>,
    until: tokio::time::Instant,
    done: impl Fn(&View) -> bool,
) -> bool {
    loop {
        if done(&view.borrow()) {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server_sample(pid: Option<u32>) -> Option<Sample> {
    let pid = pid?;
    match procfs::sample(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("server pid {pid}: {e:#}");
            None
        }
    }
}

async fn orchestrate(s: Scenario, server_pid: Option<u32>) -> Result<Summary> {
    let started = Instant::now();
    let started_unix_ms = now_ns() / 1_000_000;
    let deadline_d = Duration::from_secs_f64(s.deadline_seconds);
    let deadline = tokio::time::Instant::now() + deadline_d;
    let deadline_unix_ms = started_unix_ms + deadline_d.as_millis() as u64;

    let pid = match server_pid {
        Some(p) => Some(p),
        None => {
            match procfs::pid_by_port(s.inbound_port) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("warning: {e:#}; server CPU and RSS will not be measured (pass --server-pid)");
                    None
                }
            }
        }
    };
    if let Some(p) = pid {
        eprintln!("server pid {p}");
    }
    let before = server_sample(pid);
    let api = s.api_addr()?;
    let metrics_before = metrics::scrape(api).await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let view = Rc::new(RefCell::new(View {
        workers: (0..s.workers).map(|_| WorkerView::default()).collect(),
        phase: "connect",
    }));
    let (mut children, mut stdins) = spawn_workers(&s, deadline_unix_ms, tx)?;
    {
        let view = view.clone();
        tokio::task::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                apply(&mut view.borrow_mut(), m);
            }
        });
    }
    let prober = if s.health_probe_ms > 0 {
        Some(crate::probe::Prober::start(
            s.inbound_addr()?,
            api,
            Duration::from_millis(s.health_probe_ms),
        ))
    } else {
        None
    };
    let live = Rc::new(Live::default());
    let progress_stop = Rc::new(Cell::new(false));
    {
        let (view, live, stop) = (view.clone(), live.clone(), progress_stop.clone());
        let total = s.connections;
        let events = s.events;
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            while !stop.get() {
                tick.tick().await;
                let v = view.borrow();
                let recv = v.received();
                eprintln!(
                    "[{:>6.1}s] {:<8} connections {}/{} published {}/{} received {} ({}/s)",
                    started.elapsed().as_secs_f64(),
                    v.phase,
                    v.connected(),
                    total,
                    live.attempted.get(),
                    events,
                    recv,
                    recv.saturating_sub(last)
                );
                last = recv;
            }
        });
    }

    // Connect.
    let ready = wait_for(&view, deadline, |v| {
        v.all(|w| w.ready || w.exited || w.result.is_some())
    })
    .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let after_connect = server_sample(pid);
    let metrics_connected = metrics::scrape(api).await;
    if !ready {
        eprintln!("deadline reached while connecting");
    }
    let established = view.borrow().connected();
    eprintln!(
        "connected {established}/{} in {connect_seconds:.2} s",
        s.connections
    );

    // Hold.
    if s.hold_seconds > 0.0 && ready {
        view.borrow_mut().phase = "hold";
        let until =
            (tokio::time::Instant::now() + Duration::from_secs_f64(s.hold_seconds)).min(deadline);
        tokio::time::sleep_until(until).await;
    }
    let after_hold = server_sample(pid);

    // Publish.
    let publish_start = server_sample(pid);
    let publish_start_ns = now_ns();
    tell(&mut stdins, "start");
    let mut publishing: Option<PublishStats> = None;
    if s.events > 0 && ready {
        view.borrow_mut().phase = "publish";
        let stats = publish::publish(&s, deadline, live.clone()).await;
        publishing = Some(stats);
    }
    let ok = publishing.as_ref().map_or(0, |p| p.ok);
    tell(&mut stdins, &format!("done {ok}"));
    view.borrow_mut().phase = "drain";

    // Results.
    let all_reported = wait_for(&view, deadline + RESULT_GRACE, |v| {
        v.all(|w| w.result.is_some() || w.exited)
    })
    .await;
    let end = server_sample(pid);
    let metrics_end = metrics::scrape(api).await;
    let health = prober.map(|p| p.finish());
    progress_stop.set(true);
    drop(stdins);
    if !all_reported {
        eprintln!("some workers did not report in time; killing them");
    }
    for c in children.iter_mut() {
        if !all_reported {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    // Let the reader threads deliver the last lines.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let parent_cpu = procfs::self_cpu_seconds();
    let workers_cpu = procfs::children_cpu_seconds();
    let results: Vec<WorkerResult> = view
        .borrow()
        .workers
        .iter()
        .filter_map(|w| w.result.clone())
        .collect();
    let missing = s.workers as usize - results.len();

    let summary = build_summary(
        &s,
        started,
        started_unix_ms,
        connect_seconds,
        publish_start_ns,
        pid,
        [before, after_connect, after_hold, publish_start, end],
        publishing,
        &results,
        missing,
        (parent_cpu, workers_cpu),
    )?;
    let mut summary = summary;
    if let Some(h) = &health {
        let failed = h.inbound.failed + h.api.failed;
        if failed > 0 {
            summary
                .problems
                .push(format!("{failed} health probes failed or took over 5 s"));
        }
    }
    summary.health = health;
    summary.server.metrics_connected = metrics_connected;
    summary.server.metrics_delta = metrics::delta(&metrics_before, &metrics_end);
    if let Some(m) = &summary.server.metrics_delta {
        let dropped = m
            .get("corebridge_events_dropped_total")
            .copied()
            .unwrap_or(0.0);
        let closes = m
            .get("corebridge_slow_consumer_closes_total")
            .copied()
            .unwrap_or(0.0);
        // Churn closes connections with events still queued for them (counted as dropped,
        // reason "closed"): only slow-consumer closes say something went wrong then.
        let dropped = if s.churn_per_second > 0.0 {
            0.0
        } else {
            dropped
        };
        if (dropped > 0.0 || closes > 0.0) && s.slow_readers == 0.0 {
            summary.problems.push(format!(
                "server dropped {dropped} events, closed {closes} slow consumers"
            ));
        }
    }
    Ok(summary)
}

pub fn decode_hist(b64: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("histogram base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow!("histogram: {e:?}"))
}

#[allow(clippy::too_many_arguments)]
fn build_summary(
    s: &Scenario,
    started: Instant,
    started_unix_ms: u64,
    connect_seconds: f64,
    publish_start_ns: u64,
    pid: Option<u32>,
    samples: [Option<Sample>; 5],
    publishing: Option<PublishStats>,
    results: &[WorkerResult],
    missing_workers: usize,
    (parent_cpu, workers_cpu): (f64, f64),
) -> Result<Summary> {
    let [before, after_connect, after_hold, publish_start, end] = samples;
    let mut lat = worker::new_histogram();
    let mut conn_lat = worker::new_histogram();
    let mut c = Connections {
        requested: s.connections,
        connect_seconds,
        ..Connections::default()
    };
    let mut d = Deliveries::default();
    let mut last_recv = 0u64;
    let mut deadline_hit = false;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_per_conn = 0;
    for r in results {
        lat.add(decode_hist(&r.latency_hist)?)
            .map_err(|e| anyhow!("{e:?}"))?;
        conn_lat
            .add(decode_hist(&r.connect_hist)?)
            .map_err(|e| anyhow!("{e:?}"))?;
        c.established += r.connected;
        c.failed += r.failed;
        c.slow_readers += r.slow;
        c.tracked += r.tracked;
        c.disconnected += r.disconnected;
        c.churn_closed += r.churn_closed;
        c.churn_opened += r.churn_opened;
        c.churn_failed += r.churn_failed;
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        d.expected += r.expected_tracked;
        d.misrouted += r.misrouted;
        expected_per_conn = r.expected_per_connection;
        d.received += r.received_tracked;
        d.received_total += r.received_total;
        d.lost += r.lost;
        d.lost_in_gaps += r.lost_in_gaps;
        d.duplicates += r.duplicates;
        d.reordered += r.reordered;
        d.interleaved += r.interleaved;
        d.worst_connection_lost = d.worst_connection_lost.max(r.worst_lost);
        d.worst_connection_duplicates = d.worst_connection_duplicates.max(r.worst_duplicates);
        d.worst_connection_reordered = d.worst_connection_reordered.max(r.worst_reordered);
        d.incomplete_connections += r.incomplete;
        last_recv = last_recv.max(r.last_recv_unix_ns);
        deadline_hit |= r.deadline_hit;
    }
    c.errors = errors;
    c.connections_per_second = if connect_seconds > 0.0 {
        c.established as f64 / connect_seconds
    } else {
        0.0
    };
    if !conn_lat.is_empty() {
        c.connect_ms_p50 = report::ms(conn_lat.value_at_quantile(0.5));
        c.connect_ms_p99 = report::ms(conn_lat.value_at_quantile(0.99));
        c.connect_ms_max = report::ms(conn_lat.max());
    }
    if last_recv > publish_start_ns && d.received_total > 0 {
        d.seconds = (last_recv - publish_start_ns) as f64 / 1e9;
        d.per_second = d.received_total as f64 / d.seconds;
    }

    let mut sv = Server {
        pid,
        ..Server::default()
    };
    let diff_cpu = |a: Option<Sample>, b: Option<Sample>| Some(b?.cpu_seconds - a?.cpu_seconds);
    let diff_rss =
        |a: Option<Sample>, b: Option<Sample>| Some(b?.rss_bytes as i64 - a?.rss_bytes as i64);
    sv.cpu_seconds_total = diff_cpu(before, end);
    sv.cpu_seconds_connect = diff_cpu(before, after_connect);
    sv.cpu_seconds_delivery = diff_cpu(publish_start, end);
    sv.rss_bytes_before = before.map(|x| x.rss_bytes);
    sv.rss_bytes_after_connect = after_connect.map(|x| x.rss_bytes);
    sv.rss_bytes_after_hold = after_hold.map(|x| x.rss_bytes);
    sv.rss_bytes_end = end.map(|x| x.rss_bytes);
    sv.rss_growth_connect_bytes = diff_rss(before, after_connect);
    sv.rss_growth_total_bytes = diff_rss(before, end);
    if c.established > 0 {
        sv.rss_bytes_per_connection = sv
            .rss_growth_connect_bytes
            .map(|g| g as f64 / c.established as f64);
        sv.rss_bytes_per_connection_after_hold =
            diff_rss(before, after_hold).map(|g| g as f64 / c.established as f64);
    }
    if d.received_total > 0 && s.events > 0 {
        sv.cpu_us_per_delivery = sv
            .cpu_seconds_delivery
            .map(|cpu| cpu * 1e6 / d.received_total as f64);
        sv.cpu_seconds_per_million_deliveries = sv
            .cpu_seconds_delivery
            .map(|cpu| cpu / (d.received_total as f64 / 1e6));
    }

    let received_total = d.received_total;
    let mut problems = Vec::new();
    if missing_workers > 0 {
        problems.push(format!("{missing_workers} worker(s) sent no result"));
    }
    if deadline_hit {
        problems.push("deadline hit".into());
    }
    if c.failed > 0 {
        problems.push(format!("{} connections failed", c.failed));
    }
    if let Some(p) = &publishing {
        if p.failed + p.unsent > 0 {
            problems.push(format!(
                "{} publishes failed, {} unsent",
                p.failed, p.unsent
            ));
        }
        if p.ok < s.events && p.failed + p.unsent == 0 {
            problems.push("publishing stopped early".into());
        }
    } else if s.events > 0 {
        problems.push("nothing was published".into());
    }
    if d.lost > 0 {
        problems.push(format!(
            "{} deliveries lost on {} connections (each expected up to {expected_per_conn})",
            d.lost, d.incomplete_connections
        ));
    }
    if d.duplicates > 0 {
        problems.push(format!("{} duplicates", d.duplicates));
    }
    if d.misrouted > 0 {
        problems.push(format!(
            "{} deliveries reached a connection they were not for",
            d.misrouted
        ));
    }
    // A slow reader under drop_oldest legitimately loses events, never reorders them; but
    // only readers that keep up are promised order here.
    if d.reordered > 0 && s.slow_readers == 0.0 {
        problems.push(format!(
            "{} deliveries reordered within their stream",
            d.reordered
        ));
    }
    if c.disconnected > 0 {
        problems.push(format!(
            "{} tracked connections were closed",
            c.disconnected
        ));
    }
    if c.established == 0 {
        problems.push("no connection established".into());
    }

    Ok(Summary {
        scenario: s.clone(),
        started_unix_ms,
        duration_seconds: started.elapsed().as_secs_f64(),
        deadline_hit,
        problems,
        connections: c,
        publishing,
        deliveries: d,
        latency: report::latency(&lat),
        connect_latency: report::latency(&conn_lat),
        server: sv,
        harness: Harness {
            cpu_seconds: parent_cpu + workers_cpu,
            cpu_seconds_parent: parent_cpu,
            cpu_seconds_workers: workers_cpu,
            cpu_us_per_delivery: (received_total > 0)
                .then(|| (parent_cpu + workers_cpu) * 1e6 / received_total as f64),
            worker_rss_bytes: results.iter().map(|r| r.rss_bytes).collect(),
            rss_bytes_per_connection: results.iter().map(|r| r.rss_bytes).sum::<u64>() as f64
                / s.connections.max(1) as f64,
        },
        latency_histogram: worker::encode_histogram(&lat),
        health: None,
    })
}
