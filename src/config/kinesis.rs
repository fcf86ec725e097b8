//! Kinesis settings: RIG's names (`KINESIS_*`, `PROXY_KINESIS_*`) and ours (`CB_KINESIS_*`,
//! `CB_NODE_ID`). Credentials are not read here: the AWS SDK's default chain (environment,
//! profile, web identity) finds them, and `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB` work as in every AWS SDK.

use super::env;

/// Where a node starts reading a shard it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KinesisStart {
    Latest,
    TrimHorizon,
}

#[derive(Debug, Clone)]
pub struct KinesisConfig {
    /// Streams consumed into subscriptions (`KINESIS_STREAM`, a comma list).
    pub streams: Vec<String>,
    /// Region of the consumed streams and the checkpoint table (`KINESIS_AWS_REGION`).
    pub region: String,
    /// Region the proxy's `target: kinesis` produces to (`PROXY_KINESIS_REQUEST_REGION`).
    pub request_region: String,
    /// `KINESIS_ENDPOINT` (e.g. a local Kinesis); none: the SDK's resolution.
    pub endpoint: Option<String>,
    /// `KINESIS_DYNAMODB_ENDPOINT`; none: the SDK's resolution.
    pub dynamodb_endpoint: Option<String>,
    /// The checkpoint table's region (`CB_KINESIS_DYNAMODB_REGION`, else `region`).
    pub dynamodb_region: String,
    /// The checkpoint table's name (`KINESIS_APP_NAME`, RIG's KCL application name).
    pub app_name: String,
    /// Checkpoints are kept when a DynamoDB endpoint or region is configured, or when
    /// `CB_KINESIS_CHECKPOINTS` says so.
    pub checkpoints: bool,
    /// On AWS itself without checkpoints: a RIG deployment there had them (its KCL), so the
    /// start-up log says what a restart will skip and how to turn them on.
    pub warn_no_checkpoints: bool,
    /// This node's key in the checkpoint table (`CB_NODE_ID`, default the host name): stable
    /// across restarts, distinct per node.
    pub node_id: String,
    pub start: KinesisStart,
    /// Where `response_from: kinesis` replies travel (every node reads it from its tip).
    pub response_stream: String,
    /// Pause between two `GetRecords` of a shard that returned nothing (Kinesis allows 5 calls
    /// per second per shard, shared by every reader).
    pub poll_idle_ms: u64,
    /// How often the shard list of every stream is read again (resharding, new streams).
    pub shard_refresh_ms: u64,
    /// Where `POST /_rig/v1/events` and `/v3/messages` put events when Kafka is off
    /// (`CB_KINESIS_PUBLISH_STREAM`); one of `streams`, or they would never be delivered.
    pub publish_stream: Option<String>,
    /// This node's enhanced fan-out consumer name (`CB_KINESIS_EFO=true`): `<app>-<node id>`.
    pub efo_consumer: Option<String>,
    /// A node resuming from checkpoints waits this long before delivering its backlog, so
    /// frontends reconnecting after the restart receive it (`CB_KINESIS_RESUME_DELAY_MS`).
    pub resume_delay_ms: u64,
}

pub const DEFAULT_RESPONSE_STREAM: &str = "rig-proxy-response";

impl KinesisConfig {
    /// None when Kinesis is off (`KINESIS_ENABLED` not true) and no proxy endpoint may need
    /// it; problems are collected, not returned one by one.
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> Option<KinesisConfig> {
        let enabled = match get(env::KINESIS_ENABLED).as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                problems.push(format!(
                    "{}={v:?}: expected true or false",
                    env::KINESIS_ENABLED
                ));
                false
            }
        };
        if !enabled {
            return None;
        }
        let text = |k: &str, default: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let optional = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let streams: Vec<String> = text(env::KINESIS_STREAM, "RIG-outbound")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &streams {
            if !valid_stream_name(s) {
                problems.push(format!(
                    "{}: {s:?} is not a Kinesis stream name (1-128 of a-z A-Z 0-9 _ . -)",
                    env::KINESIS_STREAM
                ));
            }
        }
        let mut url = |k: &str| {
            let v = optional(k)?;
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                problems.push(format!("{k}={v:?}: expected an http:// or https:// URL"));
                return None;
            }
            Some(v)
        };
        let endpoint = url(env::KINESIS_ENDPOINT);
        let dynamodb_endpoint = url(env::KINESIS_DYNAMODB_ENDPOINT);
        let start = match optional(env::KINESIS_START).as_deref() {
            None => KinesisStart::Latest,
            Some(v) if v.eq_ignore_ascii_case("latest") => KinesisStart::Latest,
            Some(v) if v.eq_ignore_ascii_case("trim_horizon") => KinesisStart::TrimHorizon,
            Some(v) => {
                problems.push(format!(
                    "{}={v:?}: expected LATEST or TRIM_HORIZON",
                    env::KINESIS_START
                ));
                KinesisStart::Latest
            }
        };
        // RIG's KCL always checkpointed in DynamoDB, in its lease table KINESIS_APP_NAME. They
        // are not on by default here: a node without DynamoDB permissions would wait for its
        // checkpoints for ever instead of delivering, and the default table is RIG's lease
        // table, which a RIG still running beside Corebridge would share. So on AWS without
        // checkpoints the log says so at start (`warn_no_checkpoints`).
        let on_aws = endpoint.is_none()
            && optional("AWS_ENDPOINT_URL_KINESIS").is_none()
            && optional("AWS_ENDPOINT_URL").is_none();
        let checkpoints = match optional(env::KINESIS_CHECKPOINTS).as_deref() {
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            other => {
                if let Some(v) = other {
                    problems.push(format!(
                        "{}={v:?}: expected true or false",
                        env::KINESIS_CHECKPOINTS
                    ));
                }
                dynamodb_endpoint.is_some()
                    || optional("AWS_ENDPOINT_URL_DYNAMODB").is_some()
                    || optional(env::KINESIS_DYNAMODB_REGION).is_some()
            }
        };
        let response_stream = text(env::PROXY_KINESIS_RESPONSE_STREAM, DEFAULT_RESPONSE_STREAM);
        if !valid_stream_name(&response_stream) {
            problems.push(format!(
                "{}={response_stream:?}: not a Kinesis stream name",
                env::PROXY_KINESIS_RESPONSE_STREAM
            ));
        }
        let ms = |k: &str, default: u64, problems: &mut Vec<String>| match optional(k) {
            None => default,
            Some(v) => v.parse::<u64>().unwrap_or_else(|_| {
                problems.push(format!("{k}={v:?}: expected a number of ms"));
                default
            }),
        };
        let resume_delay_ms = ms(env::KINESIS_RESUME_DELAY_MS, 3000, problems);
        let app_name = text(env::KINESIS_APP_NAME, "Reactive-Interaction-Gateway");
        if !(3..=255).contains(&app_name.len())
            || !app_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            problems.push(format!(
                "{}={app_name:?}: not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ . -)",
                env::KINESIS_APP_NAME
            ));
        }
        let region = text(env::KINESIS_AWS_REGION, "eu-west-1");
        let publish_stream = optional(env::KINESIS_PUBLISH_STREAM);
        if let Some(p) = &publish_stream {
            if !streams.contains(p) {
                problems.push(format!(
                    "{}={p:?} is not among KINESIS_STREAM {streams:?}: published events would never be delivered",
                    env::KINESIS_PUBLISH_STREAM
                ));
            }
        }
        let node_id = optional(env::NODE_ID).unwrap_or_else(super::proxy::hostname);
        let efo = match optional(env::KINESIS_EFO).as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                problems.push(format!(
                    "{}={v:?}: expected true or false",
                    env::KINESIS_EFO
                ));
                false
            }
        };
        // Consumer names allow [a-zA-Z0-9_.-], up to 128.
        let efo_consumer = efo.then(|| {
            format!("{app_name}-{node_id}")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(128)
                .collect::<String>()
        });
        Some(KinesisConfig {
            streams,
            dynamodb_region: optional(env::KINESIS_DYNAMODB_REGION)
                .unwrap_or_else(|| region.clone()),
            region,
            request_region: text(env::PROXY_KINESIS_REQUEST_REGION, "eu-west-1"),
            endpoint,
            dynamodb_endpoint,
            app_name,
            checkpoints,
            // Not when an operator chose it.
            warn_no_checkpoints: on_aws
                && !checkpoints
                && optional(env::KINESIS_CHECKPOINTS).is_none(),
            node_id,
            efo_consumer,
            publish_stream,
            start,
            response_stream,
            poll_idle_ms: ms(env::KINESIS_POLL_MS, 1000, problems),
            shard_refresh_ms: ms(env::KINESIS_SHARD_REFRESH_MS, 10_000, problems),
            resume_delay_ms,
        })
    }
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> (Option<KinesisConfig>, Vec<String>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let c = KinesisConfig::load(&|k| m.get(k).cloned(), &mut problems);
        (c, problems)
    }

    #[test]
    fn off_unless_enabled_and_rig_defaults() {
        assert!(load(&[]).0.is_none());
        assert!(load(&[("KINESIS_ENABLED", "false")]).0.is_none());
        let (c, p) = load(&[("KINESIS_ENABLED", "true")]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(c.streams, ["RIG-outbound"]);
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.app_name, "Reactive-Interaction-Gateway");
        // Off unless asked for, also on AWS, where the log then says what that costs.
        assert!(!c.checkpoints && c.warn_no_checkpoints);
        let local = ("KINESIS_ENDPOINT", "http://127.0.0.1:4568");
        let on = ("KINESIS_ENABLED", "true");
        let c = load(&[on, local]).0.unwrap();
        assert!(!c.checkpoints && !c.warn_no_checkpoints);
        assert!(
            load(&[on, local, ("CB_KINESIS_CHECKPOINTS", "true")])
                .0
                .unwrap()
                .checkpoints
        );
        let c = load(&[on, ("CB_KINESIS_CHECKPOINTS", "true")]).0.unwrap();
        assert!(c.checkpoints && !c.warn_no_checkpoints);
        assert!(
            !load(&[on, ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4568")])
                .0
                .unwrap()
                .warn_no_checkpoints
        );
        let (_, p) = load(&[on, ("CB_KINESIS_CHECKPOINTS", "maybe")]);
        assert!(p[0].contains("CB_KINESIS_CHECKPOINTS"), "{p:?}");
        assert_eq!(c.start, KinesisStart::Latest);
    }

    #[test]
    fn every_problem_is_named() {
        let (_, p) = load(&[
            ("KINESIS_ENABLED", "true"),
            ("KINESIS_STREAM", "ok, bad name"),
            ("KINESIS_ENDPOINT", "localhost:4568"),
            ("CB_KINESIS_START", "oldest"),
            ("KINESIS_APP_NAME", "x"),
        ]);
        assert_eq!(p.len(), 4, "{p:?}");
        let (c, p) = load(&[
            ("KINESIS_ENABLED", "true"),
            ("KINESIS_STREAM", "a,b"),
            ("KINESIS_DYNAMODB_ENDPOINT", "http://127.0.0.1:4567"),
            ("CB_KINESIS_START", "trim_horizon"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(c.streams, ["a", "b"]);
        assert!(c.checkpoints);
        assert_eq!(c.start, KinesisStart::TrimHorizon);
        assert_eq!(load(&[("KINESIS_ENABLED", "yes")]).1.len(), 1);
    }
}
