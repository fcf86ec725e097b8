//! The Kafka adapter on the island: connects (TLS, SASL), discovers source topics (names and
//! regular expressions, re-checked every `CB_KAFKA_TOPIC_REFRESH_MS` so topics created later
//! are picked up), runs one consumer task per partition and serves produce requests.
//!
//! Every node reads every partition of its source topics itself (no consumer group): each node
//! must deliver every event to its own subscribers, so no client misses an event because
//! another node read the partition. Offsets are not committed; a node starts at the latest
//! offset (or the earliest, `CB_KAFKA_START_OFFSET`) and, across broker outages, resumes each
//! partition where it stopped.

mod consumer;
pub(crate) mod group;
mod oauth;
mod producer;
mod registry;
mod replay;

use super::ProduceJob;
use crate::config::kafka::{KafkaConfig, Sasl};
use crate::config::Config;
use crate::metrics::island::IslandMetrics;
use crate::route::Control;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A broker call that failed, or was not answered in time.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Broker(#[from] KafkaError),
    #[error("no answer within {0} ms")]
    Timeout(u128),
}

/// `call`, given up after `limit`: rskafka sets no timeout of its own, so a broker behind a
/// network that drops packets (nothing refused) would hold the call for the 15 minutes the
/// kernel takes to give the TCP connection up.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, KafkaError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CallError::Timeout(limit.as_millis())),
    }
}

/// The island's Kafka client, replaced when a call on it goes unanswered. rskafka never gives
/// a silent connection up (one that drops packets without refusing or resetting), so its
/// metadata connection would then hang every lookup until the kernel drops it, about 15
/// minutes later; whoever sees a call time out asks for a new client, and every task takes the
/// current one for each call.
pub(crate) struct SharedClient {
    current: std::sync::Mutex<Arc<Client>>,
    renewing: tokio::sync::Mutex<()>,
    tokens: Option<Arc<oauth::TokenSource>>,
}

impl SharedClient {
    pub fn get(&self) -> Arc<Client> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connects a new client in place of `broken`, unless another task already did.
    pub async fn renew(&self, kafka: &KafkaConfig, metrics: &IslandMetrics, broken: &Arc<Client>) {
        let _one_at_a_time = self.renewing.lock().await;
        if !Arc::ptr_eq(&self.get(), broken) {
            return;
        }
        match connect(kafka, self.tokens.as_ref()).await {
            Ok(c) => {
                tracing::info!("a Kafka call went unanswered: connected a new Kafka client");
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
            }
            Err(e) => {
                metrics.connect_failures.inc();
                tracing::warn!(error = %e, "a Kafka call went unanswered and no new client could be connected (whose fault: broker or network); trying again at the next failure");
            }
        }
    }
}

/// Everything the island's tasks share (all on the island thread).
pub(crate) struct Ctx {
    pub client: SharedClient,
    pub cfg: Arc<Config>,
    pub kafka: KafkaConfig,
    pub shards: Vec<async_channel::Sender<Control>>,
    /// Which shards want which events: a batch goes only to shards with a taker.
    pub interest: Arc<crate::route::interest::Interest>,
    pub metrics: Arc<IslandMetrics>,
    /// This process's node id (correlation tokens name it).
    pub node: u32,
    pub positions: Arc<super::Positions>,
    pub recent: Arc<super::Recent>,
    /// The schema registry, for Avro records (`KAFKA_SCHEMA_REGISTRY_HOST`).
    pub registry: Option<registry::Registry>,
}

/// How long one broker call may retry internally before it reports an error to us; our own
/// loops then log, back off and try again, so an outage never ends a task.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no Kafka client could be built (the broker's side, or the network).
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Refused(#[from] rskafka::client::error::Error),
    #[error("no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error("OAUTHBEARER configured but no token source was built")]
    NoTokenSource,
}

async fn connect(
    k: &KafkaConfig,
    tokens: Option<&Arc<oauth::TokenSource>>,
) -> Result<Client, ConnectError> {
    let mut b = ClientBuilder::new(k.brokers.clone())
        .client_id(k.client_id.clone())
        // Room for one record of the configured maximum plus its batch, so an oversized record
        // can still be read, counted and skipped instead of wedging the partition.
        .max_message_size(k.message_max_bytes.saturating_mul(2).max(8 << 20))
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(CALL_DEADLINE),
        });
    if let Some(t) = &k.tls {
        b = b.tls_config(t.client.clone());
    }
    if let Some(s) = &k.sasl {
        b = b.sasl_config(match s.clone() {
            Sasl::Plain { user, pass } => SaslConfig::Plain(Credentials::new(user, pass)),
            Sasl::ScramSha256 { user, pass } => {
                SaslConfig::ScramSha256(Credentials::new(user, pass))
            }
            Sasl::ScramSha512 { user, pass } => {
                SaslConfig::ScramSha512(Credentials::new(user, pass))
            }
            Sasl::OauthBearer { .. } => match tokens {
                Some(t) => SaslConfig::Oauthbearer(t.credentials()),
                None => return Err(ConnectError::NoTokenSource),
            },
        });
    }
    // The builder retries forever against a dead broker: bound it.
    match tokio::time::timeout(CONNECT_TIMEOUT, b.build()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// What the island starts with.
pub(crate) struct Start {
    pub node: u32,
    pub cfg: Arc<Config>,
    pub kafka: KafkaConfig,
    pub shards: Vec<async_channel::Sender<Control>>,
    pub interest: Arc<crate::route::interest::Interest>,
    pub jobs: async_channel::Receiver<ProduceJob>,
    pub replays: async_channel::Receiver<super::ReplayJob>,
    pub metrics: Arc<IslandMetrics>,
    pub positions: Arc<super::Positions>,
    pub recent: Arc<super::Recent>,
}

pub(crate) async fn run(start: Start) {
    let Start {
        node,
        cfg,
        kafka,
        shards,
        interest,
        jobs,
        replays,
        metrics,
        positions,
        recent,
    } = start;
    let brokers = kafka.brokers.join(",");
    let mut backoff = Duration::from_millis(500);
    let tokens = match &kafka.sasl {
        Some(Sasl::OauthBearer {
            client_id,
            client_secret,
            token_url,
        }) => match oauth::TokenSource::new(client_id, client_secret, token_url) {
            Ok(t) => {
                tokio::spawn(t.clone().refresh_forever(kafka.auth_retry));
                Some(t)
            }
            Err(e) => {
                tracing::error!(error = %e, "Kafka OAUTHBEARER unavailable; Kafka stays off");
                positions.listed();
                return;
            }
        },
        _ => None,
    };
    let client = loop {
        match connect(&kafka, tokens.as_ref()).await {
            Ok(c) => break Arc::new(c),
            Err(e) => {
                metrics.connect_failures.inc();
                metrics.broker_lost();
                // Resumes would wait for partitions that cannot be listed.
                positions.listed();
                tracing::warn!(brokers = %brokers, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach Kafka (whose fault: broker or network); serving connected clients meanwhile");
                // Publishes fail fast with 503 while there is no client at all.
                while let Ok(job) = jobs.try_recv() {
                    metrics.produce_unavailable.inc();
                    let (_, reply) = job.split();
                    reply.send(Err(super::ProduceError::Unavailable(format!(
                        "{brokers}: {e}"
                    ))));
                }
                // Resumes too: the connection then starts live, after a gap event.
                while let Ok(job) = replays.try_recv() {
                    let (_, reply) = job.split();
                    reply.send(Err(super::ProduceError::Unavailable(format!(
                        "{brokers}: {e}"
                    ))));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(kafka.auth_retry.max(Duration::from_millis(500)));
            }
        }
    };
    metrics.up.set(1);
    tracing::info!(brokers = %brokers, "connected to Kafka");
    if let Some(why) = &kafka.flowx {
        tracing::info!(reason = %why, groups = kafka.groups.len(),
            "FlowX profile: FlowX's topics, consumer groups and record mappings are read");
    }
    let registry = kafka.schema_registry.as_deref().and_then(|base| {
        registry::Registry::new(base)
            .map_err(|e| tracing::warn!(error = %e, "Avro records cannot be read"))
            .ok()
    });
    let ctx = Arc::new(Ctx {
        client: SharedClient {
            current: std::sync::Mutex::new(client),
            renewing: tokio::sync::Mutex::new(()),
            tokens,
        },
        registry,
        cfg,
        kafka,
        shards,
        interest,
        metrics,
        node,
        positions,
        recent,
    });
    tokio::spawn(producer::serve(ctx.clone(), jobs));
    tokio::spawn(replay::serve(ctx.clone(), replays));
    group::start(&ctx);
    discover(ctx).await;
}

/// Re-lists topics periodically and starts a consumer for every new partition of a source.
async fn discover(ctx: Arc<Ctx>) {
    let mut running: HashSet<(String, i32)> = HashSet::new();
    let mut logged_missing = false;
    // A partition that appears after the first listing was created while this node ran: all
    // of its records are news, so it is read from its start whatever `CB_KAFKA_START_OFFSET`
    // says (with `latest`, what was written before the next listing found it was lost).
    let mut listed_once = false;
    loop {
        let client = ctx.client.get();
        match bounded(ctx.kafka.request_timeout, client.list_topics()).await {
            Ok(topics) => {
                let matched = topics
                    .iter()
                    .filter(|t| ctx.kafka.is_source(&t.name))
                    .count();
                for t in topics.iter().filter(|t| ctx.kafka.consumes(&t.name)) {
                    let tracked =
                        consumer::tracks(&ctx.kafka, &t.name).then(|| Arc::from(t.name.as_str()));
                    for &p in &t.partitions {
                        if running.insert((t.name.clone(), p)) {
                            // Made before the consumer runs, so that resumes see the partition
                            // as pending once the listing is done (`Positions::settling`).
                            if let Some(topic) = &tracked {
                                ctx.positions.slot(topic, p);
                            }
                            tracing::info!(topic = %t.name, partition = p, "consuming");
                            tokio::spawn(consumer::run(
                                ctx.clone(),
                                t.name.clone(),
                                p,
                                listed_once,
                            ));
                        }
                    }
                }
                listed_once = true;
                ctx.positions.listed();
                if matched == 0 && !logged_missing {
                    let wanted: Vec<&str> = ctx.kafka.sources.iter().map(|s| s.as_str()).collect();
                    tracing::warn!(sources = ?wanted, "no Kafka topic matches the source topics yet; checking again periodically");
                    logged_missing = true;
                }
            }
            Err(e) => {
                ctx.metrics.broker_lost();
                ctx.positions.listed();
                tracing::warn!(error = %e, "listing Kafka topics failed (whose fault: broker or network)");
                if matches!(e, CallError::Timeout(_)) {
                    ctx.client.renew(&ctx.kafka, &ctx.metrics, &client).await;
                }
            }
        }
        tokio::time::sleep(ctx.kafka.topic_refresh).await;
    }
}
