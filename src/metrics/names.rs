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
pub const EVENTS_UNWANTED: (&str, &str) = (
    "corebridge_events_unwanted_total",
    "Events no connection on this node subscribes to, dropped where they entered, by source.",
);
pub const WRITER_PASSES: (&str, &str) = (
    "corebridge_writer_passes_total",
    "Passes the shards' writers made over the streams with output to send.",
);
pub const WRITER_PASS_SECONDS: (&str, &str) = (
    "corebridge_writer_pass_seconds_total",
    "Wall time the shards' writers spent in passes, steps aside for the reactor included; divided by the passes, how long an event published during a pass may wait for it.",
);
pub const STREAM_WRITES: (&str, &str) = (
    "corebridge_stream_writes_total",
    "Socket writes to SSE and WebSocket streams; deliveries per write is how many events the writer sends together.",
);
pub const WRITER_BATCHED_SHARDS: (&str, &str) = (
    "corebridge_writer_batched_shards",
    "Shards whose writer hands its sends to the kernel in batches through io_uring (runtime.batched_sends); the others make one sendmsg per write, as where io_uring is refused.",
);
pub const RESUMES: (&str, &str) = (
    "corebridge_resumes_total",
    "Connections opened with a Last-Event-ID (SSE) or last_event_id (WebSocket, long-poll), by result: replayed (nothing lost), gap (some events could not be replayed), failed (Kafka or Redis could not be read).",
);
pub const RESUMED_EVENTS: (&str, &str) = (
    "corebridge_resumed_events_total",
    "Events replayed to reconnecting clients.",
);
pub const IDLE_CLOSES: (&str, &str) = (
    "corebridge_idle_closes_total",
    "SSE streams ended because no event reached them for EVENTS_SSE_CLEANUP_MAXAGEMINS (they reconnect).",
);
pub const RESUME_RING_EVENTS: (&str, &str) = (
    "corebridge_resume_ring_events",
    "Decoded Kafka records (or, without a broker, published events) kept on this node for replays to resuming clients.",
);
pub const RESUME_RING_BYTES: (&str, &str) = (
    "corebridge_resume_ring_bytes",
    "Payload bytes of the records kept for replays.",
);
pub const PENDING_HEADS: (&str, &str) = (
    "corebridge_pending_heads",
    "Connections that have not sent a whole first request yet (bounded by http.max_pending_heads).",
);
pub const PENDING_REFUSED: (&str, &str) = (
    "corebridge_pending_heads_refused_total",
    "Connections answered 503 at once because http.max_pending_heads connections had not sent a whole request yet.",
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

// Broker island (Kafka).
pub const KAFKA_UP: (&str, &str) = (
    "corebridge_kafka_up",
    "1 while the last broker request succeeded, else 0.",
);
pub const KAFKA_CONNECT_FAILURES: (&str, &str) = (
    "corebridge_kafka_connect_failures_total",
    "Failed attempts to reach the Kafka cluster (start-up and reconnects).",
);
pub const KAFKA_CONSUMED: (&str, &str) = (
    "corebridge_kafka_records_consumed_total",
    "Records read from Kafka and turned into events, by topic.",
);
pub const KAFKA_FAILED: (&str, &str) = (
    "corebridge_kafka_records_failed_total",
    "Records skipped because they are not CloudEvents (or unmappable), by topic.",
);
pub const KAFKA_TOO_LARGE: (&str, &str) = (
    "corebridge_kafka_records_too_large_total",
    "Records skipped because they exceed KAFKA_MESSAGE_MAX_BYTES, by topic.",
);
pub const KAFKA_LOG_RESETS: (&str, &str) = (
    "corebridge_kafka_log_resets_total",
    "Times a partition's log turned out replaced (it ended below the position already read, or the record last read was gone after an outage: the broker lost it, or the topic was recreated), by topic; reading went on from the new log's start.",
);
pub const KAFKA_FETCH_FAILURES: (&str, &str) = (
    "corebridge_kafka_fetch_failures_total",
    "Fetches that failed or got no answer within the fetch wait + CB_KAFKA_REQUEST_TIMEOUT_MS, by topic; the partition is fetched again after a backoff (an unanswered one on a new connection).",
);
pub const KAFKA_RECORD_AGE: (&str, &str) = (
    "corebridge_kafka_record_age_seconds",
    "Time from a source record's Kafka timestamp (its producer's clock, or the broker's with LogAppendTime) to its fetch by this node, by topic: the broker's and the producer's share of an event's latency; clock skew shows here too.",
);
pub const KAFKA_LAG: (&str, &str) = (
    "corebridge_kafka_consumer_lag",
    "High watermark minus the next offset to read, by topic and partition; a partition appears once its reader knows its start offset.",
);
pub const KAFKA_PRODUCED: (&str, &str) = (
    "corebridge_kafka_produced_total",
    "Records acknowledged by Kafka for publish requests.",
);
pub const KAFKA_PRODUCE_FAILED: (&str, &str) = (
    "corebridge_kafka_produce_failed_total",
    "Publish requests Kafka did not acknowledge, by reason.",
);
pub const KAFKA_PRODUCE_LATENCY: (&str, &str) = (
    "corebridge_kafka_produce_latency_seconds",
    "Time from a publish request reaching the island to the broker's acknowledgement.",
);
pub const ISLAND_QUEUE: (&str, &str) = (
    "corebridge_island_queue_batches",
    "Event batches waiting in the island-to-shard queue, by shard.",
);

// API gateway.
pub const PROXY_REQUESTS: (&str, &str) = (
    "rig_proxy_requests_total",
    "Proxied requests (RIG's metric), by method, endpoint (path = <api id>/<endpoint id>), target, response_from and status.",
);
pub const RIG_CONSUMED: (&str, &str) = (
    "rig_consumed_events_total",
    "RIG's name: events read from a source (kafka, kinesis, nats), by topic, stream or subject.",
);
pub const RIG_CONSUMED_FAILED: (&str, &str) = (
    "rig_consumed_events_failed_total",
    "RIG's name: records of a source skipped as not CloudEvents (or too large), by topic.",
);
pub const RIG_PRODUCED: (&str, &str) = (
    "rig_produced_events_total",
    "RIG's name: events the gateway produced to a target (publish API and proxy), by target.",
);
pub const RIG_PRODUCED_FAILED: (&str, &str) = (
    "rig_produced_events_failed_total",
    "RIG's name: events a target did not take, by target.",
);
pub const RIG_SUBSCRIPTIONS: (&str, &str) = (
    "rig_subscriptions_total",
    "RIG's name: subscriptions of the connections on this node.",
);
pub const PROXY_PENDING: (&str, &str) = (
    "corebridge_proxy_pending_requests",
    "Proxied requests parked for a correlated response.",
);
pub const PROXY_REPLIES: (&str, &str) = (
    "corebridge_proxy_replies_total",
    "Responses for parked requests, by outcome (delivered, or dropped: unknown, answered or expired correlation).",
);
pub const PROXY_UPSTREAM_FAILURES: (&str, &str) = (
    "corebridge_proxy_upstream_failures_total",
    "Proxied requests answered 502 because the upstream could not be reached or answered badly.",
);
pub const PROXY_UPSTREAM_LATENCY: (&str, &str) = (
    "corebridge_proxy_upstream_latency_seconds",
    "Time from sending a request upstream to the upstream's response head.",
);
pub const REDIS_UP: (&str, &str) = (
    "corebridge_redis_up",
    "1 while the Redis replay store answers; 0 when its last command failed (resume falls back to this node's ring).",
);
pub const REDIS_WRITTEN: (&str, &str) = (
    "corebridge_redis_events_written_total",
    "Published events kept in the Redis replay store.",
);
pub const REDIS_WRITE_FAILURES: (&str, &str) = (
    "corebridge_redis_write_failures_total",
    "Published events not kept in Redis (Redis unreachable or its write queue full); live delivery is not affected.",
);
pub const REDIS_READ_FAILURES: (&str, &str) = (
    "corebridge_redis_read_failures_total",
    "Resumes that could not read the Redis replay store.",
);
pub const TLS_HANDSHAKES: (&str, &str) = (
    "corebridge_tls_handshakes_total",
    "TLS handshakes on the HTTPS ports, by result (failed: not TLS, no common cipher, or not done within http.header_timeout_ms).",
);
pub const SHARD_BUSY: (&str, &str) = (
    "corebridge_shard_busy_seconds_total",
    "Time each shard's executor spent running tasks; its rate is the shard's busy share of its core (1 = saturated).",
);
pub const SHARD_INBOUND_QUEUE: (&str, &str) = (
    "corebridge_shard_inbound_queue",
    "Publishes and control records waiting in each shard's inbound queue (runtime.mesh_queue bounds it).",
);
pub const ADDRESS_REFUSED: (&str, &str) = (
    "corebridge_address_refused_total",
    "Connections refused because their client address already held http.max_connections_per_address.",
);

// Kinesis.
pub const NATS_UP: (&str, &str) = (
    "corebridge_nats_up",
    "1 while this node is connected to a NATS server, 0 while it is not (NATS keeps nothing: what is published meanwhile does not reach this node).",
);
pub const NATS_RECEIVED: (&str, &str) = (
    "corebridge_nats_messages_total",
    "NATS messages received and decoded into events, per subscribed subject.",
);
pub const NATS_FAILED: (&str, &str) = (
    "corebridge_nats_messages_failed_total",
    "NATS messages skipped because they are not CloudEvents, per subscribed subject.",
);
pub const NATS_SLOW: (&str, &str) = (
    "corebridge_nats_slow_consumer_total",
    "Times the NATS client dropped messages because this node did not take them fast enough.",
);
pub const NATS_PUBLISHED: (&str, &str) = (
    "corebridge_nats_published_total",
    "Messages the API gateway sent to NATS (target: nats), by outcome.",
);
pub const KINESIS_UP: (&str, &str) = (
    "corebridge_kinesis_up",
    "1 while the last Kinesis call succeeded, 0 while Kinesis is unreachable.",
);
pub const KINESIS_RECEIVED: (&str, &str) = (
    "corebridge_kinesis_records_total",
    "Kinesis records read and decoded into events, per stream.",
);
pub const KINESIS_FAILED: (&str, &str) = (
    "corebridge_kinesis_records_failed_total",
    "Kinesis records skipped because they are not CloudEvents, per stream.",
);
pub const KINESIS_THROTTLED: (&str, &str) = (
    "corebridge_kinesis_throttled_total",
    "Kinesis reads refused for throughput (ProvisionedThroughputExceeded), per stream.",
);
pub const KINESIS_RESETS: (&str, &str) = (
    "corebridge_kinesis_position_resets_total",
    "Times a shard's position was not in the stream any more (the stream was deleted and created again, or lost its data), per stream; reading went on from the shard's oldest record.",
);
pub const KINESIS_AGE: (&str, &str) = (
    "corebridge_kinesis_iterator_age_milliseconds",
    "How far behind the tip of its shard this node reads (MillisBehindLatest).",
);
pub const KINESIS_PUT: (&str, &str) = (
    "corebridge_kinesis_put_records_total",
    "Records put to Kinesis, by outcome (ok, failed after retries).",
);

// The clickstream router (its own process and page).
pub const ROUTER_CONSUMED: (&str, &str) = (
    "corebridge_router_messages_total",
    "Messages read from the ingestion and retry topics, by topic.",
);
pub const ROUTER_ROUTED: (&str, &str) = (
    "corebridge_router_routed_total",
    "Messages produced to an integration's topic, by topic.",
);
pub const ROUTER_RETRIED: (&str, &str) = (
    "corebridge_router_produce_retries_total",
    "Produce attempts that failed and were tried again in process.",
);
pub const ROUTER_TO_RETRY_TOPIC: (&str, &str) = (
    "corebridge_router_retry_topic_total",
    "Messages written to the retry topic after their in-process retries failed.",
);
pub const ROUTER_TO_S3: (&str, &str) = (
    "corebridge_router_s3_objects_total",
    "Messages written to S3 after their retries were exhausted (or not routable at all).",
);
pub const ROUTER_CACHE: (&str, &str) = (
    "corebridge_router_cache_total",
    "Integration lookups by result: hit, miss (a registry request), invalidation, expired (older than CB_ROUTER_CACHE_TTL_S).",
);
pub const ROUTER_LOOKUP: (&str, &str) = (
    "corebridge_router_registry_seconds",
    "Registry lookup latency on a cache miss.",
);
pub const ROUTER_IN_FLIGHT: (&str, &str) = (
    "corebridge_router_in_flight",
    "Messages read whose outputs are not all acknowledged yet (their offsets are not committed).",
);
pub const ROUTER_LAG: (&str, &str) = (
    "corebridge_router_consumer_lag",
    "High watermark minus committed position, per partition of the router's group.",
);
