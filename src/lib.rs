//! Corebridge: a thread-per-core bridge between brokers and web/mobile frontends, speaking
//! the Reactive Interaction Gateway's HTTP API. Layout (one line per module):
//!
//! - `config`  — the only code that reads env and files; validated, then frozen
//! - `runtime` — pinned glommio executors (shards), the shard mesh, the tokio island, accept loops
//! - `proto`   — sans-I/O protocol code: HTTP/1.1, SSE, WebSocket, long-poll, CloudEvents, frames
//! - `conn`    — socket drivers (HTTP, SSE, WebSocket, long-poll): own a socket, feed `proto`
//! - `session` — per-shard sessions, bounded outbound queues, heartbeats, tokens
//! - `route`   — the event value, field extraction, subscriptions and the index deciding who gets it
//! - `api`     — request handlers for the inbound and internal listeners
//! - `auth`    — JWT/JWKS verification, the session blacklist, CORS policy (no I/O)
//! - `broker`  — island code: Kafka (rskafka) and outbound HTTP, reached through island handles
//! - `metrics` — metric names, per-shard probes, the Prometheus exporter
//! - `error`   — whose fault an error is (client, upstream, ours)
//! - `logging` — structured logs on stderr
//!
//! One Kafka record's way to a socket, in one direction: `broker/kafka/consumer.rs` (fetch,
//! decode with `proto/kafka_record.rs`, build a `route::Event`) → `runtime/shard.rs` (the batch
//! arrives on the shard) → `session/registry.rs` (the `route/index.rs` picks sessions, frames
//! encoded by `proto/frame.rs`, queued in `session/queue.rs`) → `conn/sse.rs` (one `sendmsg`).

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod conn;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod route;
pub mod runtime;
pub mod session;
