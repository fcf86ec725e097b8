//! A TLS stream's records, sans-I/O: what the shard's writer sends is sealed with the
//! session's rustls state, what the watcher reads is opened with it (`conn::tls` hands the
//! state over when an HTTPS connection becomes a stream).

use rustls::server::ServerConnection;
use std::io::{Read, Write};

/// Appends `plain`, sealed into TLS records, to `wire`.
pub fn seal(tls: &mut ServerConnection, mut plain: &[u8], wire: &mut Vec<u8>) {
    while !plain.is_empty() {
        // rustls takes what its send buffer has room for; drained below each time.
        match tls.writer().write(plain) {
            Ok(0) | Err(_) => {}
            Ok(n) => plain = &plain[n..],
        }
        let mut drained = false;
        while tls.wants_write() {
            match tls.write_tls(wire) {
                Ok(0) | Err(_) => break,
                Ok(_) => drained = true,
            }
        }
        if !drained && !plain.is_empty() {
            // Nothing accepted and nothing to drain: the connection is closing.
            return;
        }
    }
    while tls.wants_write() {
        if !matches!(tls.write_tls(wire), Ok(n) if n > 0) {
            break;
        }
    }
}

/// What a stream client sent, opened.
pub enum Opened {
    /// Plaintext appended; `reply` holds TLS records rustls wants sent back (a key update).
    Data { reply: Vec<u8> },
    /// The client closed (close_notify) or sent something that is not TLS.
    Closed,
}

/// Feeds `wire` to the connection and appends the plaintext to `plain`, at most up to `max`
/// bytes (the rest stays in rustls, bounded by its own buffer limit).
pub fn open(
    tls: &mut ServerConnection,
    mut wire: &[u8],
    plain: &mut Vec<u8>,
    max: usize,
) -> Opened {
    while !wire.is_empty() {
        match tls.read_tls(&mut wire) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Opened::Closed,
        }
        match tls.process_new_packets() {
            Ok(state) if state.peer_has_closed() => return Opened::Closed,
            Ok(_) => {}
            Err(_) => return Opened::Closed,
        }
    }
    let mut chunk = [0u8; 512];
    while plain.len() < max {
        let room = (max - plain.len()).min(chunk.len());
        match tls.reader().read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return Opened::Closed,
        }
    }
    let mut reply = Vec::new();
    while tls.wants_write() {
        if !matches!(tls.write_tls(&mut reply), Ok(n) if n > 0) {
            break;
        }
    }
    Opened::Data { reply }
}
