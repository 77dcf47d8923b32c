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
//! | `GET /v1/holysheep/usage` | the calling tenant's limits and what is left of them |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | the upstream (and Redis, when configured) answers; one probe per interval |
//! | `GET /metrics` | Prometheus text |
//!
//! Every answer carries an `x-request-id` (the caller's, or a new UUID), which every log line
//! and span of the request carries too. With the `otlp` cargo feature and `--otlp`, spans are
//! exported over OTLP as the standard `OTEL_*` environment variables say.
//!
//! Tenants with limits (requests and tokens per minute, dollars per day and month, requests in
//! flight, allowed models) come from tenants files (`[quota] tenant_files`), reloaded on SIGHUP;
//! every `/v1/` route passes the same `QuotaLayer`, fleet-wide when `cache.redis` is set.
//!
//! Configuration comes from flags, environment variables and a TOML file ([`config`]); every
//! setting left unset keeps the default of the crate that owns it.
//!
//! Every connection is bounded: a request head must arrive within the header read timeout, a
//! body within the body read timeout (else 408), an idle kept-alive connection is closed after
//! the keep-alive timeout, at most `max_connections` are open (one more gets 503 and is closed),
//! an HTTP/2 connection carries a bounded number of streams, and an answer sent before its
//! request body was read is followed by a lingering close, so the caller can read it. The
//! settings are in `[server]` ([`config::ServerSettings`]).

mod auth;
pub mod cli;
pub mod config;
mod conn;
pub mod deployments;
mod errors;
mod logging;
mod routes;
mod server;
mod stack;
mod telemetry;
mod tenants;

pub use config::{Cli, Config, ConfigError, Secret, Settings};
pub use server::{DEMO_API_KEY, Gateway, GatewayHandle, StartError};
