//! Connections from a shard to HTTP upstreams: one bounded keep-alive pool per upstream per
//! shard, so a proxied request never crosses cores and no pool is shared between threads.
//!
//! A pool holds at most `proxy.max_connections_per_upstream` connections (busy and idle; each
//! holds a permit of the pool's semaphore, released when it is dropped); a request that finds
//! them all busy waits for one, bounded. Idle connections are kept up to
//! `proxy.max_idle_per_upstream`, checked before reuse (a byte or a FIN waiting on an idle
//! connection means the upstream is closing it) and closed after `proxy.idle_timeout_ms` by
//! the shard's ticker. Host names are resolved on the DNS island and cached for
//! [`DNS_TTL`]; `https` upstreams speak TLS through rustls (`futures-rustls`).
//!
//! Why a hand-written client rather than hyper or reqwest: it was written while shards ran
//! glommio, where those (tokio-based) could not run, so every request would have crossed to an
//! island thread and back. Shards now run tokio and hyper's client would fit; this one stays
//! because it is small, sans-I/O (`proto/http1_client.rs`, the same parser discipline as the
//! server side), bounded in every buffer, and measured (README, API gateway).

use super::socket;
use crate::error::{Blame, Fault};
use crate::proxy::table::Upstream;
use crate::runtime::rt::{self, OwnedSemaphorePermit, Semaphore, TcpStream};
use crate::runtime::shard::Shard;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle connections younger than this are reused without a liveness check.
const FRESH: Duration = Duration::from_secs(1);

/// How long a resolved host name is used before it is looked up again.
pub const DNS_TTL: Duration = Duration::from_secs(30);

/// The bytes on the wire to an upstream: plain TCP or TLS over it.
pub type Io = super::tls::MaybeTls<futures_rustls::client::TlsStream<TcpStream>>;

/// A connection checked out of a pool. Dropping it closes it; [`Pools::checkin`] keeps it.
pub struct Conn {
    pub io: Io,
    /// It carried a request before: a failure before any response byte may just be the
    /// upstream having closed it meanwhile.
    pub reused: bool,
    /// What was read from the upstream and not used yet.
    pub inbuf: InBuf,
    key: Upstream,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn fd(&self) -> RawFd {
        self.io.tcp().as_raw_fd()
    }
}

/// Upstream bytes read and not used yet, `data[start..end]`. Reads go straight into it and
/// parsers take slices of it, so a proxied response is neither copied nor allocated for on its
/// way in; it lives as long as the connection (`proxy.buffer_bytes`, zeroed once), growing
/// only for a response head larger than that.
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub fn new(size: usize) -> InBuf {
        InBuf {
            data: vec![0; size],
            start: 0,
            end: 0,
        }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The first `n` filled bytes were used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for the next read: unread bytes move to the front when the end is reached, and
    /// the buffer doubles, up to `max` bytes, only when it is full. Empty when it holds `max`.
    pub fn room(&mut self, max: usize) -> &mut [u8] {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < max {
                let grown = (self.data.len() * 2).max(1024).min(max);
                self.data.resize(grown, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// `n` bytes were read into [`InBuf::room`].
    pub fn filled_by(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Pool {
    idle: Vec<Idle>,
    permits: Arc<Semaphore>,
}

/// Why no connection to an upstream could be had. All are the upstream's or the network's
/// fault except `Busy` (this gateway's bound).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Resolve(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: no answer within {ms} ms")]
    Timeout { addr: SocketAddr, ms: u64 },
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("all {limit} connections to {upstream} from this shard are busy")]
    Busy { upstream: String, limit: usize },
}

impl Blame for ConnectError {
    fn fault(&self) -> Fault {
        match self {
            ConnectError::Busy { .. } => Fault::Ours,
            _ => Fault::Upstream,
        }
    }
}

#[derive(Default)]
pub struct Pools {
    pools: RefCell<HashMap<Upstream, Pool, foldhash::fast::FixedState>>,
    /// A buffer for the client's response head and first body bytes, lent to one request at
    /// a time (a request that finds it lent out allocates its own). A fresh one per request
    /// was glibc's largest allocation of a proxied request (over 1 KiB, so every one first
    /// consolidated the fast bins: 3% of the server's CPU in `perf`).
    out: RefCell<Vec<u8>>,
    dns: RefCell<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

/// The most a lent response buffer keeps when it comes back.
const MAX_KEPT_OUT: usize = 64 * 1024;

impl Pools {
    /// The shard's response buffer, empty.
    pub fn lend_out(&self) -> Vec<u8> {
        let mut out = std::mem::take(&mut *self.out.borrow_mut());
        out.clear();
        out
    }

    pub fn return_out(&self, out: Vec<u8>) {
        if out.capacity() <= MAX_KEPT_OUT {
            *self.out.borrow_mut() = out;
        }
    }

    /// An open connection to `up`: an idle one that is still fit, else a new one (waiting up
    /// to `wait` for a permit when the pool is at its bound).
    pub async fn checkout(
        &self,
        shard: &Shard,
        up: &Upstream,
        wait: Duration,
    ) -> Result<Conn, ConnectError> {
        let tuning = &shard.cfg().tuning.proxy;
        let idle_for = Duration::from_millis(tuning.idle_timeout_ms);
        let permits = {
            let mut pools = self.pools.borrow_mut();
            // Looked up before `entry`, which would clone the key (a host name) per request.
            if !pools.contains_key(up) {
                pools.insert(
                    up.clone(),
                    Pool {
                        idle: Vec::new(),
                        permits: Arc::new(Semaphore::new(tuning.max_connections_per_upstream)),
                    },
                );
            }
            let pool = pools.get_mut(up).expect("inserted above");
            // Most recently used first: it is the likeliest to still be open.
            while let Some(idle) = pool.idle.pop() {
                let age = idle.since.elapsed();
                // A connection used a moment ago is not checked (a syscall per request): an
                // upstream closes idle connections after seconds, and one that closes after N
                // requests says so in the last response, which keeps it out of the pool.
                if age < idle_for && (age < FRESH || socket::idle_and_open(idle.conn.fd())) {
                    let mut conn = idle.conn;
                    conn.reused = true;
                    return Ok(conn);
                }
            }
            pool.permits.clone()
        };
        let permit = rt::timeout(wait, permits.acquire_owned())
            .await
            .and_then(Result::ok)
            .ok_or_else(|| ConnectError::Busy {
                upstream: up.authority(),
                limit: tuning.max_connections_per_upstream,
            })?;
        let io = self.connect(shard, up).await?;
        Ok(Conn {
            io,
            reused: false,
            inbuf: InBuf::new(tuning.buffer_bytes.max(1024)),
            key: up.clone(),
            _permit: permit,
        })
    }

    /// Returns a connection whose last response was read whole and which the upstream keeps
    /// open; beyond the idle bound it is closed instead.
    pub fn checkin(&self, shard: &Shard, conn: Conn) {
        // Bytes after the response: the upstream is out of step with its requests, and the
        // next request would read them as its answer.
        if !conn.inbuf.is_empty() {
            return;
        }
        let max = shard.cfg().tuning.proxy.max_idle_per_upstream;
        let mut pools = self.pools.borrow_mut();
        if let Some(pool) = pools.get_mut(&conn.key) {
            if pool.idle.len() < max {
                pool.idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Closes idle connections past their time (the shard's ticker calls this).
    pub fn sweep(&self, idle_for: Duration) {
        for pool in self.pools.borrow_mut().values_mut() {
            pool.idle.retain(|i| i.since.elapsed() < idle_for);
        }
    }

    async fn addresses(
        &self,
        shard: &Shard,
        up: &Upstream,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Ok(ip) = up.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, up.port)]);
        }
        if let Some((at, addrs)) = self.dns.borrow().get(&up.host) {
            if at.elapsed() < DNS_TTL {
                return Ok(addrs
                    .iter()
                    .map(|a| SocketAddr::new(a.ip(), up.port))
                    .collect());
            }
        }
        let addrs = shard
            .globals
            .resolver
            .resolve(&up.host, up.port)
            .await
            .map_err(ConnectError::Resolve)?;
        if addrs.is_empty() {
            return Err(ConnectError::Resolve(format!("{} has no address", up.host)));
        }
        self.dns
            .borrow_mut()
            .insert(up.host.clone(), (Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    async fn connect(&self, shard: &Shard, up: &Upstream) -> Result<Io, ConnectError> {
        let timeout_ms = shard.cfg().tuning.proxy.connect_timeout_ms;
        let timeout = Duration::from_millis(timeout_ms);
        let addrs = self.addresses(shard, up).await?;
        let mut last = None;
        // Each address in turn (IPv6 and IPv4 of one name), the first that answers wins.
        for addr in addrs {
            match TcpStream::connect_timeout(addr, timeout).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    if !up.tls {
                        return Ok(Io::Plain(tcp));
                    }
                    return tls(shard, up, tcp, timeout).await;
                }
                Err(io) => {
                    last = Some(if io.kind() == std::io::ErrorKind::TimedOut {
                        ConnectError::Timeout {
                            addr,
                            ms: timeout_ms,
                        }
                    } else {
                        ConnectError::Connect { addr, source: io }
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Resolve(format!("{} has no address", up.host))))
    }
}

async fn tls(
    shard: &Shard,
    up: &Upstream,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Io, ConnectError> {
    let failed = |reason: String| ConnectError::Tls {
        host: up.host.clone(),
        reason,
    };
    let name = rustls::pki_types::ServerName::try_from(up.host.clone())
        .map_err(|e| failed(e.to_string()))?;
    let connector = futures_rustls::TlsConnector::from(Arc::clone(&shard.cfg().proxy.tls));
    let handshake = rt::timeout(timeout, connector.connect(name, tcp)).await;
    match handshake {
        Some(Ok(s)) => Ok(Io::Tls(Box::new(s))),
        Some(Err(e)) => Err(failed(e.to_string())),
        None => Err(failed(format!(
            "no handshake within {} ms",
            timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::InBuf;

    #[test]
    fn inbuf_reads_in_place_compacts_and_grows_only_to_its_bound() {
        let mut b = InBuf::new(8);
        b.room(8)[..5].copy_from_slice(b"hello");
        b.filled_by(5);
        b.consume(2);
        assert_eq!(b.filled(), b"llo");
        // Room left at the end: no move.
        assert_eq!(b.room(8).len(), 3);
        b.room(8).copy_from_slice(b"abc");
        b.filled_by(3);
        // The end is reached: the unread bytes move to the front.
        assert_eq!(b.room(8).len(), 2);
        assert_eq!(b.filled(), b"lloabc");
        b.room(8).copy_from_slice(b"de");
        b.filled_by(2);
        // Full from the front: grows up to the bound, then offers nothing.
        assert_eq!(b.room(8).len(), 0);
        assert_eq!(b.room(12).len(), 4);
        b.filled_by(4);
        assert_eq!(b.room(12).len(), 0);
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.room(12).len(), 12);
    }
}
