//! Structured logs on stderr (text or JSON lines), level from `LOG_LEVEL`. Some libraries
//! (rdkafka's client, rustls) report only through the `log` crate, so `log` records are bridged
//! into the same subscriber rather than lost.

use crate::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &Config) {
    init_with(&cfg.log_level, cfg.log_format);
}

/// For the router, which has no gateway `Config`: a level and a format.
pub fn init_with(level: &str, format: LogFormat) {
    // rskafka logs every failed reconnect attempt; during an outage our own rate-limited lines
    // say it once, with whose fault it is. Its detail comes back at debug level.
    let directives = if matches!(level, "debug" | "trace") {
        level.to_string()
    } else {
        format!("{level},rskafka=error")
    };
    let filter = EnvFilter::new(directives);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
