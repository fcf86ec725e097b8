//! `send-bench`: what the writer's batched sends save on the kernel side alone. N loopback
//! TCP connections nobody reads; each round sends one frame to each, once with one `send`
//! call per socket and once through an io_uring in batches, alternating, and prints the
//! sender thread's CPU per send of both. Nobody reading means no client wake-ups: this is
//! the syscall's share only, the part batching saves even without clients.
//!
//!   corebridge-loadtest send-bench [--sockets 2000] [--rounds 10] [--batch 64] [--bytes 250]
//!       [--trials 16]

use anyhow::{bail, Context, Result};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

fn thread_cpu_ns() -> u64 {
    crate::floor::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub fn main(args: &[String]) -> Result<i32> {
    let (mut sockets, mut rounds, mut batch, mut bytes, mut trials) = (2000, 10, 64, 250, 16);
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        let n: usize = v.parse().with_context(|| format!("{k} {v:?}"))?;
        match k.as_str() {
            "--sockets" => sockets = n,
            "--rounds" => rounds = n,
            "--batch" => batch = n,
            "--bytes" => bytes = n,
            "--trials" => trials = n,
            _ => bail!("unknown option {k}"),
        }
    }
    if sockets == 0 || rounds == 0 || trials == 0 || !(1..=4096).contains(&batch) {
        bail!("--sockets, --rounds, --trials >= 1; --batch 1..4096");
    }
    if sockets > 9_000 {
        bail!("at most 9,000 sockets (two ends each under the open-file limit)");
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    let mut readers = Vec::with_capacity(sockets);
    let mut senders = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        readers.push(TcpStream::connect(l.local_addr()?)?);
        let (s, _) = l.accept()?;
        s.set_nodelay(true)?;
        senders.push(s);
    }
    for r in &readers {
        r.set_nonblocking(true)?;
    }
    let frame = vec![b'x'; bytes];
    let mut sink = vec![0u8; 1 << 20];
    // Between two measurements the receive queues are emptied, so neither finds them fuller.
    let mut drain = || {
        for r in &readers {
            while crate::floor::recv_now(r.as_raw_fd(), &mut sink) > 0 {}
        }
    };
    let sends = (sockets * rounds) as f64;
    let one_by_one = |senders: &[TcpStream]| -> Result<f64> {
        let c0 = thread_cpu_ns();
        for _ in 0..rounds {
            for s in senders {
                if !crate::floor::send_whole(s.as_raw_fd(), &frame) {
                    bail!("a send was short: lower --rounds");
                }
            }
        }
        Ok((thread_cpu_ns() - c0) as f64 / sends)
    };
    let mut ring = io_uring::IoUring::new(batch.next_power_of_two() as u32)?;
    let mut batched = |senders: &[TcpStream]| -> Result<f64> {
        let c0 = thread_cpu_ns();
        for _ in 0..rounds {
            for chunk in senders.chunks(batch) {
                for s in chunk {
                    let e = io_uring::opcode::Send::new(
                        io_uring::types::Fd(s.as_raw_fd()),
                        frame.as_ptr(),
                        frame.len() as u32,
                    )
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build();
                    // SAFETY: `frame` outlives the request, which completes inside
                    // `submit_and_wait` below (a non-blocking send).
                    unsafe { ring.submission().push(&e) }.context("ring full")?;
                }
                ring.submit_and_wait(chunk.len())?;
                for c in ring.completion() {
                    if c.result() != frame.len() as i32 {
                        bail!("a send was short ({}): lower --rounds", c.result());
                    }
                }
            }
        }
        Ok((thread_cpu_ns() - c0) as f64 / sends)
    };
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..trials {
        let (x, y) = if t % 2 == 0 {
            let x = one_by_one(&senders)?;
            drain();
            (x, batched(&senders)?)
        } else {
            let y = batched(&senders)?;
            drain();
            (one_by_one(&senders)?, y)
        };
        drain();
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "send-bench: {sockets} sockets x {rounds} rounds of {bytes} B, {trials} alternating trials"
    );
    println!(
        "  CPU per send (median)  send {:.0} ns, io_uring batches of {batch} {:.0} ns; median ratio {:.3}",
        median(&mut a),
        median(&mut b),
        median(&mut ratios)
    );
    Ok(0)
}
