//! The API definitions' management API on the internal port, RIG's `/v3/apis` (and `/v2/apis`,
//! the same): list, get, create, update, soft-delete, with RIG's codes and bodies.
//!
//! A change is validated whole (`400` with the validation map, nothing applied), then, with
//! Kafka, written to the control topic that every node reads (from its beginning, so changes
//! survive a restart of every node) and answered after the broker acknowledged it; every shard
//! of this node applies it before the answer. Without Kafka a node keeps its definitions in
//! memory, as RIG did. Versions are ordered by `ref_number` (then `timestamp`, then
//! `node_name`), so nodes that see two concurrent changes in different orders keep the same.

use super::{Outcome, Resp};
use crate::broker::{ProduceError, ProduceRecord};
use crate::config::proxy::ProxyConfig;
use crate::proto::cloudevents::rfc3339_now;
use crate::proto::control::{self, ControlRecord};
use crate::proxy::api;
use crate::proxy::table::CompiledApi;
use crate::route::Control;
use crate::runtime::shard::Shard;
use serde_json::{json, Map, Value};
use std::rc::Rc;
use std::sync::Arc;

fn message(status: u16, text: String) -> Outcome {
    Resp::json(status, json!({ "message": text }).to_string().into_bytes()).into()
}

fn not_found(id: &str) -> Outcome {
    message(404, format!("API with id={id} doesn't exists."))
}

/// The request body as RIG's controller saw it: a JSON object (a path id wins over the
/// body's).
fn params(body: &[u8], path_id: Option<&str>) -> Result<Value, Outcome> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| message(400, format!("Expected a JSON encoded API definition: {e}")))?;
    if let (Some(id), Some(obj)) = (path_id, v.as_object_mut()) {
        obj.insert("id".into(), Value::String(id.to_string()));
    }
    Ok(v)
}

fn validate(shard: &Shard, v: &Value) -> Result<(), Outcome> {
    let caps = ProxyConfig::caps(
        shard.globals.broker.is_some(),
        shard.globals.kinesis.is_some(),
        shard.globals.nats.is_some(),
        &shard.cfg().tuning,
    );
    api::validate(v, &caps)
        .map_err(|invalid| Resp::json(400, invalid.to_json().to_string().into_bytes()).into())
}

/// The stored, active definition `id`, if any.
fn active(shard: &Shard, id: &str) -> Option<Arc<Map<String, Value>>> {
    shard
        .proxy
        .borrow()
        .get(id)
        .filter(|a| a.meta.active)
        .map(|a| a.doc.clone())
}

pub fn list(shard: &Shard) -> Outcome {
    let docs: Vec<Value> = shard
        .proxy
        .borrow()
        .all()
        .filter(|a| a.meta.active)
        .map(|a| Value::Object((*a.doc).clone()))
        .collect();
    Resp::json(200, Value::Array(docs).to_string().into_bytes()).into()
}

pub fn get(shard: &Shard, id: &str) -> Outcome {
    match active(shard, id) {
        Some(doc) => Resp::json(200, Value::Object((*doc).clone()).to_string().into_bytes()).into(),
        None => not_found(id),
    }
}

pub async fn create(shard: &Rc<Shard>, body: &[u8]) -> Outcome {
    let v = match params(body, None) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if let Err(o) = validate(shard, &v) {
        return o;
    }
    let given = v.as_object().cloned().unwrap_or_default();
    let id = given
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let node = shard.cfg().proxy.node_name.clone();
    let (held, stored) = {
        let t = shard.proxy.borrow();
        (t.get(&id).map(|a| a.meta.clone()), t.len())
    };
    let doc = match held {
        Some(m) if m.active => return message(409, format!("API with id={id} already exists.")),
        // A deactivated id is created again, one version later.
        Some(m) => {
            let mut d = api::with_defaults(&given, &node, &rfc3339_now());
            d.insert("ref_number".into(), Value::from(m.ref_number + 1));
            d
        }
        None => {
            let max = shard.cfg().tuning.proxy.max_apis;
            if stored >= max {
                return message(
                    400,
                    format!("This gateway holds {stored} API definitions, its limit (tuning proxy.max_apis = {max})."),
                );
            }
            api::with_defaults(&given, &node, &rfc3339_now())
        }
    };
    match store(shard, doc).await {
        Ok(()) => message(201, "ok".into()),
        Err(o) => o,
    }
}

pub async fn update(shard: &Rc<Shard>, id: &str, body: &[u8]) -> Outcome {
    let v = match params(body, Some(id)) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if let Err(o) = validate(shard, &v) {
        return o;
    }
    let Some(current) = active(shard, id) else {
        return not_found(id);
    };
    // RIG merges the change over the stored definition (top-level fields), one version later.
    let mut doc = (*current).clone();
    for (k, val) in v.as_object().cloned().unwrap_or_default() {
        doc.insert(k, val);
    }
    let next = api::Meta::of(&current).ref_number + 1;
    doc.insert("ref_number".into(), Value::from(next));
    doc.insert("timestamp".into(), Value::String(rfc3339_now()));
    doc.insert(
        "node_name".into(),
        Value::String(shard.cfg().proxy.node_name.clone()),
    );
    match store(shard, doc).await {
        Ok(()) => message(200, "ok".into()),
        Err(o) => o,
    }
}

/// Soft delete: the definition stays, inactive, one version later (so a node that missed the
/// creation still learns that it is gone).
pub async fn delete(shard: &Rc<Shard>, id: &str) -> Outcome {
    let Some(current) = active(shard, id) else {
        return not_found(id);
    };
    let mut doc = (*current).clone();
    let next = api::Meta::of(&current).ref_number + 1;
    doc.insert("ref_number".into(), Value::from(next));
    doc.insert("active".into(), Value::Bool(false));
    doc.insert("timestamp".into(), Value::String(rfc3339_now()));
    doc.insert(
        "node_name".into(),
        Value::String(shard.cfg().proxy.node_name.clone()),
    );
    match store(shard, doc).await {
        Ok(()) => Resp::new(204).into(),
        Err(o) => o,
    }
}

/// Makes a version durable (control topic) and applies it on every shard of this node.
async fn store(shard: &Rc<Shard>, doc: Map<String, Value>) -> Result<(), Outcome> {
    let env = shard.cfg().proxy.env.clone();
    let compiled =
        CompiledApi::compile(doc.clone(), &|k| env.get(k).cloned()).map_err(|e| message(400, e))?;
    if let Some(broker) = &shard.globals.broker {
        let rec = ControlRecord::Api(doc);
        let record = ProduceRecord {
            topic: broker.control_topic.clone(),
            key: Some(control::key(&rec)),
            value: control::encode(&rec),
            headers: Vec::new(),
            avro_subject: None,
        };
        match broker.produce(record).await {
            Ok(_) => {}
            Err(e @ ProduceError::Unavailable(_)) => {
                return Err(Resp::text(503, format!("{e}; the change was not stored"))
                    .header("retry-after", "5")
                    .into())
            }
            Err(e @ (ProduceError::Rejected(_) | ProduceError::Invalid(_))) => {
                return Err(Resp::text(
                    502,
                    format!(
                        "{e} (control topic {:?}); the change was not stored",
                        broker.control_topic
                    ),
                )
                .into())
            }
        }
    }
    // Applied here at once; other nodes (and this one again, harmlessly) read it from Kafka.
    shard.publish_wait(Control::Api(Arc::new(compiled))).await;
    Ok(())
}
