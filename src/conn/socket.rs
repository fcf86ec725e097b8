//! The socket system calls the shard makes itself, outside the runtime: once a connection has
//! become a stream (SSE after its head was chosen, WebSocket after the handshake), the shard's
//! writer sends to it with one non-blocking vectored `sendmsg` per pass (handed to the kernel
//! 64 at a time through the shard's own io_uring, [`Batch`], where it has one), and the shard's
//! watcher learns from one epoll set per shard when a client sent something, left, or has room
//! again after a full socket. No task and no armed read per idle connection: a task and its
//! buffers cost memory per connection, and waking one per event costs a scheduler trip.
//!
//! One of the two modules allowed `unsafe` (the other is `runtime/sys.rs`). What keeps it
//! sound: a stream's fd is an `OwnedFd` the session holds (taken out of the runtime with
//! `rt::TcpStream::into_owned_fd`, which deregisters it), so it stays open exactly as long as
//! the session and nobody else reads or writes it; every call passes buffers that outlive it;
//! every call is non-blocking (`MSG_DONTWAIT`, `epoll_wait` with a zero timeout), so a shard
//! never blocks on a client; a batch's buffers stay put until the kernel has completed every
//! send in it, which it does inside the one call that submits them. What breaks if that changes: a second owner of the fd would interleave bytes
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
    send_after(fd, p, 0)
}

/// `send_now` for parts whose first `done` bytes already went out (a batch's short write).
pub(super) fn send_after(fd: RawFd, p: &Parts<'_>, done: usize) -> SendNow {
    let (mut i, mut off, mut total) = (0, 0, 0);
    let mut sent = done;
    loop {
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
        while i < p.count() && off >= p.get(i).len() {
            i += 1;
            off = 0;
        }
        if i == p.count() {
            return SendNow::All;
        }
        sent = match send_parts(fd, p, i, off) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return SendNow::Partly(p.rest_after(total))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => return SendNow::Failed,
        };
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

/// Up to this many sessions' writes go to the kernel in one `io_uring_enter`.
pub(super) const BATCH: usize = 64;
/// What a batch slot's buffers keep between writes (a small write is copied whole, up to 2
/// KiB; a session's unsent backlog can be megabytes).
const KEEP_BYTES: usize = 16 << 10;
const KEEP_FRAMES: usize = 1024;

/// One session's write, waiting in a [`Batch`]: its bytes, and the iovecs and header the
/// kernel reads them through (they stay put: the batch's slots never move).
pub(super) struct Pending {
    pub(super) slot: crate::session::Slot,
    pub(super) token: crate::proto::token::Token,
    pub(super) fd: RawFd,
    pub(super) closing: bool,
    pub(super) lead: Vec<u8>,
    pub(super) frames: Vec<Frame>,
    pub(super) tail: Vec<u8>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl Pending {
    fn parts(&self) -> Parts<'_> {
        Parts {
            lead: &self.lead,
            frames: &self.frames,
            tail: &self.tail,
        }
    }
}

/// The writes of a writer pass, handed to the kernel `BATCH` at a time through an io_uring of
/// the shard's own (the runtime is epoll-driven and knows nothing of it). Every send is
/// `MSG_DONTWAIT`, so the kernel completes them all inside the one call and the writer reads
/// the outcomes before it goes on: nothing is in flight between passes, and no completion
/// ever interrupts the shard. Against one `sendmsg` per write, http-latency (10,000 streams,
/// one event at a time) measured 8-18% less server CPU per delivery and 3-11% less CPU for
/// the whole machine: the syscall entry is a small part, but 64 sends in a row wake each
/// client process once instead of once per send.
pub(super) struct Batch {
    ring: io_uring::IoUring,
    slots: Box<[Pending]>,
    used: usize,
}

impl Batch {
    /// A ring, if this process may have one (Docker's default seccomp profile and
    /// `kernel.io_uring_disabled` refuse it) and the kernel fails a send to a full socket at
    /// once under `MSG_DONTWAIT`: a kernel that armed a poll instead would hold the whole
    /// shard until one slow client read.
    pub(super) fn new() -> io::Result<Batch> {
        // The probe's ring is not the batch's: a request it left waiting stays with it.
        if !fails_when_full(&mut io_uring::IoUring::new(2)?)? {
            return Err(io::Error::other(
                "this kernel waits for room on a full socket despite MSG_DONTWAIT",
            ));
        }
        let ring = io_uring::IoUring::new(BATCH as u32)?;
        let token = crate::proto::token::Token {
            node: 0,
            shard: 0,
            slot: 0,
            gen: 0,
            secret: 0,
        };
        let slots = (0..BATCH)
            .map(|_| Pending {
                slot: 0,
                token,
                fd: -1,
                closing: false,
                lead: Vec::new(),
                frames: Vec::new(),
                tail: Vec::new(),
                iov: Vec::new(),
                // SAFETY: msghdr is plain data; all-zero is a valid empty header.
                msg: unsafe { std::mem::zeroed() },
            })
            .collect();
        Ok(Batch {
            ring,
            slots,
            used: 0,
        })
    }

    /// The next free slot, cleared, or None when the batch is full. A slot does not keep a
    /// slow client's backlog's worth of buffer after that write.
    pub(super) fn next(&mut self) -> Option<&mut Pending> {
        let p = self.slots.get_mut(self.used)?;
        p.lead.clear();
        p.frames.clear();
        p.tail.clear();
        if p.lead.capacity() > KEEP_BYTES {
            p.lead = Vec::new();
        }
        if p.frames.capacity() > KEEP_FRAMES {
            p.frames = Vec::new();
        }
        Some(p)
    }

    /// Queues the slot `next` filled.
    pub(super) fn push(&mut self) {
        let i = self.used;
        let p = &mut self.slots[i];
        let mut iov = std::mem::take(&mut p.iov);
        iov.clear();
        let parts = p.parts();
        // The parts past UIO_MAXIOV go in a second call (`flush`: a short write).
        for j in (0..parts.count()).take(UIO_MAXIOV) {
            let b = parts.get(j);
            if !b.is_empty() {
                iov.push(libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                });
            }
        }
        p.iov = iov;
        p.msg.msg_iov = p.iov.as_mut_ptr();
        p.msg.msg_iovlen = p.iov.len() as _;
        let sqe = io_uring::opcode::SendMsg::new(io_uring::types::Fd(p.fd), &p.msg)
            .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
            .build()
            .user_data(i as u64);
        // SAFETY: the header, its iovecs and the bytes they point to live in `slots`, which
        // nothing touches until `flush` has read the completion of every queued entry (or
        // the ring is dropped); the fd is the session's, open as long as the session is.
        let queued = unsafe { self.ring.submission().push(&sqe) };
        debug_assert!(queued.is_ok(), "the ring has room for BATCH entries");
        self.used += 1;
    }

    pub(super) fn is_full(&self) -> bool {
        self.used == BATCH
    }

    /// Sends everything queued and calls `done` with each write's outcome, in queue order.
    /// False if the ring failed: the writes it did not take went out with `sendmsg`, and the
    /// batch must be dropped (entries may still sit in its queue).
    pub(super) fn flush(&mut self, mut done: impl FnMut(&mut Pending, SendNow)) -> bool {
        let n = self.used;
        if n == 0 {
            return true;
        }
        self.used = 0;
        let mut results = [None; BATCH];
        // The kernel takes entries in queue order: the first `taken` are its.
        let (mut got, mut taken, mut ok) = (0, 0, true);
        while got < n {
            match self.ring.submit_and_wait(n - got) {
                Ok(k) => taken += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
            for cqe in self.ring.completion() {
                if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                    *r = Some(cqe.result());
                    got += 1;
                }
            }
        }
        for (i, (p, &r)) in self.slots[..n].iter_mut().zip(&results).enumerate() {
            let outcome = match Outcome::of(r, i < taken) {
                Outcome::Wrote(k) => send_after(p.fd, &p.parts(), k),
                Outcome::Full => SendNow::Partly(p.parts().rest_after(0)),
                Outcome::NotRun => send_now(p.fd, &p.parts()),
                Outcome::Failed => SendNow::Failed,
            };
            done(p, outcome);
        }
        ok
    }
}

/// What became of one entry of a flushed batch.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// These many bytes went out: all of it, or short (the socket filled up, or more iovecs
    /// than one call takes); the rest, if any, goes the usual way.
    Wrote(usize),
    /// Nothing went out: the socket is full.
    Full,
    /// The kernel never ran it (interrupted, or never taken before the ring failed): it can
    /// be sent again without repeating a byte.
    NotRun,
    /// The peer is gone, or the kernel took the entry and its outcome is unknown (the ring
    /// failed before answering): sending again could repeat bytes in the middle of a
    /// stream, so the session ends instead.
    Failed,
}

impl Outcome {
    /// `r`: the completion's result, if one came; `taken`: the kernel took the entry.
    fn of(r: Option<i32>, taken: bool) -> Outcome {
        match r {
            Some(r) if r >= 0 => Outcome::Wrote(r as usize),
            Some(r) if r == -libc::EAGAIN => Outcome::Full,
            Some(r) if r == -libc::EINTR => Outcome::NotRun,
            Some(_) => Outcome::Failed,
            None if taken => Outcome::Failed,
            None => Outcome::NotRun,
        }
    }
}

/// Whether a `MSG_DONTWAIT` send through `ring` to a full socket completes at once (with
/// EAGAIN) rather than waiting for room.
fn fails_when_full(ring: &mut io_uring::IoUring) -> io::Result<bool> {
    use std::io::Write;
    struct Probe {
        buf: [u8; 4096],
        iov: libc::iovec,
        msg: libc::msghdr,
    }
    let (mut a, b) = std::os::unix::net::UnixStream::pair()?;
    a.set_nonblocking(true)?;
    let zero = [0u8; 4096];
    loop {
        match a.write(&zero) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: plain data; all-zero is a valid empty header and iovec.
    let mut p: Box<Probe> = Box::new(unsafe { std::mem::zeroed() });
    p.iov.iov_base = p.buf.as_mut_ptr().cast();
    p.iov.iov_len = p.buf.len();
    p.msg.msg_iov = &mut p.iov;
    p.msg.msg_iovlen = 1;
    let sqe = io_uring::opcode::SendMsg::new(io_uring::types::Fd(a.as_raw_fd()), &p.msg)
        .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
        .build();
    // SAFETY: the header and the bytes it names are in `p`, which is freed only once the
    // request has completed; otherwise `p` and the full socket are leaked below, so a
    // request left waiting never reads freed memory and never gets room.
    unsafe { ring.submission().push(&sqe) }.map_err(io::Error::other)?;
    ring.submit()?;
    let r = ring.completion().next().map(|c| c.result());
    if r.is_none() {
        Box::leak(p);
        std::mem::forget((a, b));
    }
    Ok(r == Some(-libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn queue(b: &mut Batch, fd: RawFd, lead: &[u8], frames: &[&[u8]], tail: &[u8]) {
        let p = b.next().expect("room");
        p.fd = fd;
        p.lead.extend_from_slice(lead);
        p.frames.extend(frames.iter().map(|f| Frame::from(*f)));
        p.tail.extend_from_slice(tail);
        b.push();
    }

    fn full_pair() -> (UnixStream, UnixStream) {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        while a.write(&[7u8; 4096]).is_ok() {}
        (a, b)
    }

    #[test]
    fn a_batch_sends_each_write_whole_and_reports_a_full_socket_with_everything_left() {
        let mut batch = Batch::new().expect("io_uring with MSG_DONTWAIT sends");
        let (a1, mut b1) = UnixStream::pair().unwrap();
        let (full, _keep) = full_pair();
        let (a2, mut b2) = UnixStream::pair().unwrap();
        queue(
            &mut batch,
            a1.as_raw_fd(),
            b"lead,",
            &[b"one,", b"two,"],
            b"tail",
        );
        queue(&mut batch, full.as_raw_fd(), b"L", &[b"F1", b"F2"], b"T");
        queue(&mut batch, a2.as_raw_fd(), b"", &[b"solo"], b"");
        let mut outcomes = Vec::new();
        assert!(batch.flush(|p, o| outcomes.push((p.fd, o))));
        assert_eq!(outcomes.len(), 3);
        assert!(matches!(outcomes[0], (fd, SendNow::All) if fd == a1.as_raw_fd()));
        match &outcomes[1] {
            (fd, SendNow::Partly(rest)) if *fd == full.as_raw_fd() => {
                assert_eq!(rest, b"LF1F2T")
            }
            _ => panic!("the full socket's write must come back whole"),
        }
        assert!(matches!(outcomes[2], (_, SendNow::All)));
        drop((a1, a2));
        let (mut s1, mut s2) = (String::new(), String::new());
        b1.read_to_string(&mut s1).unwrap();
        b2.read_to_string(&mut s2).unwrap();
        assert_eq!((s1.as_str(), s2.as_str()), ("lead,one,two,tail", "solo"));
        // The batch is empty again and takes a full load.
        let pairs: Vec<_> = (0..BATCH).map(|_| UnixStream::pair().unwrap()).collect();
        for (x, _) in &pairs {
            queue(&mut batch, x.as_raw_fd(), b"x", &[], b"");
        }
        assert!(batch.is_full());
        let mut n = 0;
        assert!(batch.flush(|_, o| n += usize::from(matches!(o, SendNow::All))));
        assert_eq!(n, BATCH);
    }

    #[test]
    fn an_entry_the_kernel_took_without_answering_is_never_sent_again() {
        assert_eq!(Outcome::of(Some(12), true), Outcome::Wrote(12));
        assert_eq!(Outcome::of(Some(-libc::EAGAIN), true), Outcome::Full);
        assert_eq!(Outcome::of(Some(-libc::EINTR), true), Outcome::NotRun);
        assert_eq!(Outcome::of(Some(-libc::EPIPE), true), Outcome::Failed);
        // The ring failed: what it never took goes by sendmsg, what it took and did not
        // answer may have gone out already.
        assert_eq!(Outcome::of(None, false), Outcome::NotRun);
        assert_eq!(Outcome::of(None, true), Outcome::Failed);
    }

    #[test]
    fn a_closed_peer_is_a_failed_write() {
        let mut batch = Batch::new().expect("io_uring with MSG_DONTWAIT sends");
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        queue(&mut batch, a.as_raw_fd(), b"gone", &[], b"");
        let mut failed = false;
        batch.flush(|_, o| failed = matches!(o, SendNow::Failed));
        assert!(failed);
    }
}
