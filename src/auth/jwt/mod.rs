//! JWT verification: RIG's `JWT_*` settings plus FlowX's Keycloak JWKS.
//!
//! RIG 3.0 verifies tokens with one algorithm (`JWT_ALG`) and one key (`JWT_SECRET_KEY`: a
//! shared secret for HS*, a PEM public key for RS*). The FlowX Events Gateway takes its keys
//! from the identity provider's JWKS endpoint instead. Both live behind one [`Verifier`].
//!
//! - `alg`      — the algorithms and the kind of key each needs
//! - `keys`     — verification keys from PEM (RustCrypto's PEM, SPKI and PKCS#1 decoders) and
//!   from JWKS documents, refused early with a message that says what is wrong with the key
//! - `verifier` — the verifier: header, key choice, signature (jsonwebtoken), claims and time
//!
//! The settings (environment names, validation, reading the PEM up front) are `config::jwt`.
//! Nothing here does I/O: the caller fetches the JWKS document (from [`Verifier::jwks_url`])
//! and hands the bytes to [`Verifier::with_jwks`], keeping the retry and rate-limit policy with
//! whoever owns the clock and the sockets.
//!
//! Everything a peer controls is bounded: token size ([`MAX_TOKEN_BYTES`]), the number of
//! bearer credentials read from one request ([`MAX_BEARER_TOKENS`]), the JWKS document size and
//! key count ([`MAX_JWKS_BYTES`], [`MAX_JWKS_KEYS`]), RSA modulus sizes, and the length of
//! peer-supplied strings echoed back in error messages.

mod alg;
mod keys;
mod verifier;

pub use alg::{Alg, UnknownAlg};
pub use keys::KeyError;
pub use verifier::{JwtError, Verifier};

use serde_json::Value;

/// Largest token accepted, in bytes. RIG's Cowboy listener caps header values
/// at 16 KiB, so no token RIG accepted is longer; anything longer is junk or
/// an attempt to make us burn CPU on base64 and JSON.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document accepted. Real identity providers serve a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys accepted in one JWKS document.
pub const MAX_JWKS_KEYS: usize = 100;
/// Most bearer credentials [`bearer_tokens`] returns for one request. Each
/// one may cost a signature check, so a peer must not be able to send
/// hundreds of them in a single header.
pub const MAX_BEARER_TOKENS: usize = 16;
/// Default JSON pointer of the session id (RIG's `JWT_SESSION_FIELD`).
pub const DEFAULT_SESSION_POINTER: &str = "/jti";
/// Peer-supplied strings quoted in error messages are cut to this many bytes,
/// so a hostile token cannot blow up log lines or response bodies.
const MAX_QUOTED: usize = 64;

/// Checks a PEM public key for `alg` (used by `config` so that `--check-config` finds a bad key).
pub fn check_pem(alg: Alg, pem: &str) -> Result<(), KeyError> {
    keys::public_key_from_pem(alg, pem).map(drop)
}

/// Turns the two-character sequence `\n` into a newline and drops CRs: RIG
/// deployments often pass PEMs through env vars that way.
pub fn normalize_pem(pem: &str) -> String {
    pem.replace("\\n", "\n").replace('\r', "")
}

/// The bearer credentials of a request, the way RIG's `auth_header.ex` reads
/// them: every `Authorization` value is a comma-separated list; an entry
/// `Bearer <token>` (scheme case-insensitive) or a bare token without scheme
/// is a bearer credential; entries with another scheme (`Basic ...`), empty
/// entries and non-UTF-8 entries are ignored. At most [`MAX_BEARER_TOKENS`]
/// are returned.
pub fn bearer_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        for entry in value.split(|b| *b == b',') {
            if out.len() == MAX_BEARER_TOKENS {
                return out;
            }
            let Ok(entry) = std::str::from_utf8(entry) else {
                continue;
            };
            let entry = entry.trim();
            let token = match entry.split_once([' ', '\t']) {
                // A lone "Bearer" is a scheme without credentials, not a
                // token (RIG would pass the word itself on, to fail later).
                None if entry.eq_ignore_ascii_case("bearer") => continue,
                None => entry,
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                Some(_) => continue,
            };
            if !token.is_empty() {
                out.push(token.to_owned());
            }
        }
    }
    out
}

/// The session id at `pointer` (`JWT_SESSION_FIELD`) in the claims: a string
/// as it is, a number as its JSON text; `None` when missing, empty, or of
/// another type (an empty id could never be blacklisted, since the blacklist
/// API refuses empty ids, so it is no session).
pub fn session_id(claims: &Value, pointer: &str) -> Option<String> {
    match claims.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
/// `s` cut to [`MAX_QUOTED`] bytes at a character boundary.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests;
