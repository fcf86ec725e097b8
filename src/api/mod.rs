//! Request routing and handlers for both listeners. A handler gets a parsed request (head and
//! whole body) and returns what the socket driver does next: send a response, or turn the
//! connection into an SSE stream or a WebSocket. Handlers never touch sockets.
//!
//! Inbound (public) port: RIG's `/_rig/v1/connection/{sse,ws,longpolling}`, the subscriptions
//! PUT, `/_rig/v1/events`, `/_rig/health` (every other inbound path is the API gateway's,
//! `conn/proxy.rs`). Internal port: `/v3/messages` (and `/v2/`), `/v3/apis`, `/v3/responses`,
//! `/v3/session-blacklist`, `/health`, `/metrics`.

pub mod access;
mod apis;
mod blacklist;
mod connect;
pub mod presence;
mod publish;
pub mod ratelimit;
mod responses;
mod resume;
mod status;

pub mod subscriptions;

use crate::metrics::Listener;
use crate::proto::http1::{Method, RequestHead};
use crate::proto::token::Token;
use crate::runtime::shard::Shard;
use std::rc::Rc;

/// A complete HTTP response; the driver adds framing and the keep-alive decision.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json; charset=utf-8";

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn text(status: u16, msg: impl Into<String>) -> Resp {
        let mut r = Resp::new(status).header("content-type", TEXT);
        r.body = msg.into().into_bytes();
        r
    }
    pub fn json(status: u16, body: Vec<u8>) -> Resp {
        let mut r = Resp::new(status).header("content-type", JSON);
        r.body = body;
        r
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Resp {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the driver does after a request.
pub enum Outcome {
    Resp(Resp),
    /// Send `head` (a streaming response head), then stream the session's queue as SSE.
    Sse {
        head: Vec<u8>,
        slot: u32,
        token: Token,
    },
    /// Send `head` (101), then run the session as a WebSocket.
    Ws {
        head: Vec<u8>,
        slot: u32,
        token: Token,
    },
    /// Upgrade, then close at once with code 1000 and `reason` (RIG's way to refuse a WebSocket).
    WsRefuse {
        head: Vec<u8>,
        reason: String,
    },
}

impl From<Resp> for Outcome {
    fn from(r: Resp) -> Outcome {
        Outcome::Resp(r)
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    listener: Listener,
    head: &RequestHead,
    body: Vec<u8>,
) -> Outcome {
    match listener {
        Listener::Inbound => inbound(shard, head, body).await,
        Listener::Api => internal(shard, head, body).await,
    }
}

/// CORS headers for an inbound answer to a request with this `Origin`: the allowed origin (if
/// any) and, when the answer depends on the origin, `Vary: Origin`.
pub fn cors_headers(shard: &Shard, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let cors = &shard.cfg().cors;
    let mut h = Vec::with_capacity(2);
    if let Some(o) = cors.allow_origin(origin) {
        h.push(("access-control-allow-origin", o.into_owned()));
    }
    if cors.varies() {
        h.push(("vary", "Origin".to_string()));
    }
    h
}

fn not_allowed(allow: &str) -> Outcome {
    Resp::text(405, format!("Method not allowed. Allowed: {allow}"))
        .header("allow", allow)
        .into()
}

/// RIG's preflight answer: 204 with the allowed methods and headers.
fn preflight(methods: &str, headers: &str) -> Outcome {
    Resp::new(204)
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", headers)
        .header("access-control-allow-credentials", "true")
        .header("access-control-max-age", "86400")
        .into()
}

async fn inbound(shard: &Rc<Shard>, head: &RequestHead, body: Vec<u8>) -> Outcome {
    let path = head.path.as_str();
    let m = head.method;
    let out = match path {
        "/_rig/health" => match m {
            Method::Get | Method::Head => Resp::text(200, "OK").into(),
            _ => not_allowed("GET, HEAD"),
        },
        "/_rig/v1/connection/sse" => match m {
            Method::Get => connect::sse(shard, head).await,
            Method::Options => preflight("GET", "*"),
            _ => not_allowed("GET, OPTIONS"),
        },
        "/_rig/v1/connection/ws" => match m {
            Method::Get => connect::ws(shard, head).await,
            _ => not_allowed("GET"),
        },
        "/_rig/v1/connection/longpolling" => match m {
            Method::Get => connect::longpoll(shard, head).await,
            Method::Options => preflight("GET", "*"),
            _ => not_allowed("GET, OPTIONS"),
        },
        "/_rig/v1/events" => match m {
            Method::Post => publish::submit(shard, head, &body).await,
            Method::Options => preflight("POST", "content-type"),
            _ => not_allowed("POST, OPTIONS"),
        },
        _ => match subscriptions::parse_path(path) {
            Some(token) => match m {
                Method::Put => subscriptions::put(shard, head, token, &body).await,
                Method::Options => preflight("PUT", "content-type,authorization"),
                _ => not_allowed("PUT, OPTIONS"),
            },
            // RIG hands every other path to its API proxy, which answers this when nothing matches.
            None => Resp::json(404, br#"{"message":"Not Found"}"#.to_vec()).into(),
        },
    };
    // RIG sends CORS on successes only; we add it to every inbound answer so browsers can read
    // our error messages (RIG users asked for it: Accenture/reactive-interaction-gateway#344).
    match out {
        Outcome::Resp(mut r) => {
            r.headers
                .extend(cors_headers(shard, head.header_str("origin")));
            r.into()
        }
        other => other,
    }
}

/// The internal API's optional bearer token (`CB_API_TOKEN`); `/health` stays open for probes.
fn api_token_ok(shard: &Shard, head: &RequestHead) -> bool {
    let Some(want) = shard.cfg().api_token.as_deref() else {
        return true;
    };
    head.path == "/health"
        || head.header_values("authorization").any(|v| {
            let v = String::from_utf8_lossy(v);
            let v = v.trim();
            v.len() > 7
                && v[..7].eq_ignore_ascii_case("bearer ")
                && constant_time_eq(v[7..].trim().as_bytes(), want.as_bytes())
        })
}

/// Compares secrets without an early exit, so timing does not reveal matching prefixes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn internal(shard: &Rc<Shard>, head: &RequestHead, body: Vec<u8>) -> Outcome {
    if !api_token_ok(shard, head) {
        return Resp::text(
            401,
            "Unauthorized: the internal API requires Authorization: Bearer <CB_API_TOKEN>.",
        )
        .header("www-authenticate", "Bearer")
        .into();
    }
    let m = head.method;
    match head.path.as_str() {
        "/health" => match m {
            Method::Get | Method::Head => Resp::text(200, "OK").into(),
            _ => not_allowed("GET, HEAD"),
        },
        "/dashboard" => match m {
            Method::Get | Method::Head => {
                let mut r = Resp::new(200)
                    .header("content-type", "text/html; charset=utf-8")
                    .header("cache-control", "no-cache");
                r.body = status::PAGE.as_bytes().to_vec();
                r.into()
            }
            _ => not_allowed("GET, HEAD"),
        },
        "/v3/status" => match m {
            Method::Get => Resp::json(200, status::json(shard)).into(),
            _ => not_allowed("GET"),
        },
        "/metrics" => match m {
            Method::Get => {
                let mut r = Resp::new(200)
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8");
                let island = shard
                    .globals
                    .broker
                    .is_some()
                    .then_some(&*shard.globals.island);
                let mut text = crate::metrics::render(&shard.globals.metrics, island);
                if let Some(i) = island {
                    i.render(&mut text);
                }
                let ring = match (&shard.globals.broker, &shard.globals.local) {
                    (Some(b), _) => Some(&b.recent),
                    (None, Some(l)) => Some(&l.recent),
                    _ => None,
                };
                if let Some(r) = ring {
                    let (events, bytes) = r.size();
                    crate::metrics::render_ring(&mut text, events, bytes);
                }
                if let Some(r) = shard.globals.local.as_ref().and_then(|l| l.redis.as_ref()) {
                    r.metrics.render(&mut text);
                }
                let g = &shard.globals;
                let busy: Vec<u64> = g
                    .busy_us
                    .iter()
                    .map(|b| b.load(std::sync::atomic::Ordering::Relaxed))
                    .collect();
                let inbound: Vec<usize> = g.inbound.iter().map(|q| q.len()).collect();
                crate::metrics::render_shards(&mut text, &busy, &inbound);
                crate::metrics::render_pending_heads(
                    &mut text,
                    shard
                        .globals
                        .pending_heads
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                if shard.globals.kinesis.is_some() {
                    shard.globals.kinesis_metrics.render(&mut text);
                }
                if shard.globals.nats.is_some() {
                    shard.globals.nats_metrics.render(&mut text);
                }
                let cfg = shard.cfg();
                let kafka_source = |t: &str| cfg.kafka.as_ref().is_some_and(|k| k.is_source(t));
                let brokers = crate::metrics::rig::Brokers {
                    kafka: island,
                    kafka_source: &kafka_source,
                    kinesis: g.kinesis.is_some().then_some(&*g.kinesis_metrics),
                    nats: g.nats.is_some().then_some(&*g.nats_metrics),
                };
                crate::metrics::rig::render(&mut text, &brokers, &g.metrics);
                r.body = text.into_bytes();
                r.into()
            }
            _ => not_allowed("GET"),
        },
        "/v3/messages" | "/v2/messages" => match m {
            Method::Post => publish::publish(shard, head, &body).await,
            _ => not_allowed("POST"),
        },
        "/v3/apis" | "/v2/apis" => match m {
            Method::Get => apis::list(shard),
            Method::Post => apis::create(shard, &body).await,
            _ => not_allowed("GET, POST"),
        },
        "/v3/responses" => match m {
            Method::Post => responses::v3(shard, head, body).await,
            _ => not_allowed("POST"),
        },
        "/v2/responses" => match m {
            Method::Post => responses::v2(shard, body).await,
            _ => not_allowed("POST"),
        },
        "/v3/session-blacklist" | "/v2/session-blacklist" => match m {
            Method::Post => blacklist::add(shard, &body).await,
            _ => not_allowed("POST"),
        },
        // Tests of the systemd watchdog: block this shard's executor (CB_TEST_HOOKS=1 only).
        "/v3/debug/stall" if shard.cfg().test_hooks => match m {
            Method::Post => {
                let ms = crate::proto::http1::query_param(head.query.as_deref(), "ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(3000)
                    .min(30_000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Resp::text(200, format!("stalled shard {} for {ms} ms", shard.id)).into()
            }
            _ => not_allowed("POST"),
        },
        "/v3/presence" => match m {
            Method::Get => presence::who(shard, head).await,
            _ => not_allowed("GET"),
        },
        path if path.starts_with("/v3/users/") && path.ends_with("/connections") => {
            let raw = &path["/v3/users/".len()..path.len() - "/connections".len()];
            if raw.is_empty() || raw.contains('/') {
                return Resp::json(404, br#"{"message":"Not Found"}"#.to_vec()).into();
            }
            let user = crate::proto::http1::percent_decode(raw).unwrap_or_else(|| raw.to_string());
            match m {
                Method::Get => presence::connections(shard, user).await,
                _ => not_allowed("GET"),
            }
        }
        path if path.starts_with("/v3/apis/") || path.starts_with("/v2/apis/") => {
            let raw = &path[9..];
            if raw.is_empty() || raw.contains('/') {
                return Resp::json(404, br#"{"message":"Not Found"}"#.to_vec()).into();
            }
            let id = crate::proto::http1::percent_decode(raw).unwrap_or_else(|| raw.to_string());
            match m {
                Method::Get => apis::get(shard, &id),
                Method::Put => apis::update(shard, &id, &body).await,
                Method::Delete => apis::delete(shard, &id).await,
                _ => not_allowed("GET, PUT, DELETE"),
            }
        }
        path => match path
            .strip_prefix("/v3/session-blacklist/")
            .or_else(|| path.strip_prefix("/v2/session-blacklist/"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            Some(id) => match m {
                Method::Get => blacklist::check(shard, id),
                _ => not_allowed("GET"),
            },
            None => Resp::json(404, br#"{"message":"Not Found"}"#.to_vec()).into(),
        },
    }
}
