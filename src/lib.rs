//! Corebridge: a thread-per-core bridge between brokers and web/mobile frontends, speaking
//! the Reactive Interaction Gateway's HTTP API. Layout (one line per module):
//!
//! - `config`  — the only code that reads env and files; validated, then frozen
//! - `runtime` — pinned shard threads and their runtime (`rt`), the shard mesh, the tokio island, accept loops
//! - `proto`   — sans-I/O protocol code: HTTP/1.1, SSE, WebSocket, long-poll, CloudEvents, frames
//! - `conn`    — socket drivers (HTTP, SSE, WebSocket, long-poll): own a socket, feed `proto`
//! - `session` — per-shard sessions, bounded outbound queues, heartbeats, tokens
//! - `route`   — the event value, field extraction, subscriptions and the index deciding who gets it
//! - `api`     — request handlers for the inbound and internal listeners
//! - `proxy`   — the API gateway's definitions, routing table, parked requests and replies
//! - `auth`    — JWT/JWKS verification, the session blacklist, CORS policy (no I/O)
//! - `broker`  — island code: Kafka (rskafka), Kinesis (AWS SDK), NATS (async-nats), Redis,
//!   outbound HTTP, DNS, reached through island handles
//! - `router`  — the clickstream router (`corebridge router`): rdkafka group, registry, retry chain
//! - `metrics` — metric names, per-shard probes, the Prometheus exporter
//! - `error`   — whose fault an error is (client, upstream, ours)
//! - `logging` — structured logs on stderr
//! - `fuzzing` — the fuzz targets (every parser of outside bytes), replayed by the tests
//!
//! One Kafka record's way to a socket, in one direction through six files (the codecs and
//! the index they call are leaves):
//! 1. `broker/kafka/consumer.rs` — fetch, decode (`proto/kafka_record.rs`) into a `route::Event`
//!    with its fields extracted, one batch to each shard that wants some of it
//!    (`route/interest.rs`), over bounded queues;
//! 2. `runtime/shard.rs` — the shard takes the batch off its queue and applies it (events
//!    that piled up meanwhile together);
//! 3. `session/registry.rs` — `route/index.rs` picks the sessions, `proto/frame.rs` encodes
//!    once per transport;
//! 4. `session/queue.rs` — each session's bounded queue (slow-consumer policy);
//! 5. `conn/writer.rs` — the shard's writer takes each dirty session's queue in passes;
//! 6. `conn/socket.rs` — one `sendmsg` of everything taken, from the shared frames.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod conn;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod proxy;
pub mod route;
pub mod router;
pub mod runtime;
pub mod session;
