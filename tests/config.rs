//! `corebridge --check-config`: validates environment and tuning file and reports every
//! problem at once; a good configuration passes; the binary refuses to share its port.

use std::process::Command;

fn corebridge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corebridge"));
    c.env_clear();
    c
}

#[test]
fn every_problem_reported_at_once() {
    let dir = std::env::temp_dir().join(format!("cb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tuning = dir.join("bad.toml");
    std::fs::write(&tuning, "[sessions]\nqueue_event = 5\n").unwrap();
    let out = corebridge()
        .arg("--check-config")
        .arg("--tuning")
        .arg(&tuning)
        .env("INBOUND_PORT", "99999")
        .env("LOG_LEVEL", "chatty")
        .env(
            "EXTRACTORS",
            r#"{"t":{"f":{"event":{"json_pointer":"/x"}}}}"#,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "queue_event",
        "INBOUND_PORT",
        "LOG_LEVEL",
        "stable_field_index",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    assert!(err.contains("4 problem(s)"), "{err}");
}

#[test]
fn shipped_tuning_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/default.toml");
    let out = corebridge()
        .args(["--check-config", "--tuning", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration OK"));
}

#[test]
fn refuses_a_port_another_process_holds() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = corebridge()
        .env("INBOUND_PORT", port.to_string())
        .env("CB_INBOUND_BIND", "127.0.0.1")
        .env("API_HTTP_PORT", {
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().port().to_string()
        })
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn shipped_profiles_are_valid() {
    for name in ["high-fanout", "many-connections"] {
        let path = format!("{}/tuning/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let out = corebridge()
            .args(["--check-config", "--tuning", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Files are read by the configuration: a bad Kafka CA file or JWT key is found by
/// `--check-config`, not by a reconnect loop after start.
#[test]
fn check_config_reads_every_file() {
    let dir = std::env::temp_dir().join(format!("cb-check-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = corebridge()
        .arg("--check-config")
        .env("KAFKA_BROKERS", "127.0.0.1:9093")
        .env("KAFKA_SECURITY_PROTOCOL", "SSL")
        .env("KAFKA_SSL_CA_CERTFILE", &ca)
        .env("JWT_ALG", "RS256")
        .env(
            "JWT_SECRET_KEY",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}", ca.display())), "{err}");
    assert!(err.contains("JWT_SECRET_KEY (JWT_ALG=RS256)"), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kinesis_settings_are_checked_up_front() {
    let out = corebridge()
        .arg("--check-config")
        .env("KINESIS_ENABLED", "true")
        .env("KINESIS_STREAM", "orders,bad name")
        .env("KINESIS_ENDPOINT", "127.0.0.1:4568")
        .env("CB_KINESIS_START", "oldest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["KINESIS_STREAM", "KINESIS_ENDPOINT", "CB_KINESIS_START"] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    assert!(err.contains("3 problem(s)"), "{err}");
    let out = corebridge()
        .arg("--check-config")
        .env("KINESIS_ENABLED", "true")
        .env("KINESIS_STREAM", "orders,payments")
        .env("KINESIS_ENDPOINT", "http://127.0.0.1:4568")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RIG's `KAFKA_SSL_KEYFILE_PASS`: an encrypted PKCS#8 key (what `openssl pkcs8 -topk8 -v2`
/// writes) is decrypted at start-up; a wrong passphrase, a missing one and the traditional
/// OpenSSL encryption are named by `--check-config`.
#[test]
fn encrypted_kafka_client_keys_are_decrypted_with_the_passphrase() {
    let dir = std::env::temp_dir().join(format!("cb-check-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout plain.pem -out cert.pem -days 2 -subj /CN=client 2>/dev/null");
    sh("openssl pkcs8 -topk8 -v2 aes-256-cbc -in plain.pem -out enc.pem -passout pass:s3cret");
    sh("openssl rsa -in plain.pem -aes256 -traditional -out trad.pem -passout pass:s3cret 2>/dev/null");
    let check = |key: &str, pass: Option<&str>| {
        let mut c = corebridge();
        c.arg("--check-config")
            .env("KAFKA_BROKERS", "127.0.0.1:9093")
            .env("KAFKA_SSL_ENABLED", "true")
            .env("KAFKA_SSL_CA_CERTFILE", dir.join("cert.pem"))
            .env("KAFKA_SSL_CERTFILE", dir.join("cert.pem"))
            .env("KAFKA_SSL_KEYFILE", dir.join(key));
        if let Some(p) = pass {
            c.env("KAFKA_SSL_KEYFILE_PASS", p);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("enc.pem", Some("s3cret"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check("enc.pem", Some("wrong"));
    assert_eq!(code, Some(2));
    assert!(err.contains("wrong passphrase"), "{err}");
    let (code, err) = check("enc.pem", None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the key is encrypted: set KAFKA_SSL_KEYFILE_PASS"),
        "{err}"
    );
    let (code, err) = check("trad.pem", Some("s3cret"));
    assert_eq!(code, Some(2));
    assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
    let (code, err) = check("plain.pem", None);
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
