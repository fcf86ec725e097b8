//! Structured logs on stderr (text or JSON lines), level from `LOG_LEVEL`. glommio reports
//! degraded start-up (e.g. io_memory not locked) only through the `log` crate, so `log` records
//! are bridged into the same subscriber rather than lost.

use crate::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &Config) {
    let filter = EnvFilter::new(&cfg.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
