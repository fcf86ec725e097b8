//! The socket system calls the shard makes itself, outside the runtime: once a connection has
//! become a stream (SSE after its head was chosen, WebSocket after the handshake), the shard's
//! writer sends to it with one non-blocking vectored `sendmsg` per pass, and the shard's
//! watcher learns from one epoll set per shard when a client sent something, left, or has room
//! again after a full socket. No task and no armed read per idle connection: a task and its
//! buffers cost memory per connection, and waking one per event costs a scheduler trip.
//!
//! One of the two modules allowed `unsafe` (the other is `runtime/sys.rs`). What keeps it
//! sound: a stream's fd is an `OwnedFd` the session holds (taken out of the runtime with
//! `rt::TcpStream::into_owned_fd`, which deregisters it), so it stays open exactly as long as
//! the session and nobody else reads or writes it; every call passes buffers that outlive it;
//! every call is non-blocking (`MSG_DONTWAIT`, `epoll_wait` with a zero timeout), so a shard
//! never blocks on a client. What breaks if that changes: a second owner of the fd would interleave bytes
//! mid-frame, or see its fd number reused by another connection after close.
#![allow(unsafe_code)]

use crate::session::Frame;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One write's bytes in order, never copied together: a lead (response head, chunk line,
/// pong), the drained frames (shared with every other session that got them), a tail (chunk
/// end, close frame).
pub(super) struct Parts<'a> {
    pub(super) lead: &'a [u8],
    pub(super) frames: &'a [Frame],
    pub(super) tail: &'a [u8],
}

impl Parts<'_> {
    fn count(&self) -> usize {
        self.frames.len() + 2
    }

    fn get(&self, i: usize) -> &[u8] {
        match i {
            0 => self.lead,
            i if i <= self.frames.len() => &self.frames[i - 1],
            _ => self.tail,
        }
    }

    /// The bytes after the first `sent`, copied into one buffer: what a full socket left
    /// unsent (a slow client's, so rare).
    fn rest_after(&self, mut sent: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.count() {
            let b = self.get(i);
            if sent >= b.len() {
                sent -= b.len();
            } else {
                out.extend_from_slice(&b[sent..]);
                sent = 0;
            }
        }
        out
    }
}

/// How a write that must not wait went.
pub(super) enum SendNow {
    All,
    /// The socket filled up; the rest is still to go.
    Partly(Vec<u8>),
    Failed,
}

/// Writes as much of the parts as the socket takes now, never waiting: `sendmsg` until all is
/// sent or the socket is full. For the shard's writer, which must not block on one client.
pub(super) fn send_now(fd: RawFd, p: &Parts<'_>) -> SendNow {
    let (mut i, mut off, mut total) = (0, 0, 0);
    loop {
        while i < p.count() && off >= p.get(i).len() {
            i += 1;
            off = 0;
        }
        if i == p.count() {
            return SendNow::All;
        }
        let mut sent = match send_parts(fd, p, i, off) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return SendNow::Partly(p.rest_after(total))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => return SendNow::Failed,
        };
        total += sent;
        while sent > 0 && i < p.count() {
            let left = p.get(i).len() - off;
            if sent < left {
                off += sent;
                break;
            }
            sent -= left;
            i += 1;
            off = 0;
        }
    }
}

thread_local! {
    /// The iovec array of `send_parts`, kept per shard thread: a write of one heartbeat must
    /// not clear or allocate room for MAX_FRAMES entries.
    static IOV: RefCell<Vec<libc::iovec>> = const { RefCell::new(Vec::new()) };
}

/// Linux refuses a `sendmsg` with more iovecs than this.
const UIO_MAXIOV: usize = 1024;

/// One non-blocking `sendmsg` of the parts from part `i`, byte `off` on.
fn send_parts(fd: RawFd, p: &Parts<'_>, i: usize, off: usize) -> io::Result<usize> {
    IOV.with_borrow_mut(|iov| {
        iov.clear();
        // The parts past UIO_MAXIOV go in the next call (a killed session drains its whole
        // queue at once).
        for j in (i..p.count()).take(UIO_MAXIOV) {
            let b = if j == i { &p.get(j)[off..] } else { p.get(j) };
            if !b.is_empty() {
                iov.push(libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                });
            }
        }
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: every iovec points into a slice that outlives this call, and the kernel only
        // reads them; MSG_DONTWAIT keeps the shard from blocking.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    })
}

/// Caps the socket's kernel send buffer at `bytes` (the kernel doubles it); 0 leaves the
/// kernel's autotuning. A failure only leaves the default: nothing to report.
pub(super) fn cap_send_buffer(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `fd` is an open socket; the option value is a c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// What a non-blocking read found.
pub(super) enum Recv {
    Data(usize),
    /// The client closed its side, or the connection failed.
    Closed,
    /// Nothing there now.
    Empty,
}

/// One non-blocking read into `buf`.
pub(super) fn recv_now(fd: RawFd, buf: &mut [u8]) -> Recv {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    match r {
        0 => Recv::Closed,
        n if n > 0 => Recv::Data(n as usize),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Recv::Empty,
            _ => Recv::Closed,
        },
    }
}

/// Whether an idle pooled connection is still fit to send a request on: nothing to read and
/// not closed. A byte waiting on an idle connection is the upstream closing it (a FIN, a TLS
/// close_notify) or talking out of turn; either way it is not reused.
pub(super) fn idle_and_open(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is valid for writes of its length for the duration of the call; MSG_PEEK
    // leaves the byte in the socket.
    let r = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// One shard's epoll set of stream sockets. Level-triggered: a client that sent something is
/// reported until it is read; `EPOLLOUT` is only asked for while a session waits for room.
pub(super) struct Epoll {
    fd: OwnedFd,
    events: RefCell<Vec<libc::epoll_event>>,
}

/// Read interest: data, and the peer closing (`EPOLLRDHUP`); errors and hang-ups always come.
const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const READ_WRITE: u32 = READ | libc::EPOLLOUT as u32;

/// What epoll reported for one socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready {
    /// The `data` it was registered with.
    pub(super) key: u64,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer closed or the connection failed.
    pub(super) gone: bool,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; 512]),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, key: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: `ev` is valid for the call; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches a stream socket; `key` comes back with its events. Closing the fd removes it.
    pub(super) fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, READ)
    }

    /// Also (or no longer) reports when the socket has room to write.
    pub(super) fn want_room(&self, fd: RawFd, key: u64, on: bool) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd,
            key,
            if on { READ_WRITE } else { READ },
        )
    }

    /// What is ready now (never waits); calls `f` per socket.
    pub(super) fn ready(&self, mut f: impl FnMut(Ready)) {
        let mut events = self.events.borrow_mut();
        loop {
            // SAFETY: the buffer holds `len` events and outlives the call; timeout 0.
            let n = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    0,
                )
            };
            if n <= 0 {
                return;
            }
            for ev in &events[..n as usize] {
                let e = ev.events;
                f(Ready {
                    key: ev.u64,
                    readable: e & libc::EPOLLIN as u32 != 0,
                    writable: e & libc::EPOLLOUT as u32 != 0,
                    gone: e & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
                });
            }
            if (n as usize) < events.len() {
                return;
            }
        }
    }
}
