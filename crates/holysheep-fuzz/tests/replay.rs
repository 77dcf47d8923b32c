//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through its target's check,
//! so `cargo test --workspace` (and `.ci/run`) keeps every input the fuzzers found passing.

use std::fs;
use std::path::PathBuf;

#[test]
fn every_corpus_file_passes_its_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, check) in holysheep_fuzz::TARGETS {
        let dir = root.join(target);
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for target {target} at {}: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = fs::read(&path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                path.display()
            );
            replayed += 1;
        }
        assert!(replayed > 0, "the corpus of {target} is empty");
    }
}
