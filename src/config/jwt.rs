//! JWT settings: RIG's `JWT_*` variables, ours (`CB_JWT_*`) and FlowX's Keycloak realm
//! (`SECURITY_OAUTH2_*`), validated completely at start-up (a PEM key is decoded and checked
//! against the algorithm here, so `--check-config` reports a bad key). `auth::jwt` verifies.

use super::env;
use crate::auth::jwt::{check_pem, clip, normalize_pem, Alg, DEFAULT_SESSION_POINTER};
use std::fmt;

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Largest leeway accepted: beyond an hour, `exp` stops meaning much.
pub const MAX_LEEWAY_SECS: u64 = 3600;

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
/// `SECURITY_OAUTH2_SAREALM` (default `00000002-0002-4002-8002-000000000002`; giving
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
    let secret = get(env::JWT_SECRET_KEY).filter(|v| !v.trim().is_empty());
    let jwks = jwks_url_from_env(&var, problems);

    if secret.is_some() && jwks.is_some() {
        problems.push(format!(
            "JWT_SECRET_KEY and a JWKS URL ({}) are both set; configure exactly one key source",
            jwks.as_ref().map(|(name, _)| *name).unwrap_or_default()
        ));
    }

    let alg = match var(env::JWT_ALG) {
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
            match check_pem(alg, &pem) {
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

    let leeway_secs = match var(env::JWT_LEEWAY_SECS) {
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
        var(env::JWT_SESSION_FIELD).unwrap_or_else(|| DEFAULT_SESSION_POINTER.to_owned());
    if let Err(e) = check_pointer(&session_pointer) {
        problems.push(format!("JWT_SESSION_FIELD={session_pointer:?}: {e}"));
    }

    let issuer = var(env::JWT_ISSUER);
    let audience = var(env::JWT_AUDIENCE);
    if secret.is_none() && jwks.is_none() {
        // Claim checks without a key would silently check nothing: the
        // operator clearly meant to turn verification on.
        for (name, set) in [(env::JWT_ISSUER, &issuer), (env::JWT_AUDIENCE, &audience)] {
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

/// FlowX's `SECURITY_OAUTH2_SAREALM` when unset.
const FLOWX_DEFAULT_REALM: &str = "00000002-0002-4002-8002-000000000002";

/// The JWKS URL and the variable it came from, if any.
fn jwks_url_from_env(
    var: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<(&'static str, String)> {
    let (name, url) = if let Some(url) = var(env::JWT_JWKS_URL) {
        (env::JWT_JWKS_URL, url)
    } else {
        let base = var(env::SECURITY_OAUTH2_BASESERVERURL);
        let realm = var(env::SECURITY_OAUTH2_SAREALM);
        match (base, realm) {
            (None, None) => return None,
            (None, Some(_)) => {
                problems.push(
                    "SECURITY_OAUTH2_SAREALM is set but SECURITY_OAUTH2_BASESERVERURL is not; \
                     both are needed to derive the JWKS URL"
                        .to_owned(),
                );
                return None;
            }
            (Some(base), realm) => {
                // FlowX's documented default when only the base URL is given.
                let realm = realm.unwrap_or_else(|| FLOWX_DEFAULT_REALM.to_string());
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
