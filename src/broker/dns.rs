//! Host name resolution for upstreams. `getaddrinfo` blocks, so it never runs on a shard: the
//! shard asks this island, which runs each lookup on tokio's blocking pool, bounded in time.
//! Shards cache answers (`conn/upstream.rs`).

use crate::runtime::island::{self, Handle, Job};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub type Resolved = Result<Vec<SocketAddr>, String>;

#[derive(Clone)]
pub struct Resolver {
    lookups: Handle<(String, u16), Resolved>,
}

impl Resolver {
    pub fn start() -> Resolver {
        Resolver {
            lookups: island::spawn("cb-dns", 256, serve),
        }
    }

    /// The addresses of `host` (a name or an IP literal) at `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Resolved {
        self.lookups
            .call((host.to_string(), port))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }
}

async fn serve(jobs: async_channel::Receiver<Job<(String, u16), Resolved>>) {
    while let Ok(job) = jobs.recv().await {
        let ((host, port), reply) = job.split();
        tokio::spawn(async move {
            let lookup = tokio::task::spawn_blocking(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
                    .map_err(|e| format!("cannot resolve {host}: {e}"))
            });
            let answer = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("resolver failed: {e}")),
                Err(_) => Err(format!(
                    "no answer from the resolver within {} s",
                    LOOKUP_TIMEOUT.as_secs()
                )),
            };
            reply.send(answer);
        });
    }
}
