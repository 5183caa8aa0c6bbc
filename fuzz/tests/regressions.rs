//! Every input the fuzzer (or a person) found breaking something, replayed:
//! each must now pass its target's check without a panic.

use std::path::Path;

use serde_json::Value;
use stevedore_fuzz::{run_one, target, Outcome};

#[test]
fn every_saved_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    let mut failed = Vec::new();
    for dir in std::fs::read_dir(&root)
        .expect("fuzz/regressions")
        .flatten()
    {
        for file in std::fs::read_dir(dir.path())
            .expect("a target's directory")
            .flatten()
        {
            let path = file.path();
            let text = std::fs::read_to_string(&path).unwrap();
            let saved: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = saved["target"].as_str().unwrap_or_default();
            let t =
                target(name).unwrap_or_else(|| panic!("{}: no target `{name}`", path.display()));
            match run_one(&t, &saved["input"]) {
                Outcome::Ok => {}
                other => failed.push(format!("{}: {other:?}", path.display())),
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 4, "the saved inputs are there ({replayed})");
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn each_target_makes_the_same_input_from_the_same_seed() {
    for t in stevedore_fuzz::targets() {
        let a = (t.generate)(&mut stevedore_fuzz::gen::Gen::new(42));
        let b = (t.generate)(&mut stevedore_fuzz::gen::Gen::new(42));
        assert_eq!(a, b, "{}", t.name);
    }
}
