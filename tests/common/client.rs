//! A raw keep-alive HTTP/1.1 client for the gateway's tests: reads responses framed by
//! length, chunks or close, and says how each was framed.

use corebridge::proto::http1::ChunkedDecoder;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response as the client read it, with how its body was framed.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Got {
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive client connection.
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match self.s.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    /// Reads one response; None if the connection closed first.
    pub fn read(&mut self, head_request: bool) -> Option<Got> {
        let (status, headers, n) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (r.code.unwrap(), headers, n);
            }
            if !self.fill() {
                return None;
            }
        };
        self.buf.drain(..n);
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut body = Vec::new();
        if head_request || status == 204 || status == 304 {
        } else if chunked {
            let mut d = ChunkedDecoder::new(1 << 30);
            loop {
                let (used, done) = d.feed(&self.buf, &mut body).unwrap();
                self.buf.drain(..used);
                if done {
                    break;
                }
                if !self.fill() {
                    return None;
                }
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < len {
                if !self.fill() {
                    return None;
                }
            }
            body = self.buf.drain(..len).collect();
        } else {
            while self.fill() {}
            body = std::mem::take(&mut self.buf);
        }
        Some(Got {
            status,
            headers,
            body,
            chunked,
        })
    }

    pub fn get(&mut self, path: &str, extra: &str) -> Got {
        self.send(
            format!("GET {path} HTTP/1.1\r\nhost: gw.example:4000\r\n{extra}\r\n").as_bytes(),
        );
        self.read(false).expect("a response")
    }
}
