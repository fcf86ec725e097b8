//! What the shards need from an executor, in one place: timers, spawning, yielding, and TCP
//! sockets that speak `futures-io` (the traits the HTTP code, rustls and the proxy are
//! written against). Each shard runs one tokio current-thread runtime with a `LocalSet` on
//! its own thread, pinned to its CPU: tasks never move between shards and the shard's state
//! stays in `Rc`/`RefCell`.
//!
//! Why tokio's epoll driver and not io_uring (glommio, which the shards ran on first): at the
//! rates a real deployment sees (one event at a time, a request every millisecond) a shard
//! sleeps and wakes per event, and glommio's sleep is expensive: a `membarrier` that
//! interrupts the other cores, a poll armed and cancelled on a second ring, preemption timers
//! re-armed on every loop, and completions that arrive while a shard runs interrupt it (no
//! `IORING_SETUP_COOP_TASKRUN`). A two-shard relay (read a request on one shard, hand it to
//! the other, answer; the other writes it to a socket), one message per millisecond, cost
//! 118-146 µs of server CPU per message on glommio 0.9 and 64-66 µs on this module's
//! runtime, same machine, same run. Fan-out itself never depended on io_uring: stream
//! sockets are written with non-blocking `sendmsg` and watched through the shard's own epoll
//! set (`conn/stream.rs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Waiting for a turn among tasks of one shard (a pool's connection limit, one logged publish
/// at a time).
pub use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Runs `main` as the shard's root task on a runtime of its own; returns when it ends.
pub fn block_on<F: Future<Output = ()>>(main: F) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main);
    Ok(())
}

/// A timer on the shard's runtime (millisecond resolution).
pub fn sleep(d: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(d)
}

/// `task`'s output, or None when `within` passes first (the task is dropped then). The task
/// is polled before the clock is looked at, so one that is ready is never timed out.
pub async fn timeout<T>(within: Duration, task: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(within, task).await.ok()
}

/// Starts a task on the current shard; it runs until it ends (nothing cancels it).
pub fn spawn<F: Future<Output = ()> + 'static>(task: F) {
    drop(tokio::task::spawn_local(task));
}

/// Lets the shard poll its sockets and run the other ready tasks before this one goes on.
pub async fn yield_now() {
    tokio::task::yield_now().await
}

/// A listening socket of one shard.
pub struct TcpListener(tokio::net::TcpListener);

impl TcpListener {
    /// Takes over a bound, listening socket (made non-blocking here).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener(tokio::net::TcpListener::from_std(l)?))
    }

    pub async fn accept(&self) -> io::Result<TcpStream> {
        self.0.accept().await.map(|(s, _)| TcpStream(s))
    }
}

/// A TCP connection on the shard's runtime.
pub struct TcpStream(tokio::net::TcpStream);

impl TcpStream {
    pub async fn connect_timeout(addr: SocketAddr, within: Duration) -> io::Result<TcpStream> {
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
            Ok(s) => s.map(TcpStream),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Waits for bytes from the peer without taking them (0: the peer closed).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.peek(buf).await
    }

    /// Reads at most `max` bytes onto the end of `buf`, into its spare capacity: nothing is
    /// zeroed first (zeroing a 4 KiB chunk per read was 13% of a proxied request's user-space
    /// instructions). 0: the peer closed.
    pub async fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let mut room = bytes::BufMut::limit(buf, max);
        tokio::io::AsyncReadExt::read_buf(&mut self.0, &mut room).await
    }

    /// The socket leaves the runtime (no longer watched by it) and becomes the caller's.
    pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
        self.0.into_std().map(OwnedFd::from)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl futures_lite::AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_lite::AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.get_mut().0), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the sending side down (the peer reads end of stream); the socket closes on drop.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}
