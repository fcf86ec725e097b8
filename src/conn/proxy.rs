//! The API gateway's socket side: one proxied request on a client connection, from its parsed
//! head to the last byte of its response. The routing and header decisions are `proxy/`'s;
//! this module moves bytes, bounded in size and time, and parks requests that wait for a
//! correlated response.
//!
//! ```text
//! head ─ route ─ auth ─ log ─┬─ http:  pool checkout ─ send head ─ stream body ─┐
//!                            │         read head (client EOF aborts) ─ 202 & wait? ─ park
//!                            │         else: client head ─ stream body ─ checkin / close
//!                            └─ kafka: read body ─ record ─ produce ─ 202, or park
//! park ─ reply (any node) ─ answer │ timeout ─ 504
//! ```
//! Bounds: a request body larger than `proxy.max_request_body_bytes` is refused before a byte
//! goes upstream; every upstream read waits at most `PROXY_RECV_TIMEOUT`; every client write
//! and the whole request body at most `http.body_timeout_ms`; at most `proxy.buffer_bytes`
//! are in flight per direction, so a slow client slows its upstream rather than filling
//! memory. Errors after the response head was sent close the client connection (the only way
//! left to say the body is incomplete).

use super::tls::ClientStream;
use super::upstream::{Conn, ConnectError};
use super::ReadErr;
use crate::api::{self, Resp};
use crate::auth::jwt::bearer_tokens;
use crate::broker::{ProduceError, ProduceRecord};
use crate::metrics::proxy::Status;
use crate::metrics::Listener;
use crate::proto::http1::{self, BodyKind, ChunkedDecoder, Method, RequestHead};
use crate::proto::http1_client::{
    self as client_proto, BodyDecoder, ResponseBody, ResponseHead, ResponseLimits,
};
use crate::proto::token::Token;
use crate::proto::trace::TraceContext;
use crate::proxy::event::{self, RequestFacts};
use crate::proxy::forward::{self, ClientBody, Hop};
use crate::proxy::reply::Reply;
use crate::proxy::table::{Match, ResponseFrom, Target};
use crate::runtime::shard::{Parking, Shard};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOT_FOUND: &[u8] = br#"{"message":"Not Found"}"#;

/// How long a request waits for its upstream before the client connection is watched for a
/// close (which then frees the upstream connection).
const CLIENT_WATCH_AFTER: Duration = Duration::from_millis(50);

/// Whether the client connection can carry another request.
pub type KeepGoing = bool;

/// What we know of the client's connection.
#[derive(Clone, Copy)]
pub(super) struct Peer {
    pub ip: IpAddr,
    pub local: SocketAddr,
    /// The request came over TLS (the `scheme` the `rig` extension reports).
    pub secure: bool,
}

/// RIG's CORS headers on the answers the gateway itself gives (401, 202, 504, ...): the
/// configured origin, any method, and `allow_headers`.
fn rig_cors(shard: &Shard, allow_headers: &str) -> Vec<(&'static str, String)> {
    let origin = shard
        .cfg()
        .cors
        .allow_origin(None)
        .map(|o| o.into_owned())
        .unwrap_or_else(|| "*".into());
    vec![
        ("access-control-allow-origin", origin),
        ("access-control-allow-methods", "*".into()),
        ("access-control-allow-headers", allow_headers.into()),
    ]
}

thread_local! {
    /// When this shard last logged an upstream failure, and how many it kept quiet since.
    static LAST_WARN: std::cell::Cell<(Option<Instant>, u64)> = const { std::cell::Cell::new((None, 0)) };
}

/// Upstream failures are counted per request and logged at most once per 10 s per shard (an
/// upstream that is down must not flood the log), naming the cause.
fn warn_upstream(api: &str, upstream: &str, why: &str) {
    LAST_WARN.with(|c| {
        let (last, quiet) = c.get();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            c.set((last, quiet + 1));
            return;
        }
        c.set((Some(Instant::now()), 0));
        tracing::warn!(
            api,
            upstream,
            error = why,
            suppressed = quiet,
            "proxied request failed upstream, answered 502 (whose fault: upstream)"
        );
    });
}

/// A token for a request that does not wait: RIG puts one in every produced event; a reply
/// to it finds nobody and is counted.
fn unparked_token(shard: &Shard) -> String {
    Token {
        node: shard.globals.node,
        shard: shard.id as u16,
        slot: u32::MAX,
        gen: 0,
        secret: fastrand::u64(..),
    }
    .encode_correlation()
}

fn response_timeout(shard: &Shard, from: ResponseFrom) -> Duration {
    let p = &shard.cfg().proxy;
    match from {
        ResponseFrom::Kafka => p.kafka_response_timeout,
        ResponseFrom::HttpAsync => p.http_async_response_timeout,
        ResponseFrom::Kinesis => p.kinesis_response_timeout,
        ResponseFrom::Nats => p.nats_response_timeout,
        ResponseFrom::Http => p.recv_timeout,
    }
}

/// Serves one request whose path is not under `/_rig/`. `buf` holds what was read after its
/// head; what is left in it afterwards belongs to the next request.
pub(super) async fn serve(
    shard: &Rc<Shard>,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: RequestHead,
    peer: Peer,
) -> KeepGoing {
    let routed = shard.proxy.borrow().route(&head.method_str, &head.path);
    let Some(m) = routed else {
        shard
            .metrics
            .proxy
            .count(&head.method_str, None, Status::NotFound);
        let mut r = Resp::json(404, NOT_FOUND.to_vec());
        r.headers
            .extend(api::cors_headers(shard, head.header_str("origin")));
        return answer_early(shard, client, buf, &head, r).await;
    };
    if m.ambiguous {
        tracing::debug!(method = %head.method_str, api = %m.api.meta.id, endpoint = %m.endpoint().id,
            "several API endpoints match; the first in table order takes the request");
    }
    let ep = m.endpoint();
    if ep.secured && !authenticated(shard, &m, &head).await {
        shard
            .metrics
            .proxy
            .count(&head.method_str, Some(&m), Status::Unauthorized);
        let mut r = Resp::text(401, "Authentication failed.");
        r.headers.extend(rig_cors(shard, "content-type"));
        return answer_early(shard, client, buf, &head, r).await;
    }
    let trace =
        TraceContext::continue_or_start(head.header("traceparent"), head.header("tracestate"));
    request_log(shard, &m, &head, peer.ip, &trace);
    match &ep.target {
        Target::Http => forward(shard, client, buf, &head, &m, peer, &trace).await,
        Target::Kafka { topic } => {
            let sink = Sink::Kafka(topic.clone());
            to_stream(shard, client, buf, &head, &m, sink, peer, &trace).await
        }
        Target::Kinesis { stream } => {
            let sink = Sink::Kinesis(stream.clone());
            to_stream(shard, client, buf, &head, &m, sink, peer, &trace).await
        }
        Target::Nats { subject } => {
            let sink = Sink::Nats(subject.clone());
            to_stream(shard, client, buf, &head, &m, sink, peer, &trace).await
        }
    }
}

/// RIG's check for secured endpoints: at least one valid, not blacklisted token from the
/// configured header (`Authorization` as bearer credentials, or a custom `x-` header holding
/// the raw token) or query parameter (comma-separated tokens).
async fn authenticated(shard: &Shard, m: &Match, head: &RequestHead) -> bool {
    let auth = &m.api.auth;
    let mut tokens = Vec::new();
    if auth.use_query && !auth.query_name.is_empty() {
        if let Some(v) = http1::query_param(head.query.as_deref(), &auth.query_name) {
            tokens.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .take(crate::auth::jwt::MAX_BEARER_TOKENS)
                    .map(str::to_string),
            );
        }
    }
    if auth.use_header {
        if auth.header_name == "authorization" {
            tokens.extend(bearer_tokens(head.header_values("authorization")));
        } else if auth.header_name.starts_with("x-") {
            tokens.extend(
                head.header_values(&auth.header_name)
                    .filter_map(|v| std::str::from_utf8(v).ok())
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .take(crate::auth::jwt::MAX_BEARER_TOKENS),
            );
        }
    }
    for t in tokens {
        if crate::api::access::verify(shard, &t).await.is_ok() {
            return true;
        }
    }
    false
}

/// `REQUEST_LOG`: a console line and/or a Kafka record per matched request, before it is
/// forwarded. The Kafka record is produced in the background; a failure is counted by the
/// island and never delays the request.
fn request_log(shard: &Rc<Shard>, m: &Match, head: &RequestHead, ip: IpAddr, trace: &TraceContext) {
    let log = shard.cfg().proxy.request_log;
    let ep = m.endpoint();
    if log.console {
        let regex = ep
            .doc
            .get("path_regex")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        println!(
            "CALL: [{}] {} {} => {}",
            ep.id, ep.method, regex, m.api.target_url
        );
    }
    if log.kafka {
        if let Some(broker) = shard.globals.broker.clone() {
            let kafka = shard.cfg().kafka.as_ref();
            let record = ProduceRecord {
                topic: broker.log_topic.clone(),
                key: Some(b"partition".to_vec()),
                value: event::request_log(&ep.doc, &head.path, ip, trace),
                headers: Vec::new(),
                // RIG: KAFKA_LOG_SCHEMA with KAFKA_SERIALIZER=avro.
                avro_subject: kafka
                    .filter(|k| k.avro_out)
                    .and_then(|k| k.log_schema.clone()),
            };
            crate::runtime::rt::spawn(async move {
                let _ = broker.produce(record).await;
            });
        }
    }
}

/// Writes a response the gateway made itself.
async fn write_resp(
    shard: &Shard,
    client: &mut ClientStream,
    r: Resp,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    shard.metrics.response(Listener::Inbound, r.status);
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut bytes = http1::response(r.status, &headers, &r.body, keep_alive);
    if head_only {
        bytes.truncate(bytes.len() - r.body.len());
    }
    write_within(shard, client, &bytes).await
}

/// One client write, bounded by `http.body_timeout_ms` (a client that stops reading does not
/// hold the request, and its upstream connection, forever).
async fn write_within(shard: &Shard, client: &mut ClientStream, bytes: &[u8]) -> bool {
    let within = Duration::from_millis(shard.cfg().tuning.http.body_timeout_ms);
    crate::runtime::rt::timeout(within, client.write_all(bytes))
        .await
        .is_some_and(|r| r.is_ok())
}

/// Answers before the request body was read: the body is read and dropped when it is small
/// enough to keep the connection, else the connection closes after the answer.
async fn answer_early(
    shard: &Shard,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    r: Resp,
) -> KeepGoing {
    let small = match head.body {
        BodyKind::None => true,
        // A client waiting for 100 Continue has not sent its body: nothing to skip, but it
        // may still send it, so the connection is not reused.
        _ if head.expect_continue => false,
        BodyKind::Length(n) => n <= shard.cfg().tuning.http.max_body_bytes as u64,
        BodyKind::Chunked => true,
    };
    let keep = head.keep_alive
        && small
        && super::read_body(
            shard,
            client,
            buf,
            head,
            shard.cfg().tuning.http.max_body_bytes,
        )
        .await
        .is_ok();
    write_resp(shard, client, r, keep, head.method == Method::Head).await && keep
}

/// Where a `kafka` or `kinesis` target puts the event.
enum Sink {
    Kafka(String),
    Kinesis(String),
    Nats(String),
}

/// A Kafka, Kinesis or NATS target: the body must be a CloudEvent; it goes to the endpoint's
/// topic, stream or subject with RIG's `rig` extension, keyed by `rig.target_partition`
/// (Kinesis: a random partition key without one); 202, or the correlated response (NATS: the
/// reply to a NATS request, which needs no correlation of ours).
#[allow(clippy::too_many_arguments)]
async fn to_stream(
    shard: &Rc<Shard>,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    m: &Match,
    sink: Sink,
    peer: Peer,
    trace: &TraceContext,
) -> KeepGoing {
    let ep = m.endpoint();
    let count = |s| shard.metrics.proxy.count(&head.method_str, Some(m), s);
    if head.method == Method::Options {
        count(Status::Ok);
        let mut r = Resp::new(204);
        r.headers
            .extend(rig_cors(shard, "content-type,authorization"));
        return answer_early(shard, client, buf, head, r).await;
    }
    let body = match super::read_body(
        shard,
        client,
        buf,
        head,
        shard.cfg().tuning.http.max_body_bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(super::BodyErr::Respond(status, msg)) => {
            count(Status::BadRequest);
            let _ = write_resp(shard, client, Resp::text(status, msg), false, false).await;
            return false;
        }
        Err(super::BodyErr::Gone) => return false,
    };
    let configured = match &sink {
        Sink::Kafka(_) => shard.globals.broker.is_some(),
        Sink::Kinesis(_) => shard.globals.kinesis.is_some(),
        Sink::Nats(_) => shard.globals.nats.is_some(),
    };
    if !configured {
        let r = Resp::text(
            503,
            match sink {
                Sink::Kafka(_) => "Kafka is not configured on this node (KAFKA_BROKERS).",
                Sink::Kinesis(_) => "Kinesis is not configured on this node (KINESIS_ENABLED).",
                Sink::Nats(_) => "NATS is not configured on this node (NATS_SERVERS).",
            },
        );
        return write_resp(shard, client, r, head.keep_alive, false).await && head.keep_alive;
    }
    let mut parking = matches!(
        ep.response_from,
        ResponseFrom::Kafka | ResponseFrom::Kinesis
    )
    .then(|| shard.park());
    let correlation = parking
        .as_ref()
        .map_or_else(|| unparked_token(shard), Parking::token);
    let host = head.header_str("host").unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') && h.contains(':') {
            host
        } else {
            h
        }
    });
    let facts = RequestFacts {
        remote_ip: peer.ip,
        host,
        port: peer.local.port(),
        scheme: if peer.secure { "https" } else { "http" },
        headers: &head.headers,
        method: &head.method_str,
        path: &m.path,
        query: head.query.as_deref().unwrap_or_default(),
    };
    let record = match event::target_record(&body, &facts, &correlation, trace) {
        Ok(r) => r,
        Err(e) => {
            count(Status::BadRequest);
            let r = Resp::text(400, e.body());
            return write_resp(shard, client, r, head.keep_alive, false).await && head.keep_alive;
        }
    };
    /// Why a record was not stored: retry later (503) or refused (502).
    enum NotStored {
        Unavailable(String),
        Rejected(String),
        /// The event does not fit the endpoint's Avro schema: 400.
        Invalid(String),
        /// A NATS request got no reply in time: 504, as a correlated reply that never came.
        NoReply,
        /// Larger than the target takes: 413.
        TooLarge(String),
    }
    // A NATS request's reply, when the endpoint waits for one.
    let mut nats_reply = None;
    let avro_subject = ep
        .schema
        .clone()
        .filter(|_| shard.cfg().kafka.as_ref().is_some_and(|k| k.avro_out));
    let produced = match &sink {
        Sink::Kafka(topic) => {
            let broker = shard.globals.broker.clone().expect("checked above");
            broker
                .produce(ProduceRecord {
                    topic: topic.clone(),
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                    // RIG: with KAFKA_SERIALIZER=avro, an endpoint's `schema` names the subject.
                    avro_subject: avro_subject.clone(),
                })
                .await
                .map(|_| shard.globals.island.events_produced.inc())
                .inspect_err(|_| shard.globals.island.events_produce_failed.inc())
                .map_err(|e| match e {
                    ProduceError::Unavailable(_) => NotStored::Unavailable(e.to_string()),
                    ProduceError::Rejected(_) => {
                        NotStored::Rejected(format!("{e} (topic {topic:?})"))
                    }
                    ProduceError::Invalid(_) => NotStored::Invalid(e.to_string()),
                })
        }
        Sink::Kinesis(stream) => {
            let kinesis = shard.globals.kinesis.clone().expect("checked above");
            // RIG: the target partition, else a random key (spreads over the shards).
            let partition_key = record
                .key
                .and_then(|k| String::from_utf8(k).ok())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
            kinesis
                .put(crate::broker::kinesis::PutRecord {
                    stream: stream.clone(),
                    partition_key,
                    data: record.value,
                })
                .await
                .map(drop)
                .map_err(|e| match e {
                    crate::broker::kinesis::PutError::Unavailable(_) => {
                        NotStored::Unavailable(e.to_string())
                    }
                    crate::broker::kinesis::PutError::Rejected(_) => {
                        NotStored::Rejected(e.to_string())
                    }
                })
        }
        Sink::Nats(subject) => {
            use crate::broker::nats::{NatsError, NatsRequest};
            let nats = shard.globals.nats.clone().expect("checked above");
            let reply_within = (ep.response_from == ResponseFrom::Nats)
                .then(|| response_timeout(shard, ResponseFrom::Nats));
            nats.send(NatsRequest {
                subject: subject.clone(),
                headers: record.headers,
                payload: record.value,
                reply_within,
            })
            .await
            .map(|r| nats_reply = r)
            .map_err(|e| match e {
                NatsError::Unavailable(_) => NotStored::Unavailable(e.to_string()),
                NatsError::TimedOut(_) => NotStored::NoReply,
                NatsError::NoResponders(_) | NatsError::Rejected(_) => {
                    NotStored::Rejected(e.to_string())
                }
                NatsError::TooLarge(_) => NotStored::TooLarge(e.to_string()),
                NatsError::Invalid(_) => NotStored::Invalid(e.to_string()),
            })
        }
    };
    let keep = head.keep_alive;
    let mut cors = rig_cors(shard, "content-type,authorization");
    let r = match (produced, parking.as_mut()) {
        (Err(NotStored::Unavailable(e)), _) => {
            count(Status::Unreachable);
            Resp::text(503, e).header("retry-after", "5")
        }
        (Err(NotStored::Rejected(e)), _) => {
            count(Status::Unreachable);
            Resp::text(502, e)
        }
        (Err(NotStored::TooLarge(e)), _) => {
            count(Status::BadRequest);
            let mut r = Resp::text(413, format!("Request entity too large: {e}."));
            r.headers.append(&mut cors);
            r
        }
        (Err(NotStored::NoReply), _) => {
            return answer_reply(shard, client, head, m, None, trace, cors, keep).await;
        }
        (Err(NotStored::Invalid(e)), _) => {
            count(Status::BadRequest);
            let mut r = Resp::text(400, format!("Bad request: {e}."));
            r.headers.append(&mut cors);
            r
        }
        (Ok(_), None) if nats_reply.is_some() => {
            let r = nats_reply.take().expect("matched");
            let token = Token::decode_correlation(&correlation).expect("minted here");
            let headers = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
            let reply = match crate::proxy::reply::from_nats(token, headers, r.payload) {
                Ok(reply) => Some(Arc::new(reply)),
                Err(e) => {
                    // A replier's mistake: the client gets 502 naming it.
                    count(Status::Unreachable);
                    let r = Resp::text(502, format!("the NATS reply is unusable: {e}"));
                    return write_resp(shard, client, r, keep, false).await && keep;
                }
            };
            let cors = std::mem::take(&mut cors);
            return answer_reply(shard, client, head, m, reply, trace, cors, keep).await;
        }
        (Ok(_), None) => {
            count(Status::Ok);
            let mut r = Resp::text(202, "Accepted.");
            r.headers.append(&mut cors);
            r
        }
        (Ok(_), Some(p)) => {
            let waited = p.wait(response_timeout(shard, ep.response_from)).await;
            return answer_reply(shard, client, head, m, waited, trace, cors, keep).await;
        }
    };
    write_resp(shard, client, r, keep, false).await && keep
}

/// Answers a parked request: the correlated response (its status, headers and body, plus
/// CORS and the trace context), or 504 with an empty body after the timeout.
#[allow(clippy::too_many_arguments)]
async fn answer_reply(
    shard: &Shard,
    client: &mut ClientStream,
    head: &RequestHead,
    m: &Match,
    reply: Option<Arc<Reply>>,
    trace: &TraceContext,
    cors: Vec<(&'static str, String)>,
    keep: bool,
) -> KeepGoing {
    let mut extra = cors;
    extra.push(("traceparent", trace.traceparent()));
    let Some(reply) = reply else {
        shard
            .metrics
            .proxy
            .count(&head.method_str, Some(m), Status::ResponseTimeout);
        let mut r = Resp::new(504);
        r.headers = extra;
        return write_resp(shard, client, r, keep, false).await && keep;
    };
    shard
        .metrics
        .proxy
        .count(&head.method_str, Some(m), Status::Ok);
    shard.metrics.response(Listener::Inbound, reply.status);
    let mut out = Vec::with_capacity(256 + reply.body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(reply.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(http1::reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut push = |n: &str, v: &[u8]| {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    };
    for (n, v) in &reply.headers {
        push(n, v);
    }
    for (n, v) in &extra {
        push(n, v.as_bytes());
    }
    let bodiless = (100..200).contains(&reply.status) || matches!(reply.status, 204 | 304);
    if !bodiless {
        push("content-length", reply.body.len().to_string().as_bytes());
    }
    if !keep {
        push("connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless && head.method != Method::Head {
        out.extend_from_slice(&reply.body);
    }
    write_within(shard, client, &out).await && keep
}

/// Why the upstream exchange failed before the client got a response head.
enum Failed {
    /// Connect, write, read or framing: 502 (RIG: `Bad gateway.`).
    Upstream(String, Status),
    /// The client's request body was bad or too slow: its status and message.
    Client(u16, String),
    /// The client went away.
    Gone,
}

/// An HTTP target.
async fn forward(
    shard: &Rc<Shard>,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    m: &Match,
    peer: Peer,
    trace: &TraceContext,
) -> KeepGoing {
    let ep = m.endpoint();
    let count = |s| shard.metrics.proxy.count(&head.method_str, Some(m), s);
    if !matches!(
        head.method,
        Method::Get
            | Method::Post
            | Method::Put
            | Method::Patch
            | Method::Delete
            | Method::Head
            | Method::Options
    ) {
        count(Status::BadRequest);
        return answer_early(
            shard,
            client,
            buf,
            head,
            Resp::text(405, "Method not allowed."),
        )
        .await;
    }
    let max_body = shard.cfg().tuning.proxy.max_request_body_bytes;
    if let BodyKind::Length(n) = head.body {
        if n > max_body {
            count(Status::BadRequest);
            let r = Resp::text(413, format!("request body larger than {max_body} bytes"));
            let _ = write_resp(shard, client, r, false, false).await;
            return false;
        }
    }
    let mut parking = (ep.response_from != ResponseFrom::Http).then(|| shard.park());
    let correlation = parking.as_ref().map(Parking::token);
    let gateway_ip = shard.cfg().proxy.host_ip.unwrap_or(peer.local.ip());
    let hop = Hop {
        client_ip: peer.ip,
        gateway_ip,
        upstream: &m.api.upstream,
        add_headers: ep.transform_headers.then_some(m.api.add_headers.as_slice()),
        trace,
    };
    let target = forward::upstream_target(&m.path, head.query.as_deref(), correlation.as_deref());
    let framing = forward::request_framing(head.body, &head.method_str);
    let req_head = forward::upstream_head(&head.method_str, &target, &head.headers, &hop, framing);
    let started = Instant::now();
    let exchanged = exchange(shard, client, buf, head, m, &req_head).await;
    let (mut conn, resp) = match exchanged {
        Ok(x) => x,
        Err(Failed::Gone) => return false,
        Err(Failed::Client(status, msg)) => {
            count(Status::BadRequest);
            let _ = write_resp(shard, client, Resp::text(status, msg), false, false).await;
            return false;
        }
        Err(Failed::Upstream(why, status)) => {
            count(status);
            shard.metrics.proxy.upstream_failed();
            warn_upstream(&m.api.meta.id, &m.api.upstream.authority(), &why);
            let r = Resp::text(502, "Bad gateway.");
            return write_resp(shard, client, r, head.keep_alive, false).await && head.keep_alive;
        }
    };
    shard.metrics.proxy.observe_upstream(started.elapsed());

    if let Some(p) = parking.as_mut() {
        // RIG: upstream 202 means "the answer comes later"; anything else is the answer.
        if resp.status == 202 {
            let drained = drain(shard, &mut conn, &resp).await;
            if drained && resp.keep_alive {
                shard.upstreams.checkin(shard, conn);
            }
            let waited = p.wait(response_timeout(shard, ep.response_from)).await;
            let cors = rig_cors(shard, "content-type");
            return answer_reply(shard, client, head, m, waited, trace, cors, head.keep_alive)
                .await;
        }
    }
    drop(parking);
    count(Status::Ok);
    shard.metrics.response(Listener::Inbound, resp.status);
    let mut out = shard.upstreams.lend_out();
    let (body, keep) = forward::client_head(
        &mut out,
        &resp,
        head.keep_alive,
        head.version_minor == 1,
        &[],
    );
    let relayed = relay(shard, client, &mut conn, &resp, &mut out, body).await;
    shard.upstreams.return_out(out);
    match relayed {
        Relayed::Whole => {
            if resp.keep_alive {
                shard.upstreams.checkin(shard, conn);
            }
            keep
        }
        Relayed::Closed => keep,
        Relayed::Broken => false,
    }
}

/// Sends the request (head and body) and reads the response head. A reused connection that
/// fails before any response byte, for a request without a body, is retried once on a new
/// connection: the upstream may have closed it while it sat idle. What the upstream sent after
/// the head is left in the connection's `inbuf`.
async fn exchange(
    shard: &Rc<Shard>,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    m: &Match,
    req_head: &[u8],
) -> Result<(Conn, ResponseHead), Failed> {
    let recv_timeout = shard.cfg().proxy.recv_timeout;
    let mut sent_continue = false;
    for attempt in 0..2 {
        let mut conn = shard
            .upstreams
            .checkout(shard, &m.api.upstream, recv_timeout)
            .await
            .map_err(|e: ConnectError| {
                let status = match e {
                    ConnectError::Timeout { .. } => Status::RequestTimeout,
                    _ => Status::Unreachable,
                };
                Failed::Upstream(e.to_string(), status)
            })?;
        let retryable = conn.reused && head.body == BodyKind::None && attempt == 0;
        if conn.io.write_all(req_head).await.is_err() {
            if retryable {
                continue;
            }
            return Err(Failed::Upstream("write failed".into(), Status::Unreachable));
        }
        if head.body != BodyKind::None {
            if head.expect_continue && !sent_continue {
                sent_continue = true;
                if !write_within(shard, client, http1::CONTINUE_100).await {
                    return Err(Failed::Gone);
                }
            }
            send_body(shard, client, buf, head, &mut conn).await?;
        }
        match read_head(shard, client, &mut conn, head.method == Method::Head).await {
            Ok(resp) => return Ok((conn, resp)),
            Err(HeadErr::Silent) if retryable => continue,
            Err(HeadErr::Silent) => {
                return Err(Failed::Upstream(
                    "connection closed before a response".into(),
                    Status::Unreachable,
                ))
            }
            Err(HeadErr::Timeout) => {
                return Err(Failed::Upstream(
                    format!("no response within {} ms", recv_timeout.as_millis()),
                    Status::RequestTimeout,
                ))
            }
            Err(HeadErr::Bad(e)) => return Err(Failed::Upstream(e, Status::Unreachable)),
            Err(HeadErr::ClientGone) => return Err(Failed::Gone),
        }
    }
    Err(Failed::Upstream(
        "connection closed before a response".into(),
        Status::Unreachable,
    ))
}

/// Streams the client's request body to the upstream as it arrives: a length as is, chunked
/// re-framed chunk by chunk (decoded and encoded again, so no framing the client invents
/// reaches the upstream). The whole body must arrive within `http.body_timeout_ms`.
async fn send_body(
    shard: &Shard,
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    conn: &mut Conn,
) -> Result<(), Failed> {
    let tuning = &shard.cfg().tuning;
    let deadline = Instant::now() + Duration::from_millis(tuning.http.body_timeout_ms);
    let chunk = tuning.proxy.buffer_bytes;
    let upstream_err = |_| Failed::Upstream("write failed".into(), Status::Unreachable);
    match head.body {
        BodyKind::None => Ok(()),
        BodyKind::Length(n) => {
            let mut left = n;
            while left > 0 {
                if buf.is_empty() {
                    read_client(client, buf, chunk, deadline, tuning.http.body_timeout_ms).await?;
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                conn.io
                    .write_all(&buf[..take])
                    .await
                    .map_err(upstream_err)?;
                buf.drain(..take);
                left -= take as u64;
            }
            Ok(())
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new(
                usize::try_from(tuning.proxy.max_request_body_bytes).unwrap_or(usize::MAX),
            );
            let mut piece = Vec::with_capacity(chunk);
            loop {
                piece.clear();
                let (used, done) = decoder
                    .feed(buf, &mut piece)
                    .map_err(|e| Failed::Client(e.status(), e.to_string()))?;
                buf.drain(..used);
                if !piece.is_empty() {
                    let mut framed = Vec::with_capacity(piece.len() + 16);
                    http1::push_chunk(&mut framed, &piece);
                    conn.io.write_all(&framed).await.map_err(upstream_err)?;
                }
                if done {
                    conn.io
                        .write_all(http1::LAST_CHUNK)
                        .await
                        .map_err(upstream_err)?;
                    return Ok(());
                }
                read_client(client, buf, chunk, deadline, tuning.http.body_timeout_ms).await?;
            }
        }
    }
}

async fn read_client(
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    chunk: usize,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<(), Failed> {
    let within = deadline.saturating_duration_since(Instant::now());
    match super::read_more(client, buf, buf.len() + chunk, within).await {
        Ok(()) => Ok(()),
        Err(ReadErr::Timeout) => Err(Failed::Client(
            408,
            format!("request body not received within {timeout_ms} ms"),
        )),
        Err(_) => Err(Failed::Gone),
    }
}

enum HeadErr {
    /// Closed or reset before any byte of a response.
    Silent,
    Timeout,
    Bad(String),
    ClientGone,
}

/// Reads the upstream's response head (skipping interim 1xx heads). While waiting, a client
/// that closes its connection ends the wait: its upstream connection is dropped, not kept
/// busy for an answer nobody reads. (The client is watched with a peek, so a pipelined
/// request it sends meanwhile stays in the socket.)
async fn read_head(
    shard: &Shard,
    client: &ClientStream,
    conn: &mut Conn,
    head_request: bool,
) -> Result<ResponseHead, HeadErr> {
    let cfg = shard.cfg();
    let limits = ResponseLimits {
        max_head_bytes: cfg.tuning.proxy.max_response_head_bytes,
        max_headers: cfg.tuning.http.max_headers.max(100),
    };
    let recv_timeout = cfg.proxy.recv_timeout;
    let mut seen_any = false;
    loop {
        match client_proto::parse_response_head(conn.inbuf.filled(), &limits, head_request) {
            Ok(Some((resp, n))) => {
                conn.inbuf.consume(n);
                if (100..200).contains(&resp.status) {
                    if resp.status == 101 {
                        return Err(HeadErr::Bad(
                            "101 Switching Protocols to a request that asked for no upgrade".into(),
                        ));
                    }
                    continue;
                }
                return Ok(resp);
            }
            Ok(None) => {}
            Err(e) => return Err(HeadErr::Bad(e.to_string())),
        }
        let (io, inbuf) = (&mut conn.io, &mut conn.inbuf);
        // One more byte than the head may take, so that an oversized head is told apart.
        let room = inbuf.room(limits.max_head_bytes + 1);
        enum Ev {
            Read(std::io::Result<usize>),
            Timeout,
            ClientGone,
        }
        let ev = future::or(async { Ev::Read(io.read(room).await) }, async {
            // Most upstreams answer within this; watching the client costs a registration
            // and its removal, so it starts only after. One timer, not two, per request.
            crate::runtime::rt::sleep(CLIENT_WATCH_AFTER.min(recv_timeout)).await;
            let mut b = [0u8; 1];
            let watch = async {
                match client.tcp().peek(&mut b).await {
                    Ok(0) | Err(_) => Ev::ClientGone,
                    // A pipelined request: stop watching (it stays in the socket).
                    Ok(_) => future::pending::<Ev>().await,
                }
            };
            let rest = recv_timeout.saturating_sub(CLIENT_WATCH_AFTER);
            crate::runtime::rt::timeout(rest, watch)
                .await
                .unwrap_or(Ev::Timeout)
        })
        .await;
        match ev {
            Ev::Read(Ok(0)) | Ev::Read(Err(_)) => {
                return Err(if seen_any || !conn.inbuf.is_empty() {
                    HeadErr::Bad("connection closed inside the response head".into())
                } else {
                    HeadErr::Silent
                });
            }
            Ev::Read(Ok(n)) => {
                conn.inbuf.filled_by(n);
                seen_any = true;
            }
            Ev::Timeout => return Err(HeadErr::Timeout),
            Ev::ClientGone => return Err(HeadErr::ClientGone),
        }
    }
}

enum Relayed {
    /// The body went through whole; the upstream connection can carry another request.
    Whole,
    /// The body went through whole and ended with the upstream's close.
    Closed,
    /// Either side failed or closed mid-body.
    Broken,
}

/// Streams the response body from the upstream to the client, re-framed for the client. The
/// head goes out with the first body bytes already read (one write, not two: on loopback a
/// send costs about as much as the rest of a proxied request).
async fn relay(
    shard: &Shard,
    client: &mut ClientStream,
    conn: &mut Conn,
    resp: &ResponseHead,
    out: &mut Vec<u8>,
    body: ClientBody,
) -> Relayed {
    let recv_timeout = shard.cfg().proxy.recv_timeout;
    let mut decoder = BodyDecoder::new(if body == ClientBody::None {
        ResponseBody::None
    } else {
        resp.body
    });
    // The head goes out with the first body bytes; a body framed as it came (length, or
    // until close) is decoded straight into the output, a re-chunked one through `piece`.
    out.reserve(conn.inbuf.filled().len() + 16);
    let mut piece = Vec::new();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            out.clear();
        }
        let fed = if body == ClientBody::Chunked {
            piece.clear();
            decoder.feed(conn.inbuf.filled(), &mut piece)
        } else {
            decoder.feed(conn.inbuf.filled(), out)
        };
        let (used, done) = match fed {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "upstream response body malformed (whose fault: upstream)");
                return Relayed::Broken;
            }
        };
        conn.inbuf.consume(used);
        if body == ClientBody::Chunked {
            http1::push_chunk(out, &piece);
            if done {
                out.extend_from_slice(http1::LAST_CHUNK);
            }
        }
        if !out.is_empty() && !write_within(shard, client, out).await {
            return Relayed::Broken;
        }
        if done {
            return Relayed::Whole;
        }
        let room = conn.inbuf.room(0);
        let read = crate::runtime::rt::timeout(recv_timeout, conn.io.read(room)).await;
        match read {
            Some(Ok(0)) => {
                // The end of a close-delimited body; anything else is a truncated one.
                if decoder.eof().is_err() {
                    return Relayed::Broken;
                }
                if body == ClientBody::Chunked {
                    let _ = write_within(shard, client, http1::LAST_CHUNK).await;
                }
                // The client has its whole response; the upstream connection is closed.
                return Relayed::Closed;
            }
            Some(Ok(n)) => conn.inbuf.filled_by(n),
            Some(Err(_)) | None => return Relayed::Broken,
        }
    }
}

/// Reads and drops a (202) response body before the connection goes back to the pool; false
/// when it is too large or slow to bother (the connection is closed instead).
async fn drain(shard: &Shard, conn: &mut Conn, resp: &ResponseHead) -> bool {
    const MAX_DRAIN: usize = 64 * 1024;
    let recv_timeout = shard.cfg().proxy.recv_timeout;
    let mut decoder = BodyDecoder::new(resp.body);
    let mut sink = Vec::new();
    let mut total = 0;
    loop {
        sink.clear();
        let Ok((used, done)) = decoder.feed(conn.inbuf.filled(), &mut sink) else {
            return false;
        };
        conn.inbuf.consume(used);
        total += sink.len();
        if done {
            return true;
        }
        if total > MAX_DRAIN || matches!(decoder, BodyDecoder::UntilClose) {
            return false;
        }
        let room = conn.inbuf.room(0);
        let read = crate::runtime::rt::timeout(recv_timeout, conn.io.read(room)).await;
        match read {
            Some(Ok(n)) if n > 0 => conn.inbuf.filled_by(n),
            _ => return false,
        }
    }
}
