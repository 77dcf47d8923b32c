//! The HolySheep gateway as a library: an OpenAI-compatible HTTP server (axum) in front of
//! HolySheep, or any OpenAI-compatible upstream, forwarding through the recommended layer stack
//! (`IncludeUsageLayer → MetricsLayer → CacheLayer → RetryLayer → AttemptTraceLayer →
//! PoolLimitLayer → HolySheepClient`).
//!
//! The `holysheep-gateway` binary is [`cli::main`]; `cargo install --path crates/holysheep-gateway`
//! installs it. The library lets tests, the load harness and your own program start a gateway
//! in-process:
//!
//! ```no_run
//! use holysheep_gateway::{Config, Gateway};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::default();
//! config.demo = true; // the built-in mock upstream, no key and no network needed
//! let gateway = Gateway::start(config).await?;
//! println!("listening on http://{}", gateway.addr());
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! | route | what it does |
//! |---|---|
//! | `POST /v1/chat/completions` | JSON, or `"stream": true` (SSE, each chunk forwarded as it arrives); cached |
//! | `POST /v1/embeddings` | forwarded and cached |
//! | `GET /v1/models` | forwarded |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | the upstream (and Redis, when configured) answers |
//! | `GET /metrics` | Prometheus text |
//!
//! Every answer carries an `x-request-id` (the caller's, or a new UUID), which every log line
//! and span of the request carries too. With the `otlp` cargo feature and `--otlp`, spans are
//! exported over OTLP as the standard `OTEL_*` environment variables say.
//!
//! Configuration comes from flags, environment variables and a TOML file ([`config`]); every
//! setting left unset keeps the default of the crate that owns it.

mod auth;
pub mod cli;
pub mod config;
mod errors;
mod logging;
mod routes;
mod server;
mod stack;
mod telemetry;

pub use config::{Cli, Config, ConfigError, Secret, Settings};
pub use server::{DEMO_API_KEY, Gateway, GatewayHandle, StartError};
