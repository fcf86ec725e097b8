//! JWT verification: RIG's `JWT_*` settings plus FlowX's Keycloak JWKS.
//!
//! RIG 3.0 verifies tokens with one algorithm (`JWT_ALG`) and one key
//! (`JWT_SECRET_KEY`: a shared secret for HS*, a PEM public key for RS*). The
//! FlowX Events Gateway takes its keys from the identity provider's JWKS
//! endpoint instead. Both live here, behind one [`Verifier`].
//!
//! Nothing in this module does I/O: the caller fetches the JWKS document
//! (from [`Verifier::jwks_url`]) and hands the bytes to
//! [`Verifier::with_jwks`]. That keeps the module usable from any runtime and
//! keeps the retry/rate-limit policy for fetches with the caller, who owns
//! the clock and the sockets.
//!
//! Everything a peer controls is bounded: token size ([`MAX_TOKEN_BYTES`]),
//! the number of bearer credentials read from one request
//! ([`MAX_BEARER_TOKENS`]), the JWKS document size and key count
//! ([`MAX_JWKS_BYTES`], [`MAX_JWKS_KEYS`]), RSA modulus sizes, and the length
//! of peer-supplied strings echoed back in error messages.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
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
/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Largest leeway accepted: beyond an hour, `exp` stops meaning much.
pub const MAX_LEEWAY_SECS: u64 = 3600;
/// Default JSON pointer of the session id (RIG's `JWT_SESSION_FIELD`).
pub const DEFAULT_SESSION_POINTER: &str = "/jti";

/// RSA moduli outside this range are refused: smaller ones are breakable,
/// and the RustCrypto backend refuses larger ones at verification time, which
/// we would rather report when the key is loaded than on every request.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// Peer-supplied strings quoted in error messages are cut to this many bytes,
/// so a hostile token cannot blow up log lines or response bodies.
const MAX_QUOTED: usize = 64;

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
enum Family {
    Hmac,
    Rsa,
    Ec(Curve),
    Ed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Length of one coordinate in bytes.
    fn coord_len(self) -> usize {
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

    fn family(self) -> Family {
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

    fn is_pss(self) -> bool {
        matches!(self, Alg::PS256 | Alg::PS384 | Alg::PS512)
    }

    /// What kind of public key this algorithm needs, for error messages.
    fn key_wanted(self) -> &'static str {
        match self.family() {
            Family::Hmac => "a shared secret",
            Family::Rsa => "an RSA public key",
            Family::Ec(Curve::P256) => "a P-256 EC public key",
            Family::Ec(Curve::P384) => "a P-384 EC public key",
            Family::Ed => "an Ed25519 public key",
        }
    }

    fn to_jwt(self) -> Algorithm {
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

/// Where verification keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// HS*: the shared secret, byte for byte as configured (RIG does not trim
    /// or decode it either, so tokens signed for RIG keep verifying).
    Secret(Vec<u8>),
    /// RS*/PS*/ES*/EdDSA: a PEM public key, with literal `\n` sequences
    /// already turned into newlines.
    Pem(String),
    /// The identity provider's JWKS endpoint; the caller fetches it.
    Jwks { url: String },
}

impl fmt::Debug for KeySource {
    // The secret must never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(s) => write!(f, "Secret(<{} bytes redacted>)", s.len()),
            KeySource::Pem(p) => write!(f, "Pem(<{} bytes>)", p.len()),
            KeySource::Jwks { url } => f.debug_struct("Jwks").field("url", url).finish(),
        }
    }
}

/// Validated JWT settings, as produced by [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub alg: Alg,
    pub key: KeySource,
    pub leeway_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// JSON pointer to the session id claim (`JWT_SESSION_FIELD`).
    pub session_pointer: String,
}

/// Reads the JWT settings from environment-style lookups.
///
/// Variables: `JWT_ALG` (default `HS256`, or `RS256` when the only key source
/// is a JWKS URL, since HS* cannot use a JWKS), `JWT_SECRET_KEY` (HS*: the
/// secret; other algorithms: a PEM public key, where the two-character
/// sequence `\n` counts as a newline because RIG deployments pass PEMs that
/// way), `CB_JWT_JWKS_URL`, or FlowX's `SECURITY_OAUTH2_BASESERVERURL` +
/// `SECURITY_OAUTH2_SAREALM` (giving
/// `{base}/realms/{realm}/protocol/openid-connect/certs`; `CB_JWT_JWKS_URL`
/// wins when both are set), `CB_JWT_ISSUER`, `CB_JWT_AUDIENCE`,
/// `CB_JWT_LEEWAY_SECS` (default 5), `JWT_SESSION_FIELD` (default `/jti`).
/// Empty values count as unset, as in RIG (whose `JWT_SECRET_KEY` default is
/// the empty string).
///
/// Returns `None` when no key is configured (JWT verification off) or when
/// any problem was found; every problem is pushed to `problems`, so an
/// operator sees all of them in one start attempt.
pub fn load(
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<JwtSettings> {
    let before = problems.len();
    let var = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };

    // The secret is used raw (see KeySource::Secret); only a blank value
    // counts as unset.
    let secret = get("JWT_SECRET_KEY").filter(|v| !v.trim().is_empty());
    let jwks = jwks_url_from_env(&var, problems);

    if secret.is_some() && jwks.is_some() {
        problems.push(format!(
            "JWT_SECRET_KEY and a JWKS URL ({}) are both set; configure exactly one key source",
            jwks.as_ref().map(|(name, _)| *name).unwrap_or_default()
        ));
    }

    let alg = match var("JWT_ALG") {
        None if secret.is_none() && jwks.is_some() => Some(Alg::RS256),
        None => Some(Alg::HS256),
        Some(s) => match s.parse::<Alg>() {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("JWT_ALG: {e}"));
                None
            }
        },
    };

    let mut key = None;
    if let (Some(alg), Some(secret)) = (alg, &secret) {
        if alg.is_hmac() {
            if secret.contains("-----BEGIN") {
                problems.push(format!(
                    "JWT_SECRET_KEY holds a PEM block, but JWT_ALG={alg} uses it as a shared \
                     secret; set JWT_ALG to the key's algorithm (e.g. RS256)"
                ));
            } else {
                key = Some(KeySource::Secret(secret.as_bytes().to_vec()));
            }
        } else {
            let pem = normalize_pem(secret);
            match public_key_from_pem(alg, &pem) {
                Ok(_) => key = Some(KeySource::Pem(pem)),
                Err(e) => problems.push(format!("JWT_SECRET_KEY (JWT_ALG={alg}): {e}")),
            }
        }
    }
    if let (Some(alg), Some((name, url))) = (alg, &jwks) {
        // With a secret also set, "both set" above already says it all.
        if alg.is_hmac() && secret.is_none() {
            problems.push(format!(
                "JWT_ALG={alg} needs a shared secret in JWT_SECRET_KEY, but {name} names a JWKS, \
                 which only serves public keys; set JWT_ALG to RS256, ES256 or EdDSA"
            ));
        } else if key.is_none() {
            key = Some(KeySource::Jwks { url: url.clone() });
        }
    }

    let leeway_secs = match var("CB_JWT_LEEWAY_SECS") {
        None => DEFAULT_LEEWAY_SECS,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_LEEWAY_SECS => n,
            Ok(n) => {
                problems.push(format!(
                    "CB_JWT_LEEWAY_SECS={n} is too large; at most {MAX_LEEWAY_SECS} seconds"
                ));
                DEFAULT_LEEWAY_SECS
            }
            Err(_) => {
                problems.push(format!(
                    "CB_JWT_LEEWAY_SECS={:?} is not a whole number of seconds",
                    clip(&v)
                ));
                DEFAULT_LEEWAY_SECS
            }
        },
    };

    let session_pointer =
        var("JWT_SESSION_FIELD").unwrap_or_else(|| DEFAULT_SESSION_POINTER.to_owned());
    if let Err(e) = check_pointer(&session_pointer) {
        problems.push(format!("JWT_SESSION_FIELD={session_pointer:?}: {e}"));
    }

    let issuer = var("CB_JWT_ISSUER");
    let audience = var("CB_JWT_AUDIENCE");
    if secret.is_none() && jwks.is_none() {
        // Claim checks without a key would silently check nothing: the
        // operator clearly meant to turn verification on.
        for (name, set) in [("CB_JWT_ISSUER", &issuer), ("CB_JWT_AUDIENCE", &audience)] {
            if set.is_some() {
                problems.push(format!(
                    "{name} is set but no JWT key is configured (JWT_SECRET_KEY, CB_JWT_JWKS_URL \
                     or SECURITY_OAUTH2_BASESERVERURL + SECURITY_OAUTH2_SAREALM)"
                ));
            }
        }
    }

    if problems.len() > before {
        return None;
    }
    Some(JwtSettings {
        alg: alg?,
        key: key?,
        leeway_secs,
        issuer,
        audience,
        session_pointer,
    })
}

/// The JWKS URL and the variable it came from, if any.
fn jwks_url_from_env(
    var: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<(&'static str, String)> {
    let (name, url) = if let Some(url) = var("CB_JWT_JWKS_URL") {
        ("CB_JWT_JWKS_URL", url)
    } else {
        let base = var("SECURITY_OAUTH2_BASESERVERURL");
        let realm = var("SECURITY_OAUTH2_SAREALM");
        match (base, realm) {
            (None, None) => return None,
            (Some(_), None) => {
                problems.push(
                    "SECURITY_OAUTH2_BASESERVERURL is set but SECURITY_OAUTH2_SAREALM is not; \
                     both are needed to derive the JWKS URL"
                        .to_owned(),
                );
                return None;
            }
            (None, Some(_)) => {
                problems.push(
                    "SECURITY_OAUTH2_SAREALM is set but SECURITY_OAUTH2_BASESERVERURL is not; \
                     both are needed to derive the JWKS URL"
                        .to_owned(),
                );
                return None;
            }
            (Some(base), Some(realm)) => {
                // The realm becomes one path segment; anything that would
                // change the URL's structure is a typo, not a realm name.
                if realm.contains(['/', '?', '#', '%']) || realm.chars().any(char::is_whitespace) {
                    problems.push(format!(
                        "SECURITY_OAUTH2_SAREALM={realm:?} is not a realm name (no '/', '?', '#', \
                         '%' or whitespace allowed)"
                    ));
                    return None;
                }
                let base = base.trim_end_matches('/');
                (
                    "SECURITY_OAUTH2_BASESERVERURL",
                    format!("{base}/realms/{realm}/protocol/openid-connect/certs"),
                )
            }
        }
    };
    // A bad URL is still returned, so that "both a secret and a JWKS" is
    // reported alongside it; `load` returns nothing once a problem is pushed.
    if let Err(e) = check_http_url(&url) {
        problems.push(format!("{name}: JWKS URL {url:?} {e}"));
    }
    Some((name, url))
}

/// Just enough URL checking to catch typos before the first fetch; the HTTP
/// client does the real parsing.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host");
    }
    Ok(())
}

/// RFC 6901 syntax: empty (whole document) is refused because a session id
/// must be one claim, and every `~` must start `~0` or `~1`.
fn check_pointer(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("a JSON pointer must start with '/' (e.g. /jti)");
    }
    let b = p.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Err("'~' must be followed by 0 or 1 (RFC 6901 escapes)");
        }
    }
    Ok(())
}

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
    cfg: Arc<Config>,
    keys: Arc<KeySet>,
}

struct Config {
    alg: Alg,
    /// jsonwebtoken's own checks, reduced to "signature and alg": time and
    /// claim checks are ours, because they need the injected clock.
    validation: Validation,
    leeway_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
    jwks_url: Option<String>,
}

enum KeySet {
    Static(DecodingKey),
    Jwks(Vec<JwksKey>),
}

struct JwksKey {
    kid: Option<String>,
    key: DecodingKey,
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
    pub fn new(settings: &JwtSettings) -> Result<Verifier, String> {
        let alg = settings.alg;
        let (keys, jwks_url) = match &settings.key {
            KeySource::Secret(secret) => {
                if !alg.is_hmac() {
                    return Err(format!(
                        "{alg} needs {}, but a shared secret was given",
                        alg.key_wanted()
                    ));
                }
                if secret.is_empty() {
                    return Err("the HMAC secret is empty".to_owned());
                }
                (KeySet::Static(DecodingKey::from_secret(secret)), None)
            }
            KeySource::Pem(pem) => {
                if alg.is_hmac() {
                    return Err(format!("{alg} uses a shared secret, not a PEM key"));
                }
                let key = public_key_from_pem(alg, &normalize_pem(pem))?;
                (KeySet::Static(key), None)
            }
            KeySource::Jwks { url } => {
                if alg.is_hmac() {
                    return Err(format!(
                        "{alg} uses a shared secret; a JWKS only serves public keys"
                    ));
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
            cfg: Arc::new(Config {
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
    pub fn with_jwks(&self, doc: &[u8]) -> Result<(Verifier, usize), String> {
        if !self.is_jwks() {
            return Err(
                "with_jwks called on a verifier with a static key (caller bug: only JWKS-mode \
                 verifiers take key sets)"
                    .to_owned(),
            );
        }
        let keys = parse_jwks(self.cfg.alg, doc)?;
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

// ---------------------------------------------------------------------------
// Keys: PEM, DER and JWK parsing, bounded and with messages that say what is
// wrong with the key.

/// The public-key material of one key, whatever the encoding it came in.
enum Material {
    /// `pss_only`: the key's SPKI says RSASSA-PSS, so RS* must not use it.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        pss_only: bool,
    },
    /// `point`: SEC1 uncompressed point (0x04 || x || y).
    Ec { curve: Curve, point: Vec<u8> },
    /// `x`: the 32-byte Ed25519 public key.
    Ed { x: Vec<u8> },
}

impl Material {
    fn describe(&self) -> &'static str {
        match self {
            Material::Rsa { .. } => "an RSA key",
            Material::Ec {
                curve: Curve::P256, ..
            } => "a P-256 EC key",
            Material::Ec {
                curve: Curve::P384, ..
            } => "a P-384 EC key",
            Material::Ed { .. } => "an Ed25519 key",
        }
    }
}

/// Turns the two-character sequence `\n` into a newline and drops CRs: RIG
/// deployments often pass PEMs through env vars that way.
fn normalize_pem(pem: &str) -> String {
    pem.replace("\\n", "\n").replace('\r', "")
}

/// A verification key for `alg` from a PEM public key, or why not.
fn public_key_from_pem(alg: Alg, pem: &str) -> Result<DecodingKey, String> {
    let (label, der) = pem_decode(pem)?;
    let material = match label.as_str() {
        "PUBLIC KEY" => spki_material(&der)?,
        "RSA PUBLIC KEY" => {
            let (n, e) = pkcs1_components(&der)?;
            Material::Rsa {
                n,
                e,
                pss_only: false,
            }
        }
        l if l.contains("PRIVATE KEY") => {
            return Err(format!(
                "the PEM holds a private key ({l}); give the public key instead \
                 (openssl pkey -in key.pem -pubout)"
            ))
        }
        "CERTIFICATE" => {
            return Err("the PEM holds a certificate; give its public key instead \
                        (openssl x509 -in cert.pem -pubkey -noout)"
                .to_owned())
        }
        l => return Err(format!("the PEM block is {l:?}; expected PUBLIC KEY")),
    };
    key_for(alg, material)
}

/// The label and DER bytes of the first PEM block. Tolerates the whole PEM
/// on one line (base64 whitespace is ignored), which is how some env files
/// carry it.
fn pem_decode(text: &str) -> Result<(String, Vec<u8>), String> {
    const BEGIN: &str = "-----BEGIN ";
    let text = text.trim();
    if !text.starts_with(BEGIN) {
        return Err("not a PEM key: it does not start with -----BEGIN".to_owned());
    }
    let after = &text[BEGIN.len()..];
    let label_end = after
        .find("-----")
        .ok_or("not a PEM key: the -----BEGIN line is not closed by -----")?;
    let label = &after[..label_end];
    let body_and_rest = &after[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_rest
        .find(&end_marker)
        .ok_or_else(|| format!("not a PEM key: no {end_marker} line"))?;
    if !body_and_rest[body_end + end_marker.len()..]
        .trim()
        .is_empty()
    {
        return Err("unexpected text after the PEM block (only one key is read)".to_owned());
    }
    let body: String = body_and_rest[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("the PEM body is not base64 ({e})"))?;
    Ok((label.to_owned(), der))
}

/// A DER reader over a byte slice, with every length checked against what is
/// left. Only what SPKI and PKCS#1 public keys need.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one element with tag `tag` and returns its contents.
    fn read(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let bad = || format!("malformed key: bad DER in {what}");
        let (&t, rest) = self.rest.split_first().ok_or_else(bad)?;
        if t != tag {
            return Err(bad());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length, not DER; keys are far smaller
            // than 4 GiB.
            if n == 0 || n > 4 || rest.len() < n {
                return Err(bad());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (contents, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(contents)
    }
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_INTEGER: u8 = 0x02;

/// SubjectPublicKeyInfo (RFC 5280): SEQUENCE { SEQUENCE { OID, params }, BIT
/// STRING }.
fn spki_material(der: &[u8]) -> Result<Material, String> {
    let mut outer = Der::new(der);
    let spki = outer.read(TAG_SEQUENCE, "SubjectPublicKeyInfo")?;
    if !outer.is_empty() {
        return Err("malformed key: bytes after SubjectPublicKeyInfo".to_owned());
    }
    let mut spki = Der::new(spki);
    let mut alg_id = Der::new(spki.read(TAG_SEQUENCE, "AlgorithmIdentifier")?);
    let bits = spki.read(TAG_BIT_STRING, "subjectPublicKey")?;
    let oid = alg_id.read(TAG_OID, "algorithm OID")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("malformed key: bad subjectPublicKey bit string".to_owned()),
    };
    match oid {
        OID_RSA | OID_RSA_PSS => {
            let (n, e) = pkcs1_components(key)?;
            Ok(Material::Rsa {
                n,
                e,
                pss_only: oid == OID_RSA_PSS,
            })
        }
        OID_EC => {
            let curve = if alg_id.peek_tag() == Some(TAG_OID) {
                match alg_id.read(TAG_OID, "curve OID")? {
                    OID_P256 => Curve::P256,
                    OID_P384 => Curve::P384,
                    _ => return Err("EC key on an unsupported curve (only P-256 and P-384)".into()),
                }
            } else {
                return Err("EC key without a named curve".to_owned());
            };
            Ok(Material::Ec {
                curve,
                point: key.to_vec(),
            })
        }
        OID_ED25519 => Ok(Material::Ed { x: key.to_vec() }),
        _ => Err("unsupported key type (expected RSA, EC P-256/P-384 or Ed25519)".to_owned()),
    }
}

/// PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
fn pkcs1_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut outer = Der::new(der);
    let mut seq = Der::new(outer.read(TAG_SEQUENCE, "RSAPublicKey")?);
    let n = seq.read(TAG_INTEGER, "RSA modulus")?;
    let e = seq.read(TAG_INTEGER, "RSA exponent")?;
    Ok((n.to_vec(), e.to_vec()))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA key has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        ));
    }
    // An RSA public exponent is odd and at least 3; the backend refuses
    // exponents above 2^33-1, and real keys use 65537, so 4 bytes suffice.
    let e = strip_leading_zeros(e);
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || e.len() > 4 || e == [1] {
        return Err("RSA key has an unusable public exponent".to_owned());
    }
    Ok(())
}

/// A verification key for `alg` from key material, refusing material of the
/// wrong kind and material the crypto backend would reject.
fn key_for(alg: Alg, material: Material) -> Result<DecodingKey, String> {
    let wrong_kind = |m: &Material| {
        format!(
            "{alg} needs {}, but this is {}",
            alg.key_wanted(),
            m.describe()
        )
    };
    let key = match (alg.family(), &material) {
        (Family::Rsa, Material::Rsa { n, e, pss_only }) => {
            if *pss_only && !alg.is_pss() {
                return Err(format!(
                    "the RSA key is restricted to PSS, so {alg} cannot use it"
                ));
            }
            check_rsa(n, e)?;
            DecodingKey::from_rsa_raw_components(strip_leading_zeros(n), strip_leading_zeros(e))
        }
        (Family::Ec(want), Material::Ec { curve, point }) if want == *curve => {
            if point.len() != 1 + 2 * curve.coord_len() || point[0] != 0x04 {
                return Err(format!(
                    "the {} key is not an uncompressed point",
                    curve.name()
                ));
            }
            DecodingKey::from_ec_der(point)
        }
        // The backend slices the first 32 bytes without checking the length,
        // so the length check here also prevents a panic.
        (Family::Ed, Material::Ed { x }) if x.len() == 32 => DecodingKey::from_ed_der(x),
        (Family::Ed, Material::Ed { x }) => {
            return Err(format!("Ed25519 key is {} bytes, not 32", x.len()))
        }
        _ => return Err(wrong_kind(&material)),
    };
    // Building the backend's verifier parses the key (point on the curve,
    // valid Ed25519 encoding); an error here means the key itself is bad.
    jsonwebtoken::crypto::verify("", b"", &key, alg.to_jwt())
        .map_err(|e| format!("{} is not usable: {e}", material.describe()))?;
    Ok(key)
}

/// Padding is optional in JWKs in the wild even though RFC 7517 omits it.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn parse_jwks(alg: Alg, doc: &[u8]) -> Result<Vec<JwksKey>, String> {
    if doc.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "JWKS document is {} bytes; at most {MAX_JWKS_BYTES} accepted (identity provider \
             response too large)",
            doc.len()
        ));
    }
    let v: Value =
        serde_json::from_slice(doc).map_err(|e| format!("JWKS document is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS document has no \"keys\" array, so it is not a JWKS (RFC 7517 section 5)")?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(format!(
            "JWKS document holds {} keys; at most {MAX_JWKS_KEYS} accepted",
            keys.len()
        ));
    }
    let mut usable: Vec<JwksKey> = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        let name = match jwk.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("kid {:?}", clip(kid)),
            None => format!("key #{i}"),
        };
        match jwk_to_key(alg, jwk) {
            Ok(key) if usable.iter().any(|k| k.kid == key.kid) => {
                // The first key with a kid wins; a second one would make
                // the choice depend on document order anyway.
                skipped.push(format!("{name}: duplicate kid"));
            }
            Ok(key) => usable.push(key),
            Err(reason) => skipped.push(format!("{name}: {reason}")),
        }
    }
    if usable.is_empty() {
        return Err(format!(
            "JWKS holds no key usable for {alg} ({} keys: {})",
            keys.len(),
            if skipped.is_empty() {
                "none".to_owned()
            } else {
                skipped.join("; ")
            }
        ));
    }
    Ok(usable)
}

fn jwk_to_key(alg: Alg, jwk: &Value) -> Result<JwksKey, String> {
    let obj = jwk.as_object().ok_or("not a JSON object")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("kid is not a string".to_owned()),
    };
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(format!("use is {}, not \"sig\"", clip(&u.to_string())));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include \"verify\"".to_owned());
        }
    }
    if let Some(a) = obj.get("alg") {
        if a.as_str() != Some(alg.as_str()) {
            return Err(format!("alg is {}, not {alg}", clip(&a.to_string())));
        }
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = obj
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no {name:?} string"))?;
        B64URL_LENIENT
            .decode(s)
            .map_err(|_| format!("{name:?} is not base64url"))
    };
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("no \"kty\" string")?;
    let material = match kty {
        "RSA" => Material::Rsa {
            n: field("n")?,
            e: field("e")?,
            pss_only: false,
        },
        "EC" => {
            let curve = match obj.get("crv").and_then(Value::as_str) {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                Some(other) => return Err(format!("curve {:?} not supported", clip(other))),
                None => return Err("EC key without \"crv\"".to_owned()),
            };
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != curve.coord_len() || y.len() != curve.coord_len() {
                return Err(format!(
                    "{} coordinates have the wrong length",
                    curve.name()
                ));
            }
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::Ec { curve, point }
        }
        "OKP" => match obj.get("crv").and_then(Value::as_str) {
            Some("Ed25519") => Material::Ed { x: field("x")? },
            other => {
                return Err(format!(
                    "OKP curve {:?} not supported (only Ed25519)",
                    clip(other.unwrap_or(""))
                ))
            }
        },
        // A shared secret published in a key set would be known to anyone
        // who can fetch it.
        "oct" => return Err("symmetric (oct) keys are never taken from a JWKS".to_owned()),
        other => return Err(format!("kty {:?} not supported", clip(other))),
    };
    let key = key_for(alg, material)?;
    Ok(JwksKey { kid, key })
}

/// `s` cut to [`MAX_QUOTED`] bytes at a character boundary.
fn clip(s: &str) -> String {
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
mod tests {
    //! Test keys were generated once with `openssl genpkey` (RSA 2048, EC
    //! P-256/P-384, Ed25519) and serve only these tests. The JWK `n`, `x`
    //! and `y` values below were computed from them with openssl, not with
    //! this module's parser, so the JWKS tests check the parser too.
    use super::*;
    use jsonwebtoken::{encode, EncodingKey};
    use proptest::prelude::*;
    use serde_json::json;

    const RSA1_PRIV: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpAIBAAKCAQEAt1xJoqE74HO7e6j1jqIME+CtsMZ44aVFU0D/34Oc5rXauU1K\n\
wd2fETRxpPcpToIAwlg/HW5rgBDS8GfuAc3GNSbXdNtMX4hAnfrKHkq187AX8ojA\n\
jd30Xlp+UIHVg3EPB+NLccPWJvQV59LARDzyrJ4TiVJrW6ecJVy+aYS/mzsKUYTj\n\
newKJniaI4VAGUrMcaNTv7Y6o9OGXH/dSSl3Z1AS9mkLFGrOPBe6a/9bO4y99yXL\n\
zUmD62WVh/g+vLghv3W5zxiW6/n0bdButaa6liJ9F7D/uIsANVDrP+5YaJ1nxfyZ\n\
vkMghB6aJmgIx9719GwhTVfW+vKddDEg1+XtgQIDAQABAoIBABR64l6f06hGRPKS\n\
9JpxzxeJSN0tzeKmKxAZenrkoGnEdiGsWGU+871gNjFOyfZS3vLWGHaZFri/KFBh\n\
y1u4OCNHq1kKBYXGGjGLCXhIr/n/+SzFyXwPBnRjdyhW2BpOTnd7E7opPYosSSYT\n\
jBYTGKffIB9+bS9XkUE7EqmGgkA8LywjTSiQOH9e099fr7XF7iOrT9GJV6QKY6Q8\n\
5srcXKhmOCbwPeU2bAls3u6/1DIN2/TfXikrhSF46yYqaSVzD/SUGSF2x0HsPuVk\n\
XtYQcFjZhVLtOaxVw0SQipCNNMYMFfypQV5/1wFQPYYk+4Gu/VATz9v/rNfZMxY9\n\
t2R2UmECgYEA9XXeKnZ1MGrEBGG+muHMED7SDdA2FJgUSBhjyw4vd//SB+lYbph+\n\
PNiteVxG/IpeEDTA4r739p06KtkjcYmn/VUAoe55gsQDCvCTxGjRBdZxggZ5v5+h\n\
s4BJEaxebrUEhAYx5rMuMIejqd7GcThKwcHJif3qUlGzlct3qnzxCe8CgYEAvzvP\n\
PwjHq5VmIf2GU+Okpgoyy4BjAprslDT7grX4VfhRieQz+XXlzzmyJTyHTh6BSKmo\n\
O0r467JmSfsEY3JtHtUxL759wm93TZf7VArU7Bm3MyXUm0BhVvpIgoazQkdKsIXn\n\
TlSfPJskhtvT5Rth4NsGMgk4DO5rsTnnJkL5r48CgYA9ikqkHMTu2aXBb3wpOrk9\n\
zXI+klgsu6BCHxNOAoV2MYZIA4HvYH4t5SlBBxipEkvZBlDhyH1EsFC4E26mdZvP\n\
kPMypiaC2X/ly0FQ+fKF4yjcL6FwoKYa6evn6W5XlTzHmQID1CKdejRXT4ozMqjT\n\
gTF1TlrkPqWmxbd/4AlSswKBgQCfEy2OjcsqnBhdZft7hP3NcOZYCfBSlnT9xCUD\n\
0kNFoE6TmdTySnRkMOZTu0oCXbXFr/tVd0QhLEGSgNBhuSm0YDuOL7OFLhvb2/Uh\n\
L/F2hN20GmAE1UUjiQcQLOSo2Yzz0i9bJWFglN2JoQtepayB0zAQJ0MM3reOsU/q\n\
sAPrWQKBgQDFcqhdzJiGmNl7gc1dq9lTckSTEux9PIwQ7jtt7z8lyI9/kD+GWfGL\n\
6C3kV9zieM+SaJ6dpABUu0eAPH56fXqW+Sd3XSmsYJBjEq6UCEovQ4LMo9MuK1Ez\n\
ySZWzTZfi2bj7x0B+LR7ZxRq2fAgj3rYwX/qcx56+3UWShXBnMuvJg==\n\
-----END RSA PRIVATE KEY-----\n\
";
    const RSA1_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAt1xJoqE74HO7e6j1jqIM\n\
E+CtsMZ44aVFU0D/34Oc5rXauU1Kwd2fETRxpPcpToIAwlg/HW5rgBDS8GfuAc3G\n\
NSbXdNtMX4hAnfrKHkq187AX8ojAjd30Xlp+UIHVg3EPB+NLccPWJvQV59LARDzy\n\
rJ4TiVJrW6ecJVy+aYS/mzsKUYTjnewKJniaI4VAGUrMcaNTv7Y6o9OGXH/dSSl3\n\
Z1AS9mkLFGrOPBe6a/9bO4y99yXLzUmD62WVh/g+vLghv3W5zxiW6/n0bdButaa6\n\
liJ9F7D/uIsANVDrP+5YaJ1nxfyZvkMghB6aJmgIx9719GwhTVfW+vKddDEg1+Xt\n\
gQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const RSA2_PRIV: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAx0AFt5aYrAkcycXhvD2XCyYsvMLOZi5HRQdU3UGbI42oMNq7\n\
ILfWSNAV7ZEhImwbbo2MfiojJWzPbFhV2Cqshs2ujAfBqThOhHhjpzbvmfiHikYT\n\
Nc6iWZBH5Olu6ygd3dw9+EA6Hj0mjmSX35dagYe9Dhd4ozGp7f7smHFazJqCUZ4N\n\
gUCq6Jm28kLWsMbJgMfydQn9vF5o+JNzY/1Z9R/IQ2ZheeX26h7XEdTnSCHw5Omw\n\
Xzjoi50jxNmo3sGi9NNyk8ri6nwzDgldJ48ii64BG0VUKJnK9ioSncNY3WodI/XX\n\
QeWKvN+UodRNGpguBjLCG3xy+o5N2CHneQD8rwIDAQABAoIBAAQb8/bv9nOexpug\n\
kDw89eBRolkImGotTGRGHRS0P9k9ctWoCldWz31qs1GKxeyxwQOMBNa7njUeJeQH\n\
9LNjsxcPrr9VYstecyVFTwweULA5VwpDaEvHukq3KPoQAekw7SPRUhli/QDLtMNx\n\
9h8rejd6txzH0OdmlZIr9iYAV4eTI1FHEdusVIQYE2m/iH1DBBKUkA8Zob5szJiN\n\
aBavuBZI4ugpjKb9cQgeOc1m+xvUXSlw5BIZv0hJ0XKdDubpvl7cj2YGNVIui0+7\n\
MvgxxbrWXyaT4Dd8vsiJhKTbQMClC+Zm+AICcXGAHNYZbpbyQsF3kNz1d3IxD4FY\n\
cN2rNxECgYEA7xa1kHIsDNwSs5GD+bgyyNdAh+AUhUHq31KHUNdsBujVg8HN+Cub\n\
DouuSqSxo2bT12Xkc8nMm6j2ERMd6lqQipMqWuirAV+eSVwadhJP/82dSF/rI1DX\n\
5ZhcSR5xvR3N0flUUSul8/uXCdIedeFcPVcuzmjdfBQmXiU65wzT2kcCgYEA1Vfv\n\
xYzVUdaURqDdR31pn6DzwiyIH5GlP1iAZgE+yTQmCEbcE2ncg0lsI/G4EHyKT2+i\n\
lNOa8cYiKNFS/mV/O6y+3poedNO5kJO+PLtTyMUnh9oqNaSUiCtaeIy4JsreP7S7\n\
vX+Brx8GB7OjcCML0gduBikEB+7x3A6ssPCoFlkCgYAKh097iuuRrWdNbQ0IxCnI\n\
WmJHGYEN1TdImlPHJZVmQH6WjMRLN3BelZwZQWNpNLADfkMvLiXKfQhI/DSHC3Hu\n\
CEkHM9PD/bf0tw+bP3cyZpWUiFTMe1TmkW0O8z5C+7sCkh46bNekBOJD1nLs8f2j\n\
3eD7yfZm7mQ6JR2Q6ymxJQKBgQCxJCLiVN2K5jCXtFoHUgqxkGLVh0Q/ch9TSZjT\n\
GZWYWsR5etyhAfUmzYANGFdM2Ru+eWL1T/4HYgxa9/OBZ6UNV5HkIvPG7UXW1dXP\n\
d3tJ6Om501vYzp7Fsbmc/rqo+ykunFKGNajoT0oievXp1i+qZKDmXIgMTkpj/YtG\n\
H4xxgQKBgHg4vsTtppd6pVMFmxbOjEdXR2rn2AFySZs8aQs1auy2H6YOdaOCu1r0\n\
zIzuw3NruHhkI08gh7XYUzzkKc7L3x3puFaVtWPOvjVReinIwO2+naYgo4SHH1Yz\n\
2LKJ11YtEeEIMUd2kmafNrYrVoz8HBUtCyCSVCItKkcit0on4Yhp\n\
-----END RSA PRIVATE KEY-----\n\
";
    const RSA2_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx0AFt5aYrAkcycXhvD2X\n\
CyYsvMLOZi5HRQdU3UGbI42oMNq7ILfWSNAV7ZEhImwbbo2MfiojJWzPbFhV2Cqs\n\
hs2ujAfBqThOhHhjpzbvmfiHikYTNc6iWZBH5Olu6ygd3dw9+EA6Hj0mjmSX35da\n\
gYe9Dhd4ozGp7f7smHFazJqCUZ4NgUCq6Jm28kLWsMbJgMfydQn9vF5o+JNzY/1Z\n\
9R/IQ2ZheeX26h7XEdTnSCHw5OmwXzjoi50jxNmo3sGi9NNyk8ri6nwzDgldJ48i\n\
i64BG0VUKJnK9ioSncNY3WodI/XXQeWKvN+UodRNGpguBjLCG3xy+o5N2CHneQD8\n\
rwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const EC_PRIV: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxjLnrV0FANJsiCRY\n\
aVNU28tYve6IIjd6rr5hI9lktfqhRANCAATP3tIC9yb+AR8APuqijP/wR2ZZ1Ayw\n\
ExNlLsvgyLk3W8PQaUmBCXZwqZf6bJgftS2Km3H3MKZrLDqL5i+Xh+h6\n\
-----END PRIVATE KEY-----\n\
";
    const EC_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEz97SAvcm/gEfAD7qooz/8EdmWdQM\n\
sBMTZS7L4Mi5N1vD0GlJgQl2cKmX+myYH7Utiptx9zCmayw6i+Yvl4foeg==\n\
-----END PUBLIC KEY-----\n\
";
    const EC384_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE6B6nqdIg2ZggOKxKo1ZUB+CCEy5uPsiT\n\
TBR+nUCSSFzCn1tOOFMRXpU/DeKVOxDDL4WzFaD0IaBNoM3qFe/uSOjN4EDOq7pC\n\
8wUzhTRreXDStVr9Shlgz3GBKVYeb99P\n\
-----END PUBLIC KEY-----\n\
";
    const ED_PRIV: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIMZZnB5vNDQRLk373vt0uqbpkZ/yl/6GUEvWOhf+gJQS\n\
-----END PRIVATE KEY-----\n\
";
    const ED_PUB: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAifpDBdU9MWAwhg46QPX+kEpo006SS2EFqvPK9Xz/13o=\n\
-----END PUBLIC KEY-----\n\
";

    const RSA1_N: &str = "t1xJoqE74HO7e6j1jqIME-CtsMZ44aVFU0D_34Oc5rXauU1Kwd2fETRxpPcpToIAwlg_HW5rgBDS8GfuAc3GNSbXdNtMX4hAnfrKHkq187AX8ojAjd30Xlp-UIHVg3EPB-NLccPWJvQV59LARDzyrJ4TiVJrW6ecJVy-aYS_mzsKUYTjnewKJniaI4VAGUrMcaNTv7Y6o9OGXH_dSSl3Z1AS9mkLFGrOPBe6a_9bO4y99yXLzUmD62WVh_g-vLghv3W5zxiW6_n0bdButaa6liJ9F7D_uIsANVDrP-5YaJ1nxfyZvkMghB6aJmgIx9719GwhTVfW-vKddDEg1-XtgQ";
    const RSA2_N: &str = "x0AFt5aYrAkcycXhvD2XCyYsvMLOZi5HRQdU3UGbI42oMNq7ILfWSNAV7ZEhImwbbo2MfiojJWzPbFhV2Cqshs2ujAfBqThOhHhjpzbvmfiHikYTNc6iWZBH5Olu6ygd3dw9-EA6Hj0mjmSX35dagYe9Dhd4ozGp7f7smHFazJqCUZ4NgUCq6Jm28kLWsMbJgMfydQn9vF5o-JNzY_1Z9R_IQ2ZheeX26h7XEdTnSCHw5OmwXzjoi50jxNmo3sGi9NNyk8ri6nwzDgldJ48ii64BG0VUKJnK9ioSncNY3WodI_XXQeWKvN-UodRNGpguBjLCG3xy-o5N2CHneQD8rw";
    const EC_X: &str = "z97SAvcm_gEfAD7qooz_8EdmWdQMsBMTZS7L4Mi5N1s";
    const EC_Y: &str = "w9BpSYEJdnCpl_psmB-1LYqbcfcwpmssOovmL5eH6Ho";
    const ED_X: &str = "ifpDBdU9MWAwhg46QPX-kEpo006SS2EFqvPK9Xz_13o";

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"rig-test-secret";

    fn settings(alg: Alg, key: KeySource) -> JwtSettings {
        JwtSettings {
            alg,
            key,
            leeway_secs: 5,
            issuer: None,
            audience: None,
            session_pointer: "/jti".to_owned(),
        }
    }

    fn hs256() -> Verifier {
        Verifier::new(&settings(Alg::HS256, KeySource::Secret(SECRET.to_vec()))).unwrap()
    }

    fn pem_verifier(alg: Alg, pem: &str) -> Verifier {
        Verifier::new(&settings(alg, KeySource::Pem(pem.to_owned()))).unwrap()
    }

    fn jwks_verifier(alg: Alg) -> Verifier {
        let url = "https://idp.example/certs".to_owned();
        Verifier::new(&settings(alg, KeySource::Jwks { url })).unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        pem_decode(pem).unwrap().1
    }

    fn rsa1() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(RSA1_PRIV))
    }

    fn rsa2() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(RSA2_PRIV))
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            claims,
            &EncodingKey::from_secret(SECRET),
        )
    }

    fn claims() -> Value {
        json!({"sub": "user-1", "jti": "session-1", "exp": NOW + 60})
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn load_env(pairs: &[(&str, &str)]) -> (Option<JwtSettings>, Vec<String>) {
        let get = env(pairs);
        let mut problems = Vec::new();
        let s = load(&get, &mut problems);
        (s, problems)
    }

    fn rsa_jwk(kid: &str, n: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"})
    }

    fn jwks(keys: &[Value]) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn is_invalid(r: &Result<Value, JwtError>) -> bool {
        matches!(r, Err(JwtError::Invalid(_)))
    }

    // --- HS256 and the time rules ---------------------------------------

    #[test]
    fn hs256_valid_token_returns_claims() {
        let got = hs256().verify(&hs(&claims()), NOW).unwrap();
        assert_eq!(got, claims());
    }

    #[test]
    fn expired_beyond_leeway_is_expired() {
        let token = hs(&json!({"exp": NOW - 6}));
        assert_eq!(hs256().verify(&token, NOW), Err(JwtError::Expired));
        // Exactly at exp + leeway the token is over (RFC 7519: "before").
        let token = hs(&json!({"exp": NOW - 5}));
        assert_eq!(hs256().verify(&token, NOW), Err(JwtError::Expired));
    }

    #[test]
    fn expired_within_leeway_is_ok() {
        let token = hs(&json!({"exp": NOW - 4}));
        assert!(hs256().verify(&token, NOW).is_ok());
        let token = hs(&json!({"exp": NOW}));
        assert!(hs256().verify(&token, NOW).is_ok());
    }

    #[test]
    fn fractional_exp_is_a_numeric_date() {
        let token = hs(&json!({"exp": (NOW - 5) as f64 + 0.5}));
        assert!(hs256().verify(&token, NOW).is_ok());
        let token = hs(&json!({"exp": (NOW - 5) as f64 - 0.5}));
        assert_eq!(hs256().verify(&token, NOW), Err(JwtError::Expired));
    }

    #[test]
    fn missing_exp_is_invalid() {
        let r = hs256().verify(&hs(&json!({"sub": "x"})), NOW);
        assert_eq!(r, Err(JwtError::Invalid("token has no exp claim".into())));
    }

    #[test]
    fn non_numeric_exp_is_invalid() {
        for exp in [json!("9999999999"), json!(null), json!(true)] {
            let r = hs256().verify(&hs(&json!({ "exp": exp })), NOW);
            assert!(is_invalid(&r), "{exp}: {r:?}");
        }
    }

    #[test]
    fn nbf_is_enforced_with_leeway() {
        let future = hs(&json!({"exp": NOW + 60, "nbf": NOW + 6}));
        assert!(is_invalid(&hs256().verify(&future, NOW)));
        let near = hs(&json!({"exp": NOW + 60, "nbf": NOW + 5}));
        assert!(hs256().verify(&near, NOW).is_ok());
        let bad = hs(&json!({"exp": NOW + 60, "nbf": "soon"}));
        assert!(is_invalid(&hs256().verify(&bad, NOW)));
    }

    #[test]
    fn bad_signature_is_invalid() {
        let other = sign(
            Algorithm::HS256,
            None,
            &claims(),
            &EncodingKey::from_secret(b"other-secret"),
        );
        let r = hs256().verify(&other, NOW);
        assert_eq!(r, Err(JwtError::Invalid("signature does not match".into())));

        // Same signature, different payload.
        let token = hs(&claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&json!({"sub": "admin", "exp": NOW + 60}));
        parts[1] = &forged;
        assert!(is_invalid(&hs256().verify(&parts.join("."), NOW)));
    }

    #[test]
    fn alg_none_is_invalid() {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims())
        );
        let r = hs256().verify(&token, NOW);
        assert_eq!(
            r,
            Err(JwtError::Invalid(
                "unsigned tokens (alg none) are never accepted".into()
            ))
        );
        // Same for a verifier with a public key.
        assert!(is_invalid(
            &pem_verifier(Alg::RS256, RSA1_PUB).verify(&token, NOW)
        ));
    }

    #[test]
    fn other_alg_than_configured_is_invalid() {
        let token = sign(
            Algorithm::HS384,
            None,
            &claims(),
            &EncodingKey::from_secret(SECRET),
        );
        let r = hs256().verify(&token, NOW);
        assert!(
            matches!(&r, Err(JwtError::Invalid(m)) if m.contains("HS384")),
            "{r:?}"
        );
    }

    #[test]
    fn algorithm_confusion_hs256_signed_with_rsa_public_key_is_invalid() {
        // Configured as an operator would: JWT_ALG=RS256, the public PEM in
        // JWT_SECRET_KEY.
        let (s, problems) = load_env(&[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", RSA1_PUB)]);
        assert!(problems.is_empty(), "{problems:?}");
        let v = Verifier::new(&s.unwrap()).unwrap();
        // The attacker knows the public key and uses its PEM text as an
        // HMAC secret, hoping the verifier feeds the same bytes to HMAC.
        for secret in [RSA1_PUB.as_bytes(), RSA1_PUB.trim_end().as_bytes()] {
            let token = sign(
                Algorithm::HS256,
                None,
                &claims(),
                &EncodingKey::from_secret(secret),
            );
            assert!(is_invalid(&v.verify(&token, NOW)));
        }
        // The same key does verify real RS256 tokens.
        let good = sign(Algorithm::RS256, None, &claims(), &rsa1());
        assert!(v.verify(&good, NOW).is_ok());
    }

    #[test]
    fn oversized_and_malformed_tokens_are_invalid() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        let r = hs256().verify(&big, NOW);
        assert!(
            matches!(&r, Err(JwtError::Invalid(m)) if m.contains("at most")),
            "{r:?}"
        );
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            "W10.e30.x",
        ] {
            assert!(is_invalid(&hs256().verify(bad, NOW)), "{bad}");
        }
        let jwe = hs256().verify("a.b.c.d.e", NOW);
        assert!(
            matches!(&jwe, Err(JwtError::Invalid(m)) if m.contains("JWE")),
            "{jwe:?}"
        );
    }

    #[test]
    fn crit_header_is_invalid() {
        let header = json!({"alg": "HS256", "crit": ["exp"], "exp": 1});
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.typ = None;
        // Sign a real token, then swap in the crit header: rejected before
        // the signature matters.
        let token = encode(&h, &claims(), &EncodingKey::from_secret(SECRET)).unwrap();
        let rest = token.split_once('.').unwrap().1;
        let token = format!("{}.{rest}", b64(&header));
        let r = hs256().verify(&token, NOW);
        assert!(
            matches!(&r, Err(JwtError::Invalid(m)) if m.contains("crit")),
            "{r:?}"
        );
    }

    #[test]
    fn claims_must_be_an_object() {
        let token = sign(
            Algorithm::HS256,
            None,
            &json!([1, 2]),
            &EncodingKey::from_secret(SECRET),
        );
        assert!(is_invalid(&hs256().verify(&token, NOW)));
    }

    // --- Asymmetric algorithms with PEM keys ------------------------------

    #[test]
    fn rs256_with_pem_key() {
        let v = pem_verifier(Alg::RS256, RSA1_PUB);
        assert!(v
            .verify(&sign(Algorithm::RS256, None, &claims(), &rsa1()), NOW)
            .is_ok());
        // Signed by another RSA key.
        let r = v.verify(&sign(Algorithm::RS256, None, &claims(), &rsa2()), NOW);
        assert_eq!(r, Err(JwtError::Invalid("signature does not match".into())));
        let v2 = pem_verifier(Alg::RS256, RSA2_PUB);
        assert!(v2
            .verify(&sign(Algorithm::RS256, None, &claims(), &rsa2()), NOW)
            .is_ok());
    }

    #[test]
    fn ps256_with_pem_key() {
        let v = pem_verifier(Alg::PS256, RSA1_PUB);
        assert!(v
            .verify(&sign(Algorithm::PS256, None, &claims(), &rsa1()), NOW)
            .is_ok());
        // PKCS#1 v1.5 signature under the PSS name fails.
        let rs = sign(Algorithm::RS256, None, &claims(), &rsa1());
        let (_, rest) = rs.split_once('.').unwrap();
        let relabeled = format!("{}.{rest}", b64(&json!({"alg": "PS256", "typ": "JWT"})));
        assert!(is_invalid(&v.verify(&relabeled, NOW)));
    }

    #[test]
    fn es256_with_pem_key() {
        let v = pem_verifier(Alg::ES256, EC_PUB);
        let key = EncodingKey::from_ec_der(&der(EC_PRIV));
        assert!(v
            .verify(&sign(Algorithm::ES256, None, &claims(), &key), NOW)
            .is_ok());
        let expired = sign(Algorithm::ES256, None, &json!({"exp": NOW - 100}), &key);
        assert_eq!(v.verify(&expired, NOW), Err(JwtError::Expired));
    }

    #[test]
    fn eddsa_with_pem_key_given_with_literal_backslash_n() {
        // RIG deployments put PEMs into env vars with "\n" sequences.
        let escaped = ED_PUB.replace('\n', "\\n");
        assert!(!escaped.contains('\n'));
        let (s, problems) = load_env(&[("JWT_ALG", "eddsa"), ("JWT_SECRET_KEY", &escaped)]);
        assert!(problems.is_empty(), "{problems:?}");
        let s = s.unwrap();
        assert_eq!(s.alg, Alg::EdDSA);
        let v = Verifier::new(&s).unwrap();
        let key = EncodingKey::from_ed_der(&der(ED_PRIV));
        assert!(v
            .verify(&sign(Algorithm::EdDSA, None, &claims(), &key), NOW)
            .is_ok());
        let tampered = sign(Algorithm::EdDSA, None, &json!({"exp": NOW + 1}), &key);
        let (head, rest) = tampered.rsplit_once('.').unwrap();
        let sig = if rest.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{head}.{sig}{}", &rest[1..]);
        assert!(is_invalid(&v.verify(&tampered, NOW)));
    }

    #[test]
    fn pem_on_one_line_and_pkcs1_public_keys_are_accepted() {
        let one_line = RSA1_PUB.replace('\n', " ");
        assert!(Verifier::new(&settings(Alg::RS256, KeySource::Pem(one_line))).is_ok());
        // "RSA PUBLIC KEY" (PKCS#1): the SPKI body minus its 24-byte prefix
        // for a 2048-bit key.
        let spki = der(RSA1_PUB);
        let pkcs1 = STANDARD.encode(&spki[24..]);
        let pem =
            format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
        let v = pem_verifier(Alg::RS256, &pem);
        assert!(v
            .verify(&sign(Algorithm::RS256, None, &claims(), &rsa1()), NOW)
            .is_ok());
    }

    #[test]
    fn wrong_key_kinds_are_refused_when_built() {
        let cases = [
            (
                Alg::ES256,
                RSA1_PUB,
                "needs a P-256 EC public key, but this is an RSA key",
            ),
            (Alg::ES256, EC384_PUB, "this is a P-384 EC key"),
            (Alg::RS256, EC_PUB, "needs an RSA public key"),
            (Alg::EdDSA, EC_PUB, "needs an Ed25519 public key"),
            (Alg::RS256, RSA1_PRIV, "private key"),
            (Alg::ES256, EC_PRIV, "private key"),
            (Alg::RS256, "not a pem", "does not start with -----BEGIN"),
        ];
        for (alg, pem, want) in cases {
            let e = Verifier::new(&settings(alg, KeySource::Pem(pem.to_owned()))).unwrap_err();
            assert!(e.contains(want), "{alg} / {want}: {e}");
        }
        let e = Verifier::new(&settings(Alg::RS256, KeySource::Secret(b"s".to_vec()))).unwrap_err();
        assert!(e.contains("needs an RSA public key"), "{e}");
        let e = Verifier::new(&settings(Alg::HS256, KeySource::Pem(RSA1_PUB.into()))).unwrap_err();
        assert!(e.contains("shared secret"), "{e}");
    }

    #[test]
    fn malformed_der_is_refused_not_panicking() {
        let spki = der(RSA1_PUB);
        for cut in [0, 1, 2, 5, 20, 30, spki.len() - 1] {
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
                STANDARD.encode(&spki[..cut])
            );
            assert!(public_key_from_pem(Alg::RS256, &pem).is_err(), "cut {cut}");
        }
        let short_ed = "-----BEGIN PUBLIC KEY-----\nMCkwBQYDK2VwAyAA\n-----END PUBLIC KEY-----";
        assert!(public_key_from_pem(Alg::EdDSA, short_ed).is_err());
    }

    // --- JWKS -------------------------------------------------------------

    fn two_key_jwks() -> Verifier {
        let (v, n) = jwks_verifier(Alg::RS256)
            .with_jwks(&jwks(&[rsa_jwk("k1", RSA1_N), rsa_jwk("k2", RSA2_N)]))
            .unwrap();
        assert_eq!(n, 2);
        v
    }

    #[test]
    fn jwks_kid_selects_the_right_key() {
        let v = two_key_jwks();
        let t1 = sign(Algorithm::RS256, Some("k1"), &claims(), &rsa1());
        let t2 = sign(Algorithm::RS256, Some("k2"), &claims(), &rsa2());
        assert!(v.verify(&t1, NOW).is_ok());
        assert!(v.verify(&t2, NOW).is_ok());
        // Right kid, wrong key.
        let crossed = sign(Algorithm::RS256, Some("k2"), &claims(), &rsa1());
        assert!(is_invalid(&v.verify(&crossed, NOW)));
    }

    #[test]
    fn jwks_unknown_kid() {
        let v = two_key_jwks();
        let t = sign(Algorithm::RS256, Some("k9"), &claims(), &rsa1());
        assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKid("k9".into())));
    }

    #[test]
    fn jwks_no_keys_before_first_fetch() {
        let v = jwks_verifier(Alg::RS256);
        assert!(v.is_jwks());
        assert_eq!(v.jwks_url(), Some("https://idp.example/certs"));
        let t = sign(Algorithm::RS256, Some("k1"), &claims(), &rsa1());
        assert_eq!(v.verify(&t, NOW), Err(JwtError::NoKeys));
    }

    #[test]
    fn jwks_rotation_replaces_the_key_set() {
        let (v, _) = jwks_verifier(Alg::RS256)
            .with_jwks(&jwks(&[rsa_jwk("old", RSA1_N)]))
            .unwrap();
        let old = sign(Algorithm::RS256, Some("old"), &claims(), &rsa1());
        let new = sign(Algorithm::RS256, Some("new"), &claims(), &rsa2());
        assert!(v.verify(&old, NOW).is_ok());
        assert_eq!(v.verify(&new, NOW), Err(JwtError::UnknownKid("new".into())));

        let (rotated, n) = v.with_jwks(&jwks(&[rsa_jwk("new", RSA2_N)])).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            rotated.verify(&old, NOW),
            Err(JwtError::UnknownKid("old".into()))
        );
        assert!(rotated.verify(&new, NOW).is_ok());
        // The old verifier is untouched (verifications in flight keep theirs).
        assert!(v.verify(&old, NOW).is_ok());
        assert_eq!(rotated.jwks_url(), v.jwks_url());
    }

    #[test]
    fn jwks_without_kid_uses_the_only_key() {
        let one = json!({"kty": "RSA", "n": RSA1_N, "e": "AQAB"});
        let (v, _) = jwks_verifier(Alg::RS256).with_jwks(&jwks(&[one])).unwrap();
        assert!(v
            .verify(&sign(Algorithm::RS256, None, &claims(), &rsa1()), NOW)
            .is_ok());
        // Several keys and no kid: refused rather than trying each.
        let r = two_key_jwks().verify(&sign(Algorithm::RS256, None, &claims(), &rsa1()), NOW);
        assert!(
            matches!(&r, Err(JwtError::Invalid(m)) if m.contains("no kid")),
            "{r:?}"
        );
    }

    #[test]
    fn jwks_skips_unusable_keys_and_counts_the_rest() {
        let keys = [
            rsa_jwk("sig", RSA1_N),
            json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA2_N, "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": RSA2_N, "e": "AQAB"}),
            json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": EC_X, "y": EC_Y}),
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "sig", "n": RSA2_N, "e": "AQAB"}),
            json!({"kty": "XYZ", "kid": "odd"}),
            json!("not an object"),
        ];
        let (v, n) = jwks_verifier(Alg::RS256).with_jwks(&jwks(&keys)).unwrap();
        assert_eq!(n, 1);
        assert!(v
            .verify(
                &sign(Algorithm::RS256, Some("sig"), &claims(), &rsa1()),
                NOW
            )
            .is_ok());
        let t = sign(Algorithm::RS256, Some("enc"), &claims(), &rsa2());
        assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKid("enc".into())));
    }

    #[test]
    fn jwks_with_ec_and_okp_keys() {
        let ec = json!({"kty": "EC", "kid": "e1", "crv": "P-256", "x": EC_X, "y": EC_Y});
        let (v, n) = jwks_verifier(Alg::ES256).with_jwks(&jwks(&[ec])).unwrap();
        assert_eq!(n, 1);
        let key = EncodingKey::from_ec_der(&der(EC_PRIV));
        assert!(v
            .verify(&sign(Algorithm::ES256, Some("e1"), &claims(), &key), NOW)
            .is_ok());

        let ed = json!({"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": ED_X});
        let (v, _) = jwks_verifier(Alg::EdDSA).with_jwks(&jwks(&[ed])).unwrap();
        let key = EncodingKey::from_ed_der(&der(ED_PRIV));
        assert!(v
            .verify(&sign(Algorithm::EdDSA, Some("d1"), &claims(), &key), NOW)
            .is_ok());

        // An EC point that is not on the curve is skipped, not used.
        let off = json!({"kty": "EC", "kid": "bad", "crv": "P-256", "x": EC_X, "y": EC_X});
        let e = jwks_verifier(Alg::ES256)
            .with_jwks(&jwks(&[off]))
            .unwrap_err();
        assert!(e.contains("kid \"bad\""), "{e}");
    }

    #[test]
    fn jwks_errors() {
        let v = jwks_verifier(Alg::RS256);
        let e = v.with_jwks(b"{\"keys\": []}").unwrap_err();
        assert!(e.contains("no key usable"), "{e}");
        let e = v.with_jwks(b"[1,2]").unwrap_err();
        assert!(e.contains("not a JWKS"), "{e}");
        let e = v.with_jwks(b"<html>").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = v
            .with_jwks(&jwks(&[
                json!({"kty": "RSA", "kid": "x", "use": "enc", "n": RSA1_N, "e": "AQAB"}),
            ]))
            .unwrap_err();
        assert!(e.contains("kid \"x\": use is \"enc\""), "{e}");

        let mut big = b"{\"keys\":[".to_vec();
        big.resize(MAX_JWKS_BYTES + 1, b' ');
        let e = v.with_jwks(&big).unwrap_err();
        assert!(e.contains("too large"), "{e}");

        let many: Vec<Value> = (0..=MAX_JWKS_KEYS)
            .map(|i| rsa_jwk(&format!("k{i}"), RSA1_N))
            .collect();
        let e = v.with_jwks(&jwks(&many)).unwrap_err();
        assert!(e.contains("at most 100"), "{e}");
        // Exactly the maximum is fine.
        let (_, n) = v.with_jwks(&jwks(&many[..MAX_JWKS_KEYS])).unwrap();
        assert_eq!(n, MAX_JWKS_KEYS);

        // A static-key verifier does not take key sets.
        assert!(hs256().with_jwks(&jwks(&[rsa_jwk("k", RSA1_N)])).is_err());
        assert!(!hs256().is_jwks());
        assert_eq!(hs256().jwks_url(), None);
    }

    #[test]
    fn unknown_kid_is_clipped() {
        let v = two_key_jwks();
        let kid = "k".repeat(1000);
        let t = sign(Algorithm::RS256, Some(&kid), &claims(), &rsa1());
        match v.verify(&t, NOW) {
            Err(JwtError::UnknownKid(k)) => assert!(k.len() < 100, "{}", k.len()),
            other => panic!("{other:?}"),
        }
    }

    // --- Issuer and audience ----------------------------------------------

    fn hs256_with(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        let mut s = settings(Alg::HS256, KeySource::Secret(SECRET.to_vec()));
        s.issuer = issuer.map(str::to_owned);
        s.audience = audience.map(str::to_owned);
        Verifier::new(&s).unwrap()
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let v = hs256_with(Some("https://idp/realms/a"), None);
        let ok = hs(&json!({"exp": NOW + 60, "iss": "https://idp/realms/a"}));
        assert!(v.verify(&ok, NOW).is_ok());
        for bad in [
            json!({"exp": NOW + 60, "iss": "https://idp/realms/b"}),
            json!({"exp": NOW + 60}),
            json!({"exp": NOW + 60, "iss": ["https://idp/realms/a"]}),
        ] {
            assert!(is_invalid(&v.verify(&hs(&bad), NOW)), "{bad}");
        }
        // Not configured: any issuer passes.
        assert!(hs256()
            .verify(&hs(&json!({"exp": NOW + 60, "iss": "x"})), NOW)
            .is_ok());
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let v = hs256_with(None, Some("corebridge"));
        for ok in [json!("corebridge"), json!(["account", "corebridge"])] {
            let t = hs(&json!({"exp": NOW + 60, "aud": ok}));
            assert!(v.verify(&t, NOW).is_ok(), "{ok}");
        }
        for bad in [json!("account"), json!(["account"]), json!(7)] {
            let t = hs(&json!({"exp": NOW + 60, "aud": bad}));
            assert!(is_invalid(&v.verify(&t, NOW)), "{bad}");
        }
        assert!(is_invalid(&v.verify(&hs(&json!({"exp": NOW + 60})), NOW)));
        // Not configured: a token with some aud still passes (Keycloak
        // tokens always carry one).
        let t = hs(&json!({"exp": NOW + 60, "aud": "account"}));
        assert!(hs256().verify(&t, NOW).is_ok());
    }

    // --- Authorization header and session id --------------------------------

    #[test]
    fn bearer_tokens_follow_rig() {
        let values: [&[u8]; 4] = [b"Bearer a", b"b, Bearer c", b"Basic xyz", b""];
        assert_eq!(bearer_tokens(values.into_iter()), ["a", "b", "c"]);
    }

    #[test]
    fn bearer_tokens_edge_cases() {
        let values: [&[u8]; 5] = [
            b"bEaReR  x1 ",
            b" , ,Bearer",
            b"Digest a=b, y2",
            b"\xff\xfe, z3",
            b"Token abc",
        ];
        assert_eq!(bearer_tokens(values.into_iter()), ["x1", "y2", "z3"]);

        let many = vec![b'a'; 0]
            .into_iter()
            .chain((0..100).flat_map(|_| *b"t,"))
            .collect::<Vec<u8>>();
        let got = bearer_tokens([many.as_slice()].into_iter());
        assert_eq!(got.len(), MAX_BEARER_TOKENS);
    }

    #[test]
    fn session_id_from_claims() {
        let c = json!({"jti": "s-1", "n": 42, "f": 1.5, "nested": {"id": "x"}, "b": true, "e": ""});
        assert_eq!(session_id(&c, "/jti").as_deref(), Some("s-1"));
        assert_eq!(session_id(&c, "/n").as_deref(), Some("42"));
        assert_eq!(session_id(&c, "/f").as_deref(), Some("1.5"));
        assert_eq!(session_id(&c, "/nested/id").as_deref(), Some("x"));
        assert_eq!(session_id(&c, "/missing"), None);
        assert_eq!(session_id(&c, "/b"), None);
        assert_eq!(session_id(&c, "/nested"), None);
        assert_eq!(session_id(&c, "/e"), None);
    }

    // --- Settings ----------------------------------------------------------

    #[test]
    fn load_without_key_is_off() {
        let (s, p) = load_env(&[]);
        assert_eq!((s, p.len()), (None, 0));
        let (s, p) = load_env(&[("JWT_SECRET_KEY", ""), ("JWT_ALG", "RS256")]);
        assert_eq!((s, p.len()), (None, 0));
    }

    #[test]
    fn load_hs256_defaults() {
        let (s, p) = load_env(&[("JWT_SECRET_KEY", "my secret ")]);
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.alg, Alg::HS256);
        // Byte for byte, as RIG uses it.
        assert_eq!(s.key, KeySource::Secret(b"my secret ".to_vec()));
        assert_eq!(s.leeway_secs, DEFAULT_LEEWAY_SECS);
        assert_eq!(s.session_pointer, "/jti");
        assert_eq!((s.issuer, s.audience), (None, None));
        assert!(!format!("{:?}", s.key).contains("my secret"));
    }

    #[test]
    fn load_flowx_keycloak_realm() {
        let (s, p) = load_env(&[
            ("SECURITY_OAUTH2_BASESERVERURL", "https://kc.example/auth/"),
            ("SECURITY_OAUTH2_SAREALM", "flowx"),
            ("CB_JWT_ISSUER", "https://kc.example/auth/realms/flowx"),
            ("CB_JWT_LEEWAY_SECS", "30"),
            ("JWT_SESSION_FIELD", "/sid"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.alg, Alg::RS256, "JWKS without JWT_ALG defaults to RS256");
        assert_eq!(
            s.key,
            KeySource::Jwks {
                url: "https://kc.example/auth/realms/flowx/protocol/openid-connect/certs".into()
            }
        );
        assert_eq!(s.leeway_secs, 30);
        assert_eq!(s.session_pointer, "/sid");
        assert_eq!(
            s.issuer.as_deref(),
            Some("https://kc.example/auth/realms/flowx")
        );
        let v = Verifier::new(&s).unwrap();
        assert_eq!(
            v.jwks_url(),
            Some("https://kc.example/auth/realms/flowx/protocol/openid-connect/certs")
        );

        // An explicit URL wins over the derived one.
        let (s, p) = load_env(&[
            ("CB_JWT_JWKS_URL", "http://idp:8080/jwks"),
            ("SECURITY_OAUTH2_BASESERVERURL", "https://kc.example"),
            ("SECURITY_OAUTH2_SAREALM", "flowx"),
            ("JWT_ALG", "ES256"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.alg, Alg::ES256);
        assert_eq!(
            s.key,
            KeySource::Jwks {
                url: "http://idp:8080/jwks".into()
            }
        );
    }

    #[test]
    fn load_reports_all_problems_at_once() {
        let (s, p) = load_env(&[
            ("JWT_ALG", "XS999"),
            ("JWT_SECRET_KEY", "secret"),
            ("CB_JWT_JWKS_URL", "ftp://idp/certs"),
            ("CB_JWT_LEEWAY_SECS", "five"),
            ("JWT_SESSION_FIELD", "jti"),
        ]);
        assert_eq!(s, None);
        let expect = [
            "JWT_ALG: unknown JWT algorithm \"XS999\"",
            "both set",
            "not an http:// or https:// URL",
            "CB_JWT_LEEWAY_SECS=\"five\"",
            "JWT_SESSION_FIELD=\"jti\"",
        ];
        assert_eq!(p.len(), expect.len(), "{p:#?}");
        for want in expect {
            assert!(
                p.iter().any(|m| m.contains(want)),
                "missing {want:?} in {p:#?}"
            );
        }
    }

    #[test]
    fn load_key_kind_problems() {
        let (s, p) = load_env(&[("JWT_SECRET_KEY", RSA1_PUB)]);
        assert_eq!(s, None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("holds a PEM block, but JWT_ALG=HS256"),
            "{p:?}"
        );

        let (s, p) = load_env(&[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", EC_PUB)]);
        assert_eq!(s, None);
        assert!(
            p[0].contains("needs an RSA public key, but this is a P-256 EC key"),
            "{p:?}"
        );

        let (_, p) = load_env(&[
            ("JWT_SECRET_KEY", "s"),
            ("CB_JWT_JWKS_URL", "https://idp/c"),
        ]);
        assert_eq!(p.len(), 1, "one mistake, one message: {p:?}");
        assert!(p[0].contains("both set"), "{p:?}");

        let (_, p) = load_env(&[("JWT_ALG", "RS256"), ("JWT_SECRET_KEY", "plain-secret")]);
        assert!(p[0].contains("not a PEM key"), "{p:?}");

        let (_, p) = load_env(&[
            ("JWT_ALG", "HS256"),
            ("CB_JWT_JWKS_URL", "https://idp/certs"),
        ]);
        assert!(p[0].contains("only serves public keys"), "{p:?}");

        let (_, p) = load_env(&[
            ("SECURITY_OAUTH2_BASESERVERURL", "https://kc"),
            ("CB_JWT_AUDIENCE", "x"),
            ("CB_JWT_LEEWAY_SECS", "86400"),
            ("JWT_SESSION_FIELD", "/a~2"),
        ]);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].contains("SECURITY_OAUTH2_SAREALM is not"), "{p:?}");
        assert!(p.iter().any(|m| m.contains("too large")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("CB_JWT_AUDIENCE is set but no JWT key")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("'~'")), "{p:?}");

        let (_, p) = load_env(&[
            ("SECURITY_OAUTH2_BASESERVERURL", "https://kc"),
            ("SECURITY_OAUTH2_SAREALM", "a/b"),
        ]);
        assert!(p[0].contains("not a realm name"), "{p:?}");
    }

    #[test]
    fn alg_parsing() {
        assert_eq!("rs256".parse::<Alg>(), Ok(Alg::RS256));
        assert_eq!(" EDDSA ".parse::<Alg>(), Ok(Alg::EdDSA));
        for a in Alg::ALL {
            assert_eq!(a.as_str().parse::<Alg>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
        let e = "none".parse::<Alg>().unwrap_err().to_string();
        assert!(
            e.contains("\"none\"") && e.contains("HS256") && e.contains("EdDSA"),
            "{e}"
        );
    }

    #[test]
    fn verifier_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Verifier>();
        let v = hs256();
        let c = v.clone();
        assert!(Arc::ptr_eq(&v.keys, &c.keys));
    }

    // --- Never panics -------------------------------------------------------

    fn all_verifiers() -> Vec<Verifier> {
        let (jwks_rsa, _) = two_key_jwks()
            .with_jwks(&jwks(&[rsa_jwk("k1", RSA1_N)]))
            .unwrap();
        let ec = json!({"kty": "EC", "kid": "e1", "crv": "P-256", "x": EC_X, "y": EC_Y});
        let (jwks_ec, _) = jwks_verifier(Alg::ES256).with_jwks(&jwks(&[ec])).unwrap();
        vec![
            hs256(),
            pem_verifier(Alg::RS256, RSA1_PUB),
            pem_verifier(Alg::ES256, EC_PUB),
            pem_verifier(Alg::EdDSA, ED_PUB),
            jwks_rsa,
            jwks_ec,
            jwks_verifier(Alg::RS256),
        ]
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_arbitrary_strings(s in "\\PC{0,300}") {
            for v in all_verifiers() {
                let _ = v.verify(&s, NOW);
            }
        }

        #[test]
        fn verify_never_panics_on_jwt_shaped_input(
            alg in prop::sample::select(vec!["HS256", "RS256", "ES256", "EdDSA", "none", "PS256"]),
            kid in prop::option::of("[a-z0-9]{0,4}"),
            payload in prop::collection::vec(any::<u8>(), 0..200),
            sig in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let header = match kid {
                Some(kid) => json!({"alg": alg, "kid": kid}),
                None => json!({"alg": alg}),
            };
            let token = format!(
                "{}.{}.{}",
                b64(&header),
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(&sig)
            );
            for v in all_verifiers() {
                let r = v.verify(&token, NOW);
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn bearer_tokens_never_panic(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..5)) {
            let got = bearer_tokens(values.iter().map(Vec::as_slice));
            prop_assert!(got.len() <= MAX_BEARER_TOKENS);
            prop_assert!(got.iter().all(|t| !t.is_empty() && !t.contains(',')));
        }
    }
}
