//! Who is online, on which devices: `GET /v3/users/{user}/connections` and
//! `GET /v3/presence?users=a,b,c` on the internal port, and `rig.presence` join/leave events.
//!
//! A connection's user is the `CB_PRESENCE_CLAIM` (default `sub`) of the JWT it connected with.
//! Every shard indexes its connections by user. A query asks this node's shards and, with
//! Kafka, every other node: a question on the response topic (which every node reads), each
//! node answering its own connections to the asker's correlation token; the asker gathers for
//! `CB_PRESENCE_WAIT_MS`. Scatter-gather rather than a compacted topic of joins and leaves:
//! nothing is written per connection (a reconnect storm would otherwise be a write storm),
//! no node holds the whole cluster's table, and a dead node's connections vanish from the
//! answers at once because it does not answer (a compacted topic would keep them until some
//! expiry). The price is a query's latency, the wait.

use super::{Outcome, Resp};
use crate::broker::ProduceRecord;
use crate::proto::http1::{self, RequestHead};
use crate::proto::token::Token;
use crate::proxy::reply::{self, PresenceAsk, MAX_PRESENCE_USERS};
use crate::runtime::shard::{Gathering, Reply, Request, Shard};
use crate::session::Presence;
use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::Arc;

/// Connections one node lists in an answer at most.
const MAX_PER_NODE: usize = 10_000;
/// Other nodes' answers kept at most.
const MAX_NODES: usize = 1024;

/// This node's connections of `users`, from every shard.
async fn local(shard: &Rc<Shard>, users: Option<Arc<Vec<String>>>) -> Vec<Presence> {
    let mut out = Vec::new();
    for i in 0..shard.shard_count() {
        let req = Request::Presence {
            users: users.clone(),
            limit: MAX_PER_NODE,
        };
        if let Reply::Presence(v) = shard.call(i, req).await {
            out.extend(v);
        }
        if out.len() >= MAX_PER_NODE {
            out.truncate(MAX_PER_NODE);
            break;
        }
    }
    out
}

fn listed(node: &str, p: &Presence) -> Value {
    json!({
        "user": p.user,
        "node": node,
        "transport": p.transport,
        "connected_since": crate::proto::cloudevents::rfc3339_utc(p.connected_since_ms),
        "subscriptions": p.subscriptions,
    })
}

/// Every node's connections of `users`: this node's, then the others' answers within the wait.
async fn gather(shard: &Rc<Shard>, users: Vec<String>) -> Vec<Value> {
    let users = Arc::new(users);
    let node = shard.cfg().presence.node.clone();
    let mut out: Vec<Value> = local(shard, Some(users.clone()))
        .await
        .iter()
        .map(|p| listed(&node, p))
        .collect();
    let Some(broker) = shard.globals.broker.clone() else {
        return out;
    };
    let gathering = Gathering::new(shard, MAX_NODES);
    let Some(reply_to) = Token::decode_correlation(&gathering.token()) else {
        return out;
    };
    let ask = PresenceAsk {
        reply_to,
        users: Some(users.to_vec()),
    };
    let record = ProduceRecord {
        topic: broker.response_topic.clone(),
        key: None,
        value: json!({"users": *users}).to_string().into_bytes(),
        headers: reply::presence_headers(&ask),
        avro_subject: None,
    };
    if let Err(e) = broker.produce(record).await {
        tracing::warn!(error = %e, "presence: cannot ask the other nodes (whose fault: broker); answering with this node's connections only");
        return out;
    }
    for answer in gathering.gather(shard.cfg().presence.wait).await {
        let Ok(v) = serde_json::from_slice::<Value>(&answer.body) else {
            continue;
        };
        if let Some(list) = v["connections"].as_array() {
            out.extend(list.iter().take(MAX_PER_NODE).cloned());
        }
    }
    out
}

/// `GET /v3/users/{user}/connections`.
pub async fn connections(shard: &Rc<Shard>, user: String) -> Outcome {
    let list = gather(shard, vec![user.clone()]).await;
    let body = json!({"user": user, "connections": list});
    Resp::json(200, body.to_string().into_bytes()).into()
}

/// `GET /v3/presence?users=a,b,c`: for each user, whether online and how many connections.
pub async fn who(shard: &Rc<Shard>, head: &RequestHead) -> Outcome {
    let Some(raw) = http1::query_param(head.query.as_deref(), "users") else {
        return Resp::text(
            400,
            "Missing query parameter users (a comma list of user ids).",
        )
        .into();
    };
    let users: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if users.is_empty() || users.len() > MAX_PRESENCE_USERS {
        return Resp::text(
            400,
            format!("users: give 1 to {MAX_PRESENCE_USERS} user ids, comma-separated."),
        )
        .into();
    }
    let list = gather(shard, users.clone()).await;
    let mut out = serde_json::Map::new();
    for u in &users {
        let mine: Vec<&Value> = list.iter().filter(|c| c["user"] == u.as_str()).collect();
        let mut nodes: Vec<&str> = mine.iter().filter_map(|c| c["node"].as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        out.insert(
            u.clone(),
            json!({"online": !mine.is_empty(), "connections": mine.len(), "nodes": nodes}),
        );
    }
    Resp::json(200, json!({"users": out}).to_string().into_bytes()).into()
}

/// Answers another node's question with this node's connections.
pub async fn answer(shard: Rc<Shard>, ask: Arc<PresenceAsk>) {
    let Some(broker) = shard.globals.broker.clone() else {
        return;
    };
    let node = shard.cfg().presence.node.clone();
    let users = ask.users.clone().map(Arc::new);
    let list: Vec<Value> = local(&shard, users)
        .await
        .iter()
        .map(|p| listed(&node, p))
        .collect();
    let record = ProduceRecord {
        topic: broker.response_topic.clone(),
        key: None,
        value: json!({"node": node, "connections": list})
            .to_string()
            .into_bytes(),
        headers: vec![
            (
                reply::CORRELATION_HEADER.to_string(),
                ask.reply_to.encode_correlation().into_bytes(),
            ),
            (reply::STATUS_HEADER.to_string(), b"200".to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ],
        avro_subject: None,
    };
    if let Err(e) = broker.produce(record).await {
        tracing::warn!(error = %e, "presence: cannot answer another node (whose fault: broker)");
    }
}

/// Produces this shard's presence changes as `rig.presence` CloudEvents to
/// `CB_PRESENCE_TOPIC` (keyed by user, so each user's joins and leaves stay in order).
pub async fn announce(shard: &Rc<Shard>) {
    let (Some(topic), Some(broker)) = (
        shard.cfg().presence.topic.clone(),
        shard.globals.broker.clone(),
    ) else {
        // Nobody to tell: forget them.
        shard.sessions.borrow_mut().take_presence_changes();
        return;
    };
    let changes = shard.sessions.borrow_mut().take_presence_changes();
    let node = shard.cfg().presence.node.clone();
    for c in changes {
        let ce = crate::proto::cloudevents::rig_event(
            "rig.presence",
            Some(json!({
                "user": &*c.user,
                "change": if c.join { "join" } else { "leave" },
                "node": node,
                "transport": match c.transport {
                    crate::proto::Transport::Sse => "sse",
                    crate::proto::Transport::Ws => "ws",
                    crate::proto::Transport::LongPoll => "longpolling",
                },
                "connections_on_shard": c.remaining,
            })),
        );
        let record = ProduceRecord {
            topic: topic.clone(),
            key: Some(c.user.as_bytes().to_vec()),
            value: ce.to_json(),
            headers: vec![(
                "content-type".to_string(),
                b"application/cloudevents+json".to_vec(),
            )],
            avro_subject: None,
        };
        if let Err(e) = broker.produce(record).await {
            tracing::warn!(error = %e, "presence: cannot produce a rig.presence event (whose fault: broker)");
            break;
        }
    }
}
