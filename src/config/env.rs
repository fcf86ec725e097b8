//! Every environment variable the appliance reads, in one place. RIG's names are kept so a RIG
//! deployment can switch without editing its manifests; `CB_*` names are ours.

pub const INBOUND_PORT: &str = "INBOUND_PORT";
pub const API_HTTP_PORT: &str = "API_HTTP_PORT";
/// Address the public listener binds to (ours; RIG binds all interfaces).
pub const INBOUND_BIND: &str = "CB_INBOUND_BIND";
/// Address the internal API binds to (ours; loopback unless told otherwise).
pub const API_BIND: &str = "CB_API_BIND";
pub const CORS: &str = "CORS";
pub const EXTRACTORS: &str = "EXTRACTORS";
pub const LOG_LEVEL: &str = "LOG_LEVEL";
pub const LOG_FMT: &str = "LOG_FMT";
pub const TUNING_FILE: &str = "CB_TUNING_FILE";
