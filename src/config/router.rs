//! The clickstream router's settings, with the original router's names (`ER_*`,
//! `CLICKSTREAM_RETRY_S3_PATH_PREFIX`) and defaults; every problem is reported at once.

use std::collections::BTreeMap;
use std::time::Duration;

/// Where the enabled integrations of an application come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registry {
    /// Houston's GraphQL API: `ER_HOUSTON_API_URL` with an API key or a login.
    Houston { url: String, auth: HoustonAuth },
    /// `router mock --integrations NAME=TOPIC,...`: every application has these.
    Mock(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoustonAuth {
    /// `ER_HOUSTON_API_KEY`, sent as the `authorization` header as it is.
    ApiKey(String),
    /// `ER_HOUSTON_USERNAME` + `ER_HOUSTON_PASSWORD`: a token from `createToken`, renewed
    /// before its `exp`.
    Login { username: String, password: String },
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub brokers: String,
    pub group_id: String,
    pub ingestion_topic: String,
    pub retry_topic: String,
    pub registry: Registry,
    /// `ER_SSE_URL`: invalidations; `None` with `--disable-sse` or when unset.
    pub sse_url: Option<String>,
    pub max_retries: u32,
    /// `CB_ROUTER_CACHE_TTL_S` (ours; unset: for ever, as the original): an app's cached
    /// integrations are read again after this long, so a missed invalidation (the SSE
    /// channel down, `--disable-sse`) does not keep stale routing until a restart.
    pub cache_ttl: Option<Duration>,
    pub s3_bucket: Option<String>,
    pub s3_prefix: String,
    /// `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`): a custom S3 endpoint, path-style.
    pub s3_endpoint: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`, default us-east-1).
    pub s3_region: String,
    pub flush_timeout: Duration,
    pub message_timeout: Duration,
    pub port: u16,
    pub debug: bool,
    /// `ER_KAFKA_PRODUCER_IDEMPOTENCE` (ours, default true): off for brokers that mishandle
    /// idempotent producers (then one request in flight per connection keeps the order).
    pub idempotence: bool,
    /// Extra librdkafka properties for both clients (TLS, SASL), from the Kafka settings.
    pub kafka_props: Vec<(String, String)>,
}

/// The router's command line: `start` or `mock`, `--disable-sse`, `--integrations`.
#[derive(Debug, Clone, Default)]
pub struct RouterArgs {
    pub mock: bool,
    pub disable_sse: bool,
    pub integrations: Option<String>,
}

impl RouterConfig {
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        args: &RouterArgs,
    ) -> Result<RouterConfig, Vec<String>> {
        let mut problems = Vec::new();
        let val = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let text = |k: &str, default: &str| val(k).unwrap_or_else(|| default.to_string());
        let mut number = |k: &str, default: u64| match val(k) {
            None => default,
            Some(v) => v.parse::<u64>().unwrap_or_else(|_| {
                problems.push(format!("{k}={v:?}: expected a non-negative integer"));
                default
            }),
        };
        let max_retries = number("ER_MAX_RETRIES", 2) as u32;
        let cache_ttl = match number("CB_ROUTER_CACHE_TTL_S", 0) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let flush_timeout =
            Duration::from_millis(number("ER_KAFKA_PRODUCER_FLUSH_TIMEOUT_MS", 1000));
        // The original's spelling (TIMOUT) first, the corrected one accepted too.
        let message_timeout =
            Duration::from_millis(match val("ER_KAFKA_PRODUCER_MESSAGE_TIMOUT_MS") {
                Some(_) => number("ER_KAFKA_PRODUCER_MESSAGE_TIMOUT_MS", 5000),
                None => number("ER_KAFKA_PRODUCER_MESSAGE_TIMEOUT_MS", 5000),
            });
        let port = number("ER_SERVER_PORT", 8080);
        let brokers = val("ER_BOOTSTRAP_SERVERS").unwrap_or_default();
        if brokers.is_empty() {
            problems.push("ER_BOOTSTRAP_SERVERS is required (host:port[,host:port])".into());
        }
        let registry = if args.mock {
            match args.integrations.as_deref().map(parse_integrations) {
                Some(Ok(m)) if !m.is_empty() => Registry::Mock(m),
                Some(Ok(_)) | None => {
                    problems
                        .push("router mock needs --integrations NAME=TOPIC[,NAME=TOPIC...]".into());
                    Registry::Mock(BTreeMap::new())
                }
                Some(Err(e)) => {
                    problems.push(format!("--integrations: {e}"));
                    Registry::Mock(BTreeMap::new())
                }
            }
        } else {
            let url = val("ER_HOUSTON_API_URL").unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "ER_HOUSTON_API_URL={url:?}: the registry's http(s) URL is required (or run `router mock`)"
                ));
            }
            let auth = match (
                val("ER_HOUSTON_API_KEY"),
                val("ER_HOUSTON_USERNAME"),
                val("ER_HOUSTON_PASSWORD"),
            ) {
                (Some(k), _, _) => HoustonAuth::ApiKey(k),
                (None, Some(username), Some(password)) => HoustonAuth::Login { username, password },
                _ => {
                    problems.push(
                        "the registry needs ER_HOUSTON_API_KEY, or ER_HOUSTON_USERNAME and ER_HOUSTON_PASSWORD".into(),
                    );
                    HoustonAuth::ApiKey(String::new())
                }
            };
            Registry::Houston { url, auth }
        };
        let sse_url = if args.disable_sse || args.mock && val("ER_SSE_URL").is_none() {
            None
        } else {
            match val("ER_SSE_URL") {
                None => {
                    problems.push(
                        "ER_SSE_URL is required for registry invalidations (or pass --disable-sse)"
                            .into(),
                    );
                    None
                }
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u),
                Some(u) => {
                    problems.push(format!("ER_SSE_URL={u:?}: expected an http(s) URL"));
                    None
                }
            }
        };
        let s3_bucket = val("ER_CLICKSTREAM_RETRY_S3_BUCKET");
        if s3_bucket.is_none() {
            problems.push(
                "ER_CLICKSTREAM_RETRY_S3_BUCKET is required: messages that exhaust their retries are written there (nothing is dropped)".into(),
            );
        }
        let cfg = RouterConfig {
            brokers,
            group_id: text("ER_KAFKA_GROUP_ID", "clickstream-event-router"),
            ingestion_topic: text("ER_KAFKA_INGESTION_TOPIC", "clickstream"),
            retry_topic: text("ER_CLICKSTREAM_RETRY_TOPIC", "clickstream-retry"),
            registry,
            sse_url,
            max_retries,
            cache_ttl,
            s3_bucket,
            s3_prefix: text("CLICKSTREAM_RETRY_S3_PATH_PREFIX", "clickstream-retry")
                .trim_end_matches('/')
                .to_string(),
            s3_endpoint: val("AWS_ENDPOINT_URL_S3").or_else(|| val("AWS_ENDPOINT_URL")),
            s3_region: val("AWS_REGION")
                .or_else(|| val("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            flush_timeout,
            message_timeout,
            port: u16::try_from(port).unwrap_or_else(|_| {
                problems.push(format!("ER_SERVER_PORT={port}: not a port"));
                8080
            }),
            debug: matches!(
                val("ER_DEBUG").as_deref(),
                Some("true" | "1" | "True" | "TRUE")
            ),
            idempotence: !matches!(
                val("ER_KAFKA_PRODUCER_IDEMPOTENCE")
                    .map(|v| v.to_ascii_lowercase())
                    .as_deref(),
                Some("false" | "0" | "no")
            ),
            kafka_props: Vec::new(),
        };
        let mut cfg = cfg;
        cfg.kafka_props = super::kafka::rdkafka_security(&val, &mut problems);
        if cfg.ingestion_topic == cfg.retry_topic {
            problems
                .push("ER_KAFKA_INGESTION_TOPIC and ER_CLICKSTREAM_RETRY_TOPIC must differ".into());
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }
}

/// `NAME=TOPIC,...` (a bare `NAME` means the topic of the same name).
pub fn parse_integrations(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, topic) = part.split_once('=').unwrap_or((part, part));
        let (name, topic) = (name.trim(), topic.trim());
        if name.is_empty() || topic.is_empty() {
            return Err(format!("{part:?}: expected NAME=TOPIC"));
        }
        out.entry(name.to_string())
            .or_insert_with(|| topic.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)], args: &RouterArgs) -> Result<RouterConfig, Vec<String>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RouterConfig::load(&|k| m.get(k).cloned(), args)
    }

    #[test]
    fn originals_defaults_and_every_problem_at_once() {
        let e = load(&[], &RouterArgs::default()).unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        let ok = load(
            &[
                ("ER_BOOTSTRAP_SERVERS", "k:9092"),
                ("ER_HOUSTON_API_URL", "http://h/v1"),
                ("ER_HOUSTON_API_KEY", "key"),
                ("ER_SSE_URL", "http://h/sse"),
                ("ER_CLICKSTREAM_RETRY_S3_BUCKET", "b"),
            ],
            &RouterArgs::default(),
        )
        .unwrap();
        assert_eq!(ok.max_retries, 2);
        assert_eq!(ok.port, 8080);
        assert_eq!(ok.flush_timeout, Duration::from_millis(1000));
        assert_eq!(ok.message_timeout, Duration::from_millis(5000));
        assert_eq!(
            ok.registry,
            Registry::Houston {
                url: "http://h/v1".into(),
                auth: HoustonAuth::ApiKey("key".into())
            }
        );
    }

    #[test]
    fn mock_takes_integrations_from_the_command_line() {
        let args = RouterArgs {
            mock: true,
            disable_sse: true,
            integrations: Some("ga=ga-topic, mixpanel".into()),
        };
        let c = load(
            &[
                ("ER_BOOTSTRAP_SERVERS", "k:9092"),
                ("ER_CLICKSTREAM_RETRY_S3_BUCKET", "b"),
            ],
            &args,
        )
        .unwrap();
        let Registry::Mock(m) = c.registry else {
            panic!()
        };
        assert_eq!(m["ga"], "ga-topic");
        assert_eq!(m["mixpanel"], "mixpanel");
        assert!(c.sse_url.is_none());
        assert!(parse_integrations("=x").is_err());
    }
}
