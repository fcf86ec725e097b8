//! A worker's open SSE streams, read from one epoll set by one task instead of one tokio task
//! per connection. The harness shares this machine's two cores with the server it measures:
//! a task wake-up per event (the driver's readiness, the scheduler, the task's poll) was 15%
//! of the workers' CPU in kafka-latency, CPU the server did not get. This is how the floor's
//! readers (`floor.rs`) read, so a latency compared with the floor compares servers, not
//! clients.

use crate::proto::{Chunked, Marks, SseScanner};
use anyhow::{anyhow, Result};
use std::cell::RefCell;
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One stream's parser state.
pub struct Reading {
    stream: TcpStream,
    chunked: bool,
    ch: Chunked,
    sc: SseScanner,
}

impl Reading {
    pub fn new(stream: TcpStream, chunked: bool) -> Reading {
        Reading {
            stream,
            chunked,
            ch: Chunked::default(),
            sc: SseScanner::default(),
        }
    }

    /// Parses `bytes` of the stream, calling `f` for each event.
    pub fn feed(&mut self, bytes: &[u8], f: &mut impl FnMut(Marks)) -> Result<(), String> {
        if self.chunked {
            let sc = &mut self.sc;
            self.ch.feed(bytes, |b| sc.feed(b, f))
        } else {
            self.sc.feed(bytes, f);
            Ok(())
        }
    }
}

pub struct StreamSet {
    ep: AsyncFd<OwnedFd>,
    /// By connection slot.
    open: RefCell<Vec<Option<Reading>>>,
}

impl StreamSet {
    pub fn new() -> Result<StreamSet> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(anyhow!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open until dropped.
        let ep = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the stream set: {e}"))?;
        Ok(StreamSet {
            ep,
            open: RefCell::new(Vec::new()),
        })
    }

    /// Reads `slot`'s stream from now on. Edge-triggered: a level-triggered set polls every
    /// socket it reported once more at the next `epoll_wait` (`sock_poll`, 10% of the workers'
    /// CPU); every socket is read until a short read or EAGAIN, so no input is left unreported.
    pub fn add(&self, slot: usize, r: Reading) -> Result<()> {
        r.stream.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: slot as u64,
        };
        // SAFETY: valid epoll and socket fds, and an event to copy from.
        let rc = unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                r.stream.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(anyhow!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
        let mut open = self.open.borrow_mut();
        if open.len() <= slot {
            open.resize_with(slot + 1, || None);
        }
        open[slot] = Some(r);
        Ok(())
    }

    /// Closes `slot`'s stream, if it is open here (churn). Closing the socket takes it out of
    /// the epoll set.
    pub fn remove(&self, slot: usize) {
        if let Some(r) = self.open.borrow_mut().get_mut(slot) {
            *r = None;
        }
    }

    /// Reads every stream as it gets input, for ever: `event(slot, marks, now_ns)` per event,
    /// `closed(slot, why)` when a stream ends (it is then dropped). `scratch` is the worker's
    /// shared read buffer.
    pub async fn run(
        &self,
        scratch: &RefCell<Vec<u8>>,
        mut event: impl FnMut(usize, Marks, u64),
        mut closed: impl FnMut(usize, anyhow::Error),
    ) -> Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut ended: Vec<(usize, anyhow::Error)> = Vec::new();
        loop {
            let mut guard = self.ep.readable().await?;
            loop {
                // SAFETY: the events buffer holds `events.len()` entries.
                let k = unsafe {
                    libc::epoll_wait(
                        self.ep.as_raw_fd(),
                        events.as_mut_ptr(),
                        events.len() as i32,
                        0,
                    )
                };
                if k < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(anyhow!("epoll_wait: {e}"));
                }
                {
                    let mut open = self.open.borrow_mut();
                    let mut buf = scratch.borrow_mut();
                    for e in &events[..k as usize] {
                        let slot = e.u64 as usize;
                        let Some(r) = open.get_mut(slot).and_then(Option::as_mut) else {
                            continue;
                        };
                        // The peer closed or failed: read on to the end of the stream, as no
                        // further edge comes after the short read that takes the last data.
                        let gone =
                            e.events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                        let read =
                            read_ready(r, &mut buf, gone != 0, &mut |m, now| event(slot, m, now));
                        if let Err(why) = read {
                            open[slot] = None;
                            ended.push((slot, why));
                        }
                    }
                }
                for (slot, why) in ended.drain(..) {
                    closed(slot, why);
                }
                if (k as usize) < events.len() {
                    break;
                }
                // A full batch: let the worker's other tasks (connecting, churn, the parent's
                // commands) run before the next.
                tokio::task::yield_now().await;
            }
            guard.clear_ready();
        }
    }
}

/// Reads what `r`'s socket holds: until a short read (the socket is drained: one read per
/// event at a low rate) or EAGAIN; with `to_end`, until the end of the stream.
fn read_ready(
    r: &mut Reading,
    buf: &mut [u8],
    to_end: bool,
    event: &mut impl FnMut(Marks, u64),
) -> Result<()> {
    loop {
        // A plain read(2): the socket is non-blocking.
        let n = match r.stream.read(buf) {
            Ok(0) => return Err(anyhow!("server closed the stream")),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let now = crate::worker::now_ns();
        r.feed(&buf[..n], &mut |m| event(m, now))
            .map_err(|e| anyhow!(e))?;
        if n < buf.len() && !to_end {
            return Ok(());
        }
    }
}
