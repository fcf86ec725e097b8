//! Sans-I/O protocol code: bytes in, values or actions out. Nothing here may open a socket or
//! file, spawn, sleep or name a runtime (`tests/layering.rs` enforces it), so every
//! parser can be unit-, property- and fuzz-tested on plain byte slices.

pub mod avro;
pub mod cloudevents;
pub mod control;
pub mod frame;
pub mod headers;
pub mod http1;
pub mod http1_client;
pub mod kafka_record;
pub mod longpoll;
pub mod resume;
pub mod sse;
pub mod token;
pub mod trace;
pub mod ws;

/// The three ways a frontend receives events. Also a bounded metric label and an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse = 0,
    Ws = 1,
    LongPoll = 2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Sse, Transport::Ws, Transport::LongPoll];
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::LongPoll => "longpoll",
        }
    }
}

/// Lower-case hex digits, by value.
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `b` as two lower-case hex digits.
pub(crate) fn push_hex(out: &mut String, b: u8) {
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}
