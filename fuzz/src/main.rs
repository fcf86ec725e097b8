//! One libFuzzer binary for every target: `CB_FUZZ_TARGET` names which (`fuzz/run.sh` sets it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn target() -> fn(&[u8]) {
    static PICKED: std::sync::OnceLock<fn(&[u8])> = std::sync::OnceLock::new();
    *PICKED.get_or_init(|| {
        let name = std::env::var("CB_FUZZ_TARGET").unwrap_or_default();
        corebridge::fuzzing::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .unwrap_or_else(|| panic!("CB_FUZZ_TARGET={name:?}: not a target"))
    })
}

fuzz_target!(|data: &[u8]| target()(data));
