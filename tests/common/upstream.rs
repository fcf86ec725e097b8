//! A real HTTP/1.1 upstream for the API gateway's tests: a plain-socket server on loopback that
//! records every request it receives (line, headers, decoded body, which connection) and
//! answers as the test scripts it, including the ways upstreams misbehave.

use corebridge::proto::http1::ChunkedDecoder;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came chunked.
    pub chunked: bool,
    /// Which upstream connection carried it (0, 1, ... in accept order).
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream does with a request.
pub enum Act {
    /// Write these bytes (a whole response) and keep the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close.
    SendClose(Vec<u8>),
    /// Write the parts with pauses between them, then keep the connection.
    Trickle(Vec<(Duration, Vec<u8>)>),
    /// Never answer (until the peer closes).
    Hang,
    /// Close at once without answering.
    Close,
}

pub fn ok(body: &str) -> Act {
    Act::Send(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream: yes\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

type Script = dyn Fn(&Seen) -> Act + Send + Sync;

pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections the peer closed (read returned 0) so far.
    pub closed_by_peer: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(script: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (s, a, c) = (seen.clone(), accepted.clone(), closed_by_peer.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = a.fetch_add(1, Ordering::SeqCst);
                let (s, c, script) = (s.clone(), c.clone(), script.clone());
                std::thread::spawn(move || serve(stream, n, s, c, script));
            }
        });
        Upstream {
            port,
            seen,
            accepted,
            closed_by_peer,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

fn serve(
    mut s: TcpStream,
    conn: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<AtomicUsize>,
    script: Arc<Script>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let hs: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let parsed = (
                    r.method.unwrap().to_string(),
                    r.path.unwrap().to_string(),
                    hs,
                );
                buf.drain(..n);
                break parsed;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let (method, target, headers) = req;
        let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            let mut d = ChunkedDecoder::new(1 << 30);
            loop {
                let (used, done) = d.feed(&buf, &mut body).expect("chunked request body");
                buf.drain(..used);
                if done {
                    break;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < n {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            body = buf.drain(..n).collect();
        }
        let req = Seen {
            method,
            target,
            headers,
            body,
            chunked,
            conn,
        };
        seen.lock().unwrap().push(req.clone());
        match script(&req) {
            Act::Send(b) => {
                if s.write_all(&b).is_err() {
                    return;
                }
            }
            Act::SendClose(b) => {
                let _ = s.write_all(&b);
                return;
            }
            Act::Trickle(parts) => {
                for (pause, b) in parts {
                    std::thread::sleep(pause);
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
            }
            Act::Hang => {
                let mut sink = [0u8; 64];
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                loop {
                    match s.read(&mut sink) {
                        Ok(0) | Err(_) => {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            }
            Act::Close => return,
        }
    }
}
