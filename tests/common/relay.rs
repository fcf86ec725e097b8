//! A TCP relay for failure tests: it forwards to a service and can fail the way networks do.
//! `silence()`: the connections open now forward nothing either way from then on, but stay
//! open, as behind a network that drops every packet (nothing refused, nothing reset);
//! connections opened later work. `refuse(true)`: new connections are closed at once, as if
//! the service were down, until `refuse(false)`. `refuse_sending(Some(marker))`: new
//! connections whose first bytes contain `marker` (a Kafka client id, say) are closed, others
//! pass: one client is kept away while another one works. `hold(d)`: each new connection is
//! forwarded only after `d` (one after another), as to a broker slow to answer while it starts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Relay {
    pub port: u16,
    silenced_below: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
    refusing: Arc<AtomicBool>,
    marker: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    hold_ms: Arc<AtomicU64>,
}

impl Relay {
    /// Listens on 127.0.0.1:`listen` (0: any free port) and forwards to 127.0.0.1:`to`.
    pub fn start(listen: u16, to: u16) -> Relay {
        let l = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        let port = l.local_addr().unwrap().port();
        let silenced_below = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(1));
        let refusing = Arc::new(AtomicBool::new(false));
        let marker = Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let hold_ms = Arc::new(AtomicU64::new(0));
        let (below, next, refuse, mark, hold) = (
            silenced_below.clone(),
            next_id.clone(),
            refusing.clone(),
            marker.clone(),
            hold_ms.clone(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut a) = c else { continue };
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let wanted = mark.lock().unwrap().clone();
                let mut first = Vec::new();
                if let Some(m) = wanted {
                    let mut buf = [0u8; 4096];
                    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let n = a.read(&mut buf).unwrap_or(0);
                    a.set_read_timeout(None).unwrap();
                    first.extend_from_slice(&buf[..n]);
                    if n == 0 || first.windows(m.len()).any(|w| w == m.as_slice()) {
                        continue; // dropped
                    }
                }
                std::thread::sleep(Duration::from_millis(hold.load(Ordering::SeqCst)));
                let Ok(mut b) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                if b.write_all(&first).is_err() {
                    continue;
                }
                let id = next.fetch_add(1, Ordering::SeqCst);
                for (from, into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                    let below = below.clone();
                    std::thread::spawn(move || pipe(from, into, id, &below));
                }
            }
        });
        Relay {
            port,
            silenced_below,
            next_id,
            refusing,
            marker,
            hold_ms,
        }
    }

    pub fn hold(&self, d: Duration) {
        self.hold_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn silence(&self) {
        self.silenced_below
            .store(self.next_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    pub fn refuse_sending(&self, marker: Option<&[u8]>) {
        *self.marker.lock().unwrap() = marker.map(<[u8]>::to_vec);
    }
}

fn pipe(mut from: TcpStream, mut into: TcpStream, id: u64, silenced_below: &AtomicU64) {
    let mut buf = [0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = into.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if id < silenced_below.load(Ordering::SeqCst) {
            // Silenced: both sockets stay open and nothing is forwarded, ever.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        if into.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
