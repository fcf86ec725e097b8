//! `floor`: what the kernel alone charges for uncoalesced fan-out on this machine, with no
//! gateway at all. A sender with one thread per core writes each event (a fixed-size frame
//! starting with its send time) to N loopback TCP sockets with plain non-blocking `send`
//! calls; reader processes (as many as the harness's workers) read them with epoll and record
//! send-to-receipt latency. Corebridge's kafka-latency numbers are compared against this: the
//! part above the floor is the gateway's, the floor itself is the machine's.
//!
//!   corebridge-loadtest floor [--connections 10000] [--events 100] [--rate 10]
//!       [--bytes 250] [--threads 2] [--readers 2] [--targeted 1]
//!
//! `--targeted 1` is the floor of per-user delivery (scenario (c)) instead: see [`relay`].

use crate::{procfs, report, run, worker};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Args {
    connections: usize,
    events: usize,
    rate: f64,
    bytes: usize,
    threads: usize,
    readers: usize,
    targeted: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        connections: 10_000,
        events: 100,
        rate: 10.0,
        bytes: 250,
        threads: 2,
        readers: 2,
        targeted: false,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        let n: f64 = v.parse().with_context(|| format!("{k} {v:?}"))?;
        match k.as_str() {
            "--connections" => a.connections = n as usize,
            "--events" => a.events = n as usize,
            "--rate" => a.rate = n,
            "--bytes" => a.bytes = n as usize,
            "--threads" => a.threads = n as usize,
            "--readers" => a.readers = n as usize,
            "--targeted" => a.targeted = n != 0.0,
            _ => bail!("unknown option {k}"),
        }
    }
    if a.bytes < 8 || a.threads == 0 || a.readers == 0 || a.rate <= 0.0 {
        bail!("--bytes >= 8, --threads, --readers >= 1, --rate > 0");
    }
    if a.targeted && (!a.events.is_multiple_of(a.connections.max(1)) || a.threads > 2) {
        bail!("--targeted: --events a multiple of --connections (each gets the same number), --threads 1 or 2");
    }
    if a.connections / a.readers > 19_000 {
        bail!("at most 19,000 connections per reader process (open-file limit)");
    }
    Ok(a)
}

/// One non-blocking `send` of `buf` to `fd`; true if the socket took all of it.
pub(crate) fn send_whole(fd: std::os::fd::RawFd, buf: &[u8]) -> bool {
    // SAFETY: an open socket and a buffer of the given length, only read.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    r == buf.len() as isize
}

/// One non-blocking `recv` into `buf`: bytes read, 0 at end of stream, negative on error
/// (EAGAIN when nothing is there).
pub(crate) fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: an open socket and a buffer of the given length, written by the kernel.
    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
}

/// A clock's reading in nanoseconds: CLOCK_MONOTONIC is shared by sender and reader
/// processes, CLOCK_THREAD_CPUTIME_ID times one sender thread.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn main(args: &[String]) -> Result<i32> {
    let a = parse(args)?;
    let sk = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sk.set_reuse_address(true)?;
    sk.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sk.listen(4096)?;
    let listener: TcpListener = sk.into();
    let port = listener.local_addr()?.port();
    let exe = std::env::current_exe()?;
    let per = a.connections.div_ceil(a.readers);
    let mut readers = Vec::new();
    let mut left = a.connections;
    for r in 0..a.readers {
        let n = per.min(left);
        left -= n;
        let child = Command::new(&exe)
            .args(["floor-reader", &port.to_string(), &n.to_string()])
            .arg(a.bytes.to_string())
            .arg(
                if a.targeted {
                    n * (a.events / a.connections)
                } else {
                    n * a.events
                }
                .to_string(),
            )
            .arg(format!("127.0.0.{}", 2 + r))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a reader")?;
        readers.push(child);
    }
    let mut socks = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    eprintln!("floor: {} connections accepted", socks.len());
    std::thread::sleep(Duration::from_millis(500));
    if a.targeted {
        return relay(&a, &listener, socks, readers);
    }

    let barrier = Arc::new(Barrier::new(a.threads));
    let chunk = socks.len().div_ceil(a.threads);
    let mut groups: Vec<Vec<TcpStream>> = Vec::new();
    while !socks.is_empty() {
        let rest = socks.split_off(chunk.min(socks.len()));
        groups.push(std::mem::replace(&mut socks, rest));
    }
    let t0 = Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let barrier = barrier.clone();
            let (events, rate, bytes) = (a.events, a.rate, a.bytes);
            std::thread::spawn(move || {
                let mut frame = vec![b'x'; bytes];
                let (mut cpu, mut sends, mut full) = (0u64, 0u64, 0u64);
                let mut bursts = Vec::with_capacity(events);
                for e in 0..events {
                    let at = t0 + Duration::from_secs_f64(e as f64 / rate);
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    barrier.wait();
                    frame[..8].copy_from_slice(&clock_ns(libc::CLOCK_MONOTONIC).to_le_bytes());
                    let (c0, w0) = (clock_ns(libc::CLOCK_THREAD_CPUTIME_ID), Instant::now());
                    for s in &group {
                        if !send_whole(s.as_raw_fd(), &frame) {
                            full += 1;
                        }
                        sends += 1;
                    }
                    bursts.push(w0.elapsed());
                    cpu += clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - c0;
                }
                (cpu, sends, full, bursts, group)
            })
        })
        .collect();
    let (mut cpu, mut sends, mut full, mut bursts) = (0u64, 0u64, 0u64, Vec::new());
    let mut keep = Vec::new();
    for h in handles {
        let (c, s, f, b, g) = h.join().expect("sender thread");
        cpu += c;
        sends += s;
        full += f;
        bursts.extend(b);
        keep.push(g);
    }
    let (received, reader_cpu, hist) = collect(readers)?;
    drop(keep);
    bursts.sort();
    println!(
        "floor: {} connections, {} events at {}/s, {} B frames, {} sender threads, {} reader processes",
        a.connections, a.events, a.rate, a.bytes, a.threads, a.readers
    );
    println!(
        "  sends          {sends} ({full} short or refused), {:.2} us of sender CPU per send",
        cpu as f64 / 1000.0 / sends.max(1) as f64
    );
    println!(
        "  burst          one thread's {} sends took p50 {:.1} ms, max {:.1} ms (wall)",
        chunk,
        bursts[bursts.len() / 2].as_secs_f64() * 1000.0,
        bursts.last().map_or(0.0, |b| b.as_secs_f64() * 1000.0)
    );
    print_readers(received, sends, reader_cpu, &hist, "send call to read");
    Ok(if received == sends && full == 0 { 0 } else { 3 })
}

/// The readers' lines of a floor report.
fn print_readers(
    received: u64,
    expected: u64,
    reader_cpu: f64,
    hist: &hdrhistogram::Histogram<u64>,
    latency_of: &str,
) {
    let l = report::latency(hist);
    println!(
        "  received       {received} of {expected}; {:.2} us of reader CPU per receive",
        reader_cpu * 1e6 / received.max(1) as f64
    );
    println!(
        "  latency        p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({latency_of})",
        l.p50_ms, l.p99_ms, l.p99_9_ms, l.max_ms
    );
}

/// What the reader processes report: frames received, their CPU seconds, latency.
fn collect(readers: Vec<std::process::Child>) -> Result<(u64, f64, hdrhistogram::Histogram<u64>)> {
    let mut hist = worker::new_histogram();
    let (mut received, mut reader_cpu) = (0u64, 0f64);
    for mut r in readers {
        let out = BufReader::new(r.stdout.take().expect("piped"));
        for line in out.lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("floor-result ") {
                let v: serde_json::Value = serde_json::from_str(rest)?;
                received += v["received"].as_u64().unwrap_or(0);
                reader_cpu += v["cpu_seconds"].as_f64().unwrap_or(0.0);
                let h = run::decode_hist(v["latency"].as_str().context("reader latency")?)?;
                hist.add(h).map_err(|e| anyhow!("{e:?}"))?;
            }
        }
        r.wait()?;
    }
    Ok((received, reader_cpu, hist))
}

/// The floor of per-user delivery, scenario (c) without a gateway: a publisher thread sends
/// each event (a frame naming its connection) over one loopback TCP connection and waits for
/// a 16-byte answer, paced at the rate; relay thread 0 (epoll, like a shard) reads it, sends
/// it to the connection if that is in its half, else hands it to relay thread 1 (a queue and
/// an eventfd, as shards do), and answers. What any gateway on two threads pays per event:
/// a wake-up, a `recv`, a `send` to the subscriber and one to the publisher, and for half the
/// events a hand-over that wakes the other thread (none with `--threads 1`). Reported: both
/// relay threads' CPU per event.
fn relay(
    a: &Args,
    listener: &TcpListener,
    socks: Vec<TcpStream>,
    readers: Vec<std::process::Child>,
) -> Result<i32> {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    let port = listener.local_addr()?.port();
    let (events, rate, bytes, n) = (a.events, a.rate, a.bytes.max(16), socks.len());
    // With one thread every connection is thread 0's and nothing is handed over.
    let half = if a.threads == 1 { n } else { n / 2 };
    let mut socks = socks;
    let theirs = socks.split_off(half);
    let ours = socks;
    let publisher = std::thread::spawn(move || -> Result<()> {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        let mut frame = vec![b'x'; bytes];
        let mut answer = [0u8; 16];
        let t0 = Instant::now() + Duration::from_millis(100);
        for e in 0..events {
            let at = t0 + Duration::from_secs_f64(e as f64 / rate);
            if let Some(d) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            frame[..8].copy_from_slice(&clock_ns(libc::CLOCK_MONOTONIC).to_le_bytes());
            frame[8..16].copy_from_slice(&((e % n) as u64).to_le_bytes());
            s.write_all(&frame)?;
            s.read_exact(&mut answer)?;
        }
        Ok(())
    });
    let (pubsock, _) = listener.accept()?;
    pubsock.set_nodelay(true)?;
    // SAFETY: plain syscalls creating fds this function owns until the threads end.
    let (ep0, ep1, efd) = unsafe {
        (
            libc::epoll_create1(0),
            libc::epoll_create1(0),
            libc::eventfd(0, libc::EFD_NONBLOCK),
        )
    };
    if ep0 < 0 || ep1 < 0 || efd < 0 {
        bail!("epoll/eventfd: {}", std::io::Error::last_os_error());
    }
    let watch = |ep: i32, fd: i32| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid epoll and fds.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }
    };
    if watch(ep0, pubsock.as_raw_fd()) < 0 || watch(ep1, efd) < 0 {
        bail!("epoll_ctl: {}", std::io::Error::last_os_error());
    }
    // None: the publisher is done.
    let queue: Arc<Mutex<VecDeque<Option<Vec<u8>>>>> = Arc::default();
    let send = |s: &TcpStream, buf: &[u8]| send_whole(s.as_raw_fd(), buf);
    let wait = |ep: i32| {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one event's room.
        unsafe { libc::epoll_wait(ep, &mut ev, 1, -1) }
    };
    let q1 = queue.clone();
    let other = std::thread::spawn(move || {
        let c0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let (mut sends, mut full) = (0u64, 0u64);
        'run: loop {
            wait(ep1);
            let mut count = [0u8; 8];
            // SAFETY: reads the eventfd's 8-byte counter.
            unsafe { libc::read(efd, count.as_mut_ptr().cast(), 8) };
            let batch: Vec<_> = q1.lock().expect("queue").drain(..).collect();
            for frame in batch {
                let Some(frame) = frame else { break 'run };
                let to = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes")) as usize;
                full += u64::from(!send(&theirs[to - half], &frame));
                sends += 1;
            }
        }
        (
            clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - c0,
            sends,
            full,
            theirs,
        )
    });
    let c0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    let (mut sends, mut full) = (0u64, 0u64);
    let mut frame = vec![0u8; bytes];
    let answer = [b'k'; 16];
    loop {
        wait(ep0);
        // SAFETY: reads one whole frame into our buffer.
        let r = unsafe {
            libc::recv(
                pubsock.as_raw_fd(),
                frame.as_mut_ptr().cast(),
                bytes,
                libc::MSG_WAITALL,
            )
        };
        if r != bytes as isize {
            break;
        }
        let to = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes")) as usize;
        if to < half {
            full += u64::from(!send(&ours[to], &frame));
            sends += 1;
        } else {
            queue.lock().expect("queue").push_back(Some(frame.clone()));
            // SAFETY: writes the eventfd's 8-byte counter.
            unsafe { libc::write(efd, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
        }
        full += u64::from(!send(&pubsock, &answer));
    }
    let cpu0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) - c0;
    queue.lock().expect("queue").push_back(None);
    // SAFETY: as above.
    unsafe { libc::write(efd, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
    publisher.join().expect("publisher thread")?;
    let (cpu1, sends1, full1, theirs) = other.join().expect("relay thread");
    let (received, reader_cpu, hist) = collect(readers)?;
    drop((ours, theirs));
    let (sends, full) = (sends + sends1, full + full1);
    println!(
        "floor (targeted): {n} connections, {events} events at {rate}/s each to one connection, {bytes} B frames, {} relay threads, {} reader processes",
        a.threads, a.readers
    );
    println!(
        "  relay          {:.2} us of relay CPU per event (thread 0 {:.2}, thread 1 {:.2}); {sends} sent, {full} short or refused",
        (cpu0 + cpu1) as f64 / 1000.0 / events.max(1) as f64,
        cpu0 as f64 / 1000.0 / events.max(1) as f64,
        cpu1 as f64 / 1000.0 / events.max(1) as f64,
    );
    print_readers(
        received,
        events as u64,
        reader_cpu,
        &hist,
        "publish to read",
    );
    Ok(if received == events as u64 && full == 0 {
        0
    } else {
        3
    })
}

/// `floor-reader PORT N BYTES EXPECT SOURCE`: one reader process.
pub fn reader(args: &[String]) -> Result<i32> {
    let [port, n, bytes, expect, source] = args else {
        bail!("floor-reader PORT N BYTES EXPECT SOURCE");
    };
    let (port, n, bytes, expect): (u16, usize, usize, u64) =
        (port.parse()?, n.parse()?, bytes.parse()?, expect.parse()?);
    let source: std::net::Ipv4Addr = source.parse()?;
    // SAFETY: plain syscall; the fd is closed at exit.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&std::net::SocketAddr::from((source, 0)).into())?;
        s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        s.set_nonblocking(true)?;
        let s: TcpStream = s.into();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll and socket fds.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } < 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        // Position in the current frame and the first 8 bytes (the send time) seen so far.
        conns.push((s, 0usize, [0u8; 8]));
    }
    let cpu0 = procfs::self_cpu_seconds();
    let mut hist = worker::new_histogram();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    let mut idle_since = Instant::now();
    while received < expect && idle_since.elapsed() < Duration::from_secs(10) {
        // SAFETY: the events buffer holds 1024 entries.
        let k = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 1024, 200) };
        if k <= 0 {
            continue;
        }
        idle_since = Instant::now();
        for e in &events[..k as usize] {
            let (s, pos, ts) = &mut conns[e.u64 as usize];
            loop {
                let r = recv_now(s.as_raw_fd(), &mut buf);
                if r <= 0 {
                    break;
                }
                let now = clock_ns(libc::CLOCK_MONOTONIC);
                let mut data = &buf[..r as usize];
                while !data.is_empty() {
                    if *pos < 8 {
                        let take = (8 - *pos).min(data.len());
                        ts[*pos..*pos + take].copy_from_slice(&data[..take]);
                    }
                    let take = (bytes - *pos).min(data.len());
                    *pos += take;
                    data = &data[take..];
                    if *pos == bytes {
                        *pos = 0;
                        received += 1;
                        let lat = now.saturating_sub(u64::from_le_bytes(*ts)) / 1000;
                        hist.saturating_record(lat.max(1));
                    }
                }
                // A short read drained the socket: the next recv would only fail with EAGAIN
                // (level-triggered epoll reports it again when more comes).
                if (r as usize) < buf.len() {
                    break;
                }
            }
        }
    }
    let cpu = procfs::self_cpu_seconds() - cpu0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "floor-result {}",
        serde_json::json!({
            "received": received,
            "cpu_seconds": cpu,
            "latency": worker::encode_histogram(&hist),
        })
    )?;
    Ok(0)
}
