//! Every environment variable the appliance reads, in one place. RIG's names are kept so a RIG
//! deployment can switch without editing its manifests; `CB_*` names are ours.

pub const INBOUND_PORT: &str = "INBOUND_PORT";
pub const API_HTTP_PORT: &str = "API_HTTP_PORT";
/// Address the public listener binds to (ours; RIG binds all interfaces).
pub const INBOUND_BIND: &str = "CB_INBOUND_BIND";
/// Address the internal API binds to (ours; loopback unless told otherwise).
pub const API_BIND: &str = "CB_API_BIND";
pub const CORS: &str = "CORS";
/// FlowX: a comma list of allowed origins, wildcard subdomains allowed.
pub const APPLICATION_CORS_ALLOW_ORIGIN: &str = "APPLICATION_CORS_ALLOW_ORIGIN";
pub const EXTRACTORS: &str = "EXTRACTORS";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const LOG_FMT: &str = "LOG_FMT";
pub const TUNING_FILE: &str = "CB_TUNING_FILE";

// Kafka (RIG names first, then FlowX aliases, then ours).
pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
pub const SPRING_KAFKA_BOOTSTRAP_SERVERS: &str = "SPRING_KAFKA_BOOTSTRAP_SERVERS";
pub const KAFKA_SOURCE_TOPICS: &str = "KAFKA_SOURCE_TOPICS";
pub const KAFKA_SSL_ENABLED: &str = "KAFKA_SSL_ENABLED";
pub const KAFKA_SSL_CA_CERTFILE: &str = "KAFKA_SSL_CA_CERTFILE";
pub const KAFKA_SSL_CERTFILE: &str = "KAFKA_SSL_CERTFILE";
pub const KAFKA_SSL_KEYFILE: &str = "KAFKA_SSL_KEYFILE";
pub const KAFKA_SSL_KEYFILE_PASS: &str = "KAFKA_SSL_KEYFILE_PASS";
pub const KAFKA_SASL: &str = "KAFKA_SASL";
pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
/// FlowX's fallback for `KAFKA_SECURITY_PROTOCOL`.
pub const SPRING_KAFKA_SECURITY_PROTOCOL: &str = "SPRING_KAFKA_SECURITY_PROTOCOL";
/// FlowX: seconds between attempts after an authentication failure (and the cap of every
/// reconnect back-off); never fatal.
pub const KAFKA_AUTH_RETRY: &str = "KAFKA_AUTHEXCEPTIONRETRYINTERVAL";
pub const KAFKA_MESSAGE_MAX_BYTES: &str = "KAFKA_MESSAGE_MAX_BYTES";
pub const KAFKA_PUBLISH_TOPIC: &str = "CB_KAFKA_PUBLISH_TOPIC";
pub const KAFKA_START_OFFSET: &str = "CB_KAFKA_START_OFFSET";
pub const KAFKA_TOPIC_REFRESH_MS: &str = "CB_KAFKA_TOPIC_REFRESH_MS";
pub const KAFKA_PRODUCE_TIMEOUT_MS: &str = "CB_KAFKA_PRODUCE_TIMEOUT_MS";
pub const KAFKA_RECORD_MAPPING: &str = "CB_KAFKA_RECORD_MAPPING";
pub const KAFKA_SHARD_QUEUE: &str = "CB_KAFKA_SHARD_QUEUE";
pub const KAFKA_CLIENT_ID: &str = "CB_KAFKA_CLIENT_ID";
pub const KAFKA_CONTROL_TOPIC: &str = "CB_KAFKA_CONTROL_TOPIC";
pub const KAFKA_FETCH_WAIT_MS: &str = "CB_KAFKA_FETCH_WAIT_MS";
pub const KAFKA_REQUEST_TIMEOUT_MS: &str = "CB_KAFKA_REQUEST_TIMEOUT_MS";
/// FlowX: OAUTHBEARER with client credentials, for every Kafka client of the process.
pub const KAFKA_OAUTH_CLIENT_ID: &str = "KAFKA_OAUTH_CLIENT_ID";
pub const KAFKA_OAUTH_CLIENT_SECRET: &str = "KAFKA_OAUTH_CLIENT_SECRET";
pub const KAFKA_OAUTH_TOKEN_ENDPOINT_URI: &str = "KAFKA_OAUTH_TOKEN_ENDPOINT_URI";
/// `rig` or `flowx`: whose topics, groups and mappings the gateway reads (ours; default: FlowX's
/// when only FlowX variables are set).
pub const PROFILE: &str = "CB_PROFILE";
/// `TOPIC_OR_PATTERN=GROUP,...`: sources read in a consumer group (ours).
pub const KAFKA_SOURCE_GROUPS: &str = "CB_KAFKA_SOURCE_GROUPS";
/// `node` (default) or `shared`: see `config::kafka::GroupScope` (ours).
pub const KAFKA_GROUP_SCOPE: &str = "CB_KAFKA_GROUP_SCOPE";
/// How often group consumers commit the offsets they stored, in ms (ours; default 1000).
pub const KAFKA_GROUP_COMMIT_MS: &str = "CB_KAFKA_GROUP_COMMIT_MS";
/// The JWT claim that names the user of FlowX's user messages (ours; default preferred_username).
pub const FLOWX_USER_CLAIM: &str = "CB_FLOWX_USER_CLAIM";
/// FlowX: SSE streams without an event for this many minutes are ended (they reconnect).
pub const EVENTS_SSE_CLEANUP_MAXAGEMINS: &str = "EVENTS_SSE_CLEANUP_MAXAGEMINS";
/// FlowX: how often, in minutes, that is checked (default 5).
pub const EVENTS_SSE_CLEANUP_INTERVALMINS: &str = "EVENTS_SSE_CLEANUP_INTERVALMINS";
/// The JWT claim naming a connection's user for presence (ours; default `sub`).
pub const PRESENCE_CLAIM: &str = "CB_PRESENCE_CLAIM";
/// Kafka topic for `rig.presence` join/leave events (ours; off when unset).
pub const PRESENCE_TOPIC: &str = "CB_PRESENCE_TOPIC";
/// How long a presence query waits for other nodes (ours; default 500 ms).
pub const PRESENCE_WAIT_MS: &str = "CB_PRESENCE_WAIT_MS";
/// Path prefixes under which the inbound `/_rig/` routes are also served (ours; default FlowX's
/// `/api/events`).
pub const INBOUND_PATH_PREFIXES: &str = "CB_INBOUND_PATH_PREFIXES";

// JWT (RIG's names, ours, FlowX's Keycloak realm).
pub const JWT_SECRET_KEY: &str = "JWT_SECRET_KEY";
pub const JWT_ALG: &str = "JWT_ALG";
pub const JWT_SESSION_FIELD: &str = "JWT_SESSION_FIELD";
pub const JWT_JWKS_URL: &str = "CB_JWT_JWKS_URL";
pub const JWT_ISSUER: &str = "CB_JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "CB_JWT_AUDIENCE";
pub const JWT_LEEWAY_SECS: &str = "CB_JWT_LEEWAY_SECS";
pub const SECURITY_OAUTH2_BASESERVERURL: &str = "SECURITY_OAUTH2_BASESERVERURL";
pub const SECURITY_OAUTH2_SAREALM: &str = "SECURITY_OAUTH2_SAREALM";

// Access control.
pub const MAX_CONNECTIONS_PER_MINUTE: &str = "MAX_CONNECTIONS_PER_MINUTE";
pub const SUBSCRIPTION_CHECK: &str = "SUBSCRIPTION_CHECK";
pub const SUBMISSION_CHECK: &str = "SUBMISSION_CHECK";
/// `POINTER=VALUE`: a token with this claim is exempt from `jwt_claims` checks (ours).
pub const PRIVILEGED_CLAIM: &str = "CB_PRIVILEGED_CLAIM";
/// Bearer token the internal API port requires when set (ours; RIG's internal API has none).
pub const API_TOKEN: &str = "CB_API_TOKEN";

// API gateway (RIG's names, then ours).
pub const PROXY_CONFIG_FILE: &str = "PROXY_CONFIG_FILE";
pub const PROXY_RECV_TIMEOUT: &str = "PROXY_RECV_TIMEOUT";
pub const PROXY_KAFKA_RESPONSE_TOPICS: &str = "PROXY_KAFKA_RESPONSE_TOPICS";
pub const PROXY_KAFKA_RESPONSE_TIMEOUT: &str = "PROXY_KAFKA_RESPONSE_TIMEOUT";
pub const PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT: &str = "PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT";
pub const PROXY_KINESIS_RESPONSE_TIMEOUT: &str = "PROXY_KINESIS_RESPONSE_TIMEOUT";
pub const PROXY_NATS_RESPONSE_TIMEOUT: &str = "PROXY_NATS_RESPONSE_TIMEOUT";
pub const REQUEST_LOG: &str = "REQUEST_LOG";
pub const KAFKA_LOG_TOPIC: &str = "KAFKA_LOG_TOPIC";
/// `avro`: proxy endpoints with a `schema` (and the request log with `KAFKA_LOG_SCHEMA`) produce
/// Avro; unset or `json`: JSON. Avro records are read whatever it says.
pub const KAFKA_SERIALIZER: &str = "KAFKA_SERIALIZER";
/// The schema registry, `host:port` (RIG) or a URL.
pub const KAFKA_SCHEMA_REGISTRY_HOST: &str = "KAFKA_SCHEMA_REGISTRY_HOST";
/// The registry subject the request log is encoded with (`KAFKA_SERIALIZER=avro`).
pub const KAFKA_LOG_SCHEMA: &str = "KAFKA_LOG_SCHEMA";
/// RIG's endpoint host; its address is `by=` in the `forwarded` header.
pub const HOST: &str = "HOST";
/// How this node signs the API definitions it stores (`node_name`; ours).
pub const NODE_NAME: &str = "CB_NODE_NAME";
/// PEM file of the CAs trusted for `https` upstreams (ours; default: the system's CA bundle).
pub const PROXY_CA_CERTFILE: &str = "CB_PROXY_CA_CERTFILE";

// Kinesis (RIG's names, then ours).
pub const KINESIS_ENABLED: &str = "KINESIS_ENABLED";
pub const KINESIS_STREAM: &str = "KINESIS_STREAM";
pub const KINESIS_AWS_REGION: &str = "KINESIS_AWS_REGION";
pub const KINESIS_APP_NAME: &str = "KINESIS_APP_NAME";
pub const KINESIS_ENDPOINT: &str = "KINESIS_ENDPOINT";
pub const KINESIS_DYNAMODB_ENDPOINT: &str = "KINESIS_DYNAMODB_ENDPOINT";
pub const PROXY_KINESIS_REQUEST_REGION: &str = "PROXY_KINESIS_REQUEST_REGION";
/// Region of the checkpoint table when it differs from the streams' (ours).
pub const KINESIS_DYNAMODB_REGION: &str = "CB_KINESIS_DYNAMODB_REGION";
/// Checkpoints in DynamoDB on or off (ours; default: on with a DynamoDB endpoint or region).
pub const KINESIS_CHECKPOINTS: &str = "CB_KINESIS_CHECKPOINTS";
/// `LATEST` or `TRIM_HORIZON` for shards without a checkpoint (ours).
pub const KINESIS_START: &str = "CB_KINESIS_START";
/// The stream `response_from: kinesis` replies are put on (ours; RIG had none that worked).
pub const PROXY_KINESIS_RESPONSE_STREAM: &str = "PROXY_KINESIS_RESPONSE_STREAM";
/// This node's stable id in the checkpoint table (ours; default the host name).
pub const NODE_ID: &str = "CB_NODE_ID";
/// How long a node resuming from checkpoints waits for frontends to reconnect (ours).
pub const KINESIS_RESUME_DELAY_MS: &str = "CB_KINESIS_RESUME_DELAY_MS";
/// The publish API puts events here when Kafka is off (ours).
pub const KINESIS_PUBLISH_STREAM: &str = "CB_KINESIS_PUBLISH_STREAM";
/// Read with enhanced fan-out (SubscribeToShard, a registered consumer per node; ours).
pub const KINESIS_EFO: &str = "CB_KINESIS_EFO";
/// Pause between reads of a shard that had nothing new (ours; default 1000 ms).
pub const KINESIS_POLL_MS: &str = "CB_KINESIS_POLL_MS";
/// How often shard lists are read again (ours; default 10000 ms).
pub const KINESIS_SHARD_REFRESH_MS: &str = "CB_KINESIS_SHARD_REFRESH_MS";

// NATS as an event source (RIG's names).
/// Comma-separated servers; NATS is off when unset.
pub const NATS_SERVERS: &str = "NATS_SERVERS";
/// Comma-separated subjects consumed (default `rig`).
pub const NATS_SOURCE_TOPICS: &str = "NATS_SOURCE_TOPICS";
/// RIG's queue group; read and not used (every node reads every subject).
pub const NATSTOFILTER_QUEUE_GROUP: &str = "NATSTOFILTER_QUEUE_GROUP";
/// CA certificates for `tls://` NATS servers (ours).
pub const NATS_TLS_CA_FILE: &str = "CB_NATS_TLS_CA_FILE";

// The Redis replay store (ours first, then FlowX's Spring names).
/// `redis[s]://[user:password@]host:port[/db]`; Sentinel and Cluster via the Spring names.
pub const REDIS_URL: &str = "CB_REDIS_URL";
pub const REDIS_KEY_PREFIX: &str = "CB_REDIS_KEY_PREFIX";
/// Events kept per routing key at most (ours).
pub const REDIS_MAX_PER_KEY: &str = "CB_REDIS_MAX_PER_KEY";
pub const SPRING_DATA_REDIS_URL: &str = "SPRING_DATA_REDIS_URL";
pub const SPRING_DATA_REDIS_HOST: &str = "SPRING_DATA_REDIS_HOST";
pub const SPRING_DATA_REDIS_PORT: &str = "SPRING_DATA_REDIS_PORT";
pub const SPRING_DATA_REDIS_USERNAME: &str = "SPRING_DATA_REDIS_USERNAME";
pub const SPRING_DATA_REDIS_PASSWORD: &str = "SPRING_DATA_REDIS_PASSWORD";
pub const SPRING_DATA_REDIS_DATABASE: &str = "SPRING_DATA_REDIS_DATABASE";
pub const SPRING_DATA_REDIS_SSL_ENABLED: &str = "SPRING_DATA_REDIS_SSL_ENABLED";
pub const SPRING_DATA_REDIS_SENTINEL_MASTER: &str = "SPRING_DATA_REDIS_SENTINEL_MASTER";
pub const SPRING_DATA_REDIS_SENTINEL_NODES: &str = "SPRING_DATA_REDIS_SENTINEL_NODES";
pub const SPRING_DATA_REDIS_SENTINEL_PASSWORD: &str = "SPRING_DATA_REDIS_SENTINEL_PASSWORD";
pub const SPRING_DATA_REDIS_CLUSTER_NODES: &str = "SPRING_DATA_REDIS_CLUSTER_NODES";
/// Spring Boot's SSL bundle for Redis: names `SPRING_SSL_BUNDLE_PEM_<NAME>_*` (PEM bundles only)
/// and turns TLS on unless `SPRING_DATA_REDIS_SSL_ENABLED=false`.
pub const SPRING_DATA_REDIS_SSL_BUNDLE: &str = "SPRING_DATA_REDIS_SSL_BUNDLE";
/// TLS to Redis (ours; they win over the bundle's): the CA certificates to trust instead of
/// the system's, and a client certificate and key for servers that demand one.
pub const REDIS_TLS_CA_FILE: &str = "CB_REDIS_TLS_CA_FILE";
pub const REDIS_TLS_CERT_FILE: &str = "CB_REDIS_TLS_CERT_FILE";
pub const REDIS_TLS_KEY_FILE: &str = "CB_REDIS_TLS_KEY_FILE";
/// Passphrase of an encrypted PKCS#8 key in `CB_REDIS_TLS_KEY_FILE`.
pub const REDIS_TLS_KEY_PASS: &str = "CB_REDIS_TLS_KEY_PASS";
/// FlowX: hours events stay in Redis (default 4).
pub const EVENTS_REDIS_TTLHOURS: &str = "EVENTS_REDIS_TTLHOURS";
/// FlowX: how often its instances polled Redis; accepted, not needed (live delivery does not
/// go through Redis here).
pub const EVENTS_REDIS_FREQUENCYMILLIS: &str = "EVENTS_REDIS_FREQUENCYMILLIS";

// HTTPS (RIG's names): enabled when both files are set.
pub const HTTPS_CERTFILE: &str = "HTTPS_CERTFILE";
pub const HTTPS_KEYFILE: &str = "HTTPS_KEYFILE";
pub const HTTPS_KEYFILE_PASS: &str = "HTTPS_KEYFILE_PASS";
pub const INBOUND_HTTPS_PORT: &str = "INBOUND_HTTPS_PORT";
pub const API_HTTPS_PORT: &str = "API_HTTPS_PORT";
