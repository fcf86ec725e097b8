//! The API gateway's model and decisions (RIG's reverse proxy): API definitions and their
//! validation (`api`), the compiled routing table each shard holds (`table`), the requests
//! parked for a correlated response (`pending`) and the responses that release them
//! (`reply`), and the records written to Kafka (`event`).
//!
//! Owns: what a definition means and which endpoint takes a request. Must not: touch sockets
//! or a runtime. The socket side is `conn/proxy.rs` (client to upstream) and
//! `conn/upstream.rs` (the per-shard connection pools); the management API is `api/apis.rs`,
//! responses posted over HTTP `api/responses.rs`.
//!
//! A request's way through the gateway:
//! ```text
//! conn::serve ─ head, not /_rig/ ─> conn::proxy ─ table.route ─> 404 / 405
//!        auth (secured: JWT from header/query, not blacklisted) ─> 401
//!        request log (console, Kafka) ─> target:
//!          http  ─ conn::upstream pool ─ head + body streamed ─> response streamed back
//!                  (response_from ≠ http: ?correlation=<token>; upstream 202 ─> park)
//!          kafka ─ body + rig extension ─ produce ─> 202, or park (response_from kafka)
//!        parked ─ reply (Kafka response topic, POST /v3/responses) or timeout 504
//! ```

pub mod api;
pub mod event;
pub mod forward;
pub mod pending;
pub mod reply;
pub mod table;
