//! What the gateway writes to Kafka: the record a `kafka` target produces from a request
//! (RIG's `rig` extension and the trace context added to the client's CloudEvent), and the
//! request log's `com.rig.proxy.api.call` event. Values in, bytes out; no I/O.

use crate::proto::cloudevents::{rfc3339_now, uuid_v4};
use crate::proto::headers::Headers;
use crate::proto::trace::TraceContext;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// RIG's usage text for a body a `kafka` target cannot take.
const USAGE: &str =
    "Produce the request to a Kafka topic and optionally wait for the (correlated) response.

Expects a JSON encoded CloudEvent in the HTTP body.

Optionally set a partition key via this field:

`rig`: {\"target_partition\":\"the-partition-key\"}
";

/// Why a body cannot go to a `kafka` target (the client's fault; 400 with RIG's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetBodyError {
    #[error("expected a JSON encoded request body")]
    NotJson,
    #[error("the body does not look like a CloudEvent")]
    NotCloudEvent,
}

impl TargetBodyError {
    /// RIG's 400 body.
    pub fn body(&self) -> String {
        format!("Bad request: {self}.\n\n# Usage\n\n{USAGE}\n")
    }
}

/// What RIG records about the request in the `rig` extension.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub remote_ip: IpAddr,
    /// The `host` header without its port (Plug's `conn.host`).
    pub host: &'a str,
    /// The port the request arrived on.
    pub port: u16,
    pub scheme: &'a str,
    pub headers: &'a Headers,
    pub method: &'a str,
    /// The path as it goes to the target (after `path_replacement`).
    pub path: &'a str,
    pub query: &'a str,
}

/// A record for a `kafka` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// `rig.target_partition` of the request, when given.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Adds the trace context as the CloudEvents distributed-tracing extension.
fn append_trace(event: &mut Map<String, Value>, trace: &TraceContext) {
    event.insert("traceparent".into(), Value::String(trace.traceparent()));
    match &trace.tracestate {
        Some(s) => event.insert("tracestate".into(), Value::String(s.clone())),
        None => event.remove("tracestate"),
    };
}

pub fn target_record(
    body: &[u8],
    facts: &RequestFacts<'_>,
    correlation: &str,
    trace: &TraceContext,
) -> Result<TargetRecord, TargetBodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| TargetBodyError::NotJson)?;
    let Value::Object(mut event) = value else {
        return Err(TargetBodyError::NotCloudEvent);
    };
    if !event.contains_key("specversion") {
        return Err(TargetBodyError::NotCloudEvent);
    }
    let key = event
        .get("rig")
        .and_then(|r| r.get("target_partition"))
        .map(|k| match k {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        });
    let headers: Vec<Value> = facts
        .headers
        .iter()
        .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
        .collect();
    event.insert(
        "rig".into(),
        json!({
            "correlation": correlation,
            "remoteip": facts.remote_ip.to_string(),
            "host": facts.host,
            "port": facts.port,
            "scheme": facts.scheme,
            "headers": headers,
            "method": facts.method,
            "path": facts.path,
            "query": facts.query,
        }),
    );
    append_trace(&mut event, trace);
    // RIG's header naming the data's content type, from the 0.2 attribute (or its camel-case
    // spelling); plus the Kafka binding's structured-mode content type.
    let mut headers = Vec::new();
    for (attr, header) in [
        ("contenttype", "ce_contenttype"),
        ("contentType", "ce_contentType"),
    ] {
        if let Some(v) = event.get(attr).and_then(Value::as_str) {
            headers.push((header.to_string(), v.as_bytes().to_vec()));
            break;
        }
    }
    headers.push((
        "content-type".to_string(),
        b"application/cloudevents+json".to_vec(),
    ));
    Ok(TargetRecord {
        key,
        value: Value::Object(event).to_string().into_bytes(),
        headers,
    })
}

/// RIG's request-log event (CloudEvents 0.2, `com.rig.proxy.api.call`).
pub fn request_log(
    endpoint: &Value,
    request_path: &str,
    remote_ip: IpAddr,
    trace: &TraceContext,
) -> Vec<u8> {
    // RIG formats the address as dotted numbers (IPv4); an IPv6 client is written as usual.
    let ip = match remote_ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    };
    let mut event = Map::new();
    event.insert("id".into(), Value::String(uuid_v4()));
    event.insert("time".into(), Value::String(rfc3339_now()));
    event.insert("source".into(), Value::String("/rig".into()));
    event.insert(
        "type".into(),
        Value::String("com.rig.proxy.api.call".into()),
    );
    event.insert(
        "contenttype".into(),
        Value::String("application/json".into()),
    );
    event.insert("specversion".into(), Value::String("0.2".into()));
    event.insert(
        "data".into(),
        json!({"endpoint": endpoint, "request_path": request_path, "remote_ip": ip}),
    );
    append_trace(&mut event, trace);
    Value::Object(event).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(headers: &Headers) -> RequestFacts<'_> {
        RequestFacts {
            remote_ip: IpAddr::from([10, 0, 0, 9]),
            host: "gw.example",
            port: 4000,
            scheme: "http",
            headers,
            method: "POST",
            path: "/orders",
            query: "a=1",
        }
    }

    #[test]
    fn rig_extension_key_and_trace() {
        let trace = TraceContext::continue_or_start(None, None);
        let hs: Headers = [("x-a", "1")].into_iter().collect();
        let r = target_record(
            br#"{"specversion":"0.2","type":"t","contenttype":"text/plain","rig":{"target_partition":"k1"}}"#,
            &facts(&hs),
            "CORR",
            &trace,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        let v: Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["rig"]["correlation"], "CORR");
        assert_eq!(v["rig"]["remoteip"], "10.0.0.9");
        assert_eq!(v["rig"]["headers"], json!([["x-a", "1"]]));
        assert_eq!(v["rig"]["query"], "a=1");
        assert!(
            v["rig"].get("target_partition").is_none(),
            "RIG replaces rig whole"
        );
        assert_eq!(v["traceparent"], trace.traceparent());
        assert_eq!(
            r.headers[0],
            ("ce_contenttype".into(), b"text/plain".to_vec())
        );
    }

    #[test]
    fn bodies_rig_refuses() {
        let t = TraceContext::continue_or_start(None, None);
        let none = Headers::default();
        let f = facts(&none);
        assert_eq!(
            target_record(b"nope", &f, "c", &t).unwrap_err(),
            TargetBodyError::NotJson
        );
        assert_eq!(
            target_record(br#"{"type":"x"}"#, &f, "c", &t).unwrap_err(),
            TargetBodyError::NotCloudEvent
        );
        assert!(TargetBodyError::NotCloudEvent
            .body()
            .starts_with("Bad request: the body does not look like a CloudEvent.\n\n# Usage"));
    }

    #[test]
    fn request_log_shape() {
        let t = TraceContext::continue_or_start(None, None);
        let v: Value = serde_json::from_slice(&request_log(
            &json!({"id": "e"}),
            "/x",
            IpAddr::from([127, 0, 0, 1]),
            &t,
        ))
        .unwrap();
        assert_eq!(v["type"], "com.rig.proxy.api.call");
        assert_eq!(v["specversion"], "0.2");
        assert_eq!(
            v["data"],
            json!({"endpoint": {"id": "e"}, "request_path": "/x", "remote_ip": "127.0.0.1"})
        );
    }
}
