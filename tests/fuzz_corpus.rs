//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, seeds and the finds worth keeping, crashes
//! found by `fuzz/run.sh` included once fixed) through every fuzz target of `src/fuzzing.rs`:
//! each input must be handled without a panic. Every target has a corpus.

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, target) in corebridge::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!entries.is_empty(), "{name} has no corpus");
        for path in entries {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
            total += 1;
        }
    }
    assert!(total >= corebridge::fuzzing::TARGETS.len());
}
