#![no_main]
//! `cargo +nightly fuzz run entry`: see `holysheep_fuzz::entry::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::entry::check(data));
