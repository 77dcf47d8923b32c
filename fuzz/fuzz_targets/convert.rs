#![no_main]
//! `cargo +nightly fuzz run convert`: see `holysheep_fuzz::convert::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::convert::check(data));
