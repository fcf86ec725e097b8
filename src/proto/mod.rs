//! Sans-I/O protocol code: bytes in, values or actions out. Nothing here may open a socket or
//! file, spawn, sleep or name a runtime (a test in `tests/sans_io.rs` enforces it), so every
//! parser can be unit-, property- and fuzz-tested on plain byte slices.

pub mod cloudevents;
pub mod http1;
pub mod kafka_record;
pub mod sse;
pub mod ws;
