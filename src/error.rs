//! Whose fault an error is. Every error type of the library says it, so a handler picks the
//! status code from it (client: 4xx; upstream: 502/503/504; ours: 500) and a log line can name
//! who has to act: the client, the broker or upstream service, or the operator of this gateway.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong: the client must change it.
    Client,
    /// A broker, identity provider, checker or backend failed or refused.
    Upstream,
    /// This gateway: its configuration, a bug, or a part of it that stopped.
    Ours,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Client => "the client",
            Fault::Upstream => "upstream",
            Fault::Ours => "this gateway",
        })
    }
}

/// An error that knows whose fault it is.
pub trait Blame {
    fn fault(&self) -> Fault;
}
