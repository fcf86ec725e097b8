//! NATS on an island thread of its own: RIG's NATS event source (`NATS_SERVERS`,
//! `NATS_SOURCE_TOPICS`) and the API gateway's `target: nats` (publish, or request-reply with
//! `response_from: nats`).
//!
//! ```text
//! connect (in the background, retried for ever) ─> subscribe each subject
//!   subscription task: message ─> decode (a structured CloudEvent, or binary mode with ce_
//!   headers, as a Kafka record) ─> shards that want it
//! proxy job: publish + flush (202 once written to the server's connection, or queued in the
//!   client while it reconnects) | request ─> reply (or 504)
//! ```
//!
//! RIG subscribed in a queue group (`NATSTOFILTER_QUEUE_GROUP`), so each message reached one
//! RIG node, which forwarded it over its Erlang cluster. Corebridge nodes share nothing, so
//! every node subscribes without a group and delivers to its own clients: the same events
//! reach the same clients. NATS core keeps nothing: messages published while this node is
//! disconnected never reach it (`corebridge_nats_up` is 0 meanwhile), and a client resuming
//! from a NATS event's id gets a gap event.

use crate::config::nats::NatsConfig;
use crate::config::Config;
use crate::metrics::nats::NatsMetrics;
use crate::proto::kafka_record::{self, RecordView};
use crate::route::{Control, Event};
use crate::runtime::island::{self, Handle, Job};
use futures_lite::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// At most this many messages that are already there go to the shards in one batch.
const BATCH: usize = 256;
/// Messages the client keeps per subscription while the shards are behind; beyond it NATS's
/// client drops them and says so (`corebridge_nats_slow_consumer_total`). async-nats's own
/// default (65,536 messages of up to the server's max_payload, 1 MiB) would let a publisher
/// fill gigabytes.
const SUBSCRIPTION_BUFFER: usize = 4 * BATCH;
/// How long a publish may wait for the client to take it, and then to write it: a request
/// never hangs until NATS is back (see `send`).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A message for the proxy's `target: nats`.
#[derive(Debug)]
pub struct NatsRequest {
    pub subject: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// Some: a request; the answer is the first reply within this time.
    pub reply_within: Option<Duration>,
}

/// The reply to a request, or nothing for a publish.
#[derive(Debug)]
pub struct NatsReply {
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    /// Not connected, or the server did not confirm: the client may retry (503).
    #[error("NATS is unreachable: {0}")]
    Unavailable(String),
    /// Nobody subscribes to the subject (502: a deployment problem, not the client's).
    #[error("no NATS subscriber answers on {0:?}")]
    NoResponders(String),
    /// The subscriber did not answer in time (504).
    #[error("no NATS reply within {0:?}")]
    TimedOut(Duration),
    /// NATS refused the message (a bad subject): 502.
    #[error("NATS refused the message: {0}")]
    Rejected(String),
    /// Larger than the server's max_payload: the client's (413).
    #[error("the message is larger than the NATS server takes ({0})")]
    TooLarge(String),
    /// A header the request's event made that NATS cannot carry (a line break in a value):
    /// the client's (400).
    #[error("{0}")]
    Invalid(String),
}

pub type NatsAnswer = Result<Option<NatsReply>, NatsError>;

/// What shards hold of the NATS island.
#[derive(Clone)]
pub struct NatsHandle {
    jobs: Handle<NatsRequest, NatsAnswer>,
}

impl NatsHandle {
    pub async fn send(&self, req: NatsRequest) -> NatsAnswer {
        self.jobs
            .call(req)
            .await
            .unwrap_or_else(|e| Err(NatsError::Unavailable(e.to_string())))
    }
}

/// Starts the NATS island when `NATS_SERVERS` is set.
pub fn start(
    cfg: Arc<Config>,
    shards: Vec<async_channel::Sender<Control>>,
    interest: Arc<crate::route::interest::Interest>,
    metrics: Arc<NatsMetrics>,
) -> Option<NatsHandle> {
    let nats = cfg.nats.clone()?;
    let jobs = island::spawn("cb-nats", 1024, move |jobs| {
        run(cfg, nats, shards, interest, jobs, metrics)
    });
    Some(NatsHandle { jobs })
}

async fn run(
    cfg: Arc<Config>,
    nats: NatsConfig,
    shards: Vec<async_channel::Sender<Control>>,
    interest: Arc<crate::route::interest::Interest>,
    jobs: async_channel::Receiver<Job<NatsRequest, NatsAnswer>>,
    metrics: Arc<NatsMetrics>,
) {
    if let Some(g) = nats.queue_group.as_deref() {
        tracing::info!(queue_group = %g, "NATSTOFILTER_QUEUE_GROUP is not used: every node reads every NATS subject and delivers to its own clients");
    }
    let m = metrics.clone();
    let mut options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .subscription_capacity(SUBSCRIPTION_BUFFER)
        .name("corebridge")
        .event_callback(move |event| {
            let m = m.clone();
            async move {
                match event {
                    async_nats::Event::Connected => m.up.set(1),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => m.up.set(0),
                    async_nats::Event::SlowConsumer(_) => m.slow_consumer.inc(),
                    _ => {}
                }
            }
        });
    if let Some(ca) = &nats.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    // Addresses were checked at start-up.
    let servers: Vec<async_nats::ServerAddr> =
        nats.servers.iter().filter_map(|s| s.parse().ok()).collect();
    let client = match options.connect(servers).await {
        Ok(c) => c,
        Err(e) => {
            // Only a bad option gets here (connecting is retried in the background).
            tracing::error!(error = %e, "cannot start the NATS client (whose fault: the configuration)");
            return;
        }
    };
    let seq = Arc::new(AtomicU64::new(0));
    for subject in &nats.subjects {
        let sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(subject = %subject, error = %e, "cannot subscribe to the NATS subject");
                continue;
            }
        };
        tracing::info!(subject = %subject, "consuming NATS subject");
        let reader = Reader {
            cfg: cfg.clone(),
            stats: metrics.subject(subject),
            shards: shards.clone(),
            interest: interest.clone(),
            seq: seq.clone(),
            bad: crate::broker::RateLimitedLog::default(),
        };
        tokio::spawn(reader.read(sub));
    }
    while let Ok(job) = jobs.recv().await {
        let (client, metrics) = (client.clone(), metrics.clone());
        tokio::spawn(async move {
            let (req, reply) = job.split();
            let answer = send(&client, req).await;
            // Published: it went out, answered or not (no reply, nobody subscribed).
            match &answer {
                Ok(_) | Err(NatsError::TimedOut(_) | NatsError::NoResponders(_)) => {
                    metrics.published_ok.inc()
                }
                Err(_) => metrics.published_failed.inc(),
            }
            reply.send(answer);
        });
    }
}

/// Publishes (confirmed by a flush) or requests.
async fn send(client: &async_nats::Client, req: NatsRequest) -> NatsAnswer {
    use async_nats::RequestErrorKind;
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err(NatsError::Unavailable("not connected".into()));
    }
    // The values come from the client's event (its content type): checked, never a panic
    // inside the NATS client.
    let mut headers = async_nats::HeaderMap::new();
    for (n, v) in &req.headers {
        let name = n.parse::<async_nats::HeaderName>();
        let value = std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<async_nats::HeaderValue>().ok());
        match (name, value) {
            (Ok(name), Some(value)) => headers.append(name, value),
            _ => {
                return Err(NatsError::Invalid(format!(
                    "the {n} header cannot be carried by NATS (a line break or a byte that is \
                     not text)"
                )))
            }
        }
    }
    let payload = bytes::Bytes::from(req.payload);
    let Some(within) = req.reply_within else {
        // NATS core acknowledges nothing: the answer is 202 once the message is written to
        // the server's connection. Not taken into the client's queue in time: 503, and it
        // is not sent (a retry makes no duplicate). Taken but not written in time (the
        // connection dropped just now): 202 all the same, since the client writes it when
        // it is back, and a 503 would invite a duplicate.
        let queued = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            client.publish_with_headers(req.subject, headers, payload),
        )
        .await
        .map_err(|_| NatsError::Unavailable(format!("not taken within {PUBLISH_TIMEOUT:?}")))?;
        queued.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                NatsError::TooLarge(e.to_string())
            }
            async_nats::client::PublishErrorKind::InvalidSubject => {
                NatsError::Rejected(e.to_string())
            }
            _ => NatsError::Unavailable(e.to_string()),
        })?;
        return match tokio::time::timeout(PUBLISH_TIMEOUT, client.flush()).await {
            Ok(Err(e)) => Err(NatsError::Unavailable(e.to_string())),
            Ok(Ok(())) | Err(_) => Ok(None),
        };
    };
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(within));
    let subject = req.subject.clone();
    match client.send_request(req.subject, request).await {
        Ok(msg) => Ok(Some(NatsReply {
            // Names as sent: `proxy::reply::from_nats` lower-cases them with its filtering.
            headers: header_pairs(msg.headers.as_ref()),
            payload: msg.payload.to_vec(),
        })),
        Err(e) => Err(match e.kind() {
            RequestErrorKind::TimedOut => NatsError::TimedOut(within),
            RequestErrorKind::NoResponders => NatsError::NoResponders(subject),
            RequestErrorKind::MaxPayloadExceeded => NatsError::TooLarge(e.to_string()),
            RequestErrorKind::InvalidSubject => NatsError::Rejected(e.to_string()),
            _ => NatsError::Unavailable(e.to_string()),
        }),
    }
}

/// A message's headers as (name as sent, value) pairs, one per value.
fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(n, vs)| vs.iter().map(move |v| (n.to_string(), v.as_str().into())))
        .collect()
}

/// One subscription's reader.
struct Reader {
    cfg: Arc<Config>,
    stats: Arc<crate::metrics::nats::SubjectStats>,
    shards: Vec<async_channel::Sender<Control>>,
    interest: Arc<crate::route::interest::Interest>,
    /// Numbers the events' ids on this node (NATS messages have none).
    seq: Arc<AtomicU64>,
    bad: crate::broker::RateLimitedLog,
}

impl Reader {
    async fn read(mut self, mut sub: async_nats::Subscriber) {
        while let Some(first) = sub.next().await {
            let mut events = Vec::new();
            self.decode(first, &mut events);
            // What has arrived meanwhile goes in the same batch (one queue send per shard).
            while events.len() < BATCH {
                match futures_lite::future::poll_once(sub.next()).await {
                    Some(Some(m)) => self.decode(m, &mut events),
                    _ => break,
                }
            }
            if !crate::broker::fan_out(&self.shards, &self.interest, events, || {}).await {
                return; // shutting down
            }
        }
    }

    fn decode(&mut self, msg: async_nats::Message, events: &mut Vec<Arc<Event>>) {
        // Binary mode: the CloudEvents NATS binding and its SDKs write `ce-` headers, RIG's
        // Kafka habit is `ce_`; the decoder reads `ce_`.
        let mut headers = header_pairs(msg.headers.as_ref());
        for (n, _) in &mut headers {
            if n.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ce-")) {
                n.replace_range(..3, "ce_");
            }
        }
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let view = RecordView {
            topic: msg.subject.as_str(),
            partition: 0,
            offset: 0,
            key: None,
            value: Some(&msg.payload),
            headers: &headers,
            timestamp_ms: 0,
        };
        match kafka_record::decode(&view, None) {
            Ok(ce) => {
                self.stats.received.inc();
                // Not a resume position (`proto::resume` refuses it): NATS keeps nothing.
                let id = format!("nats-{}", self.seq.fetch_add(1, Ordering::Relaxed));
                events.push(Arc::new(Event::from_cloudevent(
                    &ce,
                    id,
                    &self.cfg.extractors,
                )));
            }
            Err(e) => {
                self.stats.failed.inc();
                if let Some(n) = self.bad.allow() {
                    tracing::warn!(subject = %msg.subject, error = %e, suppressed = n,
                        "NATS message skipped (whose fault: the publisher)");
                }
            }
        }
    }
}
