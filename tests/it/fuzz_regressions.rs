//! Inputs found by fuzzing (`scripts/fuzz.sh`, findings in `docs/fuzzing.md`), replayed:
//! each file under `tests/fuzz-regressions/<target>/` goes through the very entry point
//! of the fuzz target that found it (`fuzz/src/lib.rs`, included here), which must
//! answer with a decoded value or a data error, never a panic or a wrong error kind.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pbsfs::Result;

/// The fuzz crate's entry points, compiled into this test binary as they are into the
/// fuzz targets.
#[path = "../../fuzz/src/lib.rs"]
pub mod entries;

/// Every fuzz target, by its name under `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 8] = [
    "blob",
    "fidx",
    "didx",
    "manifest",
    "catalog",
    "pxar",
    "pxar_split",
    "upid",
];

/// Feed `data` to fuzz target `target`'s entry point.
pub fn run(target: &str, data: &[u8]) -> Result<()> {
    match target {
        "blob" => entries::blob(data),
        "fidx" => entries::fidx(data),
        "didx" => entries::didx(data),
        "manifest" => entries::manifest(data),
        "catalog" => entries::catalog(data),
        "pxar" => entries::pxar(data),
        "pxar_split" => entries::pxar_split(data),
        "upid" => entries::upid(data),
        other => panic!("no fuzz target {other:?} (one of {TARGETS:?})"),
    }
}

#[test]
fn every_fuzz_finding_decodes_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut failed = Vec::new();
    let mut count = 0;
    for sub in std::fs::read_dir(&root).expect("tests/fuzz-regressions") {
        let sub = sub.unwrap().path();
        let target = sub.file_name().unwrap().to_str().unwrap().to_string();
        // A misnamed folder would otherwise be skipped in silence.
        assert!(
            TARGETS.contains(&target.as_str()),
            "{}: no such target",
            sub.display()
        );
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            let data = std::fs::read(&f).unwrap();
            count += 1;
            match catch_unwind(AssertUnwindSafe(|| run(&target, &data))) {
                Ok(res) => eprintln!("{}: {res:?}", f.display()),
                Err(_) => failed.push(f.display().to_string()),
            }
        }
    }
    assert!(count > 0, "no findings under {}", root.display());
    assert!(failed.is_empty(), "panicked on: {failed:#?}");
}
