//! JWS signature algorithms (RFC 7518 names) and the kind of key each needs.

use super::clip;
use jsonwebtoken::Algorithm;
use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm (RFC 7518 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// `JWT_ALG` named an algorithm we do not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown JWT algorithm {given:?}; accepted (case-insensitive): HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA")]
pub struct UnknownAlg {
    pub given: String,
}

/// The kind of key an algorithm needs. Used to refuse a key of the wrong kind
/// when it is loaded rather than failing every token later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Hmac,
    Rsa,
    Ec(Curve),
    Ed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    pub(super) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Length of one coordinate in bytes.
    pub(super) fn coord_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The name as it appears in a JOSE header (case-sensitive there).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// True for the shared-secret algorithms.
    pub fn is_hmac(self) -> bool {
        self.family() == Family::Hmac
    }

    pub(super) fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 => Family::Ec(Curve::P256),
            Alg::ES384 => Family::Ec(Curve::P384),
            Alg::EdDSA => Family::Ed,
        }
    }

    pub(super) fn is_pss(self) -> bool {
        matches!(self, Alg::PS256 | Alg::PS384 | Alg::PS512)
    }

    /// What kind of public key this algorithm needs, for error messages.
    pub(super) fn key_wanted(self) -> &'static str {
        match self.family() {
            Family::Hmac => "a shared secret",
            Family::Rsa => "an RSA public key",
            Family::Ec(Curve::P256) => "a P-256 EC public key",
            Family::Ec(Curve::P384) => "a P-384 EC public key",
            Family::Ed => "an Ed25519 public key",
        }
    }

    pub(super) fn to_jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = UnknownAlg;

    /// Case-insensitive, because RIG operators write `hs256` as often as
    /// `HS256` and RIG accepted both.
    fn from_str(s: &str) -> Result<Alg, UnknownAlg> {
        let s = s.trim();
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAlg { given: clip(s) })
    }
}
