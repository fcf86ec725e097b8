//! NATS as an event source, with RIG's names: `NATS_SERVERS` (off when unset),
//! `NATS_SOURCE_TOPICS` (subjects, default `rig`), `NATSTOFILTER_QUEUE_GROUP` (read, not used:
//! see `broker::nats`), and `CB_NATS_TLS_CA_FILE` for `tls://` servers signed by a private CA.

use super::env;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// As given: `nats://[user:password@]host[:port]`, `tls://...` or `host[:port]`.
    pub servers: Vec<String>,
    /// Subjects subscribed to; NATS wildcards (`*`, `>`) allowed.
    pub subjects: Vec<String>,
    /// CA certificates for `tls://` servers instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// RIG's `NATSTOFILTER_QUEUE_GROUP`, when set: logged as not used at start.
    pub queue_group: Option<String>,
}

/// A server address without its user and password (for messages and logs).
fn without_credentials(s: &str) -> String {
    let start = s.find("://").map_or(0, |i| i + 3);
    // The authority ends at the path, query or fragment; its last `@` ends the user info (a
    // password may hold a raw `@`).
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    match s[start..end].rfind('@') {
        Some(at) => format!("{}{}", &s[..start], &s[start + at + 1..]),
        None => s.to_string(),
    }
}

/// A subject a proxy endpoint may publish to: dot-separated tokens, none empty, no
/// whitespace, no wildcard.
pub fn literal_subject_ok(s: &str) -> bool {
    subject_ok(s) && !s.split('.').any(|t| t == "*" || t == ">")
}

/// A subject NATS accepts in a subscription: dot-separated tokens, none empty, no whitespace;
/// `>` only as the last token.
fn subject_ok(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(char::is_whitespace)
            && (*t != ">" || i == tokens.len() - 1)
            && (t.len() == 1 || !t.contains(['*', '>']))
    })
}

impl NatsConfig {
    /// None when `NATS_SERVERS` is unset or empty (RIG's default: no NATS).
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<NatsConfig> {
        let list = |k: &str| -> Vec<String> {
            get(k)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let servers = list(env::NATS_SERVERS);
        if servers.is_empty() {
            return None;
        }
        for s in &servers {
            if let Err(e) = s.parse::<async_nats::ServerAddr>() {
                problems.push(format!(
                    "{}: {:?} is not a NATS server address ({e}); expected \
                     nats://[user:password@]host[:port], tls://... or host[:port]",
                    env::NATS_SERVERS,
                    without_credentials(s)
                ));
            }
        }
        let mut subjects = list(env::NATS_SOURCE_TOPICS);
        if subjects.is_empty() {
            subjects.push("rig".into());
        }
        for s in &subjects {
            if !subject_ok(s) {
                problems.push(format!(
                    "{}: {s:?} is not a NATS subject (dot-separated tokens, no spaces; `*` \
                     for one token, `>` only at the end)",
                    env::NATS_SOURCE_TOPICS
                ));
            }
        }
        let ca_file = get(env::NATS_TLS_CA_FILE)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(f) = &ca_file {
            if let Err(e) = super::kafka::read_certs(f) {
                problems.push(format!("{}: {e}", env::NATS_TLS_CA_FILE));
            }
        }
        Some(NatsConfig {
            servers,
            subjects,
            ca_file,
            queue_group: get(env::NATSTOFILTER_QUEUE_GROUP).filter(|g| !g.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> (Option<NatsConfig>, Vec<String>) {
        let mut problems = Vec::new();
        let c = NatsConfig::load(
            &|k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            &mut problems,
        );
        (c, problems)
    }

    #[test]
    fn off_without_servers_and_rigs_default_subject() {
        assert!(load(&[("NATS_SOURCE_TOPICS", "a")]).0.is_none());
        assert!(load(&[("NATS_SERVERS", " ")]).0.is_none());
        let (c, p) = load(&[("NATS_SERVERS", "nats://u:p@n1:4222, n2")]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(c.servers, ["nats://u:p@n1:4222", "n2"]);
        assert_eq!(c.subjects, ["rig"]);
    }

    #[test]
    fn bad_subjects_and_files_are_named() {
        let (c, p) = load(&[
            ("NATS_SERVERS", "n1"),
            (
                "NATS_SOURCE_TOPICS",
                "orders.*, audit.>, a..b, x.>.y, sp ace, f*o",
            ),
            ("CB_NATS_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ]);
        assert_eq!(c.unwrap().subjects.len(), 6);
        assert_eq!(p.len(), 5, "{p:?}");
        for bad in ["a..b", "x.>.y", "sp ace", "f*o"] {
            assert!(
                p.iter().any(|m| m.contains(&format!("{bad:?}"))),
                "{bad}: {p:?}"
            );
        }
        assert!(p[4].contains("/nonexistent/ca.pem"), "{p:?}");
        // A password never lands in a message.
        let (_, p) = load(&[("NATS_SERVERS", "nats://u:s3cret@h:x,nats://u:p@ss@h:y")]);
        assert!(p.len() == 2, "{p:?}");
        assert!(
            !p[0].contains("s3cret") && p[0].contains("nats://h:x"),
            "{p:?}"
        );
        assert!(
            !p[1].contains("ss@") && p[1].contains("nats://h:y"),
            "{p:?}"
        );
        assert!(literal_subject_ok("svc.rpc") && !literal_subject_ok("svc.*"));
    }
}
