//! The only code that reads the environment and files. Precedence: defaults < tuning file <
//! environment. Everything is parsed and validated completely, every problem is reported at
//! once, and the result is frozen into an `Arc<Config>` handed to every shard.

pub mod env;
pub mod extractors;
pub mod flowx;
pub mod https;
pub mod jwt;
pub mod kafka;
pub mod kinesis;
pub mod nats;
pub mod proxy;
pub mod redis;
pub mod router;
pub mod tuning;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use extractors::Extractors;
pub use kafka::KafkaConfig;
pub use tuning::{SlowConsumer, Tuning};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub inbound: SocketAddr,
    pub api: SocketAddr,
    /// TLS listeners beside the plain ones (`HTTPS_CERTFILE`, `HTTPS_KEYFILE`).
    pub https: Option<https::HttpsConfig>,
    /// `Access-Control-Allow-Origin` policy for the inbound endpoints (RIG's `CORS` or
    /// FlowX's `APPLICATION_CORS_ALLOW_ORIGIN`).
    pub cors: crate::auth::cors::Cors,
    /// None: JWT off (no key configured); tokens are then refused where one is given.
    pub jwt: Option<jwt::JwtSettings>,
    pub extractors: Extractors,
    pub log_level: String,
    pub log_format: LogFormat,
    pub tuning: Tuning,
    pub tuning_file: Option<PathBuf>,
    /// None: Kafka off (no `KAFKA_BROKERS`); publishing goes straight to the shards.
    pub kafka: Option<KafkaConfig>,
    /// New SSE/WS/long-poll connections per minute on this node (RIG: 5000).
    pub max_connections_per_minute: u64,
    pub subscription_check: Check,
    pub submission_check: Check,
    /// When set, the internal API (except `/health`) requires `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// The API gateway: initial definitions, timeouts, request log.
    pub proxy: proxy::ProxyConfig,
    pub kinesis: Option<kinesis::KinesisConfig>,
    /// NATS subjects consumed (`NATS_SERVERS`), delivered like Kafka records.
    pub nats: Option<nats::NatsConfig>,
    /// The Redis replay store for events published without a broker (`broker::redis`).
    pub redis: Option<redis::RedisConfig>,
    /// Prefixes under which the inbound `/_rig/` routes are also served (`CB_INBOUND_PATH_PREFIXES`,
    /// default FlowX's `/api/events`, whose ingress keeps the path): `/api/events/_rig/v1/...`.
    pub path_prefixes: Vec<String>,
    /// FlowX's SSE clean-up (`EVENTS_SSE_CLEANUP_MAXAGEMINS`, checked every
    /// `EVENTS_SSE_CLEANUP_INTERVALMINS`): SSE streams that got no event (heartbeats aside) for
    /// this long are ended with a `retry:` hint, so the client reconnects and resumes. Off
    /// unless set: heartbeats already find dead peers.
    pub sse_idle: Option<SseIdle>,
    pub presence: PresenceConfig,
    /// The claim that exempts a token from `jwt_claims` checks (`CB_PRIVILEGED_CLAIM`).
    pub privileged: Option<crate::auth::privacy::Privileged>,
    /// systemd's notify socket and watchdog, when started by systemd (`Type=notify`).
    pub systemd: Option<Systemd>,
    /// `CB_TEST_HOOKS=1`: the internal API's `POST /v3/debug/stall` (tests of the watchdog).
    pub test_hooks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systemd {
    /// `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    pub socket: String,
    /// `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset or names this process).
    pub watchdog: Option<std::time::Duration>,
}

/// Who is online: the presence API and `rig.presence` events.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// JSON pointer to the claim that names a connection's user (`CB_PRESENCE_CLAIM`, default
    /// `sub`).
    pub claim: String,
    /// Where joins and leaves are produced as `rig.presence` CloudEvents (`CB_PRESENCE_TOPIC`).
    pub topic: Option<String>,
    /// How long a presence query collects the other nodes' answers (`CB_PRESENCE_WAIT_MS`).
    pub wait: std::time::Duration,
    /// This node's name in answers (`CB_NODE_ID`, default the host name).
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseIdle {
    pub every: std::time::Duration,
    pub max_idle: std::time::Duration,
}

/// RIG's authorization checks (`SUBSCRIPTION_CHECK`, `SUBMISSION_CHECK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    None,
    /// At least one valid, not blacklisted bearer token.
    JwtValidation,
    /// POST the request to this URL with the caller's Authorization header: 2xx allows.
    Url(String),
    /// Ours, privacy by default: fields tied to a JWT claim may only carry the caller's own
    /// value (`auth::privacy`).
    JwtClaims,
}

impl Check {
    fn parse(name: &str, raw: Option<&str>, problems: &mut Vec<String>) -> Check {
        match raw.map(str::trim) {
            None | Some("") => Check::None,
            Some(v) if v.eq_ignore_ascii_case("no_check") => Check::None,
            Some(v) if v.eq_ignore_ascii_case("jwt_validation") => Check::JwtValidation,
            Some(v) if v.eq_ignore_ascii_case("jwt_claims") => Check::JwtClaims,
            Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
                Check::Url(v.to_string())
            }
            Some(v) => {
                problems.push(format!(
                    "{name}={v:?}: expected no_check, jwt_validation, jwt_claims or an http(s) URL"
                ));
                Check::None
            }
        }
    }
}

/// Everything wrong with a configuration, one line per problem, all found in one pass: the
/// operator's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration has {} problem(s): {}", .0.len(), .0.join("; "))]
pub struct Problems(pub Vec<String>);

impl std::ops::Deref for Problems {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// A key/value view of the environment so tests can build configs without touching the process.
pub type EnvMap = HashMap<String, String>;

pub fn process_env() -> EnvMap {
    std::env::vars().collect()
}

impl Config {
    /// `tuning_arg` is `--tuning PATH`, which wins over `CB_TUNING_FILE`.
    pub fn load(envs: &EnvMap, tuning_arg: Option<PathBuf>) -> Result<Config, Problems> {
        let mut problems = Vec::new();
        let get = |k: &str| envs.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());

        let tuning_file = tuning_arg.or_else(|| get(env::TUNING_FILE).map(PathBuf::from));
        let tuning = match &tuning_file {
            None => Tuning::default(),
            Some(path) => match std::fs::read_to_string(path) {
                Err(e) => {
                    problems.push(format!("tuning file {}: {e}", path.display()));
                    Tuning::default()
                }
                Ok(text) => match toml::from_str::<Tuning>(&text) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(format!(
                            "tuning file {}: {}",
                            path.display(),
                            e.to_string().trim_end()
                        ));
                        Tuning::default()
                    }
                },
            },
        };
        tuning.validate(&mut problems);

        let port = |name: &str, default: u16, problems: &mut Vec<String>| match get(name) {
            None => default,
            // Port 0 would give every shard's SO_REUSEPORT listener a different port.
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    problems.push(format!("{name}={v:?} is not a port number (1-65535)"));
                    default
                }
            },
        };
        let ip = |name: &str, default: &str, problems: &mut Vec<String>| {
            let v = get(name).unwrap_or(default);
            v.parse::<IpAddr>().unwrap_or_else(|_| {
                problems.push(format!("{name}={v:?} is not an IP address"));
                default.parse().unwrap()
            })
        };
        let inbound = SocketAddr::new(
            ip(env::INBOUND_BIND, "0.0.0.0", &mut problems),
            port(env::INBOUND_PORT, 4000, &mut problems),
        );
        let api = SocketAddr::new(
            ip(env::API_BIND, "127.0.0.1", &mut problems),
            port(env::API_HTTP_PORT, 4010, &mut problems),
        );
        let https = https::HttpsConfig::load(
            &|k| get(k).map(str::to_string),
            inbound.ip(),
            api.ip(),
            &port,
            &mut problems,
        );
        if let Some(h) = &https {
            let mut ports = vec![inbound.port(), api.port(), h.inbound.port(), h.api.port()];
            ports.sort_unstable();
            ports.dedup();
            if ports.len() < 4 {
                problems.push(format!(
                    "{}, {}, {} and {} must all differ",
                    env::INBOUND_PORT,
                    env::API_HTTP_PORT,
                    env::INBOUND_HTTPS_PORT,
                    env::API_HTTPS_PORT
                ));
            }
        }
        if inbound.port() != 0 && inbound.port() == api.port() {
            problems.push(format!(
                "{} and {} are both {}; they must differ",
                env::INBOUND_PORT,
                env::API_HTTP_PORT,
                api.port()
            ));
        }

        let cors = crate::auth::cors::Cors::load(
            get(env::CORS),
            get(env::APPLICATION_CORS_ALLOW_ORIGIN),
            &mut problems,
        );
        let jwt = jwt::load(&|k| get(k).map(str::to_string), &mut problems);

        let mut extractors = Extractors::load(get(env::EXTRACTORS).unwrap_or(""), &mut problems);

        // RIG's LOG_LEVEL, else FlowX's Spring names (the application's level, then the root's).
        let (level_var, raw_level) = [env::LOG_LEVEL, "LOGGING_LEVEL_APP", "LOGGING_LEVEL_ROOT"]
            .into_iter()
            .find_map(|k| get(k).map(|v| (k, v)))
            .unwrap_or((env::LOG_LEVEL, "info"));
        let log_level = raw_level.to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "warning", "error"].contains(&log_level.as_str()) {
            problems.push(format!(
                "{level_var}={log_level:?}: expected one of debug, info, warn, error"
            ));
        }
        let log_format = match get(env::LOG_FMT).map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") | Some("erlang") => LogFormat::Text,
            Some("json") | Some("gcl") => LogFormat::Json,
            Some(other) => {
                problems.push(format!("{}={other:?}: expected text or json", env::LOG_FMT));
                LogFormat::Text
            }
        };

        let owned = |k: &str| get(k).map(str::to_string);
        let kafka = KafkaConfig::load(&owned, &mut problems);
        let kinesis = kinesis::KinesisConfig::load(&owned, &mut problems);
        let nats = nats::NatsConfig::load(&owned, &mut problems);
        let redis = redis::RedisConfig::load(&owned, &mut problems);
        if kafka.as_ref().is_some_and(|k| k.flowx.is_some()) {
            let claim = get(env::FLOWX_USER_CLAIM).unwrap_or("preferred_username");
            extractors.add_missing(Extractors::from_value(
                &flowx::extractors(claim),
                &mut problems,
            ));
        }
        let max_connections_per_minute = match get(env::MAX_CONNECTIONS_PER_MINUTE) {
            None => 5000,
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                problems.push(format!(
                    "{}={v:?}: expected a positive integer",
                    env::MAX_CONNECTIONS_PER_MINUTE
                ));
                5000
            }),
        };
        let subscription_check = Check::parse(
            env::SUBSCRIPTION_CHECK,
            get(env::SUBSCRIPTION_CHECK),
            &mut problems,
        );
        let submission_check = Check::parse(
            env::SUBMISSION_CHECK,
            get(env::SUBMISSION_CHECK),
            &mut problems,
        );
        let api_token = get(env::API_TOKEN).map(str::to_string);
        let minutes = |name: &str, problems: &mut Vec<String>| -> Option<u64> {
            let v = get(name)?;
            match v.parse::<u64>() {
                Ok(m) if m > 0 => Some(m),
                _ => {
                    problems.push(format!(
                        "{name}={v:?}: expected a positive number of minutes"
                    ));
                    None
                }
            }
        };
        let sse_idle = minutes(env::EVENTS_SSE_CLEANUP_MAXAGEMINS, &mut problems).map(|max| {
            let every = minutes(env::EVENTS_SSE_CLEANUP_INTERVALMINS, &mut problems).unwrap_or(5);
            SseIdle {
                every: std::time::Duration::from_secs(every * 60),
                max_idle: std::time::Duration::from_secs(max * 60),
            }
        });
        let presence = PresenceConfig {
            claim: {
                let c = get(env::PRESENCE_CLAIM).unwrap_or("sub");
                if c.starts_with('/') {
                    c.to_string()
                } else {
                    format!("/{c}")
                }
            },
            topic: get(env::PRESENCE_TOPIC).map(str::to_string),
            wait: std::time::Duration::from_millis(match get(env::PRESENCE_WAIT_MS) {
                None => 500,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=30_000).contains(n))
                    .unwrap_or_else(|| {
                        problems.push(format!(
                            "{}={v:?}: expected milliseconds, 1 to 30000",
                            env::PRESENCE_WAIT_MS
                        ));
                        500
                    }),
            }),
            node: get(env::NODE_ID).map_or_else(proxy::hostname, str::to_string),
        };
        let privileged = get(env::PRIVILEGED_CLAIM).and_then(|raw| {
            crate::auth::privacy::Privileged::parse(raw)
                .map_err(|e| problems.push(format!("{}: {e}", env::PRIVILEGED_CLAIM)))
                .ok()
        });
        let systemd = get("NOTIFY_SOCKET").map(|socket| {
            let ours = get("WATCHDOG_PID")
                .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
            let watchdog =
                get("WATCHDOG_USEC")
                    .filter(|_| ours)
                    .and_then(|v| match v.parse::<u64>() {
                        Ok(us) if us > 0 => Some(std::time::Duration::from_micros(us)),
                        _ => {
                            problems.push(format!("WATCHDOG_USEC={v:?}: expected microseconds"));
                            None
                        }
                    });
            Systemd {
                socket: socket.to_string(),
                watchdog,
            }
        });
        let test_hooks = get("CB_TEST_HOOKS") == Some("1");
        let mut path_prefixes = Vec::new();
        // Set but blank turns the prefixes off; unset means FlowX's.
        let raw_prefixes = match envs.get(env::INBOUND_PATH_PREFIXES) {
            Some(v) => v.trim(),
            None => "/api/events",
        };
        for p in raw_prefixes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let p = p.trim_end_matches('/');
            if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '#', ' ']) {
                problems.push(format!(
                    "{}: {p:?}: expected a path such as /api/events",
                    env::INBOUND_PATH_PREFIXES
                ));
            } else {
                path_prefixes.push(p.to_string());
            }
        }
        let proxy = proxy::ProxyConfig::load(
            envs,
            kafka.is_some(),
            kinesis.is_some(),
            nats.is_some(),
            &tuning,
            &mut problems,
        );

        if problems.is_empty() {
            Ok(Config {
                proxy,
                kafka,
                kinesis,
                nats,
                redis,
                max_connections_per_minute,
                subscription_check,
                submission_check,
                api_token,
                inbound,
                api,
                https,
                cors,
                jwt,
                extractors,
                log_level: if log_level == "warning" {
                    "warn".into()
                } else {
                    log_level
                },
                log_format,
                tuning,
                tuning_file,
                path_prefixes,
                sse_idle,
                presence,
                privileged,
                systemd,
                test_hooks,
            })
        } else {
            Err(Problems(problems))
        }
    }

    /// Number of shards: the tuning value, else one per configured or online CPU, at most
    /// 64 (an interest-table cell is a 64-bit mask of shards).
    pub fn shard_count(&self, online_cpus: usize) -> usize {
        let n = match self.tuning.runtime.shards {
            0 if !self.tuning.runtime.cpus.is_empty() => self.tuning.runtime.cpus.len(),
            0 => online_cpus.max(1),
            n => n,
        };
        n.min(crate::route::interest::MAX_SHARDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_rigs() {
        let c = Config::load(&EnvMap::new(), None).unwrap();
        assert_eq!(c.inbound.port(), 4000);
        assert_eq!(c.api.to_string(), "127.0.0.1:4010");
        assert_eq!(
            c.cors.allow_origin(Some("https://x.example")).as_deref(),
            Some("*")
        );
        assert_eq!(c.tuning.sessions.heartbeat_interval_ms, 15_000);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = std::env::temp_dir().join(format!("cb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.toml");
        std::fs::write(&f, "[http]\nmax_body_byte = 3\n").unwrap();
        let e = Config::load(
            &envs(&[
                ("INBOUND_PORT", "x"),
                ("LOG_LEVEL", "loud"),
                ("EXTRACTORS", "{]"),
            ]),
            Some(f),
        )
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e.iter().any(|p| p.contains("max_body_byte")), "{e:#?}");
    }

    #[test]
    fn flowx_log_level_names_are_aliases() {
        let c = Config::load(&envs(&[("LOGGING_LEVEL_ROOT", "WARN")]), None).unwrap();
        assert_eq!(c.log_level, "warn");
        let c = Config::load(
            &envs(&[
                ("LOGGING_LEVEL_ROOT", "warn"),
                ("LOGGING_LEVEL_APP", "debug"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            c.log_level, "debug",
            "the application's level wins over the root's"
        );
        let e = Config::load(&envs(&[("LOGGING_LEVEL_APP", "chatty")]), None).unwrap_err();
        assert!(e.iter().any(|p| p.contains("LOGGING_LEVEL_APP")), "{e:#?}");
    }
}
