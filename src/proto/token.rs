//! Connection tokens: opaque to clients, routable by us (a wire format, so it lives with the
//! protocols: shards, the island and the gateway all read it). A token names the node, the owner
//! shard, the session slot and its generation (a reused slot gets a new one), plus 64 random
//! bits so a token cannot be guessed from another: PUT subscriptions and long-poll cookies are
//! authorised by possession of the token alone, as in RIG.
//!
//! Correlation tokens of the API gateway (a request waiting for its response) have the same
//! layout with another version byte, so one kind is never taken for the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const VERSION: u8 = 1;
const CORRELATION: u8 = 2;
const LEN: usize = 1 + 4 + 2 + 4 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub node: u32,
    pub shard: u16,
    pub slot: u32,
    pub gen: u32,
    pub secret: u64,
}

impl Token {
    pub fn encode(&self) -> String {
        self.encode_as(VERSION)
    }

    /// A correlation token (the slot is a waiting request's, not a session's).
    pub fn encode_correlation(&self) -> String {
        self.encode_as(CORRELATION)
    }

    pub fn decode(s: &str) -> Option<Token> {
        Token::decode_as(s, VERSION)
    }

    pub fn decode_correlation(s: &str) -> Option<Token> {
        Token::decode_as(s, CORRELATION)
    }

    fn encode_as(&self, version: u8) -> String {
        let mut b = [0u8; LEN];
        b[0] = version;
        b[1..5].copy_from_slice(&self.node.to_be_bytes());
        b[5..7].copy_from_slice(&self.shard.to_be_bytes());
        b[7..11].copy_from_slice(&self.slot.to_be_bytes());
        b[11..15].copy_from_slice(&self.gen.to_be_bytes());
        b[15..23].copy_from_slice(&self.secret.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    fn decode_as(s: &str, version: u8) -> Option<Token> {
        // Bound the work a peer can cause before decoding.
        if s.len() > 64 {
            return None;
        }
        let b = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
        if b.len() != LEN || b[0] != version {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        Some(Token {
            node: u32_at(1),
            shard: u16::from_be_bytes([b[5], b[6]]),
            slot: u32_at(7),
            gen: u32_at(11),
            secret: u64::from_be_bytes(b[15..23].try_into().unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(node: u32, shard: u16, slot: u32, gen: u32, secret: u64) {
            let t = Token { node, shard, slot, gen, secret };
            prop_assert_eq!(Token::decode(&t.encode()), Some(t));
            prop_assert_eq!(Token::decode_correlation(&t.encode_correlation()), Some(t));
            prop_assert_eq!(Token::decode(&t.encode_correlation()), None);
        }

        #[test]
        fn garbage_never_panics(s in ".{0,80}") {
            let _ = Token::decode(&s);
        }
    }
}
