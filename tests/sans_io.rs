//! `src/proto/` is sans-I/O: no runtime, socket, file, session or broker code may appear there.
//! This keeps every parser testable on byte slices and fuzzable.

#[test]
fn proto_has_no_io() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    let forbidden = [
        "glommio",
        "tokio",
        "std::net",
        "std::fs",
        "std::io::Read",
        "std::io::Write",
        "crate::conn",
        "crate::session",
        "crate::runtime",
        "crate::broker",
        "std::thread",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{} mentions {word}: protocol code must stay sans-I/O",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected the protocol modules in {}",
        dir.display()
    );
}
