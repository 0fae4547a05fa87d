//! Fuzz target `fidx`: feeds each input to `pbsfs_fuzz::fidx` (see `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // An error is a correct answer to bad bytes; a panic or an abort is the finding.
    let _ = pbsfs_fuzz::fidx(data);
});
