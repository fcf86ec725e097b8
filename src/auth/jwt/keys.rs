//! Verification keys: from a PEM public key (the configured `JWT_SECRET_KEY` of RS*, PS*, ES*
//! and EdDSA) and from JWKS documents (RFC 7517). PEM, SubjectPublicKeyInfo and PKCS#1 are
//! decoded by RustCrypto's `pem-rfc7468`, `spki` and `pkcs1`; what is checked here is what those
//! crates do not know: that the key fits the configured algorithm, RSA sizes, and JWK fields.
//! Every refusal says what is wrong with the key and what to give instead.

use super::alg::{Alg, Curve, Family};
use super::{clip, MAX_JWKS_BYTES, MAX_JWKS_KEYS};
use crate::error::{Blame, Fault};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use spki::der::Decode;
use spki::ObjectIdentifier;

/// RSA moduli outside this range are refused: smaller ones are breakable,
/// and the RustCrypto backend refuses larger ones at verification time, which
/// we would rather report when the key is loaded than on every request.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why a key cannot verify tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The configured text is not a PEM public key (a private key, a certificate, junk).
    #[error("{0}")]
    NotPublicKey(String),
    /// A public key of another kind than the algorithm needs.
    #[error("{alg} needs {wanted}, but this is {got}")]
    WrongKind {
        alg: Alg,
        wanted: &'static str,
        got: &'static str,
    },
    /// A key of the right kind that is malformed, too weak or restricted.
    #[error("{0}")]
    Unusable(String),
    /// The setting and the key source do not fit (a secret for RS256, a PEM for HS256).
    #[error("{0}")]
    Mismatch(String),
    /// A JWKS document that is not one, is too large, or holds no usable key.
    #[error("{0}")]
    Jwks(String),
}

impl Blame for KeyError {
    fn fault(&self) -> Fault {
        match self {
            // The identity provider serves the document.
            KeyError::Jwks(_) => Fault::Upstream,
            // The operator configured the key.
            _ => Fault::Ours,
        }
    }
}

/// The public-key material of one key, whatever the encoding it came in.
pub(super) enum Material {
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

/// A verification key for `alg` from a PEM public key, or why not.
pub(super) fn public_key_from_pem(alg: Alg, pem: &str) -> Result<DecodingKey, KeyError> {
    let (label, der) = pem_decode(pem)?;
    let material = match label.as_str() {
        "PUBLIC KEY" => spki_material(&der)?,
        "RSA PUBLIC KEY" => {
            let key = pkcs1::RsaPublicKey::from_der(&der).map_err(malformed)?;
            Material::Rsa {
                n: key.modulus.as_bytes().to_vec(),
                e: key.public_exponent.as_bytes().to_vec(),
                pss_only: false,
            }
        }
        l if l.contains("PRIVATE KEY") => {
            return Err(KeyError::NotPublicKey(format!(
                "the PEM holds a private key ({l}); give the public key instead \
                 (openssl pkey -in key.pem -pubout)"
            )))
        }
        "CERTIFICATE" => {
            return Err(KeyError::NotPublicKey(
                "the PEM holds a certificate; give its public key instead \
                 (openssl x509 -in cert.pem -pubkey -noout)"
                    .to_owned(),
            ))
        }
        l => {
            return Err(KeyError::NotPublicKey(format!(
                "the PEM block is {l:?}; expected PUBLIC KEY"
            )))
        }
    };
    key_for(alg, material)
}

fn malformed(e: impl std::fmt::Display) -> KeyError {
    KeyError::Unusable(format!("malformed key: {e}"))
}

/// The label and DER bytes of a PEM block. Env files often carry a PEM on one line, which
/// RFC 7468's strict decoder refuses, so the base64 body is re-wrapped at 64 columns first.
pub(super) fn pem_decode(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let not_pem = |why: &str| KeyError::NotPublicKey(format!("not a PEM key: {why}"));
    let text = text.trim();
    if !text.starts_with("-----BEGIN ") {
        return Err(not_pem("it does not start with -----BEGIN"));
    }
    // "", "BEGIN <label>", body, "END <label>", ""
    let parts: Vec<&str> = text.split("-----").collect();
    if parts.len() != 5 || !parts[4].trim().is_empty() {
        return Err(not_pem(
            "expected one -----BEGIN ...----- / -----END ...----- block and nothing after it",
        ));
    }
    let body: String = parts[2].split_ascii_whitespace().collect();
    let mut wrapped = format!("-----{}-----\n", parts[1]);
    for line in body.as_bytes().chunks(64) {
        wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
        wrapped.push('\n');
    }
    wrapped.push_str(&format!("-----{}-----\n", parts[3]));
    let (label, der) =
        pem_rfc7468::decode_vec(wrapped.as_bytes()).map_err(|e| not_pem(&e.to_string()))?;
    Ok((label.to_owned(), der))
}

/// SubjectPublicKeyInfo (RFC 5280): the algorithm OID (and curve) and the key bits.
fn spki_material(der: &[u8]) -> Result<Material, KeyError> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(malformed)?;
    let bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
        KeyError::Unusable("malformed key: bad subjectPublicKey bit string".into())
    })?;
    match spki.algorithm.oid {
        oid @ (OID_RSA | OID_RSA_PSS) => {
            let key = pkcs1::RsaPublicKey::from_der(bits).map_err(malformed)?;
            Ok(Material::Rsa {
                n: key.modulus.as_bytes().to_vec(),
                e: key.public_exponent.as_bytes().to_vec(),
                pss_only: oid == OID_RSA_PSS,
            })
        }
        OID_EC => {
            let curve = match spki.algorithm.parameters_oid() {
                Ok(OID_P256) => Curve::P256,
                Ok(OID_P384) => Curve::P384,
                Ok(_) => {
                    return Err(KeyError::Unusable(
                        "EC key on an unsupported curve (only P-256 and P-384)".into(),
                    ))
                }
                Err(_) => return Err(KeyError::Unusable("EC key without a named curve".into())),
            };
            Ok(Material::Ec {
                curve,
                point: bits.to_vec(),
            })
        }
        OID_ED25519 => Ok(Material::Ed { x: bits.to_vec() }),
        _ => Err(KeyError::Unusable(
            "unsupported key type (expected RSA, EC P-256/P-384 or Ed25519)".into(),
        )),
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(unusable(format!(
            "RSA key has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        )));
    }
    // An RSA public exponent is odd and at least 3; the backend refuses
    // exponents above 2^33-1, and real keys use 65537, so 4 bytes suffice.
    let e = strip_leading_zeros(e);
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || e.len() > 4 || e == [1] {
        return Err(unusable("RSA key has an unusable public exponent"));
    }
    Ok(())
}

/// A verification key for `alg` from key material, refusing material of the
/// wrong kind and material the crypto backend would reject.
pub(super) fn key_for(alg: Alg, material: Material) -> Result<DecodingKey, KeyError> {
    let wrong_kind = |m: &Material| KeyError::WrongKind {
        alg,
        wanted: alg.key_wanted(),
        got: m.describe(),
    };
    let key = match (alg.family(), &material) {
        (Family::Rsa, Material::Rsa { n, e, pss_only }) => {
            if *pss_only && !alg.is_pss() {
                return Err(unusable(format!(
                    "the RSA key is restricted to PSS, so {alg} cannot use it"
                )));
            }
            check_rsa(n, e)?;
            DecodingKey::from_rsa_raw_components(strip_leading_zeros(n), strip_leading_zeros(e))
        }
        (Family::Ec(want), Material::Ec { curve, point }) if want == *curve => {
            if point.len() != 1 + 2 * curve.coord_len() || point[0] != 0x04 {
                return Err(unusable(format!(
                    "the {} key is not an uncompressed point",
                    curve.name()
                )));
            }
            DecodingKey::from_ec_der(point)
        }
        // The backend slices the first 32 bytes without checking the length,
        // so the length check here also prevents a panic.
        (Family::Ed, Material::Ed { x }) if x.len() == 32 => DecodingKey::from_ed_der(x),
        (Family::Ed, Material::Ed { x }) => {
            return Err(unusable(format!(
                "Ed25519 key is {} bytes, not 32",
                x.len()
            )))
        }
        _ => return Err(wrong_kind(&material)),
    };
    // Building the backend's verifier parses the key (point on the curve,
    // valid Ed25519 encoding); an error here means the key itself is bad.
    jsonwebtoken::crypto::verify("", b"", &key, alg.to_jwt())
        .map_err(|e| unusable(format!("{} is not usable: {e}", material.describe())))?;
    Ok(key)
}

/// Padding is optional in JWKs in the wild even though RFC 7517 omits it.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn parse_jwks(alg: Alg, doc: &[u8]) -> Result<Vec<JwksKey>, KeyError> {
    let bad = |msg: String| KeyError::Jwks(msg);
    if doc.len() > MAX_JWKS_BYTES {
        return Err(bad(format!(
            "JWKS document is {} bytes; at most {MAX_JWKS_BYTES} accepted (identity provider \
             response too large)",
            doc.len()
        )));
    }
    let v: Value =
        serde_json::from_slice(doc).map_err(|e| bad(format!("JWKS document is not JSON: {e}")))?;
    let keys = v.get("keys").and_then(Value::as_array).ok_or_else(|| {
        bad("JWKS document has no \"keys\" array, so it is not a JWKS (RFC 7517 section 5)".into())
    })?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(bad(format!(
            "JWKS document holds {} keys; at most {MAX_JWKS_KEYS} accepted",
            keys.len()
        )));
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
        return Err(bad(format!(
            "JWKS holds no key usable for {alg} ({} keys: {})",
            keys.len(),
            if skipped.is_empty() {
                "none".to_owned()
            } else {
                skipped.join("; ")
            }
        )));
    }
    Ok(usable)
}

fn jwk_to_key(alg: Alg, jwk: &Value) -> Result<JwksKey, KeyError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| unusable("not a JSON object"))?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(unusable("kid is not a string")),
    };
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(unusable(format!(
                "use is {}, not \"sig\"",
                clip(&u.to_string())
            )));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err(unusable("key_ops does not include \"verify\""));
        }
    }
    if let Some(a) = obj.get("alg") {
        if a.as_str() != Some(alg.as_str()) {
            return Err(unusable(format!(
                "alg is {}, not {alg}",
                clip(&a.to_string())
            )));
        }
    }
    let field = |name: &str| -> Result<Vec<u8>, KeyError> {
        let s = obj
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| unusable(format!("no {name:?} string")))?;
        B64URL_LENIENT
            .decode(s)
            .map_err(|_| unusable(format!("{name:?} is not base64url")))
    };
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| unusable("no \"kty\" string"))?;
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
                Some(other) => {
                    return Err(unusable(format!("curve {:?} not supported", clip(other))))
                }
                None => return Err(unusable("EC key without \"crv\"")),
            };
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != curve.coord_len() || y.len() != curve.coord_len() {
                return Err(unusable(format!(
                    "{} coordinates have the wrong length",
                    curve.name()
                )));
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
                return Err(unusable(format!(
                    "OKP curve {:?} not supported (only Ed25519)",
                    clip(other.unwrap_or(""))
                )))
            }
        },
        // A shared secret published in a key set would be known to anyone
        // who can fetch it.
        "oct" => return Err(unusable("symmetric (oct) keys are never taken from a JWKS")),
        other => return Err(unusable(format!("kty {:?} not supported", clip(other)))),
    };
    let key = key_for(alg, material)?;
    Ok(JwksKey { kid, key })
}

/// One key of a JWKS document.
pub(super) struct JwksKey {
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
}

fn unusable(msg: impl Into<String>) -> KeyError {
    KeyError::Unusable(msg.into())
}
