//! Fuzz targets: every parser that reads bytes from outside, driven by arbitrary input. The
//! `fuzz/` crate runs them under libFuzzer (coverage-guided); `tests/fuzz_corpus.rs` replays the
//! kept corpus through the same functions in every test run. A target's only assertion is that
//! it returns: a panic, an overflow or a hang is the finding.
//!
//! Each input's first byte picks a variant (a limit, a mode), the rest is the data, so one
//! corpus covers the parser's options.

use crate::proto::http1::{self, BodyReader, ChunkedDecoder, Limits};
use serde_json::Value;

/// A fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// Every target by name (the `fuzz/` binaries and the corpus directories use these names).
pub const TARGETS: &[(&str, Target)] = &[
    ("http_request", http_request),
    ("chunked_body", chunked_body),
    ("websocket", websocket),
    ("resume_id", resume_id),
    ("cloudevent", cloudevent),
    ("jwt", jwt),
    ("subscriptions", subscriptions),
    ("kafka_record", kafka_record),
    ("upstream_response", upstream_response),
    ("api_definition", api_definition),
];

fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, data),
    }
}

/// A request head, then what the handlers read of it: headers, query, cookies, the WebSocket
/// handshake, and the body as its head announces it.
pub fn http_request(data: &[u8]) {
    let (mode, data) = split(data);
    let limits = Limits {
        max_head_bytes: 64 + (mode as usize) * 64,
        max_headers: 1 + (mode as usize % 100),
        max_uri_bytes: 16 + (mode as usize) * 16,
        max_body_bytes: 4096,
    };
    let Ok(Some((head, used))) = http1::parse_head(data, &limits) else {
        return;
    };
    let _ = head.header_str("content-type");
    let _ = head.has_token("connection", "upgrade");
    let _ = http1::query_pairs(head.query.as_deref().unwrap_or(""));
    let _ = http1::query_param(head.query.as_deref(), "subscriptions");
    let _ = http1::cookies(&head);
    let _ = crate::proto::longpoll::read_cookies(&head);
    let _ = crate::proto::ws::check_handshake(&head);
    let _ = crate::proto::ws::accepts_deflate(&head);
    let _ = crate::auth::jwt::bearer_tokens(head.header_values("authorization"));
    let mut reader = BodyReader::new(head.body, 4096);
    let mut out = Vec::new();
    let _ = reader.feed(&data[used..], &mut out);
}

/// A chunked body fed in two pieces (the split point from the first byte), as it arrives.
pub fn chunked_body(data: &[u8]) {
    let (mode, data) = split(data);
    let cut = (mode as usize).min(data.len());
    let mut d = ChunkedDecoder::new(1 << 16);
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in [&data[..cut], &data[cut..]] {
        pending.extend_from_slice(piece);
        loop {
            match d.feed(&pending, &mut out) {
                Ok((used, done)) => {
                    let used = used.min(pending.len());
                    pending.drain(..used);
                    if done || used == 0 {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// Client WebSocket frames, decoded one after another as the watcher does.
pub fn websocket(data: &[u8]) {
    let mut buf = data;
    for _ in 0..64 {
        match crate::proto::ws::decode_client_frame(buf) {
            Ok(Some((_, used))) if used > 0 && used <= buf.len() => buf = &buf[used..],
            _ => return,
        }
    }
}

/// `Last-Event-ID` values, and a long-poll `last_event_id` cookie around them.
pub fn resume_id(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = crate::proto::resume::parse(s) {
        let _ = r.start(&r.topic, r.partition);
    }
    let _ = http1::percent_decode(s);
}

/// A CloudEvent: structured, and binary mode with headers taken from the input's lines.
pub fn cloudevent(data: &[u8]) {
    use crate::proto::json::Lookup;
    let (mode, data) = split(data);
    if let Ok(ce) = crate::proto::cloudevents::parse_structured(data) {
        // An event kept as text is read lazily: every lookup must hold up on what was accepted.
        for p in ["", "/data", "/data/user", "/data/0", "/id", "/a~1b/~0"] {
            let _ = (ce.pointer(p), ce.canonical_at(p));
        }
        let _ = (ce.attr("partitionkey"), ce.value());
        assert!(!ce.to_json().contains(&b'\n'));
    }
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let headers: crate::proto::headers::Headers = lines
        .by_ref()
        .take(mode as usize % 8)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    let body: Vec<u8> = lines.collect::<Vec<_>>().join("\n").into_bytes();
    let ct = headers
        .iter()
        .find(|(k, _)| *k == "content-type")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::to_string);
    let _ = crate::proto::cloudevents::from_http(ct.as_deref(), &headers, &body);
}

/// A JWT against a fixed HS256 key, and a JWKS document.
pub fn jwt(data: &[u8]) {
    use crate::config::jwt::{JwtSettings, KeySource};
    thread_local! {
        static VERIFIER: Option<crate::auth::jwt::Verifier> =
            crate::auth::jwt::Verifier::new(&JwtSettings {
                alg: crate::auth::jwt::Alg::HS256,
                key: KeySource::Secret(b"fuzz-secret".to_vec()),
                leeway_secs: 0,
                issuer: None,
                audience: None,
                session_pointer: "/jti".into(),
            })
            .ok();
    }
    VERIFIER.with(|v| {
        let Some(v) = v else { return };
        if let Ok(token) = std::str::from_utf8(data) {
            if let Ok(claims) = v.verify(token, 1_700_000_000) {
                let _ = crate::auth::jwt::session_id(&claims, "/jti");
            }
        }
        let _ = v.with_jwks(data);
    });
}

/// A subscription list as a client sends it, compiled against a field declaration.
pub fn subscriptions(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let limits = crate::route::subscription::Limits {
        max_subscriptions: 16,
        max_clauses: 16,
        max_bytes: 16 * 1024,
    };
    let extractors = crate::config::extractors::Extractors::from_value(
        &serde_json::json!({"greeting": {"name": {"stable_field_index": 0,
            "event": {"json_pointer": "/data/name"}}}}),
        &mut Vec::new(),
    );
    if let Ok(list) = crate::route::subscription::Subscription::parse_list(&v, limits) {
        let _ = crate::route::subscription::SubscriptionSet::build(&list, &extractors, limits);
    }
}

/// A Kafka (or Kinesis) record: value, key and headers from the input, decoded as a CloudEvent,
/// through a record mapping, as a control record, and as Avro with a fixed schema.
pub fn kafka_record(data: &[u8]) {
    use crate::proto::kafka_record::{decode, RecordView};
    let (mode, data) = split(data);
    let cut = (mode as usize).min(data.len());
    let (head, value) = data.split_at(cut);
    let text = String::from_utf8_lossy(head);
    let headers: Vec<(&str, &[u8])> = text
        .split('\n')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, v.as_bytes()))
        .collect();
    let view = RecordView {
        topic: "t",
        partition: 0,
        offset: 1,
        key: Some(head),
        value: Some(value),
        headers: &headers,
        timestamp_ms: 0,
    };
    let _ = decode(&view, None);
    thread_local! {
        static MAPPING: Option<crate::config::kafka::RecordMapping> = {
            let mut problems = Vec::new();
            crate::config::kafka::parse_mappings(
                r#"[{"topics":"t","event_type":"header:type"}]"#,
                &mut problems,
            )
            .into_iter()
            .next()
        };
        static SCHEMA: apache_avro::Schema = apache_avro::Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},
               {"name":"b","type":["null","long"]},{"name":"c","type":{"type":"array","items":"double"}}]}"#,
        )
        .expect("a valid schema");
    }
    MAPPING.with(|m| {
        if let Some(m) = m {
            let _ = decode(&view, Some(m));
        }
    });
    let _ = crate::proto::control::decode(value);
    SCHEMA.with(|s| {
        let _ = crate::proto::avro::decode(s, data);
    });
}

/// An upstream's response head and body, as the gateway's client reads them.
pub fn upstream_response(data: &[u8]) {
    use crate::proto::http1_client::{parse_response_head, BodyDecoder, ResponseLimits};
    let (mode, data) = split(data);
    let limits = ResponseLimits {
        max_head_bytes: 64 + (mode as usize) * 32,
        max_headers: 1 + (mode as usize % 100),
    };
    let Ok(Some((head, used))) = parse_response_head(data, &limits, mode & 1 == 1) else {
        return;
    };
    let _ = crate::proto::http1_client::connection_tokens(head.header("connection").into_iter());
    let mut d = BodyDecoder::new(head.body);
    let mut out = Vec::new();
    let _ = d.feed(&data[used..], &mut out);
    let _ = d.eof();
}

/// An API definition as `POST /v3/apis` takes it.
pub fn api_definition(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let caps = crate::proxy::api::Capabilities {
        kafka: true,
        kinesis: true,
        nats: true,
        max_endpoints: 64,
    };
    if crate::proxy::api::validate(&v, &caps).is_ok() {
        if let Value::Object(m) = &v {
            let doc = crate::proxy::api::with_defaults(m, "fuzz", "2026-01-01T00:00:00Z");
            if let Ok(api) = crate::proxy::table::CompiledApi::compile(doc, &|_| None) {
                let _ = crate::proxy::table::Table::new(&[std::sync::Arc::new(api)]);
            }
        }
    }
}
