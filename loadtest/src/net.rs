//! Sockets: connecting from a chosen loopback source address (socket2), and reading through a
//! shared scratch buffer so that an idle connection owns no read buffer at all.

use crate::proto::{self, Head};
use anyhow::{anyhow, bail, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

pub const SCRATCH_BYTES: usize = 64 * 1024;

/// Connects to `dst`, binding first to `src` (port chosen at connect time, so each source
/// address has the whole ephemeral range per destination). `small_rcvbuf` shrinks the receive
/// buffer (slow readers: the server sees a full socket sooner).
pub async fn connect(
    dst: SocketAddr,
    src: Option<Ipv4Addr>,
    small_rcvbuf: bool,
) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if small_rcvbuf {
        sock.set_recv_buffer_size(4096)?;
    }
    if let Some(ip) = src {
        set_bind_address_no_port(&sock);
        sock.bind(&SocketAddr::new(ip.into(), 0).into())?;
    }
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// IP_BIND_ADDRESS_NO_PORT: defer the port choice of a bound socket to connect(). Best effort.
fn set_bind_address_no_port(sock: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits for input and hands it to `f` straight from the shared scratch buffer; `Ok(None)` at
/// end of stream. `f` must not touch `scratch` (it is borrowed while `f` runs).
///
/// Through `AsyncRead`, not `try_read`: a read shorter than the buffer then clears the
/// socket's readiness, so one event costs one `recvfrom`. `try_read` keeps it until a read
/// fails with EAGAIN, a second system call per delivery that took CPU from the server under
/// test (kafka-latency: 1.9 `recvfrom` per delivery).
pub async fn read_with<R>(
    stream: &mut TcpStream,
    scratch: &RefCell<Vec<u8>>,
    mut f: impl FnMut(&[u8]) -> R,
) -> io::Result<Option<R>> {
    // The scratch buffer is shared by every connection of the worker: it is borrowed only
    // inside one poll, never across a wait.
    std::future::poll_fn(|cx| {
        let mut buf = scratch.borrow_mut();
        let mut rb = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                Poll::Ready(Ok((n > 0).then(|| f(&buf[..n]))))
            }
        }
    })
    .await
}

pub async fn write_all(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        stream.writable().await?;
        match stream.try_write(&bytes[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a response head into `buf` (which may already hold some bytes). Bytes after the head
/// stay in `buf` after `head.len`.
pub async fn read_head(
    stream: &mut TcpStream,
    scratch: &RefCell<Vec<u8>>,
    buf: &mut Vec<u8>,
) -> Result<Head> {
    loop {
        if let Some(h) = proto::parse_head(buf).map_err(|e| anyhow!(e))? {
            return Ok(h);
        }
        if buf.len() > 64 * 1024 {
            bail!("response head over 64 KiB");
        }
        if read_with(stream, scratch, |b| buf.extend_from_slice(b))
            .await?
            .is_none()
        {
            bail!("connection closed before the response head");
        }
    }
}

/// Reads one whole response (Content-Length or chunked body). Returns the head and the body.
pub async fn read_response(
    stream: &mut TcpStream,
    scratch: &RefCell<Vec<u8>>,
    max_body: usize,
) -> Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let head = read_head(stream, scratch, &mut buf).await?;
    let mut body = buf.split_off(head.len);
    if head.chunked {
        let mut ch = proto::Chunked::default();
        let mut out = Vec::new();
        let mut err = None;
        ch.feed(&body, |b| out.extend_from_slice(b))
            .map_err(|e| anyhow!(e))?;
        while !ch.done() {
            if out.len() > max_body {
                bail!("response body over {max_body} bytes");
            }
            let r = read_with(stream, scratch, |b| {
                if let Err(e) = ch.feed(b, |d| out.extend_from_slice(d)) {
                    err = Some(e);
                }
            })
            .await?;
            if let Some(e) = err.take() {
                bail!(e);
            }
            if r.is_none() {
                bail!("connection closed inside a chunked body");
            }
        }
        return Ok((head, out));
    }
    let want = match head.content_length {
        Some(n) => n,
        None if head.status == 204 || head.status == 304 || head.status / 100 == 1 => 0,
        None => bail!("response without Content-Length or chunking"),
    };
    if want > max_body {
        bail!("response body of {want} bytes over {max_body}");
    }
    while body.len() < want {
        if read_with(stream, scratch, |b| body.extend_from_slice(b))
            .await?
            .is_none()
        {
            bail!("connection closed inside a response body");
        }
    }
    body.truncate(want);
    Ok((head, body))
}
