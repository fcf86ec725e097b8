//! Publishing M load events at R per second: over HTTP (`POST /v3/messages` on the internal
//! port, keep-alive) or straight into Kafka with rskafka (structured CloudEvents).

use crate::net;
use crate::proto::cloud_event;
use crate::scenario::{PublishVia, Scenario};
use crate::worker::now_ns;
use anyhow::{anyhow, bail, Context, Result};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Consecutive failures on one publishing connection before publishing gives up.
const GIVE_UP_AFTER: u32 = 20;
/// Produce requests in flight per `publish_connections` (Kafka).
const KAFKA_IN_FLIGHT: usize = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Serialize)]
pub struct PublishStats {
    pub via: String,
    pub events: u64,
    /// Accepted: HTTP 202, or acknowledged by Kafka.
    pub ok: u64,
    pub failed: u64,
    /// Never sent (deadline, or publishing gave up).
    pub unsent: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub errors: BTreeMap<String, u64>,
}

/// Live counters shared with the progress line.
#[derive(Default)]
pub struct Live {
    pub attempted: Cell<u64>,
    pub ok: Cell<u64>,
    pub failed: Cell<u64>,
    errors: RefCell<BTreeMap<String, u64>>,
    stop: Cell<bool>,
}

impl Live {
    fn fail(&self, what: String) {
        self.failed.set(self.failed.get() + 1);
        let mut e = self.errors.borrow_mut();
        let key = if e.len() >= 16 && !e.contains_key(&what) {
            "(other errors)".to_string()
        } else {
            what
        };
        *e.entry(key).or_default() += 1;
    }
}

/// Due time of event `seq` (paced), or now when rate is 0.
fn due(t0: Instant, seq: u64, rate: f64) -> Option<Instant> {
    (rate > 0.0).then(|| t0 + Duration::from_secs_f64(seq as f64 / rate))
}

pub async fn publish(s: &Scenario, deadline: Instant, live: Rc<Live>) -> PublishStats {
    let t0 = Instant::now();
    let r = match s.publish_via {
        PublishVia::Http => http(s, t0, deadline, &live).await,
        PublishVia::Kafka => kafka(s, t0, deadline, &live).await,
    };
    if let Err(e) = r {
        *live
            .errors
            .borrow_mut()
            .entry(format!("{e:#}"))
            .or_default() += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let ok = live.ok.get();
    PublishStats {
        via: format!("{:?}", s.publish_via).to_lowercase(),
        events: s.events,
        ok,
        failed: live.failed.get(),
        unsent: s.events.saturating_sub(live.attempted.get()),
        seconds,
        events_per_second: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
        errors: live.errors.borrow().clone(),
    }
}

/// Hands out sequence numbers in order to the publishing tasks; `None` when all are taken,
/// publishing was stopped or the deadline passed.
async fn next_seq(
    next: &Cell<u64>,
    s: &Scenario,
    t0: Instant,
    deadline: Instant,
    live: &Live,
) -> Option<u64> {
    let seq = next.get();
    if seq >= s.events || live.stop.get() {
        return None;
    }
    next.set(seq + 1);
    if let Some(at) = due(t0, seq, s.rate) {
        if at >= deadline {
            return None;
        }
        tokio::time::sleep_until(at).await;
    }
    if Instant::now() >= deadline || live.stop.get() {
        return None;
    }
    live.attempted.set(live.attempted.get() + 1);
    Some(seq)
}

async fn http(s: &Scenario, t0: Instant, deadline: Instant, live: &Rc<Live>) -> Result<()> {
    let next = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for stream in 0..s.publish_connections {
        let (s, next, live) = (s.clone(), next.clone(), live.clone());
        tasks.push(tokio::task::spawn_local(async move {
            http_connection(&s, stream, &next, t0, deadline, &live).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| anyhow!("publisher task: {e}"))?;
    }
    Ok(())
}

/// One publishing connection: an ordering stream of its own, since it waits for each 202
/// (events of different connections may overtake each other before the server sees them).
async fn http_connection(
    s: &Scenario,
    stream: u32,
    next: &Cell<u64>,
    t0: Instant,
    deadline: Instant,
    live: &Live,
) {
    let scratch = RefCell::new(vec![0u8; 16 * 1024]);
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut consecutive = 0u32;
    let Ok(host_ip) = s.host.parse::<std::net::IpAddr>() else {
        return;
    };
    let (port, _) = s.publish_target(None);
    let addr = std::net::SocketAddr::new(host_ip, port);
    let host = format!("{}:{port}", s.host);
    while let Some(k) = next_seq(next, s, t0, deadline, live).await {
        let (to, seq) = s.addressing(k);
        let (_, path) = s.publish_target(to);
        let r: Result<u16> = async {
            if conn.is_none() {
                let c = tokio::time::timeout(REQUEST_TIMEOUT, net::connect(addr, None, false))
                    .await
                    .map_err(|_| anyhow!("connect timed out"))?
                    .with_context(|| format!("connect to {addr}"))?;
                conn = Some(c);
            }
            let c = conn.as_mut().expect("connected above");
            let body = cloud_event(&s.event_type, seq, now_ns(), stream, to, s.payload_bytes);
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/cloudevents+json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            let (head, resp) = tokio::time::timeout(REQUEST_TIMEOUT, async {
                net::write_all(c, &req).await?;
                net::read_response(c, &scratch, 1 << 20).await
            })
            .await
            .map_err(|_| anyhow!("request timed out"))??;
            if head.close {
                conn = None;
            }
            // Corebridge answers 202; Nchan 201 or 202.
            if !(200..300).contains(&head.status) {
                let mut text = String::from_utf8_lossy(&resp).into_owned();
                text.truncate(80);
                bail!("HTTP {}: {}", head.status, text.trim());
            }
            Ok(head.status)
        }
        .await;
        match r {
            Ok(_) => {
                consecutive = 0;
                live.ok.set(live.ok.get() + 1);
            }
            Err(e) => {
                if e.downcast_ref::<std::io::Error>().is_some()
                    || !format!("{e}").starts_with("HTTP ")
                {
                    conn = None;
                }
                live.fail(format!("{e:#}"));
                consecutive += 1;
                if consecutive >= GIVE_UP_AFTER {
                    live.fail_stop();
                    return;
                }
            }
        }
    }
}

impl Live {
    fn fail_stop(&self) {
        self.stop.set(true);
        *self
            .errors
            .borrow_mut()
            .entry(format!(
                "gave up after {GIVE_UP_AFTER} consecutive failures"
            ))
            .or_default() += 1;
    }
}

async fn kafka(s: &Scenario, t0: Instant, deadline: Instant, live: &Rc<Live>) -> Result<()> {
    let brokers = s.kafka_addrs()?;
    let client = tokio::time::timeout(
        Duration::from_secs(15),
        ClientBuilder::new(brokers.clone())
            .client_id("corebridge-loadtest")
            .build(),
    )
    .await
    .map_err(|_| anyhow!("kafka {brokers:?}: no answer within 15 s"))?
    .with_context(|| format!("kafka {brokers:?}"))?;
    let topics = client.list_topics().await.context("listing kafka topics")?;
    let topic = topics
        .into_iter()
        .find(|t| t.name == s.kafka_topic)
        .with_context(|| format!("kafka topic {:?} does not exist", s.kafka_topic))?;
    let mut partitions: Vec<i32> = topic.partitions.into_iter().collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        bail!("kafka topic {:?} has no partitions", s.kafka_topic);
    }
    let mut clients = Vec::new();
    for p in &partitions {
        clients.push(Arc::new(
            client
                .partition_client(s.kafka_topic.clone(), *p, UnknownTopicHandling::Error)
                .await
                .with_context(|| format!("kafka partition {p}"))?,
        ));
    }
    let in_flight = KAFKA_IN_FLIGHT * s.publish_connections as usize;
    let sem = Arc::new(Semaphore::new(in_flight));
    let next = Cell::new(0u64);
    while let Some(k) = next_seq(&next, s, t0, deadline, live).await {
        let (to, seq) = s.addressing(k);
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        // Kafka orders within a partition only: each partition is an ordering stream.
        let partition = (k % clients.len() as u64) as usize;
        let pc = clients[partition].clone();
        let value = cloud_event(
            &s.event_type,
            seq,
            now_ns(),
            partition as u32,
            to,
            s.payload_bytes,
        );
        let live = live.clone();
        tokio::task::spawn_local(async move {
            let record = Record {
                key: None,
                value: Some(value),
                headers: BTreeMap::from([(
                    "content-type".to_string(),
                    b"application/cloudevents+json".to_vec(),
                )]),
                timestamp: chrono::Utc::now(),
            };
            let r = tokio::time::timeout(
                REQUEST_TIMEOUT,
                pc.produce(vec![record], Compression::NoCompression),
            )
            .await;
            match r {
                Ok(Ok(_)) => live.ok.set(live.ok.get() + 1),
                Ok(Err(e)) => live.fail(format!("kafka produce: {e}")),
                Err(_) => live.fail("kafka produce timed out".into()),
            }
            drop(permit);
        });
    }
    // Wait for the produce requests still in flight (each is bounded by REQUEST_TIMEOUT).
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT + Duration::from_secs(1),
        sem.acquire_many(in_flight as u32),
    )
    .await;
    Ok(())
}
