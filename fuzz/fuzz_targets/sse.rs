#![no_main]
//! `cargo +nightly fuzz run sse`: see `holysheep_fuzz::sse::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::sse::check(data));
