#![no_main]
//! `cargo +nightly fuzz run config`: see `holysheep_fuzz::config::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::config::check(data));
