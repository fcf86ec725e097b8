//! The tuning file: performance knobs that operators change per host, not per deployment.
//! TOML, every section optional, unknown keys rejected (a typo must not silently fall back to
//! a default). `tuning/default.toml` documents every key with its default.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    pub runtime: Runtime,
    pub http: Http,
    pub sessions: Sessions,
    pub longpoll: LongPoll,
    pub proxy: Proxy,
    pub shutdown: Shutdown,
}

/// What SIGTERM does: stop accepting, tell SSE clients to come back (`retry:`) and end their
/// streams, close WebSockets with 1001, then wait at most `drain_s` for them to go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    pub drain_s: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { drain_s: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Number of shards (executors); 0 = one per online CPU (or per entry of `cpus`).
    pub shards: usize,
    /// CPUs to pin shards to, in order; shard i runs on `cpus[i % len]`. Empty = online CPUs.
    pub cpus: Vec<usize>,
    /// Pin each shard to its CPU. Off only for debugging on shared machines.
    pub pin: bool,
    /// Messages each shard's inbound queue (publishes and control records from every shard)
    /// and each shard's mesh queue (requests and replies between shards) hold; a publish that
    /// finds a queue full gets 503.
    pub mesh_queue: usize,
    /// Cells of the interest table (rounded up to a power of two, 8 bytes each): which shards
    /// want which events. More cells, fewer events sent to a shard that has no taker for them.
    pub interest_cells: usize,
    /// The writer hands a pass's sends to the kernel 64 at a time through an io_uring of the
    /// shard's own; false: one `sendmsg` per write. Without io_uring (seccomp, sysctl) the
    /// writer falls back by itself.
    pub batched_sends: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            shards: 0,
            cpus: Vec::new(),
            pin: true,
            mesh_queue: 1024,
            interest_cells: 1 << 16,
            batched_sends: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: usize,
    /// A request head must arrive whole within this time of its first byte (slow-loris
    /// bound: a total deadline, not an idle timeout), else 408.
    pub header_timeout_ms: u64,
    /// A request body must arrive whole within this time of the end of its head, else 408.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this time.
    pub keepalive_timeout_ms: u64,
    /// Connections on this node that have not yet sent a whole first request head, at most;
    /// more are answered 503 and closed at once, so clients that connect and stall cannot
    /// take every file descriptor.
    pub max_pending_heads: usize,
    /// Open connections from one client address, at most (0: no cap). Off by default: behind a
    /// load balancer or a NAT, many users share one address. Set it where clients connect
    /// directly, so one address cannot take every file descriptor.
    pub max_connections_per_address: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_head_bytes: 32 * 1024,
            max_headers: 64,
            // The subscriptions query parameter is URL-encoded JSON and can be long.
            max_uri_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            keepalive_timeout_ms: 60_000,
            max_pending_heads: 10_000,
            max_connections_per_address: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumer {
    /// Close the connection once its queue is full (the client reconnects and resubscribes).
    Close,
    /// Drop the oldest queued events and tell the client (SSE comment) how many it missed.
    DropOldest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Events a session may have queued before the slow-consumer policy applies.
    pub queue_events: usize,
    /// Bytes a session may have queued before the slow-consumer policy applies.
    pub queue_bytes: usize,
    pub slow_consumer: SlowConsumer,
    /// The kernel send buffer of a stream socket (SO_SNDBUF; the kernel doubles it), 0 = the
    /// kernel's autotuning, which lets a client that stops reading hold up to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) of kernel memory before its queue
    /// here even starts to fill.
    pub socket_send_buffer: usize,
    /// SSE heartbeat comment / WebSocket ping interval.
    pub heartbeat_interval_ms: u64,
    /// Subscriptions one connection may hold (query parameter or PUT).
    pub max_subscriptions: usize,
    /// `oneOf` clauses one subscription may hold.
    pub max_clauses: usize,
    /// Bytes of subscription state (compiled constraints and their index entries) one
    /// connection may hold; more is refused with 400.
    pub max_subscription_bytes: usize,
    /// How far a shard's writer may fall behind (its current pass over the sessions with
    /// output has run this long) before publish answers wait for it (their events are queued
    /// already): events then pile up into fewer, larger writes instead of a backlog that only
    /// grows latency. 0 = never wait. 20 ms, not 50: (a)'s p99 at the fan-out floor's
    /// instead of 1.3-1.5x it, for about 40% fewer HTTP publishes per second under heavy
    /// broadcast (Kafka-fed events are never held).
    pub max_write_lag_ms: u64,
    /// Events a reconnecting SSE client (`Last-Event-ID`) gets replayed at most: the newest
    /// ones; older ones it missed are announced by a `rig.replay_gap` event. Capped at half of
    /// `queue_events`, so a replay never makes the stream a slow consumer by itself.
    pub resume_max_events: usize,
    /// Records older than this are not replayed (counted in the gap); FlowX kept 4 h.
    pub resume_max_age_s: u64,
    /// Decoded records kept per source partition on the node for replays (0: always read
    /// them back from Kafka), and their bytes at most.
    pub resume_ring_events: usize,
    pub resume_ring_bytes: usize,
    /// WebSocket permessage-deflate (RFC 7692) when the client offers it.
    pub ws_deflate: bool,
    /// Events smaller than this (JSON bytes) go out uncompressed on a deflate connection:
    /// each compression costs ~15 us (resetting the compressor dominates), which a small
    /// event does not repay (`cargo bench --bench hot_paths -- deflate`).
    pub ws_deflate_min_bytes: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            queue_events: 1024,
            queue_bytes: 1 << 20,
            slow_consumer: SlowConsumer::Close,
            socket_send_buffer: 0,
            heartbeat_interval_ms: 15_000,
            max_subscriptions: 128,
            max_clauses: 64,
            max_subscription_bytes: 16 * 1024,
            max_write_lag_ms: 20,
            resume_max_events: 256,
            resume_max_age_s: 4 * 3600,
            resume_ring_events: 1024,
            resume_ring_bytes: 1 << 20,
            ws_deflate: true,
            ws_deflate_min_bytes: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongPoll {
    /// Events kept per long-poll session (RIG: 200).
    pub buffer_events: usize,
    /// How long a poll waits for events before answering with none (RIG: ~5 s).
    pub hold_ms: u64,
    /// A session nobody polled for this long is removed (RIG: 1 h).
    pub session_timeout_ms: u64,
}

impl Default for LongPoll {
    fn default() -> Self {
        LongPoll {
            buffer_events: 200,
            hold_ms: 5_000,
            session_timeout_ms: 3_600_000,
        }
    }
}

/// The API gateway's bounds and upstream connection pools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// API definitions a node stores (file and management API together); more is refused.
    pub max_apis: usize,
    /// Endpoints one API definition may declare.
    pub max_endpoints: usize,
    /// Connections (busy and idle) to one upstream from one shard; requests beyond wait for
    /// one to come free, up to `PROXY_RECV_TIMEOUT`, then get 502.
    pub max_connections_per_upstream: usize,
    /// Idle keep-alive connections one shard keeps per upstream.
    pub max_idle_per_upstream: usize,
    /// An idle upstream connection is closed after this long. Below the upstream's own idle
    /// timeout (Node.js: 5 s), so the pool rarely hands out a connection the upstream is
    /// closing.
    pub idle_timeout_ms: u64,
    /// Connecting to an upstream (TCP and TLS) must succeed within this time, else 502.
    pub connect_timeout_ms: u64,
    /// Largest upstream response head; a larger one is answered 502.
    pub max_response_head_bytes: usize,
    /// Largest request body an HTTP target gets (streamed through, never held whole); more is
    /// refused with 413. Kafka targets hold the body whole and use `http.max_body_bytes`.
    pub max_request_body_bytes: u64,
    /// Bytes moved per read between client and upstream.
    pub buffer_bytes: usize,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            max_apis: 1000,
            max_endpoints: 256,
            max_connections_per_upstream: 512,
            max_idle_per_upstream: 64,
            idle_timeout_ms: 4_000,
            connect_timeout_ms: 5_000,
            max_response_head_bytes: 64 * 1024,
            max_request_body_bytes: 64 << 20,
            buffer_bytes: 16 * 1024,
        }
    }
}

impl Tuning {
    /// Checks values a deserializer cannot; pushes one line per problem.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let mut nonzero = |name: &str, v: u64| {
            if v == 0 {
                problems.push(format!("tuning: {name} must be greater than 0"));
            }
        };
        nonzero("runtime.mesh_queue", self.runtime.mesh_queue as u64);
        nonzero("runtime.interest_cells", self.runtime.interest_cells as u64);
        nonzero("http.max_head_bytes", self.http.max_head_bytes as u64);
        nonzero("http.max_headers", self.http.max_headers as u64);
        nonzero("http.max_uri_bytes", self.http.max_uri_bytes as u64);
        nonzero("http.header_timeout_ms", self.http.header_timeout_ms);
        nonzero("http.body_timeout_ms", self.http.body_timeout_ms);
        nonzero("http.keepalive_timeout_ms", self.http.keepalive_timeout_ms);
        nonzero("sessions.queue_events", self.sessions.queue_events as u64);
        nonzero("sessions.queue_bytes", self.sessions.queue_bytes as u64);
        nonzero(
            "sessions.heartbeat_interval_ms",
            self.sessions.heartbeat_interval_ms,
        );
        nonzero(
            "sessions.max_subscriptions",
            self.sessions.max_subscriptions as u64,
        );
        nonzero("sessions.max_clauses", self.sessions.max_clauses as u64);
        nonzero(
            "sessions.max_subscription_bytes",
            self.sessions.max_subscription_bytes as u64,
        );
        nonzero("longpoll.buffer_events", self.longpoll.buffer_events as u64);
        nonzero(
            "longpoll.session_timeout_ms",
            self.longpoll.session_timeout_ms,
        );
        nonzero("proxy.max_apis", self.proxy.max_apis as u64);
        nonzero("proxy.max_endpoints", self.proxy.max_endpoints as u64);
        nonzero(
            "proxy.max_connections_per_upstream",
            self.proxy.max_connections_per_upstream as u64,
        );
        nonzero("proxy.connect_timeout_ms", self.proxy.connect_timeout_ms);
        nonzero(
            "proxy.max_response_head_bytes",
            self.proxy.max_response_head_bytes as u64,
        );
        nonzero("proxy.buffer_bytes", self.proxy.buffer_bytes as u64);
        if self.runtime.shards > crate::route::interest::MAX_SHARDS {
            problems.push(format!(
                "tuning: runtime.shards is {}; at most {} are supported",
                self.runtime.shards,
                crate::route::interest::MAX_SHARDS
            ));
        }
        if self.http.max_headers > 256 {
            problems.push(format!(
                "tuning: http.max_headers is {}; at most 256 are supported",
                self.http.max_headers
            ));
        }
        if self.http.max_uri_bytes > self.http.max_head_bytes {
            problems.push(format!(
                "tuning: http.max_uri_bytes ({}) exceeds http.max_head_bytes ({})",
                self.http.max_uri_bytes, self.http.max_head_bytes
            ));
        }
    }
}
