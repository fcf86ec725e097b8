//! Corebridge: a thread-per-core bridge between brokers and web/mobile frontends, speaking
//! the Reactive Interaction Gateway's HTTP API. Layout (one line per module):
//!
//! - `config`  — the only code that reads env and files; validated, then frozen
//! - `runtime` — pinned glommio executors (shards), the shard mesh, start-up checks, accept loops
//! - `proto`   — sans-I/O protocol code: HTTP/1.1, SSE, WebSocket, CloudEvents (bytes in, values out)
//! - `conn`    — socket drivers: own a socket and its buffers, feed `proto`, run what `api` decides
//! - `session` — per-shard sessions, subscription index, bounded outbound queues, tokens
//! - `route`   — events on their way to shards (decoded and field-extracted once)
//! - `api`     — request handlers for the inbound and internal listeners
//! - `auth`    — JWT/JWKS verification, CORS policy (no I/O; callers fetch keys)
//! - `broker`  — the broker island: rskafka on its own tokio thread, bounded queues to shards
//! - `metrics` — metric names, per-shard probes, the Prometheus exporter
//! - `outbound`— outbound HTTP (JWKS, authorization checks) on a tokio thread of its own
//! - `logging` — structured logs on stderr

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod conn;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod proto;
pub mod route;
pub mod runtime;
pub mod session;
