//! The `holysheep-gateway` command: parse the configuration, start, wait for a signal, drain.

use std::process::ExitCode;

use crate::config::{Cli, Config};
use crate::server::Gateway;
use crate::telemetry;

/// Runs the gateway from the process's command line and environment until SIGINT or SIGTERM;
/// what the `holysheep-gateway` binary and `examples/gateway` call.
///
/// Exit codes: 0 after a clean shutdown (or a passed `--check-config`), 2 for a configuration
/// or start-up error (printed to stderr), 1 when the runtime cannot start.
pub fn main() -> ExitCode {
    let cli = Cli::from_process();
    let check_only = cli.check_config;
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if check_only {
        print!("{}", config.settings.to_toml());
        eprintln!("holysheep gateway: the configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("holysheep gateway: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let _telemetry = match telemetry::init(&config) {
        Ok(guard) => guard,
        Err(error) => return fail(&error),
    };
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
