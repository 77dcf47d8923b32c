//! The HolySheep gateway: an OpenAI-compatible HTTP server in front of HolySheep (or any
//! OpenAI-compatible upstream) that forwards through
//! `MetricsLayer → CacheLayer → RetryLayer → PoolLimitLayer → HolySheepClient`.
//!
//! Try it with no key and no network, against the built-in mock upstream:
//!
//! ```text
//! cargo run --example gateway -- --demo
//! ```
//!
//! It prints the listen address and a curl line to paste. Against HolySheep:
//!
//! ```text
//! HOLYSHEEP_API_KEY=sk-... cargo run --example gateway
//! ```
//!
//! Every knob is in `examples/gateway/gateway.example.toml`; `--help` lists the flags.
//! The modules are shared with `tests/gateway.rs`, which starts the gateway in-process.

mod auth;
mod config;
mod errors;
mod logging;
mod routes;
mod server;
mod stack;

use std::process::ExitCode;

use clap::Parser;

use config::{FileConfig, Flags, config_path, process_env, resolve};
use server::Gateway;

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let env = process_env();
    let file = match config_path(&flags, &env) {
        Some(path) => match FileConfig::load(&path) {
            Ok(file) => Some(file),
            Err(error) => return fail(&error),
        },
        None => None,
    };
    let config = match resolve(&flags, &env, file.as_ref()) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    logging::init(config.log_format);

    let demo = config.demo;
    let gateway = match Gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(error) => return fail(&error),
    };
    println!("holysheep gateway listening on http://{}", gateway.addr());
    println!("upstream: {}", gateway.upstream());
    if demo {
        println!("demo mode: answers come from the built-in mock upstream. Try:\n");
        println!("  {}\n", gateway.curl_example());
    }
    tracing::info!(addr = %gateway.addr(), upstream = gateway.upstream(), "gateway started");

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    if gateway.shutdown().await {
        tracing::info!("shutdown complete");
    }
    ExitCode::SUCCESS
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("holysheep gateway: {error}");
    ExitCode::from(2)
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
