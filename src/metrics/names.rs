//! Every metric name and help text, in one place. Labels are bounded enums (transport, source,
//! reason, status class): never a user, a token or a path.

pub const CONNECTIONS: (&str, &str) = (
    "corebridge_connections",
    "Open frontend connections (long-poll: live sessions), by transport.",
);
pub const CONNECTIONS_OPENED: (&str, &str) = (
    "corebridge_connections_opened_total",
    "Frontend connections accepted, by transport.",
);
pub const EVENTS_RECEIVED: (&str, &str) = (
    "corebridge_events_received_total",
    "Events accepted for delivery, by source.",
);
pub const EVENTS_DELIVERED: (&str, &str) = (
    "corebridge_events_delivered_total",
    "Events queued to a matching connection, by transport (one per connection).",
);
pub const EVENTS_DROPPED: (&str, &str) = (
    "corebridge_events_dropped_total",
    "Events that did not reach a matching connection, by transport and reason.",
);
pub const SLOW_CONSUMER_CLOSES: (&str, &str) = (
    "corebridge_slow_consumer_closes_total",
    "Connections closed because their outbound queue was full, by transport.",
);
pub const SUBSCRIPTIONS: (&str, &str) = (
    "corebridge_subscriptions",
    "Subscriptions currently held by connections.",
);
pub const HTTP_RESPONSES: (&str, &str) = (
    "corebridge_http_responses_total",
    "HTTP responses sent, by listener and status class.",
);
pub const SHARDS: (&str, &str) = ("corebridge_shards", "Shards (pinned executors) running.");
pub const BUILD_INFO: (&str, &str) = (
    "corebridge_build_info",
    "Always 1; the version label names the running build.",
);
