//! Test keys were generated once with `openssl genpkey` (RSA 2048, EC
//! P-256/P-384, Ed25519) and serve only these tests. The JWK `n`, `x`
//! and `y` values below were computed from them with openssl, not with
//! this module's parser, so the JWKS tests check the parser too.
use super::keys::{pem_decode, public_key_from_pem};
use super::*;
use crate::config::jwt::{load, JwtSettings, KeySource, DEFAULT_LEEWAY_SECS};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey};
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;

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
    let pem = format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
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
        assert!(e.to_string().contains(want), "{alg} / {want}: {e}");
    }
    let e = Verifier::new(&settings(Alg::RS256, KeySource::Secret(b"s".to_vec()))).unwrap_err();
    assert!(e.to_string().contains("needs an RSA public key"), "{e}");
    let e = Verifier::new(&settings(Alg::HS256, KeySource::Pem(RSA1_PUB.into()))).unwrap_err();
    assert!(e.to_string().contains("shared secret"), "{e}");
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
    assert!(e.to_string().contains("kid \"bad\""), "{e}");
}

#[test]
fn jwks_errors() {
    let v = jwks_verifier(Alg::RS256);
    let e = v.with_jwks(b"{\"keys\": []}").unwrap_err();
    assert!(e.to_string().contains("no key usable"), "{e}");
    let e = v.with_jwks(b"[1,2]").unwrap_err();
    assert!(e.to_string().contains("not a JWKS"), "{e}");
    let e = v.with_jwks(b"<html>").unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");
    let e = v
        .with_jwks(&jwks(&[
            json!({"kty": "RSA", "kid": "x", "use": "enc", "n": RSA1_N, "e": "AQAB"}),
        ]))
        .unwrap_err();
    assert!(e.to_string().contains("kid \"x\": use is \"enc\""), "{e}");

    let mut big = b"{\"keys\":[".to_vec();
    big.resize(MAX_JWKS_BYTES + 1, b' ');
    let e = v.with_jwks(&big).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");

    let many: Vec<Value> = (0..=MAX_JWKS_KEYS)
        .map(|i| rsa_jwk(&format!("k{i}"), RSA1_N))
        .collect();
    let e = v.with_jwks(&jwks(&many)).unwrap_err();
    assert!(e.to_string().contains("at most 100"), "{e}");
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
        ("SECURITY_OAUTH2_SAREALM", "flowx"),
        ("CB_JWT_AUDIENCE", "x"),
        ("CB_JWT_LEEWAY_SECS", "86400"),
        ("JWT_SESSION_FIELD", "/a~2"),
    ]);
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(
        p[0].contains("SECURITY_OAUTH2_BASESERVERURL is not"),
        "{p:?}"
    );
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
