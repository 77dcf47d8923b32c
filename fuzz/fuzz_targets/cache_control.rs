#![no_main]
//! `cargo +nightly fuzz run cache_control`: see `holysheep_fuzz::cache_control::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::cache_control::check(data));
