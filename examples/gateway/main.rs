//! The HolySheep gateway, run from this repository: a thin `main` over the `holysheep-gateway`
//! crate, which is also installed as the `holysheep-gateway` binary.
//!
//! Try it with no key and no network, against the built-in mock upstream:
//!
//! ```text
//! cargo run --release --example gateway -- --demo
//! ```
//!
//! Against HolySheep:
//!
//! ```text
//! HOLYSHEEP_API_KEY=sk-... cargo run --release --example gateway
//! ```
//!
//! `--help` lists every setting; `crates/holysheep-gateway/gateway.example.toml` shows them all.

fn main() -> std::process::ExitCode {
    holysheep_gateway::cli::main()
}
