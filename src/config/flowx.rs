//! The FlowX Events Gateway's Kafka topics, so a FlowX deployment switches by changing the
//! image, not its settings: its topic variables (`KAFKA_TOPIC_EVENTSGATEWAY_*`, names built
//! from `KAFKA_TOPIC_NAMING_*` when not given), its consumer groups
//! (`KAFKA_CONSUMER_GROUPID_*`) and thread counts (`KAFKA_CONSUMER_THREADS_*`), with a built-in
//! record mapping per topic: the event type names the topic's role, and the routing field
//! (process instance or user) comes from a header, else the record key, so RIG-style
//! subscriptions with constraints select one process instance or one user.
//!
//! The profile is on with `CB_PROFILE=flowx`, or when `CB_PROFILE` and RIG's
//! `KAFKA_SOURCE_TOPICS`/`KAFKA_BROKERS` are unset and a FlowX-only variable is set.

use super::kafka::{FieldFrom, MappedField, TopicPattern, TypeFrom};

/// Variables only a FlowX deployment sets; any of them (without RIG's topic or broker
/// variables) selects the FlowX profile.
const SIGNALS: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "SPRING_KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC_EVENTSGATEWAY_PATTERN",
    "KAFKA_TOPIC_NAMING_PACKAGE",
    "KAFKA_TOPIC_NAMING_ENVIRONMENT",
    "KAFKA_OAUTH_CLIENT_ID",
    "SECURITY_OAUTH2_BASESERVERURL",
    "SPRING_DATA_REDIS_HOST",
    "EVENTS_REDIS_TTLHOURS",
];

/// How an event of a FlowX topic is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// `processInstanceUuid`: header `processInstanceUuid` (or `Fx-ProcessInstanceUuid`), else the key.
    ProcessInstance,
    /// `user`: header `username`, else the key; automatic subscription from the JWT claim.
    User,
    /// Pattern topics: the event type is the topic name; the process instance field is still
    /// extracted into the event, and `EXTRACTORS` may name it per topic.
    Generic,
}

struct Role {
    topic_var: &'static str,
    /// Segments after package and environment; the version suffix follows.
    segments: &'static [&'static str],
    group_var: &'static str,
    group: &'static str,
    threads_var: &'static str,
    threads: u32,
    /// None: the topic name is the event type.
    event_type: Option<&'static str>,
    routing: Routing,
}

const ROLES: &[Role] = &[
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_PROCESSINSTANCE_IN_MESSAGE",
        segments: &["eventsgateway", "engine", "commands", "message"],
        group_var: "KAFKA_CONSUMER_GROUPID_PROCESSENGINECOMMANDS_MESSAGE",
        group: "engine-commands-message",
        threads_var: "KAFKA_CONSUMER_THREADS_PROCESSENGINECOMMANDS_MESSAGE",
        threads: 10,
        event_type: Some("flowx.processinstance.message"),
        routing: Routing::ProcessInstance,
    },
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_PROCESSINSTANCE_IN_DISCONNECT",
        segments: &["eventsgateway", "engine", "commands", "disconnect"],
        group_var: "KAFKA_CONSUMER_GROUPID_PROCESSENGINECOMMANDS_DISCONNECT",
        group: "engine-commands-disconnect",
        threads_var: "KAFKA_CONSUMER_THREADS_PROCESSENGINECOMMANDS_DISCONNECT",
        threads: 5,
        event_type: Some("flowx.processinstance.disconnect"),
        routing: Routing::ProcessInstance,
    },
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_PROCESSINSTANCE_IN_CONNECT",
        segments: &["eventsgateway", "engine", "commands", "connect"],
        group_var: "KAFKA_CONSUMER_GROUPID_PROCESSENGINECOMMANDS_CONNECT",
        group: "engine-commands-connect",
        threads_var: "KAFKA_CONSUMER_THREADS_PROCESSENGINECOMMANDS_CONNECT",
        threads: 5,
        event_type: Some("flowx.processinstance.connect"),
        routing: Routing::ProcessInstance,
    },
    // Not in FlowX 5.9's table, but it has a group and threads for it: named like its siblings.
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_TASK_IN_MESSAGE",
        segments: &["eventsgateway", "task", "commands", "message"],
        group_var: "KAFKA_CONSUMER_GROUPID_TASKCOMMANDS_MESSAGE",
        group: "task-commands-message",
        threads_var: "KAFKA_CONSUMER_THREADS_TASKCOMMANDS",
        threads: 10,
        event_type: Some("flowx.task.message"),
        routing: Routing::ProcessInstance,
    },
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_PROCESS_IN_MESSAGE",
        segments: &["eventsgateway", "process", "commands", "message"],
        group_var: "KAFKA_CONSUMER_GROUPID_PROCESSCOMMANDS_MESSAGE",
        group: "process-commands-message",
        threads_var: "KAFKA_CONSUMER_THREADS_PROCESSCOMMANDS",
        threads: 10,
        event_type: Some("flowx.process.message"),
        routing: Routing::ProcessInstance,
    },
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_USERMESSAGES_IN_MESSAGE",
        segments: &["core", "designer", "notification", "user"],
        group_var: "KAFKA_CONSUMER_GROUPID_USERBROADCASTCOMMANDS",
        group: "user-broadcast-commands-message",
        threads_var: "KAFKA_CONSUMER_THREADS_USERBROADCASTCOMMANDS",
        threads: 10,
        event_type: Some("flowx.user.message"),
        routing: Routing::User,
    },
    Role {
        topic_var: "KAFKA_TOPIC_EVENTSGATEWAY_PATTERN",
        segments: &["eventsgateway", "receive", "*"],
        group_var: "KAFKA_CONSUMER_GROUPID_GENERICCOMMANDS",
        group: "generic-commands-message",
        threads_var: "KAFKA_CONSUMER_THREADS_GENERICCOMMANDS",
        threads: 10,
        event_type: None,
        routing: Routing::Generic,
    },
];

/// One FlowX topic (or pattern) as the gateway consumes it.
#[derive(Debug, Clone)]
pub struct FlowxTopic {
    pub topics: TopicPattern,
    pub event_type: TypeFrom,
    pub fields: Vec<MappedField>,
    pub group: String,
    /// `KAFKA_CONSUMER_THREADS_*`: accepted and validated; parallelism comes from the topic's
    /// partitions spread over the island and the shards, not from a thread count.
    pub threads: u32,
    pub routing: Routing,
}

/// Why the FlowX profile is on, for the start-up log; None when it is off.
pub fn profile(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Option<String> {
    match get(super::env::PROFILE)
        .map(|p| p.to_ascii_lowercase())
        .as_deref()
    {
        Some("flowx") => return Some(format!("{}=flowx", super::env::PROFILE)),
        Some("rig") => return None,
        Some(other) => {
            problems.push(format!(
                "{}={other:?}: expected rig or flowx",
                super::env::PROFILE
            ));
            return None;
        }
        None => {}
    }
    if get(super::env::KAFKA_SOURCE_TOPICS).is_some() || get(super::env::KAFKA_BROKERS).is_some() {
        return None;
    }
    let role_vars = ROLES
        .iter()
        .flat_map(|r| [r.topic_var, r.group_var, r.threads_var]);
    SIGNALS
        .iter()
        .copied()
        .chain(role_vars)
        .find(|v| get(v).is_some())
        .map(|v| format!("{v} is set (a FlowX variable)"))
}

fn field(name: &str, from: Vec<FieldFrom>) -> MappedField {
    MappedField {
        name: name.into(),
        from,
    }
}

fn routing_fields(routing: Routing) -> Vec<MappedField> {
    let pi = || {
        field(
            "processinstanceuuid",
            vec![
                FieldFrom::Header("processinstanceuuid".into()),
                FieldFrom::Header("fx-processinstanceuuid".into()),
                FieldFrom::Key,
            ],
        )
    };
    match routing {
        Routing::ProcessInstance | Routing::Generic => vec![pi()],
        Routing::User => vec![field(
            "username",
            vec![FieldFrom::Header("username".into()), FieldFrom::Key],
        )],
    }
}

/// The FlowX topics with their names, groups, thread counts and mappings; problems appended.
pub fn topics(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Vec<FlowxTopic> {
    let naming = |var: &str, default: &str| get(var).unwrap_or_else(|| default.to_string());
    let package = naming("KAFKA_TOPIC_NAMING_PACKAGE", "ai.flowx.");
    // FlowX's default environment is a blank: no segment.
    let environment = naming("KAFKA_TOPIC_NAMING_ENVIRONMENT", "");
    let version = naming("KAFKA_TOPIC_NAMING_VERSION", ".v1");
    let separator = naming("KAFKA_TOPIC_NAMING_SEPARATOR", ".");
    // SEPARATOR2 joins words inside a segment in FlowX's other services; none of these names
    // has such a segment, so it is accepted and unused.
    let _ = naming("KAFKA_TOPIC_NAMING_SEPARATOR2", "-");
    let mut out = Vec::new();
    for r in ROLES {
        let name = get(r.topic_var).unwrap_or_else(|| {
            let body = r.segments.join(&separator);
            // The pattern ends in a wildcard, not a version.
            if r.event_type.is_none() {
                format!("{package}{environment}{body}")
            } else {
                format!("{package}{environment}{body}{version}")
            }
        });
        let topics = match TopicPattern::parse(&name) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}={name:?}: {e}", r.topic_var));
                continue;
            }
        };
        let threads = match get(r.threads_var) {
            None => r.threads,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    problems.push(format!(
                        "{}={v:?}: expected a positive integer",
                        r.threads_var
                    ));
                    r.threads
                }
            },
        };
        out.push(FlowxTopic {
            topics,
            event_type: r
                .event_type
                .map_or(TypeFrom::Topic, |t| TypeFrom::Fixed(t.into())),
            fields: routing_fields(r.routing),
            group: get(r.group_var).unwrap_or_else(|| r.group.to_string()),
            threads,
            routing: r.routing,
        });
    }
    out
}

/// `EXTRACTORS` entries for the FlowX event types, so subscriptions can constrain
/// `processInstanceUuid` or `user` without an extractor file; `user_claim` is the JWT claim
/// (`CB_FLOWX_USER_CLAIM`, default `preferred_username`) an automatic subscription takes the
/// user from. An operator's own entry for a type replaces the built-in one.
pub fn extractors(user_claim: &str) -> serde_json::Value {
    let pi = serde_json::json!({
        "processInstanceUuid": {"stable_field_index": 0, "event": {"json_pointer": "/processinstanceuuid"}}
    });
    let mut m = serde_json::Map::new();
    for r in ROLES {
        match (r.event_type, r.routing) {
            (Some(t), Routing::ProcessInstance) => {
                m.insert(t.into(), pi.clone());
            }
            (Some(t), Routing::User) => {
                m.insert(
                    t.into(),
                    serde_json::json!({"user": {"stable_field_index": 0,
                        "event": {"json_pointer": "/username"},
                        "jwt": {"json_pointer": format!("/{}", user_claim.trim_start_matches('/'))}}}),
                );
            }
            _ => {}
        }
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn documented_defaults() {
        let mut p = Vec::new();
        let t = topics(&with(&[]), &mut p);
        assert!(p.is_empty(), "{p:?}");
        let names: Vec<&str> = t.iter().map(|t| t.topics.as_str()).collect();
        assert!(names.contains(&"ai.flowx.eventsgateway.engine.commands.message.v1"));
        assert!(names.contains(&"ai.flowx.eventsgateway.engine.commands.disconnect.v1"));
        assert!(names.contains(&"ai.flowx.eventsgateway.engine.commands.connect.v1"));
        assert!(names.contains(&"ai.flowx.eventsgateway.process.commands.message.v1"));
        assert!(names.contains(&"ai.flowx.core.designer.notification.user.v1"));
        let pattern = t.iter().find(|t| t.event_type == TypeFrom::Topic).unwrap();
        assert!(pattern
            .topics
            .matches("ai.flowx.eventsgateway.receive.copilot"));
        assert!(!pattern.topics.matches("ai.flowx.eventsgateway.other"));
        assert_eq!(t[0].group, "engine-commands-message");
        assert_eq!(t[1].threads, 5);
    }

    #[test]
    fn naming_and_overrides() {
        let mut p = Vec::new();
        let t = topics(
            &with(&[
                ("KAFKA_TOPIC_NAMING_ENVIRONMENT", "dev."),
                ("KAFKA_TOPIC_NAMING_VERSION", ".v2"),
                ("KAFKA_TOPIC_EVENTSGATEWAY_PROCESS_IN_MESSAGE", "mine"),
                ("KAFKA_CONSUMER_GROUPID_USERBROADCASTCOMMANDS", "g-users"),
                ("KAFKA_CONSUMER_THREADS_TASKCOMMANDS", "zero"),
            ]),
            &mut p,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("KAFKA_CONSUMER_THREADS_TASKCOMMANDS"));
        assert_eq!(
            t[0].topics.as_str(),
            "ai.flowx.dev.eventsgateway.engine.commands.message.v2"
        );
        assert!(t.iter().any(|t| t.topics.as_str() == "mine"));
        let user = t.iter().find(|t| t.routing == Routing::User).unwrap();
        assert_eq!(user.group, "g-users");
    }

    #[test]
    fn profile_detection() {
        let mut p = Vec::new();
        assert!(profile(&with(&[("KAFKA_BOOTSTRAP_SERVERS", "k:9092")]), &mut p).is_some());
        assert!(profile(
            &with(&[
                ("KAFKA_BOOTSTRAP_SERVERS", "k:9092"),
                ("KAFKA_SOURCE_TOPICS", "rig")
            ]),
            &mut p
        )
        .is_none());
        assert!(profile(&with(&[("KAFKA_BROKERS", "k:9092")]), &mut p).is_none());
        assert!(profile(
            &with(&[("KAFKA_BROKERS", "k:9092"), ("CB_PROFILE", "flowx")]),
            &mut p
        )
        .is_some());
        assert!(profile(
            &with(&[("KAFKA_BOOTSTRAP_SERVERS", "k"), ("CB_PROFILE", "rig")]),
            &mut p
        )
        .is_none());
        assert!(p.is_empty());
        profile(&with(&[("CB_PROFILE", "spring")]), &mut p);
        assert_eq!(p.len(), 1);
    }
}
