//! The API gateway's settings: `PROXY_CONFIG_FILE` (the initial API definitions, validated and
//! compiled here so `--check-config` reports every bad definition at once), the upstream and
//! response timeouts, `REQUEST_LOG`, and what the `forwarded` header and stored definitions
//! say about this node (`HOST`, `CB_NODE_NAME`).

use super::env;
use crate::proxy::api::{self, Capabilities};
use crate::proxy::table::CompiledApi;
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLog {
    pub console: bool,
    pub kafka: bool,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Definitions from `PROXY_CONFIG_FILE`, in file order.
    pub apis: Vec<Arc<CompiledApi>>,
    /// `PROXY_RECV_TIMEOUT`: how long an upstream may take to send the next bytes.
    pub recv_timeout: Duration,
    pub kafka_response_timeout: Duration,
    pub http_async_response_timeout: Duration,
    pub kinesis_response_timeout: Duration,
    /// How long `response_from: nats` waits for the NATS reply (RIG: 60 s).
    pub nats_response_timeout: Duration,
    pub request_log: RequestLog,
    /// `by=` of the `forwarded` header (`HOST` when it is an IP address; else the address the
    /// request arrived on).
    pub host_ip: Option<IpAddr>,
    /// Names this node in the definitions it stores (`node_name`).
    pub node_name: String,
    /// The environment at start, for `proxy.use_env` of definitions added later.
    pub env: Arc<HashMap<String, String>>,
    /// TLS for `https` upstreams: the CAs of `CB_PROXY_CA_CERTFILE`, else the system's.
    pub tls: Arc<rustls::ClientConfig>,
}

impl ProxyConfig {
    pub fn caps(kafka: bool, kinesis: bool, nats: bool, tuning: &super::Tuning) -> Capabilities {
        Capabilities {
            kafka,
            kinesis,
            nats,
            max_endpoints: tuning.proxy.max_endpoints,
        }
    }

    pub fn load(
        envs: &super::EnvMap,
        kafka: bool,
        kinesis: bool,
        nats: bool,
        tuning: &super::Tuning,
        problems: &mut Vec<String>,
    ) -> ProxyConfig {
        let get = |k: &str| envs.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let millis = |name: &str, default: u64, problems: &mut Vec<String>| match get(name) {
            None => Duration::from_millis(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Duration::from_millis(n),
                _ => {
                    problems.push(format!("{name}={v:?}: expected a positive number of ms"));
                    Duration::from_millis(default)
                }
            },
        };
        let recv_timeout = millis(env::PROXY_RECV_TIMEOUT, 5_000, problems);
        let kafka_response_timeout = millis(env::PROXY_KAFKA_RESPONSE_TIMEOUT, 5_000, problems);
        let http_async_response_timeout =
            millis(env::PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT, 5_000, problems);
        let kinesis_response_timeout = millis(env::PROXY_KINESIS_RESPONSE_TIMEOUT, 5_000, problems);
        let nats_response_timeout = millis(env::PROXY_NATS_RESPONSE_TIMEOUT, 60_000, problems);

        let mut request_log = RequestLog::default();
        for name in get(env::REQUEST_LOG)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match name {
                "console" => request_log.console = true,
                "kafka" if kafka => request_log.kafka = true,
                "kafka" => problems.push(format!(
                    "{}=kafka needs Kafka (KAFKA_BROKERS)",
                    env::REQUEST_LOG
                )),
                other => problems.push(format!(
                    "{}: unknown request logger {other:?}; expected console or kafka",
                    env::REQUEST_LOG
                )),
            }
        }

        let host_ip = get(env::HOST).and_then(|h| {
            if h.eq_ignore_ascii_case("localhost") {
                Some(IpAddr::from([127, 0, 0, 1]))
            } else {
                h.parse().ok()
            }
        });
        let node_name = get(env::NODE_NAME)
            .map(str::to_string)
            .unwrap_or_else(|| format!("corebridge@{}", hostname()));
        let env_snapshot: Arc<HashMap<String, String>> = Arc::new(envs.clone());

        let apis = match get(env::PROXY_CONFIG_FILE) {
            None => Vec::new(),
            Some(raw) => load_apis(
                raw,
                &ProxyConfig::caps(kafka, kinesis, nats, tuning),
                tuning.proxy.max_apis,
                &node_name,
                &env_snapshot,
                problems,
            ),
        };
        let tls = upstream_tls(get(env::PROXY_CA_CERTFILE), problems);
        ProxyConfig {
            tls,
            apis,
            recv_timeout,
            kafka_response_timeout,
            http_async_response_timeout,
            kinesis_response_timeout,
            nats_response_timeout,
            request_log,
            host_ip,
            node_name,
            env: env_snapshot,
        }
    }
}

/// The client TLS configuration for `https` upstreams. A named CA file must be readable and
/// hold certificates; without one the system bundle is used if present (else no upstream
/// certificate verifies, and such upstreams answer 502 naming the reason).
fn upstream_tls(ca_file: Option<&str>, problems: &mut Vec<String>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let (path, required) = match ca_file {
        Some(p) => (p, true),
        None => (super::kafka::SYSTEM_CA_FILE, false),
    };
    match super::kafka::read_certs(std::path::Path::new(path)) {
        Ok(certs) => {
            for cert in certs {
                if let Err(e) = roots.add(cert) {
                    problems.push(format!(
                        "{}: {path}: bad CA certificate: {e}",
                        env::PROXY_CA_CERTFILE
                    ));
                }
            }
        }
        Err(e) if required => problems.push(format!("{}: {e}", env::PROXY_CA_CERTFILE)),
        Err(_) => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The kernel's host name (for the default node name).
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `raw` is a path to a JSON file or the JSON itself (RIG's `parse_json_env`): an array of
/// definitions. Every invalid definition is reported, each with RIG's validation map.
fn load_apis(
    raw: &str,
    caps: &Capabilities,
    max_apis: usize,
    node_name: &str,
    envs: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Vec<Arc<CompiledApi>> {
    let name = env::PROXY_CONFIG_FILE;
    let text = if raw.starts_with('[') || raw.starts_with('{') {
        raw.to_string()
    } else {
        match std::fs::read_to_string(raw) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: cannot read file {raw:?}: {e}"));
                return Vec::new();
            }
        }
    };
    let list = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(list)) => list,
        Ok(_) => {
            problems.push(format!(
                "{name}: the proxy config must be a JSON array of API definitions"
            ));
            return Vec::new();
        }
        Err(e) => {
            problems.push(format!("{name}: not valid JSON: {e}"));
            return Vec::new();
        }
    };
    if list.len() > max_apis {
        problems.push(format!(
            "{name}: {} API definitions; at most {max_apis} (tuning proxy.max_apis)",
            list.len()
        ));
    }
    let timestamp = crate::proto::cloudevents::rfc3339_now();
    let mut out: Vec<Arc<CompiledApi>> = Vec::new();
    for (i, mut api) in list.into_iter().enumerate() {
        upcase_methods(&mut api);
        if let Err(invalid) = api::validate(&api, caps) {
            problems.push(format!(
                "{name}: definition #{i}: {} (as JSON: {})",
                invalid.summary(),
                invalid.to_json()
            ));
            continue;
        }
        let Some(obj) = api.as_object() else { continue };
        let doc = api::with_defaults(obj, node_name, &timestamp);
        let lookup = |k: &str| envs.get(k).cloned();
        match CompiledApi::compile(doc, &lookup) {
            Ok(c) if out.iter().any(|o| o.meta.id == c.meta.id) => problems.push(format!(
                "{name}: definition #{i}: id {:?} is defined twice",
                c.meta.id
            )),
            Ok(c) => out.push(Arc::new(c)),
            Err(e) => problems.push(format!("{name}: definition #{i}: {e}")),
        }
    }
    out
}

/// RIG upper-cases `method` values in the file (not in the management API).
fn upcase_methods(api: &mut Value) {
    let Some(versions) = api.get_mut("version_data").and_then(Value::as_object_mut) else {
        return;
    };
    for v in versions.values_mut() {
        if let Some(eps) = v.get_mut("endpoints").and_then(Value::as_array_mut) {
            for ep in eps {
                if let Some(Value::String(m)) = ep.get_mut("method") {
                    *m = m.to_ascii_uppercase();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> (ProxyConfig, Vec<String>) {
        let envs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let c = ProxyConfig::load(
            &envs,
            false,
            false,
            false,
            &Default::default(),
            &mut problems,
        );
        (c, problems)
    }

    #[test]
    fn inline_definitions_methods_upcased_and_every_problem_named() {
        let (c, p) = load(&[(
            "PROXY_CONFIG_FILE",
            r#"[{"id":"a","name":"a","proxy":{"target_url":"localhost","port":3000},
                 "version_data":{"default":{"endpoints":[{"id":"e","method":"get","path_regex":"/x"}]}}}]"#,
        )]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.apis[0].endpoints[0].method, "GET");
        let (_, p) = load(&[
            (
                "PROXY_CONFIG_FILE",
                r#"[{"id":"a"},{"id":"b","name":"b","proxy":{"target_url":"h","port":1},
                     "version_data":{"default":{"endpoints":[{"id":"k","method":"POST","path_regex":"/k","target":"kafka","topic":"t"}]}}}]"#,
            ),
            ("REQUEST_LOG", "console,carrier"),
            ("PROXY_RECV_TIMEOUT", "soon"),
        ]);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p
            .iter()
            .any(|l| l.contains("#0") && l.contains("name must be string")));
        assert!(p
            .iter()
            .any(|l| l.contains("#1") && l.contains("KAFKA_BROKERS")));
        assert!(p.iter().any(|l| l.contains("carrier")));
    }
}
