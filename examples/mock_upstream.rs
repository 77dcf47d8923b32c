//! A fake OpenAI-compatible upstream, for demos and benches: `holysheep-mock` as a binary.
//!
//! ```text
//! cargo run --example mock_upstream -- --listen 127.0.0.1:9000 --api-key K \
//!     --latency-ms 800 --jitter-ms 200 --cold-penalty-ms 300 --error-rate 0.023
//! ```
//!
//! It prints its base URL (`http://127.0.0.1:9000/v1`) and serves until Ctrl-C, then shuts down
//! gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use holysheep_mock::{Latency, MockConfig, MockServer};

/// A fake OpenAI-compatible upstream with latency, fault and cold-connection knobs.
#[derive(Debug, Parser)]
#[command(name = "mock_upstream", version, about)]
struct Args {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000", env = "MOCK_LISTEN")]
    listen: SocketAddr,

    /// The bearer key callers must send; without it any key is accepted.
    #[arg(long, env = "MOCK_API_KEY")]
    api_key: Option<String>,

    /// Fixed latency before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,

    /// Uniform random latency added on top, in milliseconds (0..=jitter).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,

    /// Log-normal latency median in milliseconds; with --latency-p99-ms, replaces the
    /// fixed-plus-jitter latency.
    #[arg(long, requires = "latency_p99_ms")]
    latency_median_ms: Option<u64>,

    /// Log-normal latency 99th percentile in milliseconds.
    #[arg(long, requires = "latency_median_ms")]
    latency_p99_ms: Option<u64>,

    /// Extra wait of the first request on each new TCP connection, in milliseconds.
    #[arg(long, default_value_t = 0)]
    cold_penalty_ms: u64,

    /// Share of requests answered 500/502/503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,

    /// Share of requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_rate: f64,

    /// Retry-After seconds on 429 answers.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,

    /// Share of requests whose connection is reset without an answer.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,

    /// Share of streamed answers cut off mid-way.
    #[arg(long, default_value_t = 0.0)]
    truncate_rate: f64,

    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 8)]
    stream_chunks: usize,

    /// Pause between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    stream_gap_ms: u64,

    /// Seed of the fault and latency generator, for reproducible runs.
    #[arg(long)]
    seed: Option<u64>,

    /// A model to list on GET /v1/models (repeatable); defaults to the seed's models.
    #[arg(long = "model")]
    models: Vec<String>,

    /// Default embedding dimension.
    #[arg(long, default_value_t = 64)]
    embedding_dimensions: usize,
}

impl Args {
    fn config(&self) -> MockConfig {
        let ms = Duration::from_millis;
        let latency = match (self.latency_median_ms, self.latency_p99_ms) {
            (Some(median), Some(p99)) => Latency::log_normal(ms(median), ms(p99)),
            _ => Latency::uniform(ms(self.latency_ms), ms(self.jitter_ms)),
        };
        let mut cfg = MockConfig::default()
            .latency(latency)
            .cold_penalty(ms(self.cold_penalty_ms))
            .error_rate(self.error_rate)
            .rate_limit_rate(self.rate_limit_rate)
            .retry_after_secs(self.retry_after_secs)
            .reset_rate(self.reset_rate)
            .truncate_rate(self.truncate_rate)
            .stream_chunks(self.stream_chunks)
            .stream_gap(ms(self.stream_gap_ms))
            .embedding_dimensions(self.embedding_dimensions);
        cfg.api_key = self.api_key.clone();
        cfg.seed = self.seed;
        if !self.models.is_empty() {
            cfg = cfg.models(self.models.iter().cloned());
        }
        cfg
    }
}

fn check_rate(name: &str, rate: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("--{name} must be between 0 and 1, got {rate}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    for (name, rate) in [
        ("error-rate", args.error_rate),
        ("rate-limit-rate", args.rate_limit_rate),
        ("reset-rate", args.reset_rate),
        ("truncate-rate", args.truncate_rate),
    ] {
        check_rate(name, rate)?;
    }

    let server = MockServer::bind(args.listen, args.config()).await?;
    println!("{}", server.base_url());
    eprintln!(
        "holysheep mock upstream listening on {} (HTTP/1.1 and h2c); Ctrl-C to stop",
        server.addr()
    );

    tokio::signal::ctrl_c().await?;
    let stats = server.stats().clone();
    server.shutdown().await;
    eprintln!(
        "served {} requests on {} connections; by status: {:?}",
        stats.requests(),
        stats.connections(),
        stats.by_status()
    );
    Ok(())
}
