//! The optional Redis replay store (`CB_REDIS_URL` or FlowX's `SPRING_DATA_REDIS_*`): events
//! published without a broker are also kept in Redis, so a client that reconnects to ANY node
//! with `Last-Event-ID` gets what it missed, not only on the node that had them in its ring.
//!
//! ```text
//! publish ─> shard: ring + position ─> [bounded queue] ─> cb-redis island: one pipeline per
//!            batch: XADD <prefix><routing key> MAXLEN ~ N * p <topic/partition/offset> t <ms>
//!            e <event JSON>; EXPIRE <key> <ttl>
//! resume on another node ─> the keys of the connection's subscriptions ─> XREVRANGE each ─>
//!            entries of the partitions the client's id names, at or after its position
//! ```
//! Routing keys: the event type (`<type>`), and one per extracted field value
//! (`<type>#<field>=<JSON value>`): a subscription reads the type key when it matches every
//! event of the type, else one key per clause (its first constraint), so a per-user resume
//! reads only that user's events. Redis is never on the live path: a write that cannot be
//! made (Redis down, the queue full) is dropped and counted, and resume falls back to the
//! node's own ring (`corebridge_redis_up` 0, `corebridge_redis_write_failures_total`).

use crate::config::redis::{RedisConfig, RedisMode, RedisTls};
use crate::config::Config;
use crate::proto::resume::topic_hash;
use crate::route::subscription::Compiled;
use crate::route::{Event, Pos};
use crate::runtime::island::{self, Handle};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Events waiting to be written, at most; beyond, new ones are dropped (counted).
const WRITE_QUEUE: usize = 8192;
/// Events per pipeline at most.
const WRITE_BATCH: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// 1 while the last command succeeded.
    pub up: AtomicU64,
    pub written: AtomicU64,
    /// Events not kept: Redis unreachable, or the write queue full.
    pub write_failures: AtomicU64,
    pub read_failures: AtomicU64,
}

impl RedisMetrics {
    pub fn render(&self, o: &mut String) {
        use crate::metrics::names;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, v) in [
            (names::REDIS_UP, "gauge", g(&self.up)),
            (names::REDIS_WRITTEN, "counter", g(&self.written)),
            (
                names::REDIS_WRITE_FAILURES,
                "counter",
                g(&self.write_failures),
            ),
            (
                names::REDIS_READ_FAILURES,
                "counter",
                g(&self.read_failures),
            ),
        ] {
            let _ = writeln!(o, "# HELP {} {}", name.0, name.1);
            let _ = writeln!(o, "# TYPE {} {kind}", name.0);
            let _ = writeln!(o, "{} {v}", name.0);
        }
    }
}

/// What a resuming connection asks of the store.
#[derive(Debug)]
pub struct StoreRead {
    pub subs: Vec<Compiled>,
    /// (topic hash, partition) -> the first offset the client has not had. Only these
    /// partitions are read.
    pub from: BTreeMap<(u32, i32), i64>,
    pub max_events: usize,
    pub oldest_ms: i64,
}

#[derive(Debug, Default)]
pub struct StoreAnswer {
    /// Per partition in offset order, partitions merged by time.
    pub events: Vec<Arc<Event>>,
    /// Some events may be missing: a key held more than it keeps, or more than `max_events`.
    pub truncated: bool,
}

/// Why the replay store could not be used: always Redis's side or the network's (live
/// delivery never depends on it).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis unreachable: {0}")]
    Unreachable(#[source] redis::RedisError),
    #[error("Redis failed: {0}")]
    Failed(#[source] redis::RedisError),
    #[error("Redis answered what this gateway did not write: {0}")]
    Answer(#[source] redis::ParsingError),
    #[error("the Redis island is gone (shutting down)")]
    Gone,
}

/// What shards hold of the store.
#[derive(Clone)]
pub struct RedisStore {
    writes: async_channel::Sender<Arc<Event>>,
    reads: Handle<StoreRead, Result<StoreAnswer, StoreError>>,
    pub metrics: Arc<RedisMetrics>,
}

impl RedisStore {
    /// Queues `e` for writing; never waits (a full queue drops it, counted).
    pub fn keep(&self, e: Arc<Event>) {
        if self.writes.try_send(e).is_err() {
            self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub async fn read(&self, req: StoreRead) -> Result<StoreAnswer, StoreError> {
        self.reads.call(req).await.map_err(|_| StoreError::Gone)?
    }
}

pub fn start(cfg: Arc<Config>) -> Option<RedisStore> {
    let rc = cfg.redis.clone()?;
    tracing::info!(redis = %rc.describe(), "events published without a broker are kept in Redis for resuming");
    let metrics = Arc::new(RedisMetrics::default());
    let (writes, queued) = async_channel::bounded(WRITE_QUEUE);
    let m = metrics.clone();
    let reads = island::spawn("cb-redis", 256, move |jobs| async move {
        let store = Arc::new(Island {
            cfg: rc,
            extractors: cfg.extractors.clone(),
            conn: tokio::sync::Mutex::new(None),
            metrics: m,
        });
        tokio::spawn(write_loop(store.clone(), queued));
        while let Ok(job) = jobs.recv().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (req, reply) = job.split();
                let r = store.read(req).await;
                if r.is_err() {
                    store.metrics.read_failures.fetch_add(1, Ordering::Relaxed);
                }
                reply.send(r);
            });
        }
    });
    Some(RedisStore {
        writes,
        reads,
        metrics,
    })
}

#[derive(Clone)]
enum Conn {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn run(&mut self, p: &redis::Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::One(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }
}

struct Island {
    cfg: RedisConfig,
    extractors: crate::config::extractors::Extractors,
    /// None until connected, and again after a failure (the next use reconnects).
    conn: tokio::sync::Mutex<Option<Conn>>,
    metrics: Arc<RedisMetrics>,
}

/// The client's form of our TLS settings.
fn certificates(tls: &RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .identity
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.ca.clone(),
    }
}

async fn connect(cfg: &RedisConfig) -> redis::RedisResult<Conn> {
    // The client builds its rustls configuration from the process-wide provider: ring, as
    // for every other TLS client here.
    if cfg.tls.is_some() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let conf = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    match &cfg.mode {
        RedisMode::Standalone(url) => {
            let c = match &cfg.tls {
                Some(tls) => redis::Client::build_with_tls(url.as_str(), certificates(tls))?,
                None => redis::Client::open(url.as_str())?,
            };
            Ok(Conn::One(
                c.get_multiplexed_async_connection_with_config(&conf)
                    .await?,
            ))
        }
        RedisMode::Cluster(urls) => {
            let mut b = redis::cluster::ClusterClientBuilder::new(urls.clone())
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT);
            if let Some(tls) = &cfg.tls {
                b = b.certs(certificates(tls));
            }
            Ok(Conn::Cluster(b.build()?.get_async_connection().await?))
        }
        RedisMode::Sentinel {
            nodes,
            master,
            sentinel_password,
            user,
            password,
            db,
        } => {
            use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
            let addrs = nodes.iter().map(|(host, port)| match cfg.tls {
                Some(_) => redis::ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                },
                None => redis::ConnectionAddr::Tcp(host.clone(), *port),
            });
            let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                .set_client_to_redis_db(*db);
            if let Some(p) = sentinel_password {
                b = b.set_client_to_sentinel_password(p);
            }
            if let Some(u) = user {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = password {
                b = b.set_client_to_redis_password(p);
            }
            if let Some(tls) = &cfg.tls {
                b = b
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_certificates(certificates(tls))
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_redis_certificates(certificates(tls));
            }
            let mut c = b.build()?;
            Ok(Conn::One(c.get_async_connection_with_config(&conf).await?))
        }
    }
}

/// Commands grouped by the key they touch: a cluster takes one pipeline per key (a pipeline
/// may not cross hash slots), a single server one pipeline for all.
type Groups = Vec<Vec<redis::Cmd>>;

impl Island {
    /// Runs the commands, connecting first when needed; a failure drops the connection.
    /// Returns the answers of every command in order.
    async fn run(&self, groups: Groups) -> Result<Vec<Value>, StoreError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            match connect(&self.cfg).await {
                Ok(c) => *guard = Some(c),
                Err(e) => {
                    self.metrics.up.store(0, Ordering::Relaxed);
                    return Err(StoreError::Unreachable(e));
                }
            }
        }
        let conn = guard.clone().expect("connected above");
        drop(guard);
        let answers = match conn {
            Conn::One(_) => {
                let mut p = redis::pipe();
                for cmd in groups.into_iter().flatten() {
                    p.add_command(cmd);
                }
                let mut c = conn;
                c.run(&p).await
            }
            Conn::Cluster(_) => {
                // One pipeline per key, all in flight at once.
                let tasks: Vec<_> = groups
                    .into_iter()
                    .map(|cmds| {
                        let mut c = conn.clone();
                        tokio::spawn(async move {
                            let mut p = redis::pipe();
                            for cmd in cmds {
                                p.add_command(cmd);
                            }
                            c.run(&p).await
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                let mut failed = None;
                for t in tasks {
                    match t.await {
                        Ok(Ok(v)) => all.extend(v),
                        Ok(Err(e)) => failed = Some(e),
                        Err(e) => {
                            failed = Some(redis::RedisError::from(std::io::Error::other(
                                e.to_string(),
                            )))
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(all),
                }
            }
        };
        match answers {
            Ok(v) => {
                self.metrics.up.store(1, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                self.metrics.up.store(0, Ordering::Relaxed);
                *self.conn.lock().await = None;
                Err(StoreError::Failed(e))
            }
        }
    }

    fn keys_of(&self, e: &Event) -> Vec<String> {
        let mut keys = vec![format!("{}{}", self.cfg.prefix, e.event_type)];
        let names = self.extractors.for_type(&e.event_type);
        for (id, value) in &e.fields {
            if let Some(f) = names.and_then(|n| n.fields.get(*id as usize)) {
                keys.push(format!(
                    "{}{}#{}={value}",
                    self.cfg.prefix, e.event_type, f.name
                ));
            }
        }
        keys
    }

    fn keys_for(&self, s: &Compiled) -> Vec<String> {
        if s.match_all || s.clauses.is_empty() {
            return vec![format!("{}{}", self.cfg.prefix, s.event_type)];
        }
        let names = self.extractors.for_type(&s.event_type);
        s.clauses
            .iter()
            .filter_map(|c| {
                let (id, value) = c.first()?;
                let f = names?.fields.get(*id as usize)?;
                Some(format!(
                    "{}{}#{}={value}",
                    self.cfg.prefix, s.event_type, f.name
                ))
            })
            .collect()
    }

    async fn write(&self, batch: &[Arc<Event>]) -> Result<(), StoreError> {
        let mut groups: HashMap<String, Vec<redis::Cmd>> = HashMap::new();
        for e in batch {
            let Some(pos) = &e.pos else { continue };
            let at = format!("{}/{}/{}", pos.topic, pos.partition, pos.offset);
            for key in self.keys_of(e) {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.cfg.max_per_key)
                    .arg("*")
                    .arg("p")
                    .arg(&at)
                    .arg("t")
                    .arg(pos.timestamp_ms)
                    .arg("e")
                    .arg(&e.json[..]);
                groups.entry(key).or_default().push(cmd);
            }
        }
        let groups: Groups = groups
            .into_iter()
            .map(|(key, mut cmds)| {
                let mut expire = redis::cmd("EXPIRE");
                expire.arg(key).arg(self.cfg.ttl_s);
                cmds.push(expire);
                cmds
            })
            .collect();
        self.run(groups).await.map(drop)
    }

    async fn read(&self, req: StoreRead) -> Result<StoreAnswer, StoreError> {
        let mut keys: Vec<String> = req.subs.iter().flat_map(|s| self.keys_for(s)).collect();
        keys.sort();
        keys.dedup();
        let groups: Groups = keys
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("XREVRANGE");
                cmd.arg(k)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(self.cfg.max_per_key);
                vec![cmd]
            })
            .collect();
        let answers = if keys.is_empty() {
            Vec::new()
        } else {
            self.run(groups).await?
        };
        let mut out = StoreAnswer::default();
        let mut seen: HashSet<(u32, i32, i64)> = HashSet::new();
        let mut per_partition: HashMap<(u32, i32), Vec<Arc<Event>>> = HashMap::new();
        for entries in answers {
            let entries: Vec<(String, HashMap<String, Value>)> =
                redis::from_redis_value(entries).map_err(StoreError::Answer)?;
            let full = entries.len() >= self.cfg.max_per_key;
            let mut reached_start = false;
            for (_, fields) in &entries {
                let text = |k: &str| match fields.get(k) {
                    Some(Value::BulkString(b)) => Some(b.clone()),
                    _ => None,
                };
                let (Some(at), Some(json)) = (text("p"), text("e")) else {
                    continue;
                };
                let ts: i64 = text("t")
                    .and_then(|t| String::from_utf8(t).ok()?.parse().ok())
                    .unwrap_or(-1);
                let Some((topic, partition, offset)) =
                    std::str::from_utf8(&at).ok().and_then(|s| {
                        let (rest, o) = s.rsplit_once('/')?;
                        let (t, p) = rest.rsplit_once('/')?;
                        Some((
                            t.to_string(),
                            p.parse::<i32>().ok()?,
                            o.parse::<i64>().ok()?,
                        ))
                    })
                else {
                    continue;
                };
                let key = (topic_hash(&topic), partition);
                let Some(from) = req.from.get(&key) else {
                    continue;
                };
                if offset < *from {
                    reached_start = true;
                    continue;
                }
                if ts >= 0 && ts < req.oldest_ms {
                    out.truncated = true;
                    continue;
                }
                if !seen.insert((key.0, key.1, offset)) {
                    continue;
                }
                let Ok(ce) = crate::proto::cloudevents::parse_structured(&json) else {
                    continue;
                };
                let id = format!("{partition}-{}", offset + 1);
                let ev = Event::from_cloudevent(&ce, id, &self.extractors).with_pos(Pos {
                    topic: Arc::from(topic.as_str()),
                    partition,
                    offset,
                    timestamp_ms: ts,
                });
                if req
                    .subs
                    .iter()
                    .any(|s| *s.event_type == *ev.event_type && s.matches(&ev.fields))
                {
                    per_partition.entry(key).or_default().push(Arc::new(ev));
                }
            }
            // A full answer that never went below the client's position may have left older
            // wanted entries out.
            if full && !reached_start {
                out.truncated = true;
            }
        }
        let mut queues: Vec<std::collections::VecDeque<Arc<Event>>> = per_partition
            .into_values()
            .map(|mut v| {
                v.sort_by_key(|e| e.pos.as_ref().map_or(0, |p| p.offset));
                v.into()
            })
            .collect();
        let mut merged = Vec::new();
        crate::broker::merge_by_time(&mut queues, &mut merged);
        if merged.len() > req.max_events {
            out.truncated = true;
            merged.drain(..merged.len() - req.max_events);
        }
        out.events = merged;
        Ok(out)
    }
}

async fn write_loop(store: Arc<Island>, queued: async_channel::Receiver<Arc<Event>>) {
    let mut backoff = Duration::from_millis(100);
    let mut last_log: Option<std::time::Instant> = None;
    while let Ok(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match queued.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        match store.write(&batch).await {
            Ok(()) => {
                store
                    .metrics
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                store
                    .metrics
                    .write_failures
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_log = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "events not kept in Redis; resume falls back to this node's ring");
                }
                // While Redis is down, what queues meanwhile is dropped rather than retried:
                // the live path never waits for Redis.
                // At most a second apart: a refused connection costs nothing, and every
                // second of waiting after Redis is back is a second of events not kept.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                let mut dropped = 0u64;
                while queued.try_recv().is_ok() {
                    dropped += 1;
                }
                store
                    .metrics
                    .write_failures
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }
}
