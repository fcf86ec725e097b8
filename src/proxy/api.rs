//! API definitions as RIG defines them (`PROXY_CONFIG_FILE`, `/v3/apis`): a JSON object per
//! API, kept as given (GET returns what was stored, unknown fields included) plus the
//! server-set fields `active`, `ref_number`, `timestamp` and `node_name`.
//!
//! Validation reports every problem at once in RIG's shape, `{"<key>": [{"<field>":
//! "<reason>"}]}`: key `api` for the top-level fields, the API's id for its `auth`,
//! `<api id>/<endpoint id>` for an endpoint, with RIG's wording. Beyond RIG, what RIG accepted
//! and then failed on at request time is refused here (a regex that does not compile, a port
//! out of range, an unknown target, a custom auth header not starting with `x-`, bounds).

use serde_json::{Map, Value};

/// What a definition may ask for that this node can or cannot do.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Kafka is configured (targets and `response_from: kafka` need it).
    pub kafka: bool,
    /// Kinesis is configured (`KINESIS_ENABLED`; its targets and replies need it).
    pub kinesis: bool,
    /// NATS is configured (`NATS_SERVERS`; its targets and replies need it).
    pub nats: bool,
    /// Endpoints one API may declare.
    pub max_endpoints: usize,
}

/// Longest `id`, endpoint `id`, `path_regex` or header name/value accepted.
pub const MAX_ID_BYTES: usize = 256;
pub const MAX_REGEX_BYTES: usize = 4096;
/// Compiled size bound of one `path_regex` (the regex crate's `size_limit`): a definition
/// cannot make every shard hold megabytes of automaton.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The validation map, in order of discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalid(pub Vec<(String, Vec<(String, String)>)>);

impl Invalid {
    fn add(&mut self, key: &str, errors: Vec<(String, String)>) {
        if errors.is_empty() {
            return;
        }
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, list)) => {
                for e in errors {
                    if !list.contains(&e) {
                        list.push(e);
                    }
                }
            }
            None => self.0.push((key.to_string(), errors)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// RIG's body for a 400.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, errors) in &self.0 {
            let list = errors
                .iter()
                .map(|(f, r)| {
                    let mut e = Map::new();
                    e.insert(f.clone(), Value::String(r.clone()));
                    Value::Object(e)
                })
                .collect();
            m.insert(key.clone(), Value::Array(list));
        }
        Value::Object(m)
    }

    /// One line for logs and `--check-config`.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(k, errs)| {
                let e: Vec<String> = errs.iter().map(|(f, r)| format!("{f} {r}")).collect();
                format!("{k}: {}", e.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

type Errors = Vec<(String, String)>;

fn err(field: &str, reason: impl Into<String>) -> (String, String) {
    (field.to_string(), reason.into())
}

/// Vex's `presence`: null, false, empty or blank strings, empty maps and lists are absent.
fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

fn validate_string(map: &Map<String, Value>, key: &str, out: &mut Errors) {
    match map.get(key) {
        Some(Value::String(s)) if s.is_empty() => {
            out.push(err(key, "must have a length of at least 1"))
        }
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES && key != "path_regex" => out.push(err(
            key,
            format!("must have a length of at most {MAX_ID_BYTES}"),
        )),
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => {
            out.push(err(key, "must be string"));
            out.push(err(key, "must have a length of at least 1"));
        }
        Some(_) => out.push(err(key, "must be string")),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Checks one definition (as posted, before server fields are added).
pub fn validate(api: &Value, caps: &Capabilities) -> Result<(), Invalid> {
    let mut invalid = Invalid::default();
    let Some(api) = api.as_object() else {
        invalid.add("api", vec![err("api", "must be a JSON object")]);
        return Err(invalid);
    };

    // Top-level fields, under the key "api".
    let mut top = Errors::new();
    validate_string(api, "id", &mut top);
    validate_string(api, "name", &mut top);
    if !present(api.get("proxy")) {
        top.push(err("proxy", "must be present"));
    }
    if let Some(proxy) = api.get("proxy") {
        let empty = Map::new();
        let proxy = proxy.as_object().unwrap_or(&empty);
        validate_string(proxy, "target_url", &mut top);
        match proxy.get("port") {
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
                if !n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                    top.push(err("port", "must be a port number (1-65535)"));
                }
            }
            _ => top.push(err("port", "must be integer")),
        }
        if let Some(url) = str_of(proxy, "target_url").filter(|u| !u.is_empty()) {
            if !is_true(proxy.get("use_env")) {
                if let Err(e) = super::table::Upstream::parse(url, 80) {
                    top.push(err("target_url", e));
                }
            }
        }
    }
    if !present(api.get("version_data")) {
        top.push(err("version_data", "must be present"));
    }
    if let Some(vd) = api.get("version_data") {
        match vd.as_object() {
            Some(versions) if versions.is_empty() => top.push(err(
                "version_data",
                "must have at least one version, e.g. default",
            )),
            Some(versions) => {
                for v in versions.values() {
                    match v.get("endpoints") {
                        Some(Value::Array(eps)) if eps.len() > caps.max_endpoints => top.push(err(
                            "endpoints",
                            format!("must have at most {} entries", caps.max_endpoints),
                        )),
                        Some(Value::Array(_)) => {}
                        _ => top.push(err("endpoints", "must be list")),
                    }
                    if let Some(add) = v
                        .get("transform_request_headers")
                        .and_then(|t| t.get("add_headers"))
                    {
                        let ok = add.as_object().is_some_and(|m| {
                            m.iter().all(|(k, v)| {
                                crate::proto::http1_client::is_token(k)
                                    && v.as_str().is_some_and(|s| {
                                        crate::proto::http1_client::is_clean_value(s.as_bytes())
                                    })
                            })
                        });
                        if !ok {
                            top.push(err("add_headers", "must map header names to string values"));
                        }
                    }
                }
            }
            None => top.push(err("version_data", "must be a map of versions")),
        }
    }
    invalid.add("api", top);

    let id = str_of(api, "id").unwrap_or_default();

    // Authentication, under the API's id.
    let mut auth_errors = Errors::new();
    let jwt = str_of(api, "auth_type") == Some("jwt");
    let auth = api.get("auth").and_then(Value::as_object);
    if let Some(auth) = auth {
        if present(auth.get("use_header")) && !present(auth.get("header_name")) {
            auth_errors.push(err("header_name", "must be present"));
        }
        if present(auth.get("use_query")) && !present(auth.get("query_name")) {
            auth_errors.push(err("query_name", "must be present"));
        }
        if (is_true(auth.get("use_header")) || is_true(auth.get("use_query"))) && !jwt {
            auth_errors.push(err("auth_type", "must be one of [\"jwt\"]"));
        }
        if let Some(name) = str_of(auth, "header_name").filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            if is_true(auth.get("use_header"))
                && lower != "authorization"
                && !lower.starts_with("x-")
            {
                // RIG reads only `Authorization` (bearer) or a custom `x-` header (raw token).
                auth_errors.push(err(
                    "header_name",
                    "must be Authorization or a custom header starting with x-",
                ));
            }
        }
    }
    match api.get("auth_type").map(|v| v.as_str()) {
        None | Some(Some("none")) | Some(Some("jwt")) => {}
        _ => auth_errors.push(err("auth_type", "must be one of [\"none\", \"jwt\"]")),
    }
    invalid.add(id, auth_errors);

    // Endpoints of the version the router uses.
    let endpoints = api
        .get("version_data")
        .and_then(|v| v.get("default"))
        .and_then(|d| d.get("endpoints"))
        .and_then(Value::as_array);
    for ep in endpoints.into_iter().flatten() {
        let empty = Map::new();
        let e = ep.as_object().unwrap_or(&empty);
        let key = format!("{id}/{}", str_of(e, "id").unwrap_or_default());
        let mut out = Errors::new();
        if !ep.is_object() {
            out.push(err("endpoint", "must be a JSON object"));
        }
        if is_true(e.get("secured")) && !jwt {
            out.push(err("auth_type", "must be one of [\"jwt\"]"));
        }
        let target = str_of(e, "target").map(str::to_ascii_lowercase);
        if target.as_deref() == Some("nats")
            && str_of(e, "topic").is_some_and(|t| !crate::config::nats::literal_subject_ok(t))
        {
            out.push(err(
                "topic",
                "must be a NATS subject to publish to (dot-separated tokens, no spaces, no * or >)",
            ));
        }
        if matches!(target.as_deref(), Some("kafka" | "kinesis" | "nats"))
            && !present(e.get("topic"))
        {
            out.push(err("topic", "must be present"));
        }
        if present(e.get("schema")) && !present(e.get("target")) {
            out.push(err("target", "must be present"));
        }
        validate_string(e, "id", &mut out);
        validate_string(e, "path_regex", &mut out);
        validate_string(e, "method", &mut out);
        validate_endpoint_extras(e, target.as_deref(), caps, &mut out);
        invalid.add(&key, out);
    }

    if invalid.is_empty() {
        Ok(())
    } else {
        Err(invalid)
    }
}

/// What RIG accepted and then failed on when a request came.
fn validate_endpoint_extras(
    e: &Map<String, Value>,
    target: Option<&str>,
    caps: &Capabilities,
    out: &mut Errors,
) {
    if let Some(re) = str_of(e, "path_regex").filter(|r| !r.is_empty()) {
        if re.len() > MAX_REGEX_BYTES {
            out.push(err(
                "path_regex",
                format!("must have a length of at most {MAX_REGEX_BYTES}"),
            ));
        } else if let Err(msg) = super::table::compile_path_regex(re) {
            out.push(err("path_regex", msg));
        }
    }
    if let Some(m) = str_of(e, "method").filter(|m| !m.is_empty()) {
        if !crate::proto::http1_client::is_token(m) {
            out.push(err("method", "must be an HTTP method name"));
        }
    }
    match target {
        None | Some("http") => {}
        Some("kafka") if caps.kafka => {}
        Some("kafka") => out.push(err(
            "target",
            "kafka needs Kafka, and this node has none configured (KAFKA_BROKERS)",
        )),
        Some("kinesis") if caps.kinesis => {}
        Some("kinesis") => out.push(err(
            "target",
            "kinesis needs Kinesis, and this node has none configured (KINESIS_ENABLED)",
        )),
        Some("nats") if caps.nats => {}
        Some("nats") => out.push(err(
            "target",
            "nats needs NATS, and this node has none configured (NATS_SERVERS)",
        )),
        Some(_) => out.push(err(
            "target",
            "must be one of [\"http\", \"kafka\", \"kinesis\", \"nats\"]",
        )),
    }
    match e.get("response_from").map(|v| v.as_str()) {
        None | Some(Some("http")) | Some(Some("http_async")) => {}
        Some(Some("kafka")) if caps.kafka => {}
        Some(Some("kafka")) => out.push(err(
            "response_from",
            "kafka needs Kafka, and this node has none configured (KAFKA_BROKERS)",
        )),
        Some(Some("kinesis")) if caps.kinesis => {}
        Some(Some("kinesis")) => out.push(err(
            "response_from",
            "kinesis needs Kinesis, and this node has none configured (KINESIS_ENABLED)",
        )),
        // RIG: a NATS reply answers a NATS request, and nothing else does.
        Some(Some("nats")) if target != Some("nats") => out.push(err(
            "response_from",
            "nats needs target nats (the reply answers the NATS request)",
        )),
        Some(Some("nats")) => {}
        _ => out.push(err(
            "response_from",
            "must be one of [\"http\", \"kafka\", \"http_async\", \"kinesis\", \"nats\"]",
        )),
    }
    for flag in ["secured", "transform_request_headers"] {
        if e.get(flag).is_some_and(|v| !v.is_boolean() && !v.is_null()) {
            out.push(err(flag, "must be boolean"));
        }
    }
    if let Some(r) = e.get("path_replacement") {
        if !r.is_string() && !r.is_null() {
            out.push(err("path_replacement", "must be string"));
        }
    }
}

/// RIG's `set_default_api_values`: server fields and defaults under what was given (a given
/// `proxy` or `auth` object replaces the default one whole, as in RIG). `auth_type: jwt`
/// defaults `use_header` to true with `Authorization`; unlike RIG it does not overwrite a
/// custom header name the definition gives.
pub fn with_defaults(
    api: &Map<String, Value>,
    node_name: &str,
    timestamp: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("active".into(), Value::Bool(true));
    out.insert("auth_type".into(), Value::String("none".into()));
    out.insert(
        "auth".into(),
        serde_json::json!({"use_header": false, "header_name": "", "use_query": false, "query_name": ""}),
    );
    out.insert("proxy".into(), serde_json::json!({"use_env": false}));
    out.insert("ref_number".into(), Value::from(0u64));
    out.insert("timestamp".into(), Value::String(timestamp.into()));
    out.insert("versioned".into(), Value::Bool(false));
    for (k, v) in api {
        out.insert(k.clone(), v.clone());
    }
    out.insert("node_name".into(), Value::String(node_name.into()));
    if out.get("auth_type").and_then(Value::as_str) == Some("jwt") {
        if let Some(auth) = out.get_mut("auth").and_then(Value::as_object_mut) {
            let custom = auth
                .get("header_name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !custom {
                auth.insert("use_header".into(), Value::Bool(true));
                auth.insert("header_name".into(), Value::String("Authorization".into()));
            }
        }
    }
    out
}

/// The server-set fields of a stored definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub active: bool,
    pub ref_number: u64,
    pub timestamp: String,
    pub node_name: String,
}

impl Meta {
    pub fn of(doc: &Map<String, Value>) -> Meta {
        Meta {
            id: str_of(doc, "id").unwrap_or_default().to_string(),
            active: doc.get("active").and_then(Value::as_bool).unwrap_or(true),
            ref_number: doc.get("ref_number").and_then(Value::as_u64).unwrap_or(0),
            timestamp: str_of(doc, "timestamp").unwrap_or_default().to_string(),
            node_name: str_of(doc, "node_name").unwrap_or_default().to_string(),
        }
    }

    /// Which of two versions of one definition every node keeps: the higher `ref_number`,
    /// then the later `timestamp` (RFC 3339 UTC strings of one format compare as times), then
    /// the node name, so that nodes applying the same versions in any order agree.
    pub fn supersedes(&self, other: &Meta) -> bool {
        (self.ref_number, &self.timestamp, &self.node_name)
            >= (other.ref_number, &other.timestamp, &other.node_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CAPS: Capabilities = Capabilities {
        kafka: true,
        kinesis: true,
        nats: true,
        max_endpoints: 8,
    };

    fn api(endpoints: Value) -> Value {
        json!({"id": "svc", "name": "svc", "proxy": {"target_url": "localhost", "port": 3000},
               "version_data": {"default": {"endpoints": endpoints}}})
    }

    fn errors(v: &Value) -> Value {
        validate(v, &CAPS).unwrap_err().to_json()
    }

    #[test]
    fn rigs_messages_for_missing_top_level_fields() {
        assert_eq!(
            errors(&json!({"id": "x"})),
            json!({"api": [{"name": "must be string"}, {"name": "must have a length of at least 1"},
                           {"proxy": "must be present"}, {"version_data": "must be present"}]})
        );
        assert_eq!(
            errors(&json!({"id": "x", "name": "x", "proxy": {}, "version_data": {}})),
            json!({"api": [{"proxy": "must be present"}, {"target_url": "must be string"},
                           {"target_url": "must have a length of at least 1"}, {"port": "must be integer"},
                           {"version_data": "must be present"},
                           {"version_data": "must have at least one version, e.g. default"}]})
        );
        assert_eq!(
            errors(
                &json!({"id": "x", "name": "x", "proxy": {"target_url": "h", "port": 1},
                           "version_data": {"default": {}}})
            ),
            json!({"api": [{"endpoints": "must be list"}]})
        );
    }

    #[test]
    fn rigs_messages_for_endpoints_and_auth() {
        assert_eq!(
            errors(&api(
                json!([{"id": "e", "method": "GET", "path_regex": "/f", "target": "kafka"}])
            )),
            json!({"svc/e": [{"topic": "must be present"}]})
        );
        assert_eq!(
            errors(&api(
                json!([{"id": "e", "method": "GET", "path_regex": "/f", "schema": "s"}])
            )),
            json!({"svc/e": [{"target": "must be present"}]})
        );
        assert_eq!(
            errors(&api(
                json!([{"id": "e", "method": "GET", "path_regex": "/f", "secured": true}])
            )),
            json!({"svc/e": [{"auth_type": "must be one of [\"jwt\"]"}]})
        );
        let mut a = api(json!([]));
        a["auth"] = json!({"use_header": true});
        a["auth_type"] = json!("jwt");
        assert_eq!(
            errors(&a),
            json!({"svc": [{"header_name": "must be present"}]})
        );
        a["auth"] = json!({"use_query": true, "query_name": "token"});
        a["auth_type"] = json!("none");
        assert_eq!(
            errors(&a),
            json!({"svc": [{"auth_type": "must be one of [\"jwt\"]"}]})
        );
    }

    #[test]
    fn what_rig_failed_on_later_is_refused_now() {
        let e = errors(&api(json!([
            {"id": "a", "method": "GET", "path_regex": "/(unclosed"},
            {"id": "b", "method": "GET", "path_regex": "/x", "response_from": "nats"},
            {"id": "c", "method": "G E T", "path_regex": "/x", "response_from": "carrier-pigeon"}
        ])));
        assert!(
            e["svc/a"][0]["path_regex"]
                .as_str()
                .unwrap()
                .contains("regular expression"),
            "{e}"
        );
        assert!(
            e["svc/b"][0]["response_from"]
                .as_str()
                .unwrap()
                .contains("needs target nats"),
            "{e}"
        );
        assert_eq!(e["svc/c"].as_array().unwrap().len(), 2, "{e}");
        let caps = Capabilities {
            kafka: false,
            kinesis: false,
            nats: false,
            ..CAPS
        };
        let e = validate(
            &api(json!([{"id": "k", "method": "POST", "path_regex": "/k", "target": "kafka", "topic": "t"}])),
            &caps,
        )
        .unwrap_err()
        .to_json();
        assert!(
            e["svc/k"][0]["target"]
                .as_str()
                .unwrap()
                .contains("KAFKA_BROKERS"),
            "{e}"
        );
        let e = validate(
            &api(json!([{"id": "n", "method": "POST", "path_regex": "/n", "target": "nats", "topic": "s"}])),
            &caps,
        )
        .unwrap_err()
        .to_json();
        assert!(
            e["svc/n"][0]["target"]
                .as_str()
                .unwrap()
                .contains("NATS_SERVERS"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_precedence() {
        let given = api(json!([]));
        let mut a = given.as_object().unwrap().clone();
        a.insert("auth_type".into(), json!("jwt"));
        let d = with_defaults(&a, "n1", "2026-01-01T00:00:00.000000Z");
        assert_eq!(d["auth"]["header_name"], "Authorization");
        assert_eq!(d["auth"]["use_header"], true);
        assert_eq!(
            (d["active"].clone(), d["ref_number"].clone()),
            (json!(true), json!(0))
        );
        assert_eq!(d["node_name"], "n1");
        let m = |r, t: &str, n: &str| Meta {
            id: "x".into(),
            active: true,
            ref_number: r,
            timestamp: t.into(),
            node_name: n.into(),
        };
        assert!(m(2, "a", "a").supersedes(&m(1, "z", "z")));
        assert!(m(1, "b", "a").supersedes(&m(1, "a", "z")));
        assert!(!m(1, "a", "a").supersedes(&m(1, "a", "b")));
    }
}
