//! HTTPS on both listeners, RIG's way: `HTTPS_CERTFILE` and `HTTPS_KEYFILE` (PEM; the key may
//! be encrypted PKCS#8, `HTTPS_KEYFILE_PASS`) enable TLS on `INBOUND_HTTPS_PORT` (4001) and
//! `API_HTTPS_PORT` (4011), beside the plain ports. The files are read and checked here (the
//! key must belong to the certificate), so `--check-config` names a bad file; `SIGHUP` reads
//! them again (`conn::tls`).

use super::env;
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct HttpsConfig {
    pub inbound: std::net::SocketAddr,
    pub api: std::net::SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub key_pass: Option<String>,
    /// The certificate chain and key as read at start-up.
    pub key: Arc<CertifiedKey>,
}

/// Reads `cert_file` and `key_file` into a key rustls serves; the error names the file and
/// what is wrong with it.
pub fn load_key(
    cert_file: &Path,
    key_file: &Path,
    pass: Option<&str>,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = super::kafka::read_certs(cert_file).map_err(|e| format!("HTTPS: {e}"))?;
    let pem = std::fs::read(key_file)
        .map_err(|e| format!("HTTPS: cannot read {}: {e}", key_file.display()))?;
    let key = match super::kafka::private_key(&pem, pass, env::HTTPS_KEYFILE_PASS) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return Err(format!(
                "HTTPS: {}: no private key in it",
                key_file.display()
            ))
        }
        Err(e) => return Err(format!("HTTPS: {}: {e}", key_file.display())),
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        format!(
            "HTTPS: {}: a key rustls cannot sign with: {e}",
            key_file.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "HTTPS: {} does not belong to the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(Arc::new(certified))
}

impl HttpsConfig {
    /// None when HTTPS is off (neither file set); problems are collected.
    pub fn load(
        get: &dyn Fn(&str) -> Option<String>,
        inbound_ip: std::net::IpAddr,
        api_ip: std::net::IpAddr,
        port: &dyn Fn(&str, u16, &mut Vec<String>) -> u16,
        problems: &mut Vec<String>,
    ) -> Option<HttpsConfig> {
        let file = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (cert, key) = match (file(env::HTTPS_CERTFILE), file(env::HTTPS_KEYFILE)) {
            (None, None) => return None,
            (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
            (Some(_), None) => {
                problems.push(format!(
                    "{} is set but {} is not: HTTPS needs both",
                    env::HTTPS_CERTFILE,
                    env::HTTPS_KEYFILE
                ));
                return None;
            }
            (None, Some(_)) => {
                problems.push(format!(
                    "{} is set but {} is not: HTTPS needs both",
                    env::HTTPS_KEYFILE,
                    env::HTTPS_CERTFILE
                ));
                return None;
            }
        };
        let pass = get(env::HTTPS_KEYFILE_PASS).filter(|p| !p.is_empty());
        let inbound =
            std::net::SocketAddr::new(inbound_ip, port(env::INBOUND_HTTPS_PORT, 4001, problems));
        let api = std::net::SocketAddr::new(api_ip, port(env::API_HTTPS_PORT, 4011, problems));
        let certified = load_key(&cert, &key, pass.as_deref())
            .map_err(|e| problems.push(e))
            .ok()?;
        Some(HttpsConfig {
            inbound,
            api,
            cert_file: cert,
            key_file: key,
            key_pass: pass,
            key: certified,
        })
    }
}
