//! The optional Redis replay store: `CB_REDIS_URL`, or FlowX's Spring names
//! (`SPRING_DATA_REDIS_*`: standalone, Sentinel or Cluster), `EVENTS_REDIS_TTLHOURS`.
//! See `broker::redis` for what is kept and why.

use super::env;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server (or a proxy in front of several): a `redis://` URL.
    Standalone(String),
    /// Sentinels (`host:port` each) and the master's name; `node` is the URL template for
    /// the master (user, password, database).
    Sentinel {
        nodes: Vec<String>,
        master: String,
        sentinel_password: Option<String>,
        user: Option<String>,
        password: Option<String>,
        db: i64,
    },
    /// Cluster seed nodes as `redis://` URLs.
    Cluster(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// Every key the store writes starts with this (`CB_REDIS_KEY_PREFIX`, default
    /// `cb:events:`), so one Redis can serve several gateways.
    pub prefix: String,
    /// How long events are kept (`EVENTS_REDIS_TTLHOURS`, default 4 h), in seconds.
    pub ttl_s: u64,
    /// Events kept per routing key at most (`CB_REDIS_MAX_PER_KEY`, default 1000): a key that
    /// gets more in its TTL keeps the newest.
    pub max_per_key: usize,
}

fn userinfo(user: Option<&str>, password: Option<&str>) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    match (user, password) {
        (None, None) => String::new(),
        (u, Some(p)) => format!("{}:{}@", enc(u.unwrap_or("")), enc(p)),
        (Some(u), None) => format!("{}@", enc(u)),
    }
}

impl RedisConfig {
    /// None when no Redis variable is set; problems are collected.
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<RedisConfig> {
        let text = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let user = text(env::SPRING_DATA_REDIS_USERNAME);
        let password = text(env::SPRING_DATA_REDIS_PASSWORD);
        let db = match text(env::SPRING_DATA_REDIS_DATABASE) {
            None => 0,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .unwrap_or_else(|| {
                    problems.push(format!(
                        "{}={v:?}: expected a database number (0, 1, ...)",
                        env::SPRING_DATA_REDIS_DATABASE
                    ));
                    0
                }),
        };
        if text(env::SPRING_DATA_REDIS_SSL_ENABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            problems.push(format!(
                "{}=true: TLS to Redis is not supported by this build; use a TLS-terminating \
                 sidecar (stunnel) on loopback and point the gateway at it",
                env::SPRING_DATA_REDIS_SSL_ENABLED
            ));
        }
        let url_ok = |name: &str, url: &str, problems: &mut Vec<String>| {
            if url.starts_with("rediss://") {
                problems.push(format!(
                    "{name}={url:?}: rediss:// (TLS) is not supported by this build; use a \
                     TLS-terminating sidecar and redis://"
                ));
                false
            } else if redis::parse_redis_url(url).is_none() {
                problems.push(format!(
                    "{name}={url:?}: expected redis://[user:password@]host[:port][/db]"
                ));
                false
            } else {
                true
            }
        };
        let mode =
            if let Some(url) = text(env::REDIS_URL).or_else(|| text(env::SPRING_DATA_REDIS_URL)) {
                let name = if get(env::REDIS_URL).is_some() {
                    env::REDIS_URL
                } else {
                    env::SPRING_DATA_REDIS_URL
                };
                url_ok(name, &url, problems);
                RedisMode::Standalone(url)
            } else if let Some(nodes) = text(env::SPRING_DATA_REDIS_CLUSTER_NODES) {
                let urls: Vec<String> = nodes
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        format!(
                            "redis://{}{n}",
                            userinfo(user.as_deref(), password.as_deref())
                        )
                    })
                    .collect();
                for u in &urls {
                    url_ok(env::SPRING_DATA_REDIS_CLUSTER_NODES, u, problems);
                }
                if urls.is_empty() {
                    problems.push(format!(
                        "{}: expected host:port,host:port",
                        env::SPRING_DATA_REDIS_CLUSTER_NODES
                    ));
                }
                RedisMode::Cluster(urls)
            } else if let Some(master) = text(env::SPRING_DATA_REDIS_SENTINEL_MASTER) {
                let nodes: Vec<String> = text(env::SPRING_DATA_REDIS_SENTINEL_NODES)
                    .unwrap_or_default()
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                if nodes.is_empty() {
                    problems.push(format!(
                        "{} is set but {} is not: expected host:port,host:port",
                        env::SPRING_DATA_REDIS_SENTINEL_MASTER,
                        env::SPRING_DATA_REDIS_SENTINEL_NODES
                    ));
                }
                RedisMode::Sentinel {
                    nodes,
                    master,
                    sentinel_password: text(env::SPRING_DATA_REDIS_SENTINEL_PASSWORD),
                    user: user.clone(),
                    password: password.clone(),
                    db,
                }
            } else if let Some(host) = text(env::SPRING_DATA_REDIS_HOST) {
                let port = text(env::SPRING_DATA_REDIS_PORT).unwrap_or_else(|| "6379".into());
                if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                    problems.push(format!(
                        "{}={port:?}: expected a port number",
                        env::SPRING_DATA_REDIS_PORT
                    ));
                }
                let url = format!(
                    "redis://{}{host}:{port}/{db}",
                    userinfo(user.as_deref(), password.as_deref())
                );
                url_ok(env::SPRING_DATA_REDIS_HOST, &url, problems);
                RedisMode::Standalone(url)
            } else {
                return None;
            };
        let ttl_s = match text(env::EVENTS_REDIS_TTLHOURS) {
            None => 4 * 3600,
            Some(v) => match v.parse::<f64>() {
                Ok(h) if h > 0.0 && h <= 24.0 * 365.0 => (h * 3600.0).round().max(1.0) as u64,
                _ => {
                    problems.push(format!(
                        "{}={v:?}: expected a positive number of hours",
                        env::EVENTS_REDIS_TTLHOURS
                    ));
                    4 * 3600
                }
            },
        };
        let max_per_key = match text(env::REDIS_MAX_PER_KEY) {
            None => 1000,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .unwrap_or_else(|| {
                    problems.push(format!(
                        "{}={v:?}: expected 1 to 1000000 events",
                        env::REDIS_MAX_PER_KEY
                    ));
                    1000
                }),
        };
        if let Some(v) = text(env::EVENTS_REDIS_FREQUENCYMILLIS) {
            if v.parse::<u64>().is_err() {
                problems.push(format!(
                    "{}={v:?}: expected milliseconds",
                    env::EVENTS_REDIS_FREQUENCYMILLIS
                ));
            }
        }
        Some(RedisConfig {
            mode,
            prefix: text(env::REDIS_KEY_PREFIX).unwrap_or_else(|| "cb:events:".into()),
            ttl_s,
            max_per_key,
        })
    }

    /// Where it points, without credentials (for the start-up log).
    pub fn describe(&self) -> String {
        let strip = |u: &str| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(a)) if a > s => format!("{}{}", &u[..s + 3], &u[a + 1..]),
            _ => u.to_string(),
        };
        match &self.mode {
            RedisMode::Standalone(u) => strip(u),
            RedisMode::Sentinel { nodes, master, .. } => {
                format!("sentinel {master} via {}", nodes.join(","))
            }
            RedisMode::Cluster(urls) => format!(
                "cluster {}",
                urls.iter().map(|u| strip(u)).collect::<Vec<_>>().join(",")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> (Option<RedisConfig>, Vec<String>) {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let c = RedisConfig::load(&|k| map.get(k).cloned(), &mut problems);
        (c, problems)
    }

    #[test]
    fn spring_names_make_a_url_and_flowx_ttl_applies() {
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_HOST", "r.local"),
            ("SPRING_DATA_REDIS_PASSWORD", "p@ss"),
            ("SPRING_DATA_REDIS_DATABASE", "2"),
            ("EVENTS_REDIS_TTLHOURS", "1"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            c.mode,
            RedisMode::Standalone("redis://:p%40ss@r.local:6379/2".into())
        );
        assert_eq!(c.ttl_s, 3600);
        assert_eq!(c.describe(), "redis://r.local:6379/2");
    }

    #[test]
    fn cluster_sentinel_and_bad_values() {
        let (c, p) = load(&[("SPRING_DATA_REDIS_CLUSTER_NODES", "a:1, b:2")]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.unwrap().mode,
            RedisMode::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_SENTINEL_MASTER", "mymaster"),
            ("SPRING_DATA_REDIS_SENTINEL_NODES", "s1:26379,s2:26379"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert!(
            matches!(c.unwrap().mode, RedisMode::Sentinel { ref nodes, .. } if nodes.len() == 2)
        );
        let (_, p) = load(&[
            ("CB_REDIS_URL", "rediss://x:1"),
            ("EVENTS_REDIS_TTLHOURS", "-1"),
            ("CB_REDIS_MAX_PER_KEY", "0"),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("CB_REDIS_URL") && p[1].contains("EVENTS_REDIS_TTLHOURS"));
        assert!(load(&[]).0.is_none());
    }
}
