//! `proxy`: closed-loop HTTP/1.1 load through a reverse proxy, for the API gateway's figure
//! against nginx `proxy_pass`. Each connection keeps one request in flight (keep-alive); the
//! run reports requests per second, latency percentiles and the server's CPU time per request
//! (the process and its children, from /proc), which is what does not depend on how much of
//! the two cores the load generator itself takes.
//!
//!   corebridge-loadtest proxy --url http://127.0.0.1:4000/bench [--pid PID]
//!       [--connections 64] [--seconds 10] [--threads 2] [--body 0] [--warmup 2]

use crate::procfs;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    host: String,
    port: u16,
    path: String,
    pid: Option<u32>,
    connections: usize,
    seconds: f64,
    warmup: f64,
    threads: usize,
    body: usize,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        host: String::new(),
        port: 0,
        path: "/".into(),
        pid: None,
        connections: 64,
        seconds: 10.0,
        warmup: 2.0,
        threads: 2,
        body: 0,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--url" => {
                let rest = v
                    .strip_prefix("http://")
                    .context("--url must be http://HOST:PORT/PATH")?;
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let (host, port) = authority.rsplit_once(':').context("--url needs a port")?;
                a.host = host.to_string();
                a.port = port.parse()?;
                a.path = format!("/{path}");
            }
            "--pid" => a.pid = Some(v.parse()?),
            "--connections" => a.connections = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--warmup" => a.warmup = v.parse()?,
            "--threads" => a.threads = v.parse()?,
            "--body" => a.body = v.parse()?,
            _ => bail!("unknown option {k}"),
        }
    }
    if a.port == 0 || a.connections == 0 || a.threads == 0 || a.seconds <= 0.0 {
        bail!("--url, and positive --connections, --threads and --seconds are needed");
    }
    Ok(a)
}

/// One connection's loop: send, read one response, count it (when measuring), again.
async fn connection(
    addr: String,
    request: Arc<Vec<u8>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<Mutex<u64>>,
) {
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            *errors.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if s.write_all(&request).await.is_err() {
                *errors.lock().unwrap() += 1;
                continue 'outer;
            }
            let mut have = 0;
            let (head, body_len) = loop {
                let n = match s.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => {
                        *errors.lock().unwrap() += 1;
                        continue 'outer;
                    }
                    Ok(n) => n,
                };
                have += n;
                let mut hs = [httparse::EMPTY_HEADER; 32];
                let mut r = httparse::Response::new(&mut hs);
                if let Ok(httparse::Status::Complete(h)) = r.parse(&buf[..have]) {
                    let len = r
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
                    if r.code != Some(200) || len.is_none() {
                        *errors.lock().unwrap() += 1;
                        continue 'outer;
                    }
                    break (h, len.unwrap_or(0));
                }
                if have == buf.len() {
                    *errors.lock().unwrap() += 1;
                    continue 'outer;
                }
            };
            let mut got = have - head;
            while got < body_len {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => continue 'outer,
                    Ok(n) => got += n,
                }
            }
            if measuring.load(Ordering::Relaxed) {
                let _ = local.record(t.elapsed().as_micros().max(1) as u64);
            }
        }
    }
    hist.lock().unwrap().add(&local).unwrap();
}

pub fn main(args: &[String]) -> Result<i32> {
    let a = parse(args)?;
    procfs::raise_nofile();
    let addr = format!("{}:{}", a.host, a.port);
    let body = "b".repeat(a.body);
    let method = if a.body > 0 { "POST" } else { "GET" };
    let request = Arc::new(
        format!(
            "{method} {} HTTP/1.1\r\nhost: {addr}\r\nuser-agent: corebridge-loadtest\r\naccept: */*\r\n{}\r\n{body}",
            a.path,
            if a.body > 0 { format!("content-length: {}\r\n", a.body) } else { String::new() }
        )
        .into_bytes(),
    );
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(Mutex::new(0u64));
    let mut threads = Vec::new();
    for t in 0..a.threads {
        let n = a.connections / a.threads + usize::from(t < a.connections % a.threads);
        let (addr, request, measuring, stop, hist, errors) = (
            addr.clone(),
            request.clone(),
            measuring.clone(),
            stop.clone(),
            hist.clone(),
            errors.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        tokio::spawn(connection(
                            addr.clone(),
                            request.clone(),
                            measuring.clone(),
                            stop.clone(),
                            hist.clone(),
                            errors.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let server_before = a.pid.map(procfs::sample).transpose()?;
    let me_before = procfs::self_cpu_seconds();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    measuring.store(false, Ordering::Relaxed);
    let wall = started.elapsed().as_secs_f64();
    let server_after = a.pid.map(procfs::sample).transpose()?;
    let me = procfs::self_cpu_seconds() - me_before;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let h = hist.lock().unwrap();
    let n = h.len();
    let server_cpu = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
        _ => None,
    };
    let out = serde_json::json!({
        "url": format!("http://{addr}{}", a.path),
        "connections": a.connections,
        "seconds": wall,
        "requests": n,
        "requests_per_second": n as f64 / wall,
        "latency_us": {"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999)},
        "errors": *errors.lock().unwrap(),
        "server_cpu_seconds": server_cpu,
        "server_cpu_us_per_request": server_cpu.map(|c| c * 1e6 / n.max(1) as f64),
        "requests_per_server_cpu_second": server_cpu.map(|c| n as f64 / c.max(1e-9)),
        "server_rss_bytes": server_after.map(|s| s.rss_bytes),
        "harness_cpu_us_per_request": me * 1e6 / n.max(1) as f64,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
