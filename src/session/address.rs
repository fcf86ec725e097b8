//! `http.max_connections_per_address`: open connections per client address, node-wide. A
//! connection holds its [`AddressSlot`] for its whole life: the HTTP task while it serves
//! requests, then its session once it is a stream, so the count drops when the socket closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct AddressCaps {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct AddressSlot {
    caps: Arc<AddressCaps>,
    ip: IpAddr,
}

impl AddressCaps {
    /// None when there is no cap (0).
    pub fn new(max: usize) -> Option<Arc<AddressCaps>> {
        (max > 0).then(|| {
            Arc::new(AddressCaps {
                max,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    /// A slot for a new connection from `ip`, or None when that address holds the maximum.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            caps: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_releases_on_drop() {
        let caps = AddressCaps::new(2).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = caps.enter(a).unwrap();
        let _s2 = caps.enter(a).unwrap();
        assert!(caps.enter(a).is_none());
        assert!(caps.enter(b).is_some());
        drop(s1);
        assert!(caps.enter(a).is_some());
        assert!(AddressCaps::new(0).is_none());
    }
}
