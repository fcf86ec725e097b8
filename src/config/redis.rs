//! The optional Redis replay store: `CB_REDIS_URL`, or FlowX's Spring names
//! (`SPRING_DATA_REDIS_*`: standalone, Sentinel or Cluster), `EVENTS_REDIS_TTLHOURS`; TLS by
//! `rediss://`, `SPRING_DATA_REDIS_SSL_ENABLED` or a Spring SSL bundle.
//! See `broker::redis` for what is kept and why.

use super::env;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server (or a proxy in front of several): a `redis://` or `rediss://` URL.
    Standalone(String),
    /// Sentinels and the master's name; the master is reached with `user`, `password` and
    /// `db`, sentinels with `sentinel_password`; TLS (when on) to both.
    Sentinel {
        nodes: Vec<(String, u16)>,
        master: String,
        sentinel_password: Option<String>,
        user: Option<String>,
        password: Option<String>,
        db: i64,
    },
    /// Cluster seed nodes as `redis://` or `rediss://` URLs.
    Cluster(Vec<String>),
}

/// TLS to Redis, its files read and checked at start and handed to the client as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificates trusted instead of the system's store; None: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its key (decrypted), for servers that demand one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: this lands in start-up logs.
        f.debug_struct("RedisTls")
            .field("own_ca", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// Some: every connection (server, sentinels, cluster nodes) is TLS.
    pub tls: Option<RedisTls>,
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

/// `host:port`, `[v6]:port` included.
fn host_port(n: &str) -> Option<(String, u16)> {
    let (host, port) = n.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A PEM value as Spring's bundles take it: a path, `file:path`, or the PEM text itself.
fn pem_value(var: &str, v: &str, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    if v.starts_with("-----BEGIN") {
        return Some(v.as_bytes().to_vec());
    }
    if v.starts_with("classpath:") {
        problems.push(format!(
            "{var}={v:?}: a classpath resource exists only inside a Java application; give \
             a file path or the PEM text"
        ));
        return None;
    }
    let path = v.strip_prefix("file:").unwrap_or(v);
    std::fs::read(path)
        .map_err(|e| problems.push(format!("{var}: cannot read {path}: {e}")))
        .ok()
}

/// Certificates in `pem`, at least one, or a problem naming `var`.
fn certs_in(var: &str, pem: &[u8], problems: &mut Vec<String>) -> bool {
    match rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>() {
        Ok(c) if !c.is_empty() => true,
        Ok(_) => {
            problems.push(format!("{var}: no PEM certificate in it"));
            false
        }
        Err(e) => {
            problems.push(format!("{var}: not PEM certificates: {e}"));
            false
        }
    }
}

/// The TLS settings: ours (`CB_REDIS_TLS_*`) first, then the Spring bundle's PEM entries.
/// None when TLS is off; setting TLS files with TLS off is a problem, not ignored.
fn load_tls(
    text: &dyn Fn(&str) -> Option<String>,
    on: bool,
    bundle: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<RedisTls> {
    // Spring's environment binding: the bundle name upper-cased, dashes dropped.
    let b = bundle.map(|b| b.to_ascii_uppercase().replace('-', ""));
    let pick = |ours: &'static str, entry: &str| -> Option<(String, String)> {
        text(ours).map(|v| (ours.to_string(), v)).or_else(|| {
            let var = format!("SPRING_SSL_BUNDLE_PEM_{}_{entry}", b.as_deref()?);
            text(&var).map(|v| (var, v))
        })
    };
    let ca = pick(env::REDIS_TLS_CA_FILE, "TRUSTSTORE_CERTIFICATE");
    let cert = pick(env::REDIS_TLS_CERT_FILE, "KEYSTORE_CERTIFICATE");
    let key = pick(env::REDIS_TLS_KEY_FILE, "KEYSTORE_PRIVATE_KEY");
    let pass = pick(env::REDIS_TLS_KEY_PASS, "KEYSTORE_PRIVATE_KEY_PASSWORD");
    if !on {
        // Only our own names: a Spring bundle is often shared with other clients, and Spring
        // ignores it with TLS switched off.
        let ours = [&ca, &cert, &key]
            .into_iter()
            .flatten()
            .find(|(var, _)| var.starts_with("CB_"));
        if let Some((var, _)) = ours {
            problems.push(format!(
                "{var} is set but TLS to Redis is off: set {}=true or use a rediss:// URL",
                env::SPRING_DATA_REDIS_SSL_ENABLED
            ));
        }
        return None;
    }
    let ours_suffice =
        text(env::REDIS_TLS_CA_FILE).is_some() || text(env::REDIS_TLS_CERT_FILE).is_some();
    if let Some(b) = b.as_ref().filter(|_| !ours_suffice) {
        let pem_entries = ["TRUSTSTORE_CERTIFICATE", "KEYSTORE_CERTIFICATE"];
        let jks = format!("SPRING_SSL_BUNDLE_JKS_{b}_TRUSTSTORE_LOCATION");
        if pem_entries
            .iter()
            .all(|e| text(&format!("SPRING_SSL_BUNDLE_PEM_{b}_{e}")).is_none())
        {
            problems.push(if text(&jks).is_some() {
                format!(
                    "{}={}: a JKS bundle; only PEM bundles (SPRING_SSL_BUNDLE_PEM_{b}_*) are \
                     read: convert the stores to PEM",
                    env::SPRING_DATA_REDIS_SSL_BUNDLE,
                    bundle.unwrap_or_default()
                )
            } else {
                format!(
                    "{}={}: no SPRING_SSL_BUNDLE_PEM_{b}_TRUSTSTORE_CERTIFICATE or \
                     _KEYSTORE_CERTIFICATE is set",
                    env::SPRING_DATA_REDIS_SSL_BUNDLE,
                    bundle.unwrap_or_default()
                )
            });
        }
    }
    let ca = ca.and_then(|(var, v)| {
        let pem = pem_value(&var, &v, problems)?;
        certs_in(&var, &pem, problems).then_some(pem)
    });
    let identity = match (cert, key) {
        (None, None) => None,
        (Some((var, _)), None) | (None, Some((var, _))) => {
            problems.push(format!(
                "{var} is set alone: a client certificate needs both {} and {}",
                env::REDIS_TLS_CERT_FILE,
                env::REDIS_TLS_KEY_FILE
            ));
            None
        }
        (Some((cvar, c)), Some((kvar, k))) => {
            let chain = pem_value(&cvar, &c, problems).filter(|pem| certs_in(&cvar, pem, problems));
            let pass_var = pass
                .as_ref()
                .map_or(env::REDIS_TLS_KEY_PASS.to_string(), |(v, _)| v.clone());
            let key =
                pem_value(&kvar, &k, problems).and_then(|pem| {
                    match super::kafka::private_key(
                        &pem,
                        pass.as_ref().map(|(_, p)| p.as_str()),
                        &pass_var,
                    ) {
                        Ok(Some(key)) => Some(key_pem(&key)),
                        Ok(None) => {
                            problems.push(format!("{kvar}: no PEM private key in it"));
                            None
                        }
                        Err(e) => {
                            problems.push(format!("{kvar}: {e}"));
                            None
                        }
                    }
                });
            chain.zip(key)
        }
    };
    Some(RedisTls { ca, identity })
}

/// The key as PEM again (the client reads PEM), decrypted when it was not.
fn key_pem(key: &rustls::pki_types::PrivateKeyDer<'_>) -> Vec<u8> {
    use rustls::pki_types::PrivateKeyDer;
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, key.secret_der())
        .expect("a DER key encodes as PEM")
        .into_bytes()
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
        let url = text(env::REDIS_URL)
            .map(|u| (env::REDIS_URL, u))
            .or_else(|| text(env::SPRING_DATA_REDIS_URL).map(|u| (env::SPRING_DATA_REDIS_URL, u)));
        let ssl_enabled = text(env::SPRING_DATA_REDIS_SSL_ENABLED).and_then(|v| {
            match v.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    problems.push(format!(
                        "{}={v:?}: expected true or false",
                        env::SPRING_DATA_REDIS_SSL_ENABLED
                    ));
                    None
                }
            }
        });
        let bundle = text(env::SPRING_DATA_REDIS_SSL_BUNDLE);
        // As in Spring Boot: a bundle turns TLS on unless it is switched off; a rediss:// URL
        // is TLS whatever the flag says.
        let tls_on = ssl_enabled.unwrap_or(bundle.is_some())
            || url
                .as_ref()
                .is_some_and(|(_, u)| u.starts_with("rediss://"));
        let scheme = if tls_on { "rediss" } else { "redis" };
        let url_ok = |name: &str, url: &str, problems: &mut Vec<String>| {
            if url.contains('#') {
                // The client reads `#insecure` as "do not verify", which this build cannot do:
                // refused here rather than failing every connection later.
                problems.push(format!(
                    "{name}: a URL fragment (#...) is not supported; certificates are always verified"
                ));
            } else if redis::parse_redis_url(url).is_none() {
                problems.push(format!(
                    "{name}={url:?}: expected redis[s]://[user:password@]host[:port][/db]"
                ));
            }
        };
        let mode = if let Some((name, url)) = url {
            // The flag applies to a plain URL too, as Spring's does.
            let url = match url.strip_prefix("redis://") {
                Some(rest) if tls_on => format!("rediss://{rest}"),
                _ => url,
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
                        "{scheme}://{}{n}",
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
            let raw = text(env::SPRING_DATA_REDIS_SENTINEL_NODES).unwrap_or_default();
            let mut nodes = Vec::new();
            for n in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match host_port(n) {
                    Some(hp) => nodes.push(hp),
                    None => problems.push(format!(
                        "{}: {n:?} is not host:port",
                        env::SPRING_DATA_REDIS_SENTINEL_NODES
                    )),
                }
            }
            if raw.is_empty() {
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
                "{scheme}://{}{host}:{port}/{db}",
                userinfo(user.as_deref(), password.as_deref())
            );
            url_ok(env::SPRING_DATA_REDIS_HOST, &url, problems);
            RedisMode::Standalone(url)
        } else {
            return None;
        };
        let tls = load_tls(&text, tls_on, bundle.as_deref(), problems);
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
            tls,
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
            RedisMode::Sentinel { nodes, master, .. } => format!(
                "sentinel {master} via {}{}",
                nodes
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
                if self.tls.is_some() { " over TLS" } else { "" }
            ),
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
            ("SPRING_DATA_REDIS_SENTINEL_MASTER", "mymaster"),
            ("SPRING_DATA_REDIS_SENTINEL_NODES", "s1:26379,s2"),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("\"s2\" is not host:port"), "{p:?}");
        let (_, p) = load(&[
            ("CB_REDIS_URL", "http://x:1"),
            ("EVENTS_REDIS_TTLHOURS", "-1"),
            ("CB_REDIS_MAX_PER_KEY", "0"),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("CB_REDIS_URL") && p[1].contains("EVENTS_REDIS_TTLHOURS"));
        assert!(load(&[]).0.is_none());
    }

    #[test]
    fn tls_is_on_by_flag_url_or_bundle_and_every_url_says_rediss() {
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_HOST", "r.local"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "TRUE"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            c.mode,
            RedisMode::Standalone("rediss://r.local:6379/0".into())
        );
        // No CA of our own: the system's roots.
        assert_eq!(
            c.tls,
            Some(RedisTls {
                ca: None,
                identity: None
            })
        );
        let (c, p) = load(&[
            ("CB_REDIS_URL", "redis://x:1"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "true"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.unwrap().mode,
            RedisMode::Standalone("rediss://x:1".into())
        );
        let (c, p) = load(&[("CB_REDIS_URL", "rediss://x:1")]);
        assert!(p.is_empty(), "{p:?}");
        assert!(c.unwrap().tls.is_some());
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_CLUSTER_NODES", "a:1,b:2"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "true"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.unwrap().mode,
            RedisMode::Cluster(vec!["rediss://a:1".into(), "rediss://b:2".into()])
        );
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_SENTINEL_MASTER", "m"),
            ("SPRING_DATA_REDIS_SENTINEL_NODES", "[::1]:26379"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "true"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert!(
            matches!(&c.mode, RedisMode::Sentinel { nodes, .. } if nodes[0] == ("::1".to_string(), 26379))
        );
        assert_eq!(c.describe(), "sentinel m via ::1:26379 over TLS");
        // Off by default, and off when the flag says so even with a bundle.
        let (c, _) = load(&[("SPRING_DATA_REDIS_HOST", "r")]);
        assert!(c.unwrap().tls.is_none());
        let (c, p) = load(&[
            ("SPRING_DATA_REDIS_HOST", "r"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "false"),
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert!(c.unwrap().tls.is_none());
        let (_, p) = load(&[
            ("SPRING_DATA_REDIS_HOST", "r"),
            ("SPRING_DATA_REDIS_SSL_ENABLED", "yes"),
        ]);
        assert!(p[0].contains("expected true or false"), "{p:?}");
    }

    #[test]
    fn tls_files_are_read_and_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("cb-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.to_str().unwrap();
        let problems = |vars: &[(&str, &str)]| {
            let mut all = vec![("SPRING_DATA_REDIS_HOST", "r")];
            all.extend_from_slice(vars);
            load(&all).1
        };
        // TLS files with TLS off are a mistake, not a no-op.
        let p = problems(&[("CB_REDIS_TLS_CA_FILE", junk)]);
        assert!(
            p.len() == 1 && p[0].contains("CB_REDIS_TLS_CA_FILE is set but TLS to Redis is off"),
            "{p:?}"
        );
        let on = ("SPRING_DATA_REDIS_SSL_ENABLED", "true");
        let p = problems(&[on, ("CB_REDIS_TLS_CA_FILE", junk)]);
        assert!(
            p.len() == 1 && p[0].contains("no PEM certificate in it"),
            "{p:?}"
        );
        let p = problems(&[on, ("CB_REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(p[0].contains("cannot read /nonexistent/ca.pem"), "{p:?}");
        let p = problems(&[on, ("CB_REDIS_TLS_CERT_FILE", junk)]);
        assert!(
            p[0].contains("CB_REDIS_TLS_CERT_FILE is set alone"),
            "{p:?}"
        );
        let p = problems(&[
            on,
            ("CB_REDIS_TLS_CERT_FILE", junk),
            ("CB_REDIS_TLS_KEY_FILE", junk),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[1].contains("CB_REDIS_TLS_KEY_FILE: no PEM private key"),
            "{p:?}"
        );
        // A Spring bundle: its PEM entries, by path, file: or inline; never classpath.
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "my-redis"),
            (
                "SPRING_SSL_BUNDLE_PEM_MYREDIS_TRUSTSTORE_CERTIFICATE",
                "classpath:ca.pem",
            ),
        ]);
        assert!(
            p.len() == 1 && p[0].contains("SPRING_SSL_BUNDLE_PEM_MYREDIS_TRUSTSTORE_CERTIFICATE"),
            "{p:?}"
        );
        let file = format!("file:{junk}");
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
            (
                "SPRING_SSL_BUNDLE_PEM_B_TRUSTSTORE_CERTIFICATE",
                file.as_str(),
            ),
        ]);
        assert!(
            p.len() == 1 && p[0].contains("no PEM certificate in it"),
            "{p:?}"
        );
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
            (
                "SPRING_SSL_BUNDLE_PEM_B_TRUSTSTORE_CERTIFICATE",
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            ),
        ]);
        assert!(
            p.len() == 1 && p[0].contains("not PEM certificates"),
            "{p:?}"
        );
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
            ("SPRING_SSL_BUNDLE_JKS_B_TRUSTSTORE_LOCATION", "/x.jks"),
        ]);
        assert!(p.len() == 1 && p[0].contains("a JKS bundle"), "{p:?}");
        let p = problems(&[("SPRING_DATA_REDIS_SSL_BUNDLE", "b")]);
        assert!(
            p.len() == 1 && p[0].contains("no SPRING_SSL_BUNDLE_PEM_B_"),
            "{p:?}"
        );
        // Our own files make the bundle's entries unnecessary.
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
            ("CB_REDIS_TLS_CA_FILE", junk),
        ]);
        assert!(
            p.len() == 1 && p[0].contains("no PEM certificate in it"),
            "{p:?}"
        );
        // TLS switched off: a (shared) bundle is ignored, as Spring does.
        let p = problems(&[
            ("SPRING_DATA_REDIS_SSL_ENABLED", "false"),
            ("SPRING_DATA_REDIS_SSL_BUNDLE", "b"),
            ("SPRING_SSL_BUNDLE_PEM_B_TRUSTSTORE_CERTIFICATE", junk),
        ]);
        assert!(p.is_empty(), "{p:?}");
        // `#insecure` would mean "do not verify": refused up front.
        let (_, p) = load(&[("CB_REDIS_URL", "rediss://h:6380/0#insecure")]);
        assert!(p.len() == 1 && p[0].contains("fragment"), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
