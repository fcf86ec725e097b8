//! The schema registry client (Confluent's REST API, the calls a serializer makes): schemas by
//! id for reading Avro records, a subject's latest schema for writing them. Schemas are
//! immutable per id, so they are kept for good; a subject's latest is read again after a
//! minute. An id the registry cannot give is not asked again for 10 s (a record of it is
//! skipped meanwhile, counted), so a registry outage does not turn every record into a request.

use crate::broker::ProduceError;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUBJECT_TTL: Duration = Duration::from_secs(60);
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A subject's latest schema as last read: when, its id, the schema.
type Latest = (Instant, u32, Arc<Schema>);

pub(crate) struct Registry {
    base: String,
    http: reqwest::Client,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    failed: Mutex<HashMap<u32, Instant>>,
    subjects: Mutex<HashMap<String, Latest>>,
}

#[derive(serde::Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(default)]
    id: Option<u32>,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// Why a schema could not be had. All but `NoClient` are the registry's side (or the
/// network's); a producer's id the registry does not know shows as `Refused` (404).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("no HTTP client for the schema registry: {0}")]
    NoClient(#[source] reqwest::Error),
    #[error("{url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {status} {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{url}: not a schema answer: {source}")]
    NotSchema {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: a {kind} schema, not Avro")]
    NotAvro { url: String, kind: String },
    #[error("schema {id}: {source}")]
    BadSchema {
        id: u32,
        #[source]
        source: apache_avro::Error,
    },
}

impl Registry {
    pub(crate) fn new(base: &str) -> Result<Registry, RegistryError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(RegistryError::NoClient)?;
        Ok(Registry {
            base: base.to_string(),
            http,
            by_id: Mutex::default(),
            failed: Mutex::default(),
            subjects: Mutex::default(),
        })
    }

    /// The schema of `id`, if fetched already.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Schema>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    async fn fetch(&self, path: &str) -> Result<SchemaAnswer, RegistryError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |source| RegistryError::Unreachable {
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .get(&url)
            .header("accept", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(RegistryError::Refused {
                url,
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        let a: SchemaAnswer =
            serde_json::from_slice(&body).map_err(|source| RegistryError::NotSchema {
                url: url.clone(),
                source,
            })?;
        if let Some(kind) = a.schema_type.as_deref().filter(|t| *t != "AVRO") {
            return Err(RegistryError::NotAvro {
                url,
                kind: kind.to_string(),
            });
        }
        Ok(a)
    }

    /// Fetches the schemas of `ids` not known yet (each at most once per 10 s when failing).
    pub(crate) async fn ensure(&self, ids: impl IntoIterator<Item = u32>) {
        let mut missing: Vec<u32> = ids
            .into_iter()
            .filter(|id| self.get(*id).is_none())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for id in missing {
            let recent_failure = self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if recent_failure {
                continue;
            }
            let got = self
                .fetch(&format!("/schemas/ids/{id}"))
                .await
                .and_then(|a| {
                    Schema::parse_str(&a.schema)
                        .map_err(|source| RegistryError::BadSchema { id, source })
                });
            match got {
                Ok(s) => {
                    self.by_id
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, Arc::new(s));
                }
                Err(e) => {
                    tracing::warn!(id, error = %e, "Avro schema not available from the registry (whose fault: the registry, or a producer's id)");
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, Instant::now());
                }
            }
        }
    }

    /// The latest schema of `subject` and its id (for encoding).
    pub(crate) async fn latest(&self, subject: &str) -> Result<(u32, Arc<Schema>), ProduceError> {
        if let Some((at, id, s)) = self
            .subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
        {
            if at.elapsed() < SUBJECT_TTL {
                return Ok((*id, s.clone()));
            }
        }
        let enc: String = subject
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let a = self
            .fetch(&format!("/subjects/{enc}/versions/latest"))
            .await
            .map_err(|e| ProduceError::Unavailable(format!("schema registry: {e}")))?;
        let id = a.id.ok_or_else(|| {
            ProduceError::Unavailable(format!("schema registry: no id for subject {subject:?}"))
        })?;
        let schema = Arc::new(Schema::parse_str(&a.schema).map_err(|e| {
            ProduceError::Invalid(format!(
                "the registry's schema of {subject:?} does not parse: {e}"
            ))
        })?);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, schema.clone());
        self.subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subject.to_string(), (Instant::now(), id, schema.clone()));
        Ok((id, schema))
    }
}
