//! HTTPS on the listeners (`config::https`). During the HTTP phase a TLS connection is a
//! `futures_rustls` stream over the shard's socket ([`ClientStream`]), so requests, long-polls
//! and proxied calls run unchanged. Once it becomes a stream (SSE, WebSocket), its socket goes
//! to the shard like a plain one, with the rustls state beside it: the writer seals what it
//! sends ([`seal`]) and the watcher opens what clients send ([`open`]), both without I/O of
//! their own.
//!
//! The certificate is reloaded on `SIGHUP`: the resolver hands every new handshake the key
//! read last; connections already open keep theirs.

use crate::config::https::{load_key, HttpsConfig};
use crate::runtime::rt::TcpStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

#[derive(Debug)]
struct Reloadable(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The process's TLS server side: one configuration for every shard and both listeners.
pub struct TlsServer {
    pub acceptor: futures_rustls::TlsAcceptor,
    key: Arc<Reloadable>,
    files: HttpsConfig,
}

impl TlsServer {
    pub fn new(https: &HttpsConfig) -> TlsServer {
        let key = Arc::new(Reloadable(RwLock::new(https.key.clone())));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(key.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsServer {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
            key,
            files: https.clone(),
        }
    }

    /// Reads the certificate and key files again (`SIGHUP`). On error the old key stays.
    pub fn reload(&self) -> Result<(), String> {
        let f = &self.files;
        let key = load_key(&f.cert_file, &f.key_file, f.key_pass.as_deref())?;
        *self.key.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

/// A TLS stream's state when it leaves the HTTP phase, and the plaintext already received.
pub type Handover = (Box<ServerConnection>, Vec<u8>);

/// A socket, plain or with TLS over it: a client's connection in its HTTP phase
/// ([`ClientStream`]) and the gateway's connection to an upstream (`upstream::Io`).
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A TLS stream over a shard's socket, either side.
pub trait OverTcp: AsyncRead + AsyncWrite + Unpin {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl OverTcp for futures_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A client connection in its HTTP phase.
pub type ClientStream = MaybeTls<futures_rustls::server::TlsStream<TcpStream>>;

impl<T: OverTcp> MaybeTls<T> {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.tcp(),
        }
    }

    /// Reads at most `max` bytes onto the end of `buf`; see [`TcpStream::read_append`]. TLS
    /// decrypts into a zeroed slice (rustls's reader takes an initialised one).
    pub async fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.read_append(buf, max).await,
            MaybeTls::Tls(s) => {
                let old = buf.len();
                buf.resize(old + max, 0);
                let n = futures_lite::AsyncReadExt::read(s.as_mut(), &mut buf[old..]).await;
                buf.truncate(old + *n.as_ref().unwrap_or(&0));
                n
            }
        }
    }
}

impl ClientStream {
    /// The socket and, for TLS, its state with the plaintext the client sent beyond what was
    /// read (a WebSocket frame right after the handshake).
    pub fn into_parts(self) -> (TcpStream, Option<Handover>) {
        match self {
            MaybeTls::Plain(s) => (s, None),
            MaybeTls::Tls(s) => {
                let (tcp, mut tls) = s.into_inner();
                let mut early = Vec::new();
                let _ = tls.reader().read_to_end(&mut early);
                (tcp, Some((Box::new(tls), early)))
            }
        }
    }
}

impl<T: OverTcp> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: OverTcp> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
