#![no_main]
//! `cargo +nightly fuzz run request_key`: see `holysheep_fuzz::request_key::check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| holysheep_fuzz::request_key::check(data));
