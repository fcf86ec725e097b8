//! Socket writes: one non-blocking `sendmsg` of a response head or chunk line, the queued
//! frames (shared with every other session that got them, never copied together) and a tail.
//! glommio has no vectored write, so this writes to the fd glommio owns; when the socket is
//! full it falls back to glommio's `write` of the current part, which waits for room.
//!
//! One of the two modules allowed `unsafe` (the other is `runtime/sys.rs`). Writing to a
//! glommio-owned fd is sound here because: the fd is borrowed from a `&mut TcpStream` for the
//! length of the call, so it cannot be closed or reused meanwhile; glommio never has a write of
//! its own in flight on it (its `write` is only awaited after `sendmsg` said `WouldBlock`, in the
//! same task, and finishes before the next `sendmsg`); a read glommio may have pending on the
//! fd is independent of writes in the kernel; and `MSG_DONTWAIT` keeps the shard thread from
//! ever blocking. What breaks if that changes: two tasks writing one socket would interleave
//! bytes mid-frame.
#![allow(unsafe_code)]

use crate::session::Frame;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

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

/// Writes all parts: `sendmsg` straight from the frames while the socket takes them; when it
/// is full, glommio's write of the current part waits for room (and writes some of it).
pub(super) async fn write_parts(stream: &mut TcpStream, p: &Parts<'_>) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    loop {
        while i < p.count() && off >= p.get(i).len() {
            i += 1;
            off = 0;
        }
        if i == p.count() {
            return Ok(());
        }
        let mut sent = match send_parts(stream.as_raw_fd(), p, i, off) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match stream.write(&p.get(i)[off..]).await? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => n,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
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
