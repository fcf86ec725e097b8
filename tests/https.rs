//! HTTPS (`HTTPS_CERTFILE`, `HTTPS_KEYFILE`): curl and Python's `ssl` and `websockets` against
//! the TLS ports with a test CA: health, an SSE stream, a wss:// WebSocket, long-poll, a
//! publish, the internal API; the certificate swapped on disk and SIGHUP: new handshakes get the
//! new one while the open stream keeps receiving; bad files refused by `--check-config`.

mod common;

use common::pki::openssl;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// A CA and two server certificates for 127.0.0.1 it signed (CN `one` and `two`).
fn pki() -> PathBuf {
    common::pki::pki(&["one", "two"])
}

fn check_config(envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corebridge"))
        .arg("--check-config")
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn sse_websocket_long_poll_and_the_api_over_tls_and_a_certificate_reloaded_on_sighup() {
    let dir = pki();
    // The files the server reads; the test overwrites them with `two` before the SIGHUP.
    std::fs::copy(dir.join("one.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("one.key"), dir.join("key.pem")).unwrap();
    let (tls_inbound, tls_api) = (free_port(), free_port());
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let up = upstream::Upstream::start(|_| upstream::ok("proxied"));
    let apis = serde_json::json!([{"id": "svc", "name": "svc",
        "proxy": {"target_url": "127.0.0.1", "port": up.port},
        "version_data": {"default": {"endpoints": [
            {"id": "e", "method": "GET", "path_regex": "/proxied"}]}}}])
    .to_string();
    let srv = Server::start_with(
        2,
        "",
        &[
            ("PROXY_CONFIG_FILE", &apis),
            ("HTTPS_CERTFILE", cert.to_str().unwrap()),
            ("HTTPS_KEYFILE", key.to_str().unwrap()),
            ("INBOUND_HTTPS_PORT", &tls_inbound.to_string()),
            ("API_HTTPS_PORT", &tls_api.to_string()),
        ],
    );
    let ca = dir.join("ca.pem");
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert", ca.to_str().unwrap()])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        curl(format!("https://127.0.0.1:{tls_inbound}/_rig/health")),
        "OK"
    );
    assert!(curl(format!("https://127.0.0.1:{tls_api}/metrics")).contains("corebridge_connections"));
    // The API gateway over TLS: the upstream (plain) gets the request.
    assert_eq!(
        curl(format!("https://127.0.0.1:{tls_inbound}/proxied")),
        "proxied"
    );
    assert_eq!(up.last().target, "/proxied");
    // The plain ports still answer.
    assert_eq!(
        request(srv.inbound, "GET", "/_rig/health", &[], b"").status,
        200
    );

    let out = python(
        "https_client.py",
        &[
            ca.to_str().unwrap(),
            &tls_inbound.to_string(),
            &tls_api.to_string(),
            &srv.pid().to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            dir.join("two.pem").to_str().unwrap(),
            dir.join("two.key").to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["cn_before"], "one", "{v}");
    assert_eq!(v["cn_api"], "one", "{v}");
    assert_eq!(v["sse_status"], 200, "{v}");
    assert_eq!(v["publish"], serde_json::json!([202, 202]), "{v}");
    assert_eq!(v["sse"], serde_json::json!([0, 1]), "{v}");
    assert_eq!(
        v["ws"],
        serde_json::json!(["rig.connection.create", "rig.subscriptions_set", 10]),
        "{v}"
    );
    assert_eq!(
        v["longpoll"],
        serde_json::json!(["rig.connection.create", "rig.subscriptions_set"]),
        "{v}"
    );
    assert_eq!(v["cn_after"], "two", "{v}");
    assert_eq!(v["sse_after_reload"], serde_json::json!([10, 20]), "{v}");

    // Not TLS on the TLS port: the handshake fails, counted; the server goes on.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tls_inbound)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        // A TLS alert (content type 21), never an HTTP answer.
        assert_eq!(answer.first(), Some(&21u8), "{answer:?}");
    }
    // The socket closes inside the handshake, a moment before the failure is counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = request(srv.api, "GET", "/metrics", &[], b"").text();
        if metrics.contains("corebridge_tls_handshakes_total{result=\"failed\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        curl(format!("https://127.0.0.1:{tls_inbound}/_rig/health")),
        "OK"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_certificate_files_are_named_by_check_config() {
    let dir = pki();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (one_pem, one_key, two_key) = (p("one.pem"), p("one.key"), p("two.key"));
    let (ok, text) = check_config(&[("HTTPS_CERTFILE", &one_pem), ("HTTPS_KEYFILE", &one_key)]);
    assert!(ok, "{text}");
    let (ok, text) = check_config(&[("HTTPS_CERTFILE", &one_pem), ("HTTPS_KEYFILE", &two_key)]);
    assert!(
        !ok && text.contains("does not belong to the certificate"),
        "{text}"
    );
    let (ok, text) = check_config(&[("HTTPS_CERTFILE", &one_pem)]);
    assert!(!ok && text.contains("HTTPS_KEYFILE"), "{text}");
    let (ok, text) = check_config(&[
        ("HTTPS_CERTFILE", &p("nope.pem")),
        ("HTTPS_KEYFILE", &one_key),
    ]);
    assert!(!ok && text.contains("nope.pem"), "{text}");
    // An encrypted key needs its passphrase, and the right one.
    openssl(
        &dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "one.key",
            "-out",
            "enc.key",
            "-passout",
            "pass:s3cret",
        ],
    );
    let enc = p("enc.key");
    let (ok, text) = check_config(&[("HTTPS_CERTFILE", &one_pem), ("HTTPS_KEYFILE", &enc)]);
    assert!(!ok && text.contains("HTTPS_KEYFILE_PASS"), "{text}");
    let (ok, text) = check_config(&[
        ("HTTPS_CERTFILE", &one_pem),
        ("HTTPS_KEYFILE", &enc),
        ("HTTPS_KEYFILE_PASS", "wrong"),
    ]);
    assert!(!ok && text.contains("cannot decrypt"), "{text}");
    let (ok, text) = check_config(&[
        ("HTTPS_CERTFILE", &one_pem),
        ("HTTPS_KEYFILE", &enc),
        ("HTTPS_KEYFILE_PASS", "s3cret"),
    ]);
    assert!(ok, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
