//! The verifier: one algorithm, a static key or a JWKS key set, and the checks a token goes
//! through in order (size, header, key choice, signature, claims and time).

use super::alg::Alg;
use super::keys::{self, JwksKey, KeyError};
use super::{clip, normalize_pem, MAX_TOKEN_BYTES};
use crate::config::jwt::{JwtSettings, KeySource};
use crate::error::{Blame, Fault};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The client's token is past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// The client's token is malformed, forged, or for someone else: bad
    /// format, bad signature, wrong alg, `none`, wrong iss/aud, missing exp,
    /// nbf in the future.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// JWKS mode: the token names a key we do not have. The caller should
    /// refresh the JWKS once (rate-limited: a peer chooses the kid) and retry.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// JWKS mode before the first successful fetch: our problem, not the
    /// client's.
    #[error("no signing keys loaded yet")]
    NoKeys,
}

fn invalid(msg: impl Into<String>) -> JwtError {
    JwtError::Invalid(msg.into())
}

/// Verifies tokens. Cheap to clone (the state is behind `Arc`s), `Send +
/// Sync`; a new key set makes a new `Verifier` instead of mutating this one,
/// so verifications in flight never see a half-replaced key set.
#[derive(Clone)]
pub struct Verifier {
    cfg: Arc<Settings>,
    pub(super) keys: Arc<KeySet>,
}

struct Settings {
    alg: Alg,
    /// jsonwebtoken's own checks, reduced to "signature and alg": time and
    /// claim checks are ours, because they need the injected clock.
    validation: Validation,
    leeway_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
    jwks_url: Option<String>,
}

pub(super) enum KeySet {
    Static(DecodingKey),
    Jwks(Vec<JwksKey>),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &*self.keys {
            KeySet::Static(_) => "static".to_owned(),
            KeySet::Jwks(k) => format!("{} JWKS keys", k.len()),
        };
        f.debug_struct("Verifier")
            .field("alg", &self.cfg.alg)
            .field("keys", &keys)
            .field("jwks_url", &self.cfg.jwks_url)
            .finish()
    }
}

impl Verifier {
    /// Static-key modes are ready at once; JWKS mode starts with no keys
    /// (every token gets [`JwtError::NoKeys`]) until [`Verifier::with_jwks`].
    pub fn new(settings: &JwtSettings) -> Result<Verifier, KeyError> {
        let alg = settings.alg;
        let (keys, jwks_url) = match &settings.key {
            KeySource::Secret(secret) => {
                if !alg.is_hmac() {
                    return Err(KeyError::Mismatch(format!(
                        "{alg} needs {}, but a shared secret was given",
                        alg.key_wanted()
                    )));
                }
                if secret.is_empty() {
                    return Err(KeyError::Mismatch("the HMAC secret is empty".to_owned()));
                }
                (KeySet::Static(DecodingKey::from_secret(secret)), None)
            }
            KeySource::Pem(pem) => {
                if alg.is_hmac() {
                    return Err(KeyError::Mismatch(format!(
                        "{alg} uses a shared secret, not a PEM key"
                    )));
                }
                let key = keys::public_key_from_pem(alg, &normalize_pem(pem))?;
                (KeySet::Static(key), None)
            }
            KeySource::Jwks { url } => {
                if alg.is_hmac() {
                    return Err(KeyError::Mismatch(format!(
                        "{alg} uses a shared secret; a JWKS only serves public keys"
                    )));
                }
                (KeySet::Jwks(Vec::new()), Some(url.clone()))
            }
        };
        let mut validation = Validation::new(alg.to_jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Verifier {
            cfg: Arc::new(Settings {
                alg,
                validation,
                leeway_secs: settings.leeway_secs,
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                jwks_url,
            }),
            keys: Arc::new(keys),
        })
    }

    /// A verifier with the key set replaced by the keys of a JWKS document
    /// (RFC 7517). Keys that cannot verify the configured algorithm (other
    /// kty or curve, another `alg`, `use` other than `sig`, `key_ops` without
    /// `verify`, symmetric keys, too-small RSA keys) are skipped; the count of
    /// usable keys is returned. An error (naming why each key was skipped)
    /// when none is usable, the document is not a JWKS, is larger than
    /// [`MAX_JWKS_BYTES`] or holds more than [`MAX_JWKS_KEYS`] keys; the
    /// caller then keeps its current verifier.
    pub fn with_jwks(&self, doc: &[u8]) -> Result<(Verifier, usize), KeyError> {
        if !self.is_jwks() {
            return Err(KeyError::Mismatch(
                "with_jwks called on a verifier with a static key (caller bug: only JWKS-mode \
                 verifiers take key sets)"
                    .to_owned(),
            ));
        }
        let keys = keys::parse_jwks(self.cfg.alg, doc)?;
        let n = keys.len();
        let verifier = Verifier {
            cfg: Arc::clone(&self.cfg),
            keys: Arc::new(KeySet::Jwks(keys)),
        };
        Ok((verifier, n))
    }

    pub fn is_jwks(&self) -> bool {
        matches!(&*self.keys, KeySet::Jwks(_))
    }

    pub fn jwks_url(&self) -> Option<&str> {
        self.cfg.jwks_url.as_deref()
    }

    pub fn alg(&self) -> Alg {
        self.cfg.alg
    }

    /// Verifies `token` at time `now_unix` and returns its claims object.
    ///
    /// Order: size, shape, header `alg` (must equal the configured one
    /// exactly, which refuses `none` and HS/RS confusion before any key is
    /// touched), key choice by `kid` in JWKS mode, signature, then claims
    /// (`exp` required, `nbf` if present, both with leeway; `iss`/`aud` if
    /// configured). Time and claim checks come after the signature so a
    /// forger learns nothing from them.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Value, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "token is {} bytes; at most {MAX_TOKEN_BYTES} accepted",
                token.len()
            )));
        }
        let header = parse_header(token)?;
        let want = self.cfg.alg.as_str();
        if header.alg != want {
            if header.alg.eq_ignore_ascii_case("none") {
                return Err(invalid("unsigned tokens (alg none) are never accepted"));
            }
            return Err(invalid(format!(
                "token alg {:?} is not the accepted {want}",
                clip(&header.alg)
            )));
        }
        let key = self.select_key(header.kid.as_deref())?;
        let data = jsonwebtoken::decode::<Value>(token, key, &self.cfg.validation)
            .map_err(map_decode_error)?;
        self.check_claims(&data.claims, now_unix)?;
        Ok(data.claims)
    }

    fn select_key(&self, kid: Option<&str>) -> Result<&DecodingKey, JwtError> {
        let keys = match &*self.keys {
            // A static key is the key, whatever kid the token names: RIG
            // ignores kid too.
            KeySet::Static(key) => return Ok(key),
            KeySet::Jwks(keys) => keys,
        };
        if keys.is_empty() {
            return Err(JwtError::NoKeys);
        }
        match kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| &k.key)
                .ok_or_else(|| JwtError::UnknownKid(clip(kid))),
            None if keys.len() == 1 => Ok(&keys[0].key),
            // Trying every key would let one token cost up to MAX_JWKS_KEYS
            // signature checks.
            None => Err(invalid(format!(
                "token has no kid header and the JWKS holds {} keys; cannot tell which signed it",
                keys.len()
            ))),
        }
    }

    fn check_claims(&self, claims: &Value, now_unix: u64) -> Result<(), JwtError> {
        let claims = claims
            .as_object()
            .ok_or_else(|| invalid("claims are not a JSON object"))?;
        // f64 holds every plausible Unix time exactly and takes RFC 7519's
        // fractional NumericDates as they are.
        let now = now_unix as f64;
        let leeway = self.cfg.leeway_secs as f64;

        // RIG requires exp: a token without one would be valid forever.
        let exp = match claims.get("exp") {
            None => return Err(invalid("token has no exp claim")),
            Some(v) => numeric_date(v).ok_or_else(|| invalid("exp is not a number"))?,
        };
        if now >= exp + leeway {
            return Err(JwtError::Expired);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v).ok_or_else(|| invalid("nbf is not a number"))?;
            if nbf > now + leeway {
                return Err(invalid("token is not valid yet (nbf is in the future)"));
            }
        }

        if let Some(want) = &self.cfg.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                Some(Value::String(iss)) => {
                    return Err(invalid(format!(
                        "issuer {:?} is not the accepted issuer",
                        clip(iss)
                    )))
                }
                Some(_) => return Err(invalid("iss is not a string")),
                None => return Err(invalid("token has no iss claim")),
            }
        }
        if let Some(want) = &self.cfg.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == want,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
                Some(_) => return Err(invalid("aud is neither a string nor an array")),
                None => return Err(invalid("token has no aud claim")),
            };
            if !ok {
                return Err(invalid("token is not meant for this audience (aud)"));
            }
        }
        Ok(())
    }
}

fn numeric_date(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

struct Header {
    alg: String,
    kid: Option<String>,
}

/// Reads the JOSE header ourselves (jsonwebtoken reads it again) so the alg
/// and kid decisions, and their error messages, are ours.
fn parse_header(token: &str) -> Result<Header, JwtError> {
    let dots = token.bytes().filter(|b| *b == b'.').count();
    if dots == 4 {
        return Err(invalid("encrypted tokens (JWE) are not supported"));
    }
    if dots != 2 {
        return Err(invalid(format!(
            "not a JWT: expected header.payload.signature, found {} part(s)",
            dots + 1
        )));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| invalid("header is not base64url"))?;
    let header: Value = serde_json::from_slice(&raw).map_err(|_| invalid("header is not JSON"))?;
    let header = header
        .as_object()
        .ok_or_else(|| invalid("header is not a JSON object"))?;
    // RFC 7515 4.1.11: a recipient that does not understand a critical
    // extension must reject the token. We understand none.
    if header.contains_key("crit") {
        return Err(invalid(
            "critical header extensions (crit) are not supported",
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(invalid("header alg is not a string")),
        None => return Err(invalid("header has no alg")),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("header kid is not a string")),
    };
    Ok(Header { alg, kid })
}

fn map_decode_error(e: jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::InvalidSignature => invalid("signature does not match"),
        ErrorKind::InvalidToken => invalid("malformed token"),
        ErrorKind::InvalidAlgorithm => invalid("token alg does not fit the key"),
        ErrorKind::Base64(_) => invalid("a token part is not base64url"),
        ErrorKind::Json(e) => invalid(format!("token header or claims do not parse: {e}")),
        ErrorKind::Utf8(_) => invalid("a token part is not UTF-8"),
        _ => invalid(e.to_string()),
    }
}

impl Blame for JwtError {
    fn fault(&self) -> Fault {
        match self {
            // Keys not fetched yet: the identity provider has not answered.
            JwtError::NoKeys => Fault::Upstream,
            _ => Fault::Client,
        }
    }
}
