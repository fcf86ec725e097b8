//! The compiled form of the API definitions and the routing decision: which endpoint takes a
//! request (first active, unversioned API in table order whose endpoint's method matches
//! exactly and whose anchored, case-insensitive `path_regex` matches the raw path), and the
//! path it goes upstream with (`path_replacement`, RIG's `\1` capture references).
//!
//! Each shard holds its own table (its own regex caches: a `Regex` shared between threads
//! locks a pool on every match from a thread that is not its first user). Definitions arrive
//! compiled once, behind an `Arc`, and each shard clones what it keeps.
//!
//! Table order: definitions from `PROXY_CONFIG_FILE` in file order, then the others by id, so
//! every node picks the same endpoint when several match (RIG logged and took the first).

use super::api::{Meta, REGEX_SIZE_LIMIT};
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Where an HTTP target's requests go (`proxy.target_url` and `proxy.port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// RIG's rule: `target_url` is a host, or a URL whose scheme and host are used (its path
    /// is ignored); the port is always `proxy.port`; the scheme defaults to `http`.
    pub fn parse(target_url: &str, port: u16) -> Result<Upstream, String> {
        let url = target_url.trim();
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else if lower.contains("://") {
            return Err("must use the http or https scheme".into());
        } else {
            (false, url)
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.strip_suffix(']')
                .ok_or_else(|| "has an unclosed IPv6 bracket".to_string())?
        } else {
            if authority.contains(':') {
                return Err("must not carry a port; the port is proxy.port".into());
            }
            authority
        };
        if host.is_empty() || host.contains('@') || host.bytes().any(|b| b <= b' ') {
            return Err("must name a host".into());
        }
        Ok(Upstream {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` as the `host` header and the pool key name it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        let mut out = Vec::with_capacity(self.host.len() + 8);
        self.write_authority(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn write_authority(&self, out: &mut Vec<u8>) {
        let v6 = self.host.contains(':');
        if v6 {
            out.push(b'[');
        }
        out.extend_from_slice(self.host.as_bytes());
        if v6 {
            out.push(b']');
        }
        out.push(b':');
        crate::proto::push_dec(out, u64::from(self.port));
    }
}

/// RIG anchors `path_regex` and matches case-insensitively. The pattern is wrapped whole, so
/// `a|b` means "exactly a or exactly b" (RIG's textual `^a|b$` anchored each side only once).
pub fn compile_path_regex(pattern: &str) -> Result<Regex, String> {
    let mut p = pattern.strip_prefix('^').unwrap_or(pattern);
    if p.ends_with('$') && !p.ends_with("\\$") {
        p = &p[..p.len() - 1];
    }
    RegexBuilder::new(&format!("^(?:{p})$"))
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let msg = e.to_string();
            let last = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("is not a valid regular expression: {}", last.trim())
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFrom {
    Http,
    Kafka,
    HttpAsync,
    Kinesis,
    Nats,
}

impl ResponseFrom {
    pub fn label(self) -> &'static str {
        match self {
            ResponseFrom::Http => "http",
            ResponseFrom::Kafka => "kafka",
            ResponseFrom::HttpAsync => "http_async",
            ResponseFrom::Kinesis => "kinesis",
            ResponseFrom::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http,
    Kafka { topic: String },
    Kinesis { stream: String },
    Nats { subject: String },
}

impl Target {
    pub fn label(&self) -> &'static str {
        match self {
            Target::Http => "http",
            Target::Kafka { .. } => "kafka",
            Target::Kinesis { .. } => "kinesis",
            Target::Nats { .. } => "nats",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub method: String,
    regex: Regex,
    replacement: Option<String>,
    pub secured: bool,
    pub transform_headers: bool,
    pub target: Target,
    pub response_from: ResponseFrom,
    pub schema: Option<String>,
    /// The endpoint as defined (the request log carries it).
    pub doc: Arc<Value>,
    /// `<api id>/<endpoint id>`: the bounded `path` label of the request metric.
    pub metric_label: Arc<str>,
}

/// How secured endpoints of an API find their tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub use_header: bool,
    /// Lower-cased: `authorization` (bearer) or an `x-` header (raw token).
    pub header_name: String,
    pub use_query: bool,
    pub query_name: String,
}

/// One definition, compiled.
#[derive(Debug, Clone)]
pub struct CompiledApi {
    pub meta: Meta,
    /// As stored (what GET returns).
    pub doc: Arc<Map<String, Value>>,
    /// `proxy.target_url` as given (the console request log prints it).
    pub target_url: String,
    pub upstream: Upstream,
    pub auth: Auth,
    /// The default version's `transform_request_headers.add_headers`, names lower-cased.
    pub add_headers: Vec<(String, String)>,
    pub endpoints: Vec<Endpoint>,
    /// Active and not versioned (RIG's router ignores versioned APIs).
    pub routable: bool,
}

fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn text<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl CompiledApi {
    /// Compiles a stored definition (validated, defaults applied). `env` resolves
    /// `proxy.use_env` host variables (RIG falls back to `localhost`).
    pub fn compile(
        doc: Map<String, Value>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CompiledApi, String> {
        let meta = Meta::of(&doc);
        let empty = Map::new();
        let proxy = doc
            .get("proxy")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let port = proxy
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("proxy.port must be a port number")?;
        let target_url = text(proxy, "target_url").to_string();
        let upstream = if flag(proxy, "use_env") {
            let host = env(&target_url).unwrap_or_else(|| "localhost".into());
            Upstream::parse(&host, port).map_err(|e| format!("{target_url}={host:?} {e}"))?
        } else {
            Upstream::parse(&target_url, port).map_err(|e| format!("proxy.target_url {e}"))?
        };
        let auth_doc = doc.get("auth").and_then(Value::as_object).unwrap_or(&empty);
        let auth = Auth {
            use_header: flag(auth_doc, "use_header"),
            header_name: text(auth_doc, "header_name").to_ascii_lowercase(),
            use_query: flag(auth_doc, "use_query"),
            query_name: text(auth_doc, "query_name").to_string(),
        };
        let default = doc
            .get("version_data")
            .and_then(|v| v.get("default"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let add_headers = default
            .get("transform_request_headers")
            .and_then(|t| t.get("add_headers"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut endpoints = Vec::new();
        for ep in default
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let e = ep.as_object().ok_or("an endpoint is not an object")?;
            let target = match text(e, "target").to_ascii_lowercase().as_str() {
                "" | "http" => Target::Http,
                "kafka" => Target::Kafka {
                    topic: text(e, "topic").to_string(),
                },
                "kinesis" => Target::Kinesis {
                    stream: text(e, "topic").to_string(),
                },
                "nats" => Target::Nats {
                    subject: text(e, "topic").to_string(),
                },
                other => return Err(format!("target {other:?} is not supported")),
            };
            let response_from = match text(e, "response_from") {
                "" | "http" => ResponseFrom::Http,
                "kafka" => ResponseFrom::Kafka,
                "http_async" => ResponseFrom::HttpAsync,
                "kinesis" => ResponseFrom::Kinesis,
                "nats" => ResponseFrom::Nats,
                other => return Err(format!("response_from {other:?} is not supported")),
            };
            endpoints.push(Endpoint {
                id: text(e, "id").to_string(),
                method: text(e, "method").to_string(),
                regex: compile_path_regex(text(e, "path_regex"))?,
                replacement: e
                    .get("path_replacement")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
                secured: flag(e, "secured"),
                transform_headers: flag(e, "transform_request_headers"),
                target,
                response_from,
                schema: e.get("schema").and_then(Value::as_str).map(str::to_string),
                doc: Arc::new(ep.clone()),
                metric_label: format!("{}/{}", meta.id, text(e, "id")).into(),
            });
        }
        let routable = meta.active && !flag(&doc, "versioned");
        Ok(CompiledApi {
            meta,
            doc: Arc::new(doc),
            target_url,
            upstream,
            auth,
            add_headers,
            endpoints,
            routable,
        })
    }
}

/// Expands RIG's (Elixir's) replacement syntax: `\N` and `\g{N}` insert capture group N
/// (`\0` the whole match), `\\` a backslash; everything else is literal.
fn expand(replacement: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(replacement.len() + 16);
    let mut rest = replacement;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let group = |n: &str| caps.get(n.parse::<usize>().unwrap_or(usize::MAX));
        if let Some(inner) = after.strip_prefix("g{").and_then(|s| s.split_once('}')) {
            if !inner.0.is_empty() && inner.0.bytes().all(|b| b.is_ascii_digit()) {
                out.push_str(group(inner.0).map_or("", |m| m.as_str()));
                rest = inner.1;
                continue;
            }
        }
        let digits = after.bytes().take_while(u8::is_ascii_digit).count().min(2);
        if digits > 0 {
            out.push_str(group(&after[..digits]).map_or("", |m| m.as_str()));
            rest = &after[digits..];
        } else if let Some(r) = after.strip_prefix('\\') {
            out.push('\\');
            rest = r;
        } else {
            out.push('\\');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl Endpoint {
    /// The upstream path when this endpoint's regex matches `path`.
    fn route(&self, path: &str) -> Option<String> {
        match &self.replacement {
            None => self.regex.is_match(path).then(|| path.to_string()),
            Some(r) => self.regex.captures(path).map(|c| expand(r, &c)),
        }
    }
}

/// The routing decision for one request.
pub struct Match {
    pub api: Rc<CompiledApi>,
    pub endpoint: usize,
    /// The path to send upstream (rewritten, or the request's).
    pub path: String,
    /// Another endpoint matched too (logged, as RIG does).
    pub ambiguous: bool,
}

impl Match {
    pub fn endpoint(&self) -> &Endpoint {
        &self.api.endpoints[self.endpoint]
    }
}

/// A shard's API definitions: every stored one (GET shows the active ones) and, per method,
/// the routable endpoints in table order.
pub struct Table {
    /// In table order.
    apis: Vec<Rc<CompiledApi>>,
    /// Positions in `PROXY_CONFIG_FILE` (definitions from elsewhere sort after, by id).
    file_order: Rc<HashMap<String, usize>>,
    routes: HashMap<String, Vec<(Rc<CompiledApi>, usize)>>,
}

impl Table {
    pub fn new(file: &[Arc<CompiledApi>]) -> Table {
        let file_order = file
            .iter()
            .enumerate()
            .map(|(i, a)| (a.meta.id.clone(), i))
            .collect();
        let mut t = Table {
            apis: Vec::new(),
            file_order: Rc::new(file_order),
            routes: HashMap::new(),
        };
        for a in file {
            t.apis.push(Rc::new(CompiledApi::clone(a)));
        }
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        let order = self.file_order.clone();
        let key = |a: &Rc<CompiledApi>| {
            (
                order.get(&a.meta.id).copied().unwrap_or(usize::MAX),
                a.meta.id.clone(),
            )
        };
        self.apis.sort_by_key(key);
        self.routes.clear();
        for api in self.apis.iter().filter(|a| a.routable) {
            for (i, ep) in api.endpoints.iter().enumerate() {
                self.routes
                    .entry(ep.method.clone())
                    .or_default()
                    .push((api.clone(), i));
            }
        }
    }

    /// Applies a version of a definition if it supersedes the one held (see
    /// [`Meta::supersedes`]); true when it did.
    pub fn apply(&mut self, api: &CompiledApi) -> bool {
        match self.apis.iter().position(|a| a.meta.id == api.meta.id) {
            Some(i) if !api.meta.supersedes(&self.apis[i].meta) => return false,
            Some(i) => self.apis[i] = Rc::new(api.clone()),
            None => self.apis.push(Rc::new(api.clone())),
        }
        self.reindex();
        true
    }

    pub fn get(&self, id: &str) -> Option<&Rc<CompiledApi>> {
        self.apis.iter().find(|a| a.meta.id == id)
    }

    /// Every stored definition (active or not), in table order.
    pub fn all(&self) -> impl Iterator<Item = &Rc<CompiledApi>> {
        self.apis.iter()
    }

    pub fn len(&self) -> usize {
        self.apis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apis.is_empty()
    }

    /// The endpoint for `method` and `path` (raw, without the query), if any.
    pub fn route(&self, method: &str, path: &str) -> Option<Match> {
        let candidates = self.routes.get(method)?;
        let mut found: Option<Match> = None;
        for (api, i) in candidates {
            let ep = &api.endpoints[*i];
            if let Some(found) = &mut found {
                if ep.regex.is_match(path) {
                    found.ambiguous = true;
                    break;
                }
                continue;
            }
            if let Some(p) = ep.route(path) {
                found = Some(Match {
                    api: api.clone(),
                    endpoint: *i,
                    path: p,
                    ambiguous: false,
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::api::with_defaults;
    use serde_json::json;

    fn compiled(v: Value) -> Arc<CompiledApi> {
        let doc = with_defaults(v.as_object().unwrap(), "n", "2026-01-01T00:00:00.000000Z");
        Arc::new(CompiledApi::compile(doc, &|_| None).unwrap())
    }

    fn svc(id: &str, eps: Value) -> Value {
        json!({"id": id, "name": id, "proxy": {"target_url": "http://up.example/ignored", "port": 8080},
               "version_data": {"default": {"endpoints": eps}}})
    }

    #[test]
    fn anchored_case_insensitive_first_match_and_rewrite() {
        let t = Table::new(&[
            compiled(svc(
                "a",
                json!([
                    {"id": "one", "method": "GET", "path_regex": "/users/(\\d+)/posts/(\\w+)",
                     "path_replacement": "/v2/\\2/by/\\g{1}"},
                    {"id": "two", "method": "GET", "path_regex": "/users/.*"}
                ]),
            )),
            compiled(svc(
                "b",
                json!([{"id": "three", "method": "GET", "path_regex": "/USERS/7/posts/x"}]),
            )),
        ]);
        let m = t.route("GET", "/Users/7/posts/x").unwrap();
        assert_eq!(
            (m.endpoint().id.as_str(), m.path.as_str()),
            ("one", "/v2/x/by/7")
        );
        assert!(m.ambiguous);
        assert_eq!(t.route("GET", "/users/7").unwrap().endpoint().id, "two");
        assert!(
            t.route("GET", "/prefix/users/7").is_none(),
            "anchored at the start"
        );
        assert!(t.route("POST", "/users/7").is_none(), "method must match");
        assert!(
            t.route("get", "/users/7").is_none(),
            "methods are case-sensitive"
        );
        assert_eq!(m.api.upstream.authority(), "up.example:8080");
    }

    #[test]
    fn alternation_is_anchored_whole_and_dollar_is_kept_once() {
        let t = Table::new(&[compiled(svc(
            "a",
            json!([
                {"id": "alt", "method": "GET", "path_regex": "^/a|/b$"}
            ]),
        ))]);
        assert!(t.route("GET", "/a").is_some() && t.route("GET", "/b").is_some());
        assert!(t.route("GET", "/a/x").is_none() && t.route("GET", "/x/b").is_none());
    }

    #[test]
    fn newer_versions_win_in_any_order_and_inactive_ones_do_not_route() {
        let v = |r: u64, active: bool, path: &str| {
            let mut a = svc(
                "a",
                json!([{"id": "e", "method": "GET", "path_regex": path}]),
            );
            a["ref_number"] = json!(r);
            a["active"] = json!(active);
            compiled(a)
        };
        let mut t = Table::new(&[]);
        assert!(t.apply(&v(1, true, "/one")));
        assert!(!t.apply(&v(0, true, "/zero")), "older version is ignored");
        assert!(t.route("GET", "/one").is_some());
        assert!(t.apply(&v(2, false, "/one")));
        assert!(t.route("GET", "/one").is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn upstream_urls() {
        let u = |s| Upstream::parse(s, 81);
        assert_eq!(u("svc").unwrap().authority(), "svc:81");
        assert!(u("https://svc/x").unwrap().tls);
        assert_eq!(u("http://[::1]").unwrap().authority(), "[::1]:81");
        assert!(u("ftp://x").is_err() && u("svc:90").is_err() && u("").is_err());
    }
}
