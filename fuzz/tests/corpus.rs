//! Replays the checked-in corpus (`fuzz/corpus/<target>/`) through every target:
//! seeds and the inputs of crashes found earlier stay regression tests on any
//! toolchain, without libFuzzer or instrumentation.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in meridian_fuzz::TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} has no inputs", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).expect("corpus input");
            eprintln!("{target}: {}", input.display());
            assert!(meridian_fuzz::run(target, &data));
        }
    }
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo xtask fuzz` runs the binaries it finds in fuzz_targets/
    for entry in std::fs::read_dir(root.join("fuzz_targets")).expect("fuzz_targets/") {
        let path = entry.expect("fuzz_targets entry").path();
        let name = path.file_stem().expect("file name").to_string_lossy();
        assert!(
            meridian_fuzz::TARGETS.contains(&name.as_ref()),
            "{} is not in meridian_fuzz::TARGETS",
            path.display()
        );
    }
    for target in meridian_fuzz::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "fuzz_targets/{target}.rs missing"
        );
        assert!(root.join("corpus").join(target).is_dir());
    }
}
