//! The never-arrows of DESIGN.md, checked on the source text so a change that crosses one fails
//! here rather than in review:
//! - `src/proto/` is sans-I/O: no runtime, socket, file, session or broker code, so every parser
//!   is testable on byte slices and fuzzable;
//! - only `src/config/` reads the environment and files;
//! - metric names live only in `src/metrics/`;
//! - shard-side code (api, conn, session, route, auth, proto) reaches tokio-based clients only
//!   through the island handles (`runtime::island`, the root of `broker`), never the clients;
//! - routing and sessions do not reach up into the layers that use them; island code does not
//!   touch shard state;
//! - `unsafe` is allowed only in the socket-write and start-up-probe modules.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

/// The code of a file without its comments (line and doc comments), so prose may name things.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

fn forbid(dir: &str, words: &[&str], except: &[&str], why: &str) {
    let mut bad = Vec::new();
    for (path, text) in files(&src().join(dir)) {
        let name = rel(&path);
        if except.contains(&name.as_str()) {
            continue;
        }
        let code = code(&text);
        for w in words {
            if code.contains(w) {
                bad.push(format!("{name} mentions {w}"));
            }
        }
    }
    assert!(bad.is_empty(), "{why}:\n{}", bad.join("\n"));
}

#[test]
fn proto_has_no_io() {
    forbid(
        "proto",
        &[
            "tokio",
            "std::net",
            "std::fs",
            "std::io::Read",
            "std::io::Write",
            "crate::conn",
            "crate::session",
            "crate::runtime",
            "crate::broker",
            "crate::api",
            "std::thread",
        ],
        &[],
        "protocol code must stay sans-I/O",
    );
}

#[test]
fn only_config_reads_env_and_files() {
    let mut bad = Vec::new();
    for (path, text) in files(&src()) {
        let name = rel(&path);
        if name.starts_with("config/") {
            continue;
        }
        let code = code(&text);
        for w in ["env::var", "std::fs", "fs::read", "File::open", "env::vars"] {
            if code.contains(w) {
                bad.push(format!("{name} mentions {w}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "only config/ reads env and files:\n{}",
        bad.join("\n")
    );
}

#[test]
fn metric_names_live_in_metrics() {
    let mut bad = Vec::new();
    for (path, text) in files(&src()) {
        let name = rel(&path);
        if !name.starts_with("metrics/") && code(&text).contains("\"corebridge_") {
            bad.push(name);
        }
    }
    assert!(bad.is_empty(), "metric names outside src/metrics/: {bad:?}");
}

#[test]
fn shards_reach_brokers_only_through_handles() {
    for dir in ["api", "conn", "session", "route", "auth", "proto"] {
        forbid(
            dir,
            &[
                "tokio",
                "rskafka",
                "reqwest",
                "crate::broker::kafka",
                "block_on",
            ],
            &[],
            "shard-side code must reach tokio-based clients through island handles",
        );
    }
}

#[test]
fn lower_layers_do_not_reach_up() {
    forbid(
        "route",
        &[
            "crate::session",
            "crate::conn",
            "crate::api",
            "crate::runtime",
            "crate::broker",
        ],
        &[],
        "route/ is data and decisions, used by the island and by shards",
    );
    forbid(
        "session",
        &[
            "crate::conn",
            "crate::api",
            "crate::broker",
            "crate::runtime",
        ],
        &[],
        "session/ holds sessions; drivers and handlers use it, not the other way",
    );
    forbid(
        "broker",
        &[
            "crate::session",
            "crate::conn",
            "crate::api",
            "crate::runtime::rt",
        ],
        &[],
        "island code must not touch shard state",
    );
    forbid(
        "auth",
        &[
            "crate::session",
            "crate::conn",
            "crate::api",
            "crate::runtime",
        ],
        &[],
        "auth/ is policy without I/O",
    );
}

#[test]
fn unsafe_only_where_argued() {
    let allowed = ["conn/socket.rs", "runtime/sys.rs"];
    for (path, text) in files(&src()) {
        let name = rel(&path);
        let code = code(&text);
        if allowed.contains(&name.as_str()) {
            assert!(
                code.contains("#![allow(unsafe_code)]") && text.contains("SAFETY:"),
                "{name} should allow unsafe and argue each block"
            );
        } else {
            assert!(!code.contains("unsafe"), "{name} uses unsafe");
        }
    }
}
