//! Kafka settings from RIG's and FlowX's environment variables. Kafka is on when
//! `KAFKA_BROKERS` (alias `KAFKA_BOOTSTRAP_SERVERS`, `SPRING_KAFKA_BOOTSTRAP_SERVERS`) is set.

use super::env;
use regex::Regex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One entry of `KAFKA_SOURCE_TOPICS`: a topic name, or a regular expression (an entry with any
/// of `*?+[](){}|^$\`) matched against the whole topic name.
#[derive(Debug, Clone)]
pub enum TopicPattern {
    Name(String),
    Regex(Regex),
}

impl TopicPattern {
    pub fn parse(s: &str) -> Result<TopicPattern, BadPattern> {
        if s.contains([
            '*', '?', '+', '[', ']', '(', ')', '{', '}', '|', '^', '$', '\\',
        ]) {
            let anchored = format!("^(?:{})$", s.trim_start_matches('^').trim_end_matches('$'));
            Ok(TopicPattern::Regex(Regex::new(&anchored)?))
        } else {
            Ok(TopicPattern::Name(s.to_string()))
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Name(n) => n == topic,
            TopicPattern::Regex(r) => r.is_match(topic),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TopicPattern::Name(n) => n,
            TopicPattern::Regex(r) => r.as_str(),
        }
    }
}

/// A topic entry that looks like a regular expression but is not one (the operator's).
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid regular expression: {0}")]
pub struct BadPattern(#[from] regex::Error);

/// `KAFKA_SASL` is not `MECHANISM:USER:PASSWORD` with a known mechanism (the operator's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("expected MECHANISM:USER:PASSWORD, e.g. plain:alice:secret")]
    Format,
    #[error("unknown mechanism {0:?}; expected plain, scram-sha-256 or scram-sha-512")]
    Mechanism(String),
}

/// A TLS file that cannot be used (the operator's).
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not PEM certificates: {source}")]
    NotPem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    Empty { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Latest,
    Earliest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sasl {
    Plain {
        user: String,
        pass: String,
    },
    ScramSha256 {
        user: String,
        pass: String,
    },
    ScramSha512 {
        user: String,
        pass: String,
    },
    /// FlowX's `KAFKA_OAUTH_*`: a client-credentials token from `token_url`, fetched before it
    /// expires, sent as OAUTHBEARER by every Kafka client of the process.
    OauthBearer {
        client_id: String,
        client_secret: String,
        token_url: String,
    },
}

/// Kafka over TLS, read and checked at start-up: the CA file (`KAFKA_SSL_CA_CERTFILE`; empty
/// means the system's CA file, Azure Event Hubs style) and the optional client certificate and
/// key, built into a rustls client configuration, so a bad PEM is reported by
/// `--check-config` rather than found by a reconnect loop.
#[derive(Debug, Clone)]
pub struct Tls {
    pub client: Arc<rustls::ClientConfig>,
}

/// The system's CA bundle (Debian, Ubuntu, Alpine), trusted when `KAFKA_SSL_CA_CERTFILE` is empty.
pub(crate) const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub(crate) fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PemFileError> {
    let pem = std::fs::read(path).map_err(|source| PemFileError::Read {
        path: path.into(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemFileError::NotPem {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemFileError::Empty { path: path.into() });
    }
    Ok(certs)
}

/// A PEM private key, decrypted with `pass` when it is an encrypted PKCS#8 key (`ENCRYPTED
/// PRIVATE KEY`, PBES2 as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it). The traditional
/// OpenSSL encryption (`Proc-Type: 4,ENCRYPTED` inside an RSA/EC key) has no maintained Rust
/// reader: it is refused with the command that converts it.
pub(crate) fn private_key(
    pem: &[u8],
    pass: Option<&str>,
    pass_var: &str,
) -> Result<Option<rustls::pki_types::PrivateKeyDer<'static>>, String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err("traditional OpenSSL-encrypted key: convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.pem -out key.pem`".into());
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        use pkcs8::der::pem::PemLabel;
        let Some(pass) = pass else {
            return Err(format!("the key is encrypted: set {pass_var}"));
        };
        let (label, der) = pkcs8::der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| format!("not a PEM key: {e}"))?;
        if label != pkcs8::EncryptedPrivateKeyInfo::PEM_LABEL {
            return Err(format!("unexpected PEM label {label}"));
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| format!("not an encrypted PKCS#8 key: {e}"))?;
        let doc = info.decrypt(pass.as_bytes()).map_err(|_| {
            format!(
                "cannot decrypt the key with {pass_var} (wrong passphrase, or an unsupported cipher)"
            )
        })?;
        return Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(
            doc.as_bytes().to_vec().into(),
        )));
    }
    rustls_pemfile::private_key(&mut &pem[..]).map_err(|e| e.to_string())
}

/// Reads the files and builds the TLS client configuration; every problem is pushed.
fn tls_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    key_pass: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<Tls> {
    let before = problems.len();
    let mut roots = rustls::RootCertStore::empty();
    match read_certs(ca_file) {
        Ok(certs) => {
            for cert in certs {
                if let Err(e) = roots.add(cert) {
                    problems.push(format!(
                        "Kafka TLS: {}: bad CA certificate: {e}",
                        ca_file.display()
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("Kafka TLS: {e}")),
    }
    let identity = identity.and_then(|(cert, key)| {
        let chain = read_certs(cert)
            .map_err(|e| problems.push(format!("Kafka TLS: {e}")))
            .ok()?;
        let pem = std::fs::read(key)
            .map_err(|e| problems.push(format!("Kafka TLS: cannot read {}: {e}", key.display())))
            .ok()?;
        match private_key(&pem, key_pass, env::KAFKA_SSL_KEYFILE_PASS) {
            Ok(Some(k)) => Some((chain, k)),
            Ok(None) => {
                problems.push(format!(
                    "Kafka TLS: {}: no private key in it",
                    key.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!("Kafka TLS: {}: {e}", key.display()));
                None
            }
        }
    });
    if problems.len() > before {
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots),
        Err(e) => {
            problems.push(format!("Kafka TLS: {e}"));
            return None;
        }
    };
    let client = match identity {
        Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!(
                    "Kafka TLS: client certificate and key do not fit: {e}"
                ));
                return None;
            }
        },
        None => builder.with_no_client_auth(),
    };
    Some(Tls {
        client: Arc::new(client),
    })
}

/// How to turn records that are not CloudEvents into events (FlowX sources).
#[derive(Debug, Clone)]
pub struct RecordMapping {
    pub topics: TopicPattern,
    pub event_type: TypeFrom,
    /// Extension attributes of the event, each from the first of its sources the record has;
    /// extractors route on them (`/name`).
    pub fields: Vec<MappedField>,
}

/// An extension attribute a mapped record gets (CloudEvents names: lower-case letters, digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedField {
    pub name: String,
    pub from: Vec<FieldFrom>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldFrom {
    Key,
    /// Lower-case header name, matched case-insensitively.
    Header(String),
    /// A JSON pointer into the value.
    Pointer(String),
}

/// Source topics read in a consumer group (librdkafka) instead of by every node on its own.
#[derive(Debug, Clone)]
pub struct GroupSource {
    pub topics: TopicPattern,
    /// The group as configured; see [`GroupScope`] for the id used.
    pub group: String,
}

/// `CB_KAFKA_GROUP_SCOPE`: whose group a group source joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScope {
    /// `<group>.<node id>` (default): every node still reads every partition, so every client
    /// gets its events whichever node holds it, and a restarted node resumes from its committed
    /// offsets instead of the latest record.
    Node,
    /// The group as named: the nodes share the partitions, each record reaches one node. Only
    /// for a single node, or clients pinned to nodes by the same key.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFrom {
    /// The topic name is the event type.
    Topic,
    /// A record header holds it.
    Header(String),
    /// A JSON pointer into the value holds it.
    Pointer(String),
    /// Every record of these topics has this type.
    Fixed(String),
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub sources: Vec<TopicPattern>,
    pub publish_topic: String,
    /// Control messages every node reads (session blacklist entries), from the earliest offset.
    pub control_topic: String,
    pub start: StartOffset,
    pub tls: Option<Tls>,
    pub sasl: Option<Sasl>,
    pub message_max_bytes: usize,
    pub topic_refresh: Duration,
    /// The longest pause between two connection attempts, authentication failures included
    /// (`KAFKA_AUTHEXCEPTIONRETRYINTERVAL`, seconds, default 10).
    pub auth_retry: Duration,
    /// How long a fetch may wait at the broker for records. Kafka answers as soon as a record
    /// arrives, so this only paces idle polling; brokers that hold the fetch for the whole wait
    /// (Tansu) add up to this much latency.
    pub fetch_wait: Duration,
    /// How long a consumer's call to the broker may go unanswered (beyond the fetch wait)
    /// before its connection is given up and opened again. The Kafka client sets no timeout,
    /// and behind a network that drops packets without refusing anything a call would hang
    /// until the kernel gives the TCP connection up, about 15 minutes.
    pub request_timeout: Duration,
    pub produce_timeout: Duration,
    pub client_id: String,
    pub mappings: Vec<RecordMapping>,
    /// Topics consumed in a consumer group (FlowX's groups, `CB_KAFKA_SOURCE_GROUPS`).
    pub groups: Vec<GroupSource>,
    pub group_scope: GroupScope,
    /// `CB_KAFKA_GROUP_COMMIT_MS`: group consumers' auto-commit interval (and, on SIGTERM, a
    /// final commit).
    pub group_commit_ms: u64,
    /// This node's id (`CB_NODE_ID`, default the host name), the suffix of node-scoped groups.
    pub node_id: String,
    /// librdkafka's security properties for the group consumers, from the same variables.
    pub rdkafka_security: Vec<(String, String)>,
    /// Why the FlowX profile is on (its topics, groups and mappings), None for RIG's.
    pub flowx: Option<String>,
    /// Batches each shard's island queue holds before the island stops fetching.
    pub shard_queue: usize,
    /// Topics every node reads responses to waiting proxy requests from, at their latest
    /// offset (`PROXY_KAFKA_RESPONSE_TOPICS`); the first also carries requests forwarded to
    /// the node that owns a connection.
    pub response_topics: Vec<String>,
    /// Where `REQUEST_LOG=kafka` writes (`KAFKA_LOG_TOPIC`).
    pub log_topic: String,
    /// The schema registry's base URL (`KAFKA_SCHEMA_REGISTRY_HOST`), for reading Avro records
    /// and, with `avro_out`, writing them.
    pub schema_registry: Option<String>,
    /// `KAFKA_SERIALIZER=avro`: endpoints with a `schema` produce Avro.
    pub avro_out: bool,
    /// `KAFKA_LOG_SCHEMA`: the request log's subject when `avro_out`.
    pub log_schema: Option<String>,
}

impl KafkaConfig {
    /// None when Kafka is off. Problems are appended, never returned early.
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<KafkaConfig> {
        let flowx = super::flowx::profile(get, problems);
        // FlowX's documented default broker; RIG's is "Kafka off".
        let brokers_raw = get(env::KAFKA_BROKERS)
            .or_else(|| get(env::KAFKA_BOOTSTRAP_SERVERS))
            .or_else(|| get(env::SPRING_KAFKA_BOOTSTRAP_SERVERS))
            .or_else(|| flowx.as_ref().map(|_| "localhost:9092".to_string()))?;
        let brokers: Vec<String> = brokers_raw
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            problems.push(format!("{}: no broker address given", env::KAFKA_BROKERS));
        }
        for b in &brokers {
            if b.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                problems.push(format!("{}: {b:?} is not host:port", env::KAFKA_BROKERS));
            }
        }
        let mut sources = Vec::new();
        let raw_sources = get(env::KAFKA_SOURCE_TOPICS).unwrap_or_else(|| "rig".into());
        for s in raw_sources
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match TopicPattern::parse(s) {
                Ok(p) => sources.push(p),
                Err(e) => problems.push(format!("{}: {s:?} {e}", env::KAFKA_SOURCE_TOPICS)),
            }
        }
        let publish_topic = match get(env::KAFKA_PUBLISH_TOPIC) {
            Some(t) => t,
            None => match sources.first() {
                Some(TopicPattern::Name(n)) => n.clone(),
                Some(TopicPattern::Regex(_)) => {
                    problems.push(format!(
                        "{} must be set when the first of {} is a regular expression",
                        env::KAFKA_PUBLISH_TOPIC,
                        env::KAFKA_SOURCE_TOPICS
                    ));
                    String::new()
                }
                None => {
                    problems.push(format!("{}: no topic given", env::KAFKA_SOURCE_TOPICS));
                    String::new()
                }
            },
        };
        let start = match get(env::KAFKA_START_OFFSET)
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("latest") => StartOffset::Latest,
            Some("earliest") => StartOffset::Earliest,
            Some(other) => {
                problems.push(format!(
                    "{}={other:?}: expected latest or earliest",
                    env::KAFKA_START_OFFSET
                ));
                StartOffset::Latest
            }
        };

        // Security: RIG's KAFKA_SSL_ENABLED/KAFKA_SASL, or FlowX's KAFKA_SECURITY_PROTOCOL.
        let truthy = |v: Option<String>| {
            matches!(
                v.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("1" | "true" | "yes")
            )
        };
        let (ssl, sasl_required, protocol_var) =
            security_protocol(truthy(get(env::KAFKA_SSL_ENABLED)), get, problems);
        let file = |name: &str, default: &str| -> Option<PathBuf> {
            let v = get(name).unwrap_or_else(|| default.to_string());
            (!v.is_empty()).then(|| PathBuf::from(v))
        };
        let tls = if ssl {
            let ca_file = file(env::KAFKA_SSL_CA_CERTFILE, "")
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
            let cert_file = file(env::KAFKA_SSL_CERTFILE, "");
            let key_file = file(env::KAFKA_SSL_KEYFILE, "");
            if cert_file.is_some() != key_file.is_some() {
                problems.push(format!(
                    "Kafka TLS: {} and {} must be given together",
                    env::KAFKA_SSL_CERTFILE,
                    env::KAFKA_SSL_KEYFILE
                ));
            }
            let identity = cert_file.as_deref().zip(key_file.as_deref());
            let pass = get(env::KAFKA_SSL_KEYFILE_PASS);
            tls_config(&ca_file, identity, pass.as_deref(), problems)
        } else {
            None
        };
        let sasl = match (
            get(env::KAFKA_OAUTH_CLIENT_ID),
            get(env::KAFKA_OAUTH_CLIENT_SECRET),
            get(env::KAFKA_OAUTH_TOKEN_ENDPOINT_URI),
        ) {
            (Some(client_id), Some(client_secret), Some(token_url)) => {
                if !(token_url.starts_with("http://") || token_url.starts_with("https://")) {
                    problems.push(format!(
                        "{}={token_url:?}: expected an http:// or https:// URL",
                        env::KAFKA_OAUTH_TOKEN_ENDPOINT_URI
                    ));
                }
                if get(env::KAFKA_SASL).is_some() {
                    problems.push(format!(
                        "{} and KAFKA_OAUTH_* both name a SASL mechanism; set one",
                        env::KAFKA_SASL
                    ));
                }
                Some(Sasl::OauthBearer {
                    client_id,
                    client_secret,
                    token_url,
                })
            }
            (None, None, None) => get(env::KAFKA_SASL).and_then(|raw| match parse_sasl(&raw) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(format!("{}: {e}", env::KAFKA_SASL));
                    None
                }
            }),
            _ => {
                problems.push(format!(
                    "{}, {} and {} go together",
                    env::KAFKA_OAUTH_CLIENT_ID,
                    env::KAFKA_OAUTH_CLIENT_SECRET,
                    env::KAFKA_OAUTH_TOKEN_ENDPOINT_URI
                ));
                None
            }
        };
        if sasl_required && sasl.is_none() {
            problems.push(format!(
                "{protocol_var} asks for SASL; set {}=plain:USER:PASS (or scram-sha-256:..., scram-sha-512:...)",
                env::KAFKA_SASL
            ));
        }
        let num = |name: &str, default: u64, problems: &mut Vec<String>| -> u64 {
            match get(name) {
                None => default,
                Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                    problems.push(format!("{name}={v:?}: expected a positive integer"));
                    default
                }),
            }
        };
        let message_max_bytes = num(env::KAFKA_MESSAGE_MAX_BYTES, 50 << 20, problems) as usize;
        let topic_refresh =
            Duration::from_millis(num(env::KAFKA_TOPIC_REFRESH_MS, 30_000, problems));
        let fetch_wait =
            Duration::from_millis(num(env::KAFKA_FETCH_WAIT_MS, 100, problems).min(30_000));
        let auth_retry = Duration::from_secs(num(env::KAFKA_AUTH_RETRY, 10, problems).min(3600));
        let request_timeout =
            Duration::from_millis(num(env::KAFKA_REQUEST_TIMEOUT_MS, 5_000, problems));
        let produce_timeout =
            Duration::from_millis(num(env::KAFKA_PRODUCE_TIMEOUT_MS, 5_000, problems));
        let shard_queue = num(env::KAFKA_SHARD_QUEUE, 64, problems) as usize;
        let mut mappings = match get(env::KAFKA_RECORD_MAPPING) {
            None => Vec::new(),
            Some(raw) => parse_mappings(&raw, problems),
        };
        let mut groups = match get(env::KAFKA_SOURCE_GROUPS) {
            None => Vec::new(),
            Some(raw) => parse_groups(&raw, problems),
        };
        for g in &groups {
            if !sources.iter().any(|s| s.as_str() == g.topics.as_str()) {
                sources.push(g.topics.clone());
            }
        }
        // FlowX's topics come after the operator's own mappings and groups, which win.
        if flowx.is_some() {
            for t in super::flowx::topics(get, problems) {
                sources.push(t.topics.clone());
                mappings.push(RecordMapping {
                    topics: t.topics.clone(),
                    event_type: t.event_type,
                    fields: t.fields,
                });
                groups.push(GroupSource {
                    topics: t.topics,
                    group: t.group,
                });
            }
        }
        let group_scope = match get(env::KAFKA_GROUP_SCOPE)
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("node") => GroupScope::Node,
            Some("shared") => GroupScope::Shared,
            Some(other) => {
                problems.push(format!(
                    "{}={other:?}: expected node or shared",
                    env::KAFKA_GROUP_SCOPE
                ));
                GroupScope::Node
            }
        };
        // The same variables as the rskafka client's; their problems are reported above.
        let rdkafka_security = if groups.is_empty() {
            Vec::new()
        } else {
            rdkafka_security(get, &mut Vec::new())
        };
        let response_topics: Vec<String> = get(env::PROXY_KAFKA_RESPONSE_TOPICS)
            .unwrap_or_else(|| "rig-proxy-response".into())
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if response_topics.is_empty() {
            problems.push(format!(
                "{}: expected a comma list of topics",
                env::PROXY_KAFKA_RESPONSE_TOPICS
            ));
        }
        let group_commit_ms = match get(env::KAFKA_GROUP_COMMIT_MS) {
            None => 1000,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (10..=3_600_000).contains(n))
                .unwrap_or_else(|| {
                    problems.push(format!(
                        "{}={v:?}: expected 10 to 3600000 ms",
                        env::KAFKA_GROUP_COMMIT_MS
                    ));
                    1000
                }),
        };
        let schema_registry = get(env::KAFKA_SCHEMA_REGISTRY_HOST)
            .map(|h| h.trim().trim_end_matches('/').to_string())
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.starts_with("http://") || h.starts_with("https://") {
                    h
                } else {
                    format!("http://{h}")
                }
            });
        let avro_out = match get(env::KAFKA_SERIALIZER).as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("json") => false,
            Some(v) if v.eq_ignore_ascii_case("avro") => true,
            Some(v) => {
                problems.push(format!(
                    "{}={v:?}: expected avro (or unset for JSON)",
                    env::KAFKA_SERIALIZER
                ));
                false
            }
        };
        if avro_out && schema_registry.is_none() {
            problems.push(format!(
                "{}=avro needs {} (host:port of the schema registry)",
                env::KAFKA_SERIALIZER,
                env::KAFKA_SCHEMA_REGISTRY_HOST
            ));
        }
        Some(KafkaConfig {
            brokers,
            sources,
            publish_topic,
            control_topic: get(env::KAFKA_CONTROL_TOPIC)
                .unwrap_or_else(|| "corebridge-control".into()),
            start,
            tls,
            sasl,
            message_max_bytes,
            topic_refresh,
            auth_retry,
            fetch_wait,
            request_timeout,
            produce_timeout,
            client_id: get(env::KAFKA_CLIENT_ID).unwrap_or_else(|| "corebridge".into()),
            mappings,
            groups,
            group_scope,
            group_commit_ms,
            node_id: get(env::NODE_ID).unwrap_or_else(super::proxy::hostname),
            rdkafka_security,
            flowx,
            shard_queue,
            response_topics,
            log_topic: get(env::KAFKA_LOG_TOPIC).unwrap_or_else(|| "rig-request-log".into()),
            schema_registry,
            avro_out,
            log_schema: get(env::KAFKA_LOG_SCHEMA).filter(|s| !s.trim().is_empty()),
        })
    }

    pub fn is_source(&self, topic: &str) -> bool {
        self.sources.iter().any(|p| p.matches(topic))
    }

    /// The group a source topic is read in, if any.
    pub fn group_for(&self, topic: &str) -> Option<&GroupSource> {
        self.groups.iter().find(|g| g.topics.matches(topic))
    }

    /// The consumer group id a group source joins, after [`GroupScope`].
    pub fn group_id(&self, group: &str) -> String {
        match self.group_scope {
            GroupScope::Node => format!("{group}.{}", self.node_id),
            GroupScope::Shared => group.to_string(),
        }
    }

    /// Topics this node reads itself, partition by partition (rskafka): the control topic, the
    /// response topics and the sources not read in a group.
    pub fn consumes(&self, topic: &str) -> bool {
        topic == self.control_topic
            || self.is_response(topic)
            || (self.is_source(topic) && self.group_for(topic).is_none())
    }

    pub fn is_response(&self, topic: &str) -> bool {
        self.response_topics.iter().any(|t| t == topic)
    }

    pub fn mapping_for(&self, topic: &str) -> Option<&RecordMapping> {
        self.mappings.iter().find(|m| m.topics.matches(topic))
    }
}

/// Kafka security for librdkafka, from the gateway's settings (RIG's `KAFKA_SSL_*` and
/// `KAFKA_SASL`, FlowX's `KAFKA_SECURITY_PROTOCOL` and `KAFKA_OAUTH_*`): TLS with a CA,
/// client certificate and (encrypted or not) key, SASL PLAIN/SCRAM, or OAUTHBEARER with client
/// credentials (librdkafka fetches and refreshes the token itself).
pub fn rdkafka_security(
    val: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| props.push((k.to_string(), v.to_string()));
    let truthy = |k: &str| {
        matches!(
            val(k).map(|v| v.to_ascii_lowercase()).as_deref(),
            Some("1" | "true" | "yes")
        )
    };
    let (ssl, sasl_required, protocol_var) =
        security_protocol(truthy(env::KAFKA_SSL_ENABLED), val, problems);
    if ssl {
        for (k, prop) in [
            (env::KAFKA_SSL_CA_CERTFILE, "ssl.ca.location"),
            (env::KAFKA_SSL_CERTFILE, "ssl.certificate.location"),
            (env::KAFKA_SSL_KEYFILE, "ssl.key.location"),
        ] {
            if let Some(path) = val(k) {
                if !std::path::Path::new(&path).is_file() {
                    problems.push(format!("{k}={path:?}: no such file"));
                }
                set(prop, &path);
            }
        }
        // librdkafka decrypts PKCS#8 and traditional OpenSSL-encrypted PEM keys itself.
        if let Some(pass) = val(env::KAFKA_SSL_KEYFILE_PASS) {
            set("ssl.key.password", &pass);
        }
    }
    let oauth = (
        val(env::KAFKA_OAUTH_CLIENT_ID),
        val(env::KAFKA_OAUTH_CLIENT_SECRET),
        val(env::KAFKA_OAUTH_TOKEN_ENDPOINT_URI),
    );
    let sasl = if let (Some(id), Some(secret), Some(url)) = &oauth {
        set("sasl.mechanisms", "OAUTHBEARER");
        set("sasl.oauthbearer.method", "oidc");
        set("sasl.oauthbearer.client.id", id);
        set("sasl.oauthbearer.client.secret", secret);
        set("sasl.oauthbearer.token.endpoint.url", url);
        true
    } else if let Some(raw) = val(env::KAFKA_SASL) {
        match parse_sasl(&raw) {
            Ok(
                Sasl::Plain { user, pass }
                | Sasl::ScramSha256 { user, pass }
                | Sasl::ScramSha512 { user, pass },
            ) => {
                let mech = raw.split(':').next().unwrap_or("").to_ascii_uppercase();
                set("sasl.mechanisms", &mech.replace('_', "-"));
                set("sasl.username", &user);
                set("sasl.password", &pass);
                true
            }
            // parse_sasl never makes one: OAUTHBEARER comes from KAFKA_OAUTH_*.
            Ok(Sasl::OauthBearer { .. }) => false,
            Err(e) => {
                problems.push(format!("{}: {e}", env::KAFKA_SASL));
                false
            }
        }
    } else {
        false
    };
    if oauth.0.is_some() != oauth.1.is_some() || oauth.0.is_some() != oauth.2.is_some() {
        problems.push(
            "KAFKA_OAUTH_CLIENT_ID, KAFKA_OAUTH_CLIENT_SECRET and KAFKA_OAUTH_TOKEN_ENDPOINT_URI go together".into(),
        );
    }
    if sasl_required && !sasl {
        problems.push(format!(
            "{protocol_var} asks for SASL; set {}=plain:USER:PASS (or scram-sha-256/512) or KAFKA_OAUTH_*",
            env::KAFKA_SASL
        ));
    }
    let protocol = match (ssl, sasl) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    set("security.protocol", protocol);
    // FlowX's KAFKA_AUTHEXCEPTIONRETRYINTERVAL (s): librdkafka retries failed connections and
    // authentications by itself; this caps its back-off.
    if let Some(v) = val(env::KAFKA_AUTH_RETRY) {
        match v.parse::<u64>() {
            Ok(s) if s > 0 => set(
                "reconnect.backoff.max.ms",
                &(s.min(3600) * 1000).to_string(),
            ),
            _ => problems.push(format!(
                "{}={v:?}: expected a positive number of seconds",
                env::KAFKA_AUTH_RETRY
            )),
        }
    }
    props
}

/// (TLS, SASL required, the variable that said so) from RIG's `KAFKA_SSL_ENABLED` and FlowX's
/// `KAFKA_SECURITY_PROTOCOL`, or its fallback `SPRING_KAFKA_SECURITY_PROTOCOL` (FlowX reads
/// both; a deployment that sets only Spring's would otherwise talk plaintext to a TLS broker).
pub fn security_protocol(
    ssl_enabled: bool,
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> (bool, bool, &'static str) {
    let (var, protocol) = [
        env::KAFKA_SECURITY_PROTOCOL,
        env::SPRING_KAFKA_SECURITY_PROTOCOL,
    ]
    .into_iter()
    .find_map(|n| {
        get(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n, Some(v)))
    })
    .unwrap_or((env::KAFKA_SECURITY_PROTOCOL, None));
    let (ssl, sasl) = match protocol
        .as_deref()
        .map(|p| p.trim().to_ascii_uppercase())
        .as_deref()
    {
        None | Some("PLAINTEXT") => (ssl_enabled, false),
        Some("SSL") => (true, false),
        Some("SASL_PLAINTEXT") => (ssl_enabled, true),
        Some("SASL_SSL") => (true, true),
        Some(other) => {
            problems.push(format!(
                "{var}={other:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ));
            (ssl_enabled, false)
        }
    };
    (ssl, sasl, var)
}

/// RIG's `plain:user:pass`, plus `scram-sha-256:user:pass` and `scram-sha-512:user:pass`.
pub fn parse_sasl(raw: &str) -> Result<Sasl, SaslError> {
    let mut parts = raw.splitn(3, ':');
    let (Some(mech), Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SaslError::Format);
    };
    let (user, pass) = (user.to_string(), pass.to_string());
    match mech.to_ascii_lowercase().as_str() {
        "plain" => Ok(Sasl::Plain { user, pass }),
        "scram-sha-256" | "scram_sha_256" => Ok(Sasl::ScramSha256 { user, pass }),
        "scram-sha-512" | "scram_sha_512" => Ok(Sasl::ScramSha512 { user, pass }),
        other => Err(SaslError::Mechanism(other.to_string())),
    }
}

/// `CB_KAFKA_RECORD_MAPPING`: a JSON list of
/// `{"topics": "<name or regex>", "event_type": "topic" | "header:<name>" | "pointer:/json/pointer" | "fixed:<type>"}`.
pub(crate) fn parse_mappings(raw: &str, problems: &mut Vec<String>) -> Vec<RecordMapping> {
    let name = env::KAFKA_RECORD_MAPPING;
    let v: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{name}: not valid JSON: {e}"));
            return Vec::new();
        }
    };
    let Some(items) = v.as_array() else {
        problems.push(format!("{name}: expected a JSON list"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let topics = item.get("topics").and_then(Value::as_str);
        let ty = item
            .get("event_type")
            .and_then(Value::as_str)
            .unwrap_or("topic");
        let Some(topics) = topics else {
            problems.push(format!(
                "{name}[{i}]: \"topics\" (a name or regex) is required"
            ));
            continue;
        };
        let topics = match TopicPattern::parse(topics) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}[{i}].topics: {e}"));
                continue;
            }
        };
        let event_type = if ty == "topic" {
            TypeFrom::Topic
        } else if let Some(h) = ty.strip_prefix("header:") {
            TypeFrom::Header(h.to_ascii_lowercase())
        } else if let Some(p) = ty.strip_prefix("pointer:") {
            if !p.starts_with('/') {
                problems.push(format!(
                    "{name}[{i}].event_type: pointer must start with '/'"
                ));
                continue;
            }
            TypeFrom::Pointer(p.to_string())
        } else if let Some(f) = ty.strip_prefix("fixed:") {
            TypeFrom::Fixed(f.to_string())
        } else {
            problems.push(format!(
                "{name}[{i}].event_type={ty:?}: expected topic, header:NAME, pointer:/PATH or fixed:TYPE"
            ));
            continue;
        };
        let mut fields = Vec::new();
        if let Some(f) = item.get("fields") {
            let Some(f) = f.as_object() else {
                problems.push(format!(
                    "{name}[{i}].fields: expected an object of NAME: [\"header:H\" | \"key\" | \"pointer:/P\", ...]"
                ));
                continue;
            };
            for (field, from) in f {
                let at = format!("{name}[{i}].fields.{field}");
                if field.is_empty()
                    || !field
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    problems.push(format!(
                        "{at}: a CloudEvents attribute name is lower-case letters and digits"
                    ));
                    continue;
                }
                let list: Vec<&str> = match from {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                let mut sources = Vec::new();
                for src in list {
                    if src == "key" {
                        sources.push(FieldFrom::Key);
                    } else if let Some(h) = src.strip_prefix("header:") {
                        sources.push(FieldFrom::Header(h.to_ascii_lowercase()));
                    } else if let Some(p) =
                        src.strip_prefix("pointer:").filter(|p| p.starts_with('/'))
                    {
                        sources.push(FieldFrom::Pointer(p.to_string()));
                    } else {
                        problems.push(format!(
                            "{at}: {src:?}: expected key, header:NAME or pointer:/PATH"
                        ));
                    }
                }
                if sources.is_empty() {
                    problems.push(format!("{at}: no source given"));
                    continue;
                }
                fields.push(MappedField {
                    name: field.clone(),
                    from: sources,
                });
            }
        }
        out.push(RecordMapping {
            topics,
            event_type,
            fields,
        });
    }
    out
}

/// `CB_KAFKA_SOURCE_GROUPS`: `TOPIC_OR_PATTERN=GROUP,...`.
fn parse_groups(raw: &str, problems: &mut Vec<String>) -> Vec<GroupSource> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((topics, group)) = part
            .rsplit_once('=')
            .filter(|(t, g)| !t.trim().is_empty() && !g.trim().is_empty())
        else {
            problems.push(format!(
                "{}: {part:?}: expected TOPIC_OR_PATTERN=GROUP",
                env::KAFKA_SOURCE_GROUPS
            ));
            continue;
        };
        match TopicPattern::parse(topics.trim()) {
            Ok(topics) => out.push(GroupSource {
                topics,
                group: group.trim().to_string(),
            }),
            Err(e) => problems.push(format!("{}: {topics:?} {e}", env::KAFKA_SOURCE_GROUPS)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> (Option<KafkaConfig>, Vec<String>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = Vec::new();
        let c = KafkaConfig::load(&|k| m.get(k).cloned(), &mut p);
        (c, p)
    }

    #[test]
    fn off_without_brokers_and_rig_defaults_with() {
        assert!(load(&[]).0.is_none());
        let (c, p) = load(&[("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(c.publish_topic, "rig");
        assert!(c.is_source("rig") && !c.is_source("rig2"));
        assert_eq!(c.start, StartOffset::Latest);
        assert_eq!(c.auth_retry, Duration::from_secs(10));
        let (c, p) = load(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_AUTHEXCEPTIONRETRYINTERVAL", "3"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.unwrap().auth_retry, Duration::from_secs(3));
        let (_, p) = load(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_AUTHEXCEPTIONRETRYINTERVAL", "soon"),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn regex_sources_are_anchored() {
        let (c, p) = load(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_SOURCE_TOPICS", "ai.flowx.receive.*,fixed"),
            ("CB_KAFKA_PUBLISH_TOPIC", "fixed"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert!(c.is_source("ai.flowx.receive.x") && c.is_source("fixed"));
        assert!(!c.is_source("xai.flowx.receive.x") && !c.is_source("fixed2"));
    }

    #[test]
    fn security_protocols_and_sasl() {
        assert_eq!(
            parse_sasl("plain:u:p:with:colons").unwrap(),
            Sasl::Plain {
                user: "u".into(),
                pass: "p:with:colons".into()
            }
        );
        assert!(matches!(
            parse_sasl("SCRAM-SHA-512:u:p"),
            Ok(Sasl::ScramSha512 { .. })
        ));
        let (_, p) = load(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
        let (_, p) = load(&[
            ("KAFKA_BROKERS", "k"),
            ("KAFKA_SECURITY_PROTOCOL", "TLS"),
            ("KAFKA_SASL", "x:y"),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        // FlowX's fallback name counts, and problems name it.
        let (_, p) = load(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("SPRING_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ]);
        assert!(
            p.len() == 1 && p[0].starts_with("SPRING_KAFKA_SECURITY_PROTOCOL asks for SASL"),
            "{p:?}"
        );
        let mut p = Vec::new();
        let get = |k: &str| (k == "SPRING_KAFKA_SECURITY_PROTOCOL").then(|| "sasl_ssl".to_string());
        assert_eq!(
            security_protocol(false, &get, &mut p),
            (true, true, "SPRING_KAFKA_SECURITY_PROTOCOL")
        );
        let get = |k: &str| match k {
            "KAFKA_SECURITY_PROTOCOL" => Some("PLAINTEXT".to_string()),
            "SPRING_KAFKA_SECURITY_PROTOCOL" => Some("SSL".to_string()),
            _ => None,
        };
        assert_eq!(
            security_protocol(false, &get, &mut p),
            (false, false, "KAFKA_SECURITY_PROTOCOL")
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn tls_files_are_read_and_checked_at_start() {
        let dir = std::env::temp_dir().join(format!("cb-kafka-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let (_, p) = load(&[
            ("KAFKA_BROKERS", "k:9093"),
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_CA_CERTFILE", junk.to_str().unwrap()),
            ("KAFKA_SSL_CERTFILE", "/nonexistent/client.pem"),
            ("KAFKA_SSL_KEYFILE", junk.to_str().unwrap()),
        ]);
        assert!(
            p.iter().any(|m| m.contains("junk.pem: no PEM certificate")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.contains("cannot read /nonexistent/client.pem")),
            "{p:?}"
        );
        // The system CA bundle, when the CA file is left empty.
        if Path::new(SYSTEM_CA_FILE).is_file() {
            let (c, p) = load(&[
                ("KAFKA_BROKERS", "k:9093"),
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ]);
            assert!(p.is_empty(), "{p:?}");
            assert!(c.unwrap().tls.is_some());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mappings() {
        let (c, p) = load(&[
            ("KAFKA_BROKERS", "k:1"),
            (
                "CB_KAFKA_RECORD_MAPPING",
                r#"[{"topics":"flowx.*","event_type":"header:fxType"},{"topics":"t","event_type":"fixed:order"}]"#,
            ),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            c.mapping_for("flowx.a").unwrap().event_type,
            TypeFrom::Header("fxtype".into())
        );
        assert_eq!(
            c.mapping_for("t").unwrap().event_type,
            TypeFrom::Fixed("order".into())
        );
        assert!(c.mapping_for("rig").is_none());
    }
}
