//! The gateway's configuration: command-line flags, environment variables, an optional TOML file.
//!
//! Every setting is declared once, in [`Settings`]: its TOML key (section and field), its flag
//! and its environment variable (clap reads both). Every value is an `Option`: "not set" falls
//! through flags > environment > file, and what no source sets keeps the default of the crate
//! that owns it (the gateway calls a setter only for what is set). The defaults that belong to
//! the gateway itself (listen address, body limit, shutdown grace, readiness bound, memory cache
//! size, log format) are in [`defaults`].
//!
//! Secrets never come from a flag or the file: the upstream key is read from
//! `HOLYSHEEP_API_KEY` and client keys from `HOLYSHEEP_GATEWAY_KEYS` only, and both are
//! [`Secret`]s whose `Debug` shows nothing.

// The settings' doc comments are their `--help` text, which shows a default URL as it is.
#![allow(rustdoc::bare_urls)]

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use holysheep::StackBuilder;
use holysheep::cache::KeyScheme;
use holysheep::retry::RetryLayer;

/// The defaults that belong to the gateway; every other default is its crate's.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    /// Where the gateway listens: `127.0.0.1:8080`.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// The largest request body accepted: 4 MiB.
    pub const BODY_LIMIT_BYTES: usize = 4 << 20;
    /// How long a shutdown waits for in-flight requests and streams: 30 s.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// How long `/readyz` waits for the upstream (and Redis): 2 s.
    pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long a `/readyz` answer is reused before the next probe: 1 s.
    pub const READY_CACHE: Duration = Duration::from_secs(1);
    /// How long a caller may take to send a request head, counted from its first byte (and a
    /// new connection to start one): 10 s.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a caller may take to send a whole request body, counted from the end of its
    /// head: 30 s, 4 MiB at about 1.1 Mbit/s.
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long a kept-alive connection may wait for its next request: 75 s, as nginx.
    pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
    /// The most open caller connections: 1024 (lowered at start to fit the open-file limit
    /// when it is left unset).
    pub const MAX_CONNECTIONS: usize = 1024;
    /// The most concurrent streams on one HTTP/2 connection: 100, the least RFC 9113 advises.
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
    /// How long, after answering a request whose body it did not read, the gateway reads and
    /// discards the rest before closing: 5 s, as nginx's `lingering_timeout`.
    pub const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Whether spans are exported over OTLP: no.
    pub const OTLP: bool = false;
}

/// The environment variable holding the upstream key.
pub const API_KEY_ENV: &str = "HOLYSHEEP_API_KEY";
/// The environment variable holding the comma list of client keys.
pub const GATEWAY_KEYS_ENV: &str = "HOLYSHEEP_GATEWAY_KEYS";

/// Declares a section of [`Settings`]: a struct of `Option`s that is at once a TOML table
/// (unknown keys refused), a group of flags with their environment variables, and mergeable.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, Args)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The section's keys, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// These values, and `lower`'s where these are unset.
            pub fn or(self, lower: Self) -> Self {
                Self { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

section! {
    /// `[server]`: the listener and the process.
    pub struct ServerSettings {
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long = "listen", env = "HOLYSHEEP_LISTEN", value_name = "ADDR")]
        listen: SocketAddr,
        /// Largest accepted request body in bytes; larger ones get 413 [default: 4194304]
        #[arg(long = "body-limit-bytes", env = "HOLYSHEEP_BODY_LIMIT_BYTES", value_name = "BYTES")]
        body_limit_bytes: usize,
        /// Bound on sending a request head, in ms from its first byte; a new connection must
        /// start one within it too. Slower connections are closed [default: 10000]
        #[arg(long = "header-read-timeout-ms", env = "HOLYSHEEP_HEADER_READ_TIMEOUT_MS", value_name = "MS")]
        header_read_timeout_ms: u64,
        /// Bound on sending a whole request body, in ms from the end of its head; slower ones
        /// get 408 [default: 30000]
        #[arg(long = "body-read-timeout-ms", env = "HOLYSHEEP_BODY_READ_TIMEOUT_MS", value_name = "MS")]
        body_read_timeout_ms: u64,
        /// How long a kept-alive connection may wait for its next request, in ms [default: 75000]
        #[arg(long = "keep-alive-timeout-ms", env = "HOLYSHEEP_KEEP_ALIVE_TIMEOUT_MS", value_name = "MS")]
        keep_alive_timeout_ms: u64,
        /// Most open caller connections; past it a new one gets 503 and is closed
        /// [default: 1024]
        #[arg(long = "max-connections", env = "HOLYSHEEP_MAX_CONNECTIONS", value_name = "N")]
        max_connections: usize,
        /// Most concurrent streams on one HTTP/2 connection [default: 100]
        #[arg(long = "h2-max-concurrent-streams", env = "HOLYSHEEP_H2_MAX_CONCURRENT_STREAMS", value_name = "N")]
        h2_max_concurrent_streams: u32,
        /// After answering a request whose body it did not read (a 413), how long to read and
        /// discard the rest so the caller can read the answer, in ms [default: 5000]
        #[arg(long = "linger-timeout-ms", env = "HOLYSHEEP_LINGER_TIMEOUT_MS", value_name = "MS")]
        linger_timeout_ms: u64,
        /// On SIGTERM/SIGINT, how long in-flight requests and streams may finish [default: 30]
        #[arg(long = "shutdown-grace-secs", env = "HOLYSHEEP_SHUTDOWN_GRACE_SECS", value_name = "SECONDS")]
        shutdown_grace_secs: u64,
        /// How long GET /readyz waits for the upstream (and Redis) [default: 2000]
        #[arg(long = "ready-timeout-ms", env = "HOLYSHEEP_READY_TIMEOUT_MS", value_name = "MS")]
        ready_timeout_ms: u64,
        /// How long a GET /readyz answer is reused, in ms: one probe per interval however
        /// often it is asked [default: 1000]
        #[arg(long = "ready-cache-ms", env = "HOLYSHEEP_READY_CACHE_MS", value_name = "MS")]
        ready_cache_ms: u64,
        /// Log lines as text or one JSON object per line [default: text]
        #[arg(long = "log-format", env = "HOLYSHEEP_LOG_FORMAT", value_enum, value_name = "FORMAT")]
        log_format: LogFormat,
    }
}

section! {
    /// `[client]`: the pooled upstream client.
    // The default base URL is shown as `--help` prints it, not as a link.
    #[allow(rustdoc::bare_urls)]
    pub struct ClientSettings {
        /// Upstream base URL (default: HolySheep's).
        #[arg(
            long = "upstream",
            env = "HOLYSHEEP_BASE_URL",
            value_name = "URL",
            help = "Upstream base URL [default: https://api.holysheep.ai/v1]"
        )]
        base_url: String,
        /// TCP + TLS connect bound in seconds [default: 10]
        #[arg(long = "client-connect-timeout-secs", env = "HOLYSHEEP_CLIENT_CONNECT_TIMEOUT_SECS", value_name = "SECONDS")]
        connect_timeout_secs: u64,
        /// Bound on the wait for the upstream's response headers, in seconds [default: 60]
        #[arg(long = "client-timeout-secs", env = "HOLYSHEEP_CLIENT_TIMEOUT_SECS", value_name = "SECONDS")]
        timeout_secs: u64,
        /// Bound on the gap between two reads of a response body, in seconds [default: 50]
        #[arg(long = "client-read-timeout-secs", env = "HOLYSHEEP_CLIENT_READ_TIMEOUT_SECS", value_name = "SECONDS")]
        read_timeout_secs: u64,
        /// How long an idle keep-alive connection is kept, in seconds [default: 120]
        #[arg(long = "client-pool-idle-timeout-secs", env = "HOLYSHEEP_CLIENT_POOL_IDLE_TIMEOUT_SECS", value_name = "SECONDS")]
        pool_idle_timeout_secs: u64,
    }
}

section! {
    /// `[pool]`: the bound on in-flight upstream calls.
    pub struct PoolSettings {
        /// Most upstream calls in flight at once (a stream counts until it ends) [default: 100]
        #[arg(long = "max-in-flight", env = "HOLYSHEEP_MAX_IN_FLIGHT", value_name = "N")]
        max_in_flight: usize,
        /// Most upstream calls in flight to one host; also the idle connections kept per host
        /// [default: 30]
        #[arg(long = "pool-per-host", env = "HOLYSHEEP_POOL_PER_HOST", value_name = "N")]
        per_host: usize,
        /// How long a request may wait for a slot before it is shed with 503, in ms
        /// [default: 5000]
        #[arg(long = "pool-queue-timeout-ms", env = "HOLYSHEEP_POOL_QUEUE_TIMEOUT_MS", value_name = "MS")]
        queue_timeout_ms: u64,
        /// How many requests may wait for a slot; more are shed at once [default: 1000]
        #[arg(long = "pool-queue-depth", env = "HOLYSHEEP_POOL_QUEUE_DEPTH", value_name = "N")]
        queue_depth: usize,
    }
}

section! {
    /// `[retry]`: retries of transient upstream failures.
    pub struct RetrySettings {
        /// Most retries per request [default: 3]
        #[arg(long = "max-retries", env = "HOLYSHEEP_MAX_RETRIES", value_name = "N")]
        max_retries: u32,
        /// First backoff ceiling in ms (full jitter below it) [default: 100]
        #[arg(long = "retry-base-ms", env = "HOLYSHEEP_RETRY_BASE_MS", value_name = "MS")]
        base_ms: u64,
        /// Largest backoff ceiling in ms [default: 5000]
        #[arg(long = "retry-cap-ms", env = "HOLYSHEEP_RETRY_CAP_MS", value_name = "MS")]
        cap_ms: u64,
        /// Bound on the whole call, retries and backoff included, in seconds [default: 60]
        #[arg(long = "retry-deadline-secs", env = "HOLYSHEEP_RETRY_DEADLINE_SECS", value_name = "SECONDS")]
        deadline_secs: u64,
        /// Retries allowed as a percentage of first attempts [default: 20]
        #[arg(long = "retry-budget-percent", env = "HOLYSHEEP_RETRY_BUDGET_PERCENT", value_name = "PERCENT")]
        budget_percent: u32,
    }
}

section! {
    /// `[cache]`: the response cache and its stores.
    pub struct CacheSettings {
        /// Cache entry lifetime in seconds [default: 3600]
        #[arg(long = "cache-ttl", env = "HOLYSHEEP_CACHE_TTL", value_name = "SECONDS")]
        ttl_secs: u64,
        /// Largest answer stored, in bytes; larger ones pass through [default: 1048576]
        #[arg(long = "cache-max-entry-bytes", env = "HOLYSHEEP_CACHE_MAX_ENTRY_BYTES", value_name = "BYTES")]
        max_entry_bytes: usize,
        /// Bound of the in-process cache in bytes (the front tier when Redis is used)
        /// [default: 268435456]
        #[arg(long = "cache-memory-max-bytes", env = "HOLYSHEEP_CACHE_MEMORY_MAX_BYTES", value_name = "BYTES")]
        memory_max_bytes: u64,
        /// Redis URL for a cache shared by every instance; repeat it or give a comma list for a
        /// Redis Cluster [default: none, in-memory cache]
        #[arg(long = "redis", env = "REDIS_URL", value_name = "URL", value_delimiter = ',')]
        redis: Vec<String>,
        /// Per-operation Redis bound in ms; slower answers count as misses [default: 50]
        #[arg(long = "cache-redis-timeout-ms", env = "HOLYSHEEP_CACHE_REDIS_TIMEOUT_MS", value_name = "MS")]
        redis_timeout_ms: u64,
        /// Longest an instance serves its memory copy of a Redis entry without asking Redis
        /// again, in seconds: the bound on how stale its answers are after another instance
        /// refreshed the entry (0: always ask Redis) [default: 10]
        #[arg(long = "cache-front-ttl-secs", env = "HOLYSHEEP_CACHE_FRONT_TTL_SECS", value_name = "SECONDS")]
        front_ttl_secs: u64,
        /// With Redis: one upstream call per prompt across every instance sharing it (a lease
        /// per key, answers and live streams passed on through Redis); no effect without Redis
        /// [default: true]
        #[arg(long = "fleet-coalescing", env = "HOLYSHEEP_FLEET_COALESCING", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        fleet_coalescing: bool,
        /// Longest a request waits for another instance's answer before it calls upstream
        /// itself, in seconds [default: 60, or client.timeout_secs when that is set]
        #[arg(long = "fleet-max-wait-secs", env = "HOLYSHEEP_FLEET_MAX_WAIT_SECS", value_name = "SECONDS")]
        fleet_max_wait_secs: u64,
        /// How cache keys are derived: canonical or python-compat [default: canonical]
        #[arg(long = "cache-key-scheme", env = "HOLYSHEEP_CACHE_KEY_SCHEME", value_name = "SCHEME")]
        key_scheme: KeyScheme,
    }
}

section! {
    /// `[semantic]`: the semantic cache (paraphrases answered from the cache, same context only).
    pub struct SemanticSettings {
        /// Answer paraphrases of stored questions for every request (a request may still send
        /// x-holysheep-semantic-cache: off) [default: false]
        #[arg(long = "semantic-cache", env = "HOLYSHEEP_SEMANTIC_CACHE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        enabled: bool,
        /// Tenants (client keys' namespaces) opted in even when the semantic cache is not on for
        /// all; a comma list [default: none]
        #[arg(long = "semantic-cache-tenants", env = "HOLYSHEEP_SEMANTIC_CACHE_TENANTS", value_name = "TENANTS", value_delimiter = ',')]
        tenants: Vec<String>,
        /// Cosine similarity a paraphrase needs [default: 0.95]
        #[arg(long = "semantic-threshold", env = "HOLYSHEEP_SEMANTIC_THRESHOLD", value_name = "COSINE")]
        threshold: f32,
        /// Embedding model asked at the upstream's /embeddings [default: text-embedding-3-small]
        #[arg(long = "semantic-embedding-model", env = "HOLYSHEEP_SEMANTIC_EMBEDDING_MODEL", value_name = "MODEL")]
        embedding_model: String,
        /// Embedding dimensions asked for [default: 1536]
        #[arg(long = "semantic-embedding-dimensions", env = "HOLYSHEEP_SEMANTIC_EMBEDDING_DIMENSIONS", value_name = "N")]
        embedding_dimensions: u32,
        /// Bound of one embedding call in ms; slower is a miss [default: 300]
        #[arg(long = "semantic-embedding-timeout-ms", env = "HOLYSHEEP_SEMANTIC_EMBEDDING_TIMEOUT_MS", value_name = "MS")]
        embedding_timeout_ms: u64,
        /// Bound of the in-process vector index in bytes [default: 268435456]
        #[arg(long = "semantic-index-max-bytes", env = "HOLYSHEEP_SEMANTIC_INDEX_MAX_BYTES", value_name = "BYTES")]
        index_max_bytes: usize,
    }
}

section! {
    /// `[metrics]`: what the metrics count and price.
    pub struct MetricsSettings {
        /// Price files laid over HolySheep's published prices, later ones winning: TOML, or
        /// JSON in this project's shape or LiteLLM's model_prices_and_context_window.json;
        /// repeat it or give a comma list [default: none]
        #[arg(long = "price-file", env = "HOLYSHEEP_PRICE_FILES", value_name = "FILE", value_delimiter = ',')]
        price_files: Vec<PathBuf>,
        /// Also emit the OpenTelemetry GenAI metric names (gen_ai.client.token.usage, …) at
        /// /metrics [default: false]
        #[arg(long = "genai-metrics", env = "HOLYSHEEP_GENAI_METRICS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        genai_metrics: bool,
        /// Distinct tenants with a label of their own on the cost metrics; more count as
        /// "other" [default: 64]
        #[arg(long = "metrics-max-tenants", env = "HOLYSHEEP_METRICS_MAX_TENANTS", value_name = "N")]
        max_tenants: usize,
    }
}

section! {
    /// `[quota]`: tenants with limits (see `crate::tenants` for the tenants file).
    pub struct QuotaSettings {
        /// Tenants files (TOML, `[[tenant]]` entries: name, keys, limits, models), read at start
        /// and again on SIGHUP; repeat it or give a comma list [default: none]
        #[arg(long = "tenant-file", env = "HOLYSHEEP_TENANT_FILES", value_name = "FILE", value_delimiter = ',')]
        tenant_files: Vec<PathBuf>,
        /// With Redis (cache.redis), the share of each tenant's limits, in percent, one
        /// instance enforces alone while Redis cannot be reached [default: 50]
        #[arg(long = "quota-fallback-percent", env = "HOLYSHEEP_QUOTA_FALLBACK_PERCENT", value_name = "PERCENT")]
        fallback_percent: u64,
        /// With Redis, how long a quota check waits for it before deciding locally, in ms
        /// [default: 50]
        #[arg(long = "quota-redis-timeout-ms", env = "HOLYSHEEP_QUOTA_REDIS_TIMEOUT_MS", value_name = "MS")]
        fleet_timeout_ms: u64,
        /// Completion tokens reserved for a request that sets no max_tokens, until its usage
        /// is known [default: 1024]
        #[arg(long = "quota-completion-reserve", env = "HOLYSHEEP_QUOTA_COMPLETION_RESERVE", value_name = "TOKENS")]
        completion_reserve: u64,
    }
}

section! {
    /// `[tracing]`: spans and their export.
    pub struct TracingSettings {
        /// Export spans over OTLP, configured by the standard OTEL_* environment variables
        /// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, …); needs the `otlp` cargo feature
        /// [default: false]
        #[arg(long = "otlp", env = "HOLYSHEEP_OTLP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        otlp: bool,
    }
}

section! {
    /// `[router]`: balancing and health of the `[[deployments]]` (see `src/deployments.rs`).
    pub struct RouterSettings {
        /// Failures in a row (connect errors, timeouts, 5xx, 429) that take a deployment out of
        /// rotation [default: 5]
        #[arg(long = "router-eject-after-failures", env = "HOLYSHEEP_ROUTER_EJECT_AFTER_FAILURES", value_name = "N")]
        eject_after_failures: u32,
        /// First cool-down of a deployment taken out, in ms; doubles on each failed trial
        /// request [default: 10000]
        #[arg(long = "router-ejection-ms", env = "HOLYSHEEP_ROUTER_EJECTION_MS", value_name = "MS")]
        ejection_ms: u64,
        /// For a stream, the longest wait for its first byte before the next deployment is
        /// tried, in ms (0: no bound) [default: 0]
        #[arg(long = "router-first-byte-timeout-ms", env = "HOLYSHEEP_ROUTER_FIRST_BYTE_TIMEOUT_MS", value_name = "MS")]
        first_byte_timeout_ms: u64,
        /// Cache answers a fallback model served under the key of the model asked for
        /// [default: false]
        #[arg(long = "cache-fallbacks", env = "HOLYSHEEP_CACHE_FALLBACKS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        cache_fallbacks: bool,
    }
}

/// Every setting, by TOML section. Flags and environment variables fill the same structure.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`.
    #[command(flatten, next_help_heading = "Server")]
    #[serde(default)]
    pub server: ServerSettings,
    /// `[client]`.
    #[command(flatten, next_help_heading = "Upstream client")]
    #[serde(default)]
    pub client: ClientSettings,
    /// `[pool]`.
    #[command(flatten, next_help_heading = "Pool limit")]
    #[serde(default)]
    pub pool: PoolSettings,
    /// `[retry]`.
    #[command(flatten, next_help_heading = "Retry")]
    #[serde(default)]
    pub retry: RetrySettings,
    /// `[cache]`.
    #[command(flatten, next_help_heading = "Cache")]
    #[serde(default)]
    pub cache: CacheSettings,
    /// `[semantic]`.
    #[command(flatten, next_help_heading = "Semantic cache")]
    #[serde(default)]
    pub semantic: SemanticSettings,
    /// `[metrics]`.
    #[command(flatten, next_help_heading = "Metrics")]
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `[quota]`.
    #[command(flatten, next_help_heading = "Quota")]
    #[serde(default)]
    pub quota: QuotaSettings,
    /// `[tracing]`.
    #[command(flatten, next_help_heading = "Tracing")]
    #[serde(default)]
    pub tracing: TracingSettings,
    /// `[router]`.
    #[command(flatten, next_help_heading = "Router")]
    #[serde(default)]
    pub router: RouterSettings,
    /// `[[deployments]]`: several upstreams (file only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<crate::deployments::DeploymentSettings>,
    /// `[fallbacks]`: model to the models tried after it (file only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fallbacks: std::collections::BTreeMap<String, Vec<String>>,
}

impl Settings {
    /// These settings, and `lower`'s where these are unset.
    pub fn or(self, lower: Self) -> Self {
        Self {
            server: self.server.or(lower.server),
            client: self.client.or(lower.client),
            pool: self.pool.or(lower.pool),
            retry: self.retry.or(lower.retry),
            cache: self.cache.or(lower.cache),
            semantic: self.semantic.or(lower.semantic),
            metrics: self.metrics.or(lower.metrics),
            quota: self.quota.or(lower.quota),
            tracing: self.tracing.or(lower.tracing),
            router: self.router.or(lower.router),
            deployments: match self.deployments.is_empty() {
                true => lower.deployments,
                false => self.deployments,
            },
            fallbacks: match self.fallbacks.is_empty() {
                true => lower.fallbacks,
                false => self.fallbacks,
            },
        }
    }

    /// Parses a TOML file's text; `origin` names the file in error messages, which also give
    /// the line of the offending key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| {
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            });
            let message = format!("{origin}: {}", e.message().trim_end());
            ConfigError(match line {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            })
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Every setting as TOML: what is set as a value, what is not as a comment with its
    /// default. Secrets are never part of the settings.
    pub fn to_toml(&self) -> String {
        let set: toml::Table = toml::Table::try_from(self).unwrap_or_default();
        let sections: [(&str, &[&str]); 10] = [
            ("server", ServerSettings::KEYS),
            ("client", ClientSettings::KEYS),
            ("pool", PoolSettings::KEYS),
            ("retry", RetrySettings::KEYS),
            ("cache", CacheSettings::KEYS),
            ("semantic", SemanticSettings::KEYS),
            ("metrics", MetricsSettings::KEYS),
            ("quota", QuotaSettings::KEYS),
            ("tracing", TracingSettings::KEYS),
            ("router", RouterSettings::KEYS),
        ];
        let mut out = String::new();
        for (section, keys) in sections {
            out.push_str(&format!("[{section}]\n"));
            let values = set.get(section).and_then(toml::Value::as_table);
            for key in keys {
                match values.and_then(|table| table.get(*key)) {
                    Some(value) => out.push_str(&format!("{key} = {value}\n")),
                    None => {
                        let default = default_of(&format!("{section}.{key}")).unwrap_or_default();
                        out.push_str(&format!("# {key}: default, {default}\n"));
                    }
                }
            }
            out.push('\n');
        }
        out.push_str(&crate::deployments::to_toml(self));
        out
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The command line of the `holysheep-gateway` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "holysheep-gateway",
    version,
    about = "An OpenAI-compatible gateway in front of HolySheep: cache, retry, pool limit, metrics.",
    after_help = "Precedence: flags > environment > --config FILE > defaults.\n\
                  The upstream key is read from HOLYSHEEP_API_KEY only, client keys from \
                  HOLYSHEEP_GATEWAY_KEYS only (secrets never go on a command line or in a file)."
)]
pub struct Cli {
    /// Every setting that has a flag.
    #[command(flatten)]
    pub settings: Settings,
    /// Start the built-in mock upstream in-process and point the gateway at it
    #[arg(long)]
    pub demo: bool,
    /// TOML configuration file
    #[arg(long, env = "HOLYSHEEP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration, print the settings in effect (as TOML) and exit
    #[arg(long)]
    pub check_config: bool,
}

impl Cli {
    /// The command line and environment of this process. An environment variable set to the
    /// empty string counts as unset, as shells and container files make them easily.
    pub fn from_process() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().mut_args(|arg| {
            let empty = arg
                .get_env()
                .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
            if empty { arg.env(None::<&str>) } else { arg }
        });
        let matches = command.get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// A secret string: its `Debug` never shows the value, so it cannot leak through a log of the
/// configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The configuration a gateway runs with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Every setting; unset ones keep their crate's default.
    pub settings: Settings,
    /// The upstream key (`HOLYSHEEP_API_KEY`).
    pub api_key: Option<Secret>,
    /// Client keys (`HOLYSHEEP_GATEWAY_KEYS`); none means loopback callers only.
    pub gateway_keys: Vec<Secret>,
    /// Start the in-process mock upstream and use it.
    pub demo: bool,
}

/// A configuration that cannot be used; the message names the setting and says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this message.
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

impl Config {
    /// A gateway in front of `base_url` with the upstream key `api_key`, listening on a free
    /// loopback port: what tests, benchmarks and in-process embeddings start from.
    pub fn in_process(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        let mut config = Self {
            api_key: Some(Secret::new(api_key)),
            ..Self::default()
        };
        config.settings.server.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.settings.client.base_url = Some(base_url.into());
        config
    }

    /// The configuration from the command line, its `--config` file and the secrets in the
    /// process environment, validated.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let file = cli.config.as_deref().map(Settings::load).transpose()?;
        let settings = match file {
            Some(file) => cli.settings.or(file),
            None => cli.settings,
        };
        let config = Self {
            settings,
            api_key: env_secret(API_KEY_ENV).map(Secret::new),
            gateway_keys: env_secret(GATEWAY_KEYS_ENV)
                .map(|keys| split_list(&keys).map(Secret::new).collect())
                .unwrap_or_default(),
            demo: cli.demo,
        };
        config.validate()?;
        Ok(config)
    }

    /// Where to listen.
    pub fn listen(&self) -> SocketAddr {
        self.settings.server.listen.unwrap_or(defaults::LISTEN)
    }

    /// The largest accepted request body.
    pub fn body_limit(&self) -> usize {
        self.settings
            .server
            .body_limit_bytes
            .unwrap_or(defaults::BODY_LIMIT_BYTES)
    }

    /// How long a shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        self.settings
            .server
            .shutdown_grace_secs
            .map_or(defaults::SHUTDOWN_GRACE, Duration::from_secs)
    }

    /// How long `/readyz` waits.
    pub fn ready_timeout(&self) -> Duration {
        self.settings
            .server
            .ready_timeout_ms
            .map_or(defaults::READY_TIMEOUT, Duration::from_millis)
    }

    /// How long a `/readyz` answer is reused.
    pub fn ready_cache(&self) -> Duration {
        self.settings
            .server
            .ready_cache_ms
            .map_or(defaults::READY_CACHE, Duration::from_millis)
    }

    /// Bound on a request head, from its first byte (and on a new connection's first request).
    pub fn header_read_timeout(&self) -> Duration {
        self.settings
            .server
            .header_read_timeout_ms
            .map_or(defaults::HEADER_READ_TIMEOUT, Duration::from_millis)
    }

    /// Bound on a whole request body, from the end of its head.
    pub fn body_read_timeout(&self) -> Duration {
        self.settings
            .server
            .body_read_timeout_ms
            .map_or(defaults::BODY_READ_TIMEOUT, Duration::from_millis)
    }

    /// How long a kept-alive connection may wait for its next request.
    pub fn keep_alive_timeout(&self) -> Duration {
        self.settings
            .server
            .keep_alive_timeout_ms
            .map_or(defaults::KEEP_ALIVE_TIMEOUT, Duration::from_millis)
    }

    /// The most open caller connections, as configured (see [`defaults::MAX_CONNECTIONS`] for
    /// what happens when it is left unset).
    pub fn max_connections(&self) -> usize {
        self.settings
            .server
            .max_connections
            .unwrap_or(defaults::MAX_CONNECTIONS)
    }

    /// The most concurrent streams on one HTTP/2 connection.
    pub fn h2_max_concurrent_streams(&self) -> u32 {
        self.settings
            .server
            .h2_max_concurrent_streams
            .unwrap_or(defaults::H2_MAX_CONCURRENT_STREAMS)
    }

    /// How long an unread request body is read and discarded after the answer.
    pub fn linger_timeout(&self) -> Duration {
        self.settings
            .server
            .linger_timeout_ms
            .map_or(defaults::LINGER_TIMEOUT, Duration::from_millis)
    }

    /// The log line format.
    pub fn log_format(&self) -> LogFormat {
        self.settings.server.log_format.unwrap_or_default()
    }

    /// Whether spans are exported over OTLP.
    pub fn otlp(&self) -> bool {
        self.settings.tracing.otlp.unwrap_or(defaults::OTLP)
    }

    /// Redis URLs: none = in-memory only, one = a node, more = a Redis Cluster.
    pub fn redis_urls(&self) -> Vec<String> {
        self.settings
            .cache
            .redis
            .as_deref()
            .unwrap_or_default()
            .iter()
            .flat_map(|url| split_list(url))
            .collect()
    }

    /// Rejects values that would make the gateway useless or unsafe, naming the setting: every
    /// number outside its range ([`range_of`]), and settings that contradict each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        // Every number, by key, from the settings' own serialised form: a setting added later
        // is checked without a line here (and a test fails until it has a range).
        let numbers = serde_json::to_value(s).map_err(|e| ConfigError(e.to_string()))?;
        let sections = numbers.as_object().into_iter().flatten();
        for (section, fields) in sections {
            for (field, value) in fields.as_object().into_iter().flatten() {
                let Some(value) = value.as_u64() else {
                    continue;
                };
                let key = format!("{section}.{field}");
                let Some(range) = range_of(&key) else {
                    return Err(ConfigError(format!("{key} has no accepted range")));
                };
                if !range.contains(&value) {
                    let flag = flag_of(&key);
                    let (low, high) = range.into_inner();
                    return Err(ConfigError(if value < low && low == 1 {
                        format!("{key} must be greater than 0 ({flag})")
                    } else {
                        format!("{key} must be between {low} and {high} ({flag}), not {value}")
                    }));
                }
            }
        }
        let millis = |value: Option<u64>, default: Duration| {
            value.unwrap_or(u64::try_from(default.as_millis()).unwrap_or(u64::MAX))
        };
        let base = millis(s.retry.base_ms, RetryLayer::DEFAULT_BACKOFF_BASE);
        let cap = millis(s.retry.cap_ms, RetryLayer::DEFAULT_BACKOFF_MAX);
        if base > cap {
            return Err(ConfigError(format!(
                "retry.base_ms ({base}) must not be larger than retry.cap_ms ({cap})"
            )));
        }
        if s.semantic.threshold.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            return Err(ConfigError(
                "semantic.threshold must be a cosine similarity above 0 and at most 1 \
                 (--semantic-threshold)"
                    .into(),
            ));
        }
        if !self.demo
            && let Some(url) = &s.client.base_url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return Err(ConfigError(
                "client.base_url (--upstream, HOLYSHEEP_BASE_URL) must start with http:// or \
                 https://"
                    .into(),
            ));
        }
        if s.tracing.otlp == Some(true) && !cfg!(feature = "otlp") {
            return Err(ConfigError(
                "tracing.otlp (--otlp, HOLYSHEEP_OTLP) needs a gateway built with the `otlp` \
                 cargo feature"
                    .into(),
            ));
        }
        crate::deployments::validate(s)?;
        let tenants =
            crate::tenants::Tenants::load_all(s.quota.tenant_files.as_deref().unwrap_or_default())
                .map_err(ConfigError)?;
        let listen = self.listen();
        if self.gateway_keys.is_empty() && !tenants.has_keys() && !listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to listen on {listen} without client keys: set {GATEWAY_KEYS_ENV} to a \
                 comma list of keys callers must send as `Authorization: Bearer <key>`, or \
                 listen on a loopback address such as {}",
                defaults::LISTEN
            )));
        }
        Ok(())
    }
}

/// The values a numeric setting accepts, by TOML key; `None` for a key that is not a number.
///
/// The lower bounds keep a zero out where it would break the gateway (a zero timeout cuts every
/// request) and let it in where it means "none" (no retries, no queue, no lingering, no grace).
/// The upper bounds only catch what can be no one's intent: a timeout of more than a day (an
/// hour for the caller-facing ones), a limit in the millions.
pub fn range_of(key: &str) -> Option<RangeInclusive<u64>> {
    const HOUR_MS: u64 = 3_600_000;
    const DAY_SECS: u64 = 86_400;
    const MILLION: u64 = 1_000_000;
    Some(match key {
        // Request bodies are held in memory whole.
        "server.body_limit_bytes" => 1..=1 << 30,
        "server.header_read_timeout_ms"
        | "server.body_read_timeout_ms"
        | "server.keep_alive_timeout_ms"
        | "server.ready_cache_ms" => 1..=HOUR_MS,
        "server.max_connections" => 1..=MILLION,
        "server.h2_max_concurrent_streams" => 1..=MILLION,
        "server.linger_timeout_ms" => 0..=HOUR_MS,
        "server.shutdown_grace_secs" => 0..=DAY_SECS,
        "server.ready_timeout_ms" => 1..=HOUR_MS,
        "client.connect_timeout_secs" => 1..=DAY_SECS,
        "client.timeout_secs" | "client.read_timeout_secs" | "client.pool_idle_timeout_secs" => {
            1..=DAY_SECS
        }
        "pool.max_in_flight" | "pool.per_host" => 1..=MILLION,
        "pool.queue_timeout_ms" => 0..=HOUR_MS,
        "pool.queue_depth" => 0..=100 * MILLION,
        "retry.max_retries" => 0..=100,
        "retry.base_ms" | "retry.cap_ms" => 1..=HOUR_MS,
        "retry.deadline_secs" => 1..=DAY_SECS,
        "retry.budget_percent" => 0..=1000,
        "cache.ttl_secs" => 1..=365 * DAY_SECS,
        // Redis' largest value is 512 MiB.
        "cache.max_entry_bytes" => 1..=512 << 20,
        "cache.memory_max_bytes" => 1..=1 << 40,
        "cache.redis_timeout_ms" => 1..=HOUR_MS,
        // 0 asks Redis on every hit.
        "cache.front_ttl_secs" => 0..=DAY_SECS,
        "cache.fleet_max_wait_secs" => 1..=DAY_SECS,
        "semantic.embedding_dimensions" => 1..=1 << 16,
        "semantic.embedding_timeout_ms" => 1..=HOUR_MS,
        "semantic.index_max_bytes" => 1..=1 << 40,
        "metrics.max_tenants" => 1..=MILLION,
        "router.eject_after_failures" => 1..=1000,
        "router.ejection_ms" => 1..=DAY_SECS * 1000,
        // 0: no bound.
        "router.first_byte_timeout_ms" => 0..=HOUR_MS,
        "quota.fallback_percent" => 0..=100,
        "quota.fleet_timeout_ms" => 1..=HOUR_MS,
        "quota.completion_reserve" => 0..=MILLION,
        _ => return None,
    })
}

/// The default of the setting at TOML key `section.field`, as the docs show it, read from the
/// crate that owns it; `None` for a key that is not a setting.
///
/// This is the one link from a setting to its default: the README table, the example TOML file
/// and `--help` are checked against it by the tests.
pub fn default_of(key: &str) -> Option<String> {
    use holysheep::cache::{CacheLayer, KeyScheme as Scheme, RedisStore, TieredStore};
    use holysheep::client::Builder as Client;
    use holysheep::pool_limit::PoolLimitLayer as Pool;
    use holysheep::retry::RetryLayer as Retry;
    use holysheep::semantic::SemanticCacheLayer as Semantic;

    let secs = |d: Duration| d.as_secs().to_string();
    let millis = |d: Duration| d.as_millis().to_string();
    Some(match key {
        "server.listen" => defaults::LISTEN.to_string(),
        "server.body_limit_bytes" => defaults::BODY_LIMIT_BYTES.to_string(),
        "server.shutdown_grace_secs" => secs(defaults::SHUTDOWN_GRACE),
        "server.ready_timeout_ms" => millis(defaults::READY_TIMEOUT),
        "server.ready_cache_ms" => millis(defaults::READY_CACHE),
        "server.header_read_timeout_ms" => millis(defaults::HEADER_READ_TIMEOUT),
        "server.body_read_timeout_ms" => millis(defaults::BODY_READ_TIMEOUT),
        "server.keep_alive_timeout_ms" => millis(defaults::KEEP_ALIVE_TIMEOUT),
        "server.max_connections" => defaults::MAX_CONNECTIONS.to_string(),
        "server.h2_max_concurrent_streams" => defaults::H2_MAX_CONCURRENT_STREAMS.to_string(),
        "server.linger_timeout_ms" => millis(defaults::LINGER_TIMEOUT),
        "server.log_format" => "text".to_owned(),
        "client.base_url" => holysheep_core::DEFAULT_BASE_URL.to_owned(),
        "client.connect_timeout_secs" => secs(Client::DEFAULT_CONNECT_TIMEOUT),
        "client.timeout_secs" => secs(Client::DEFAULT_TIMEOUT),
        "client.read_timeout_secs" => secs(Client::DEFAULT_READ_TIMEOUT),
        "client.pool_idle_timeout_secs" => secs(Client::DEFAULT_POOL_IDLE_TIMEOUT),
        "pool.max_in_flight" => Pool::DEFAULT_TOTAL.to_string(),
        "pool.per_host" => Pool::DEFAULT_PER_HOST.to_string(),
        "pool.queue_timeout_ms" => millis(Pool::DEFAULT_QUEUE_TIMEOUT),
        "pool.queue_depth" => Pool::DEFAULT_MAX_QUEUE.to_string(),
        "retry.max_retries" => Retry::DEFAULT_MAX_RETRIES.to_string(),
        "retry.base_ms" => millis(Retry::DEFAULT_BACKOFF_BASE),
        "retry.cap_ms" => millis(Retry::DEFAULT_BACKOFF_MAX),
        "retry.deadline_secs" => secs(Retry::DEFAULT_DEADLINE),
        "retry.budget_percent" => {
            ((Retry::DEFAULT_BUDGET_RATIO * 100.0).round() as u32).to_string()
        }
        "cache.ttl_secs" => secs(CacheLayer::DEFAULT_TTL),
        "cache.max_entry_bytes" => CacheLayer::DEFAULT_MAX_ENTRY_BYTES.to_string(),
        "cache.memory_max_bytes" => StackBuilder::DEFAULT_MEMORY_CACHE_BYTES.to_string(),
        "cache.redis" => "none".to_owned(),
        "cache.redis_timeout_ms" => millis(RedisStore::DEFAULT_TIMEOUT),
        "cache.front_ttl_secs" => secs(TieredStore::<(), ()>::DEFAULT_FRONT_TTL),
        "cache.fleet_coalescing" => "true".to_owned(),
        // The upstream timeout's default: a follower waits as long as its own call could take.
        "cache.fleet_max_wait_secs" => secs(Client::DEFAULT_TIMEOUT),
        "cache.key_scheme" => Scheme::default().to_string(),
        "semantic.enabled" => "false".to_owned(),
        "semantic.tenants" => "none".to_owned(),
        "semantic.threshold" => Semantic::DEFAULT_THRESHOLD.to_string(),
        "semantic.embedding_model" => Semantic::DEFAULT_EMBEDDING_MODEL.to_owned(),
        "semantic.embedding_dimensions" => Semantic::DEFAULT_EMBEDDING_DIMENSIONS.to_string(),
        "semantic.embedding_timeout_ms" => millis(Semantic::DEFAULT_EMBEDDING_TIMEOUT),
        "semantic.index_max_bytes" => Semantic::DEFAULT_MAX_BYTES.to_string(),
        "metrics.price_files" => "none".to_owned(),
        "metrics.genai_metrics" => {
            holysheep::metrics::MetricsLayer::DEFAULT_GENAI_METRICS.to_string()
        }
        "metrics.max_tenants" => holysheep::metrics::MetricsLayer::DEFAULT_MAX_TENANTS.to_string(),
        "quota.tenant_files" => "none".to_owned(),
        "quota.fallback_percent" => ((holysheep::quota::RedisQuota::DEFAULT_FALLBACK_SHARE * 100.0)
            .round() as u32)
            .to_string(),
        "quota.fleet_timeout_ms" => millis(holysheep::quota::RedisQuota::DEFAULT_TIMEOUT),
        "quota.completion_reserve" => {
            holysheep::quota::QuotaLayer::DEFAULT_COMPLETION_RESERVE.to_string()
        }
        "tracing.otlp" => defaults::OTLP.to_string(),
        "router.eject_after_failures" => {
            holysheep::router::HealthConfig::DEFAULT_CONSECUTIVE_FAILURES.to_string()
        }
        "router.ejection_ms" => millis(holysheep::router::HealthConfig::DEFAULT_BASE_EJECTION),
        "router.first_byte_timeout_ms" => "0".to_owned(),
        "router.cache_fallbacks" => "false".to_owned(),
        _ => return None,
    })
}

/// The flag of the setting at TOML key `key`, for error messages.
fn flag_of(key: &str) -> String {
    use clap::CommandFactory;
    let field = key.rsplit('.').next().unwrap_or(key);
    let command = Cli::command();
    command
        .get_arguments()
        .find(|arg| arg.get_id().as_str() == field)
        .and_then(|arg| arg.get_long())
        .map_or_else(|| "no flag".to_owned(), |long| format!("--{long}"))
}

/// An environment variable; empty counts as unset, as shells make empty variables easily.
fn env_secret(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The trimmed, non-empty items of a comma list.
fn split_list(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Flags only: the environment of the test process is ignored, so a `REDIS_URL` set for
    /// the Redis tests cannot leak in.
    fn flags(args: &[&str]) -> Cli {
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("gateway").chain(args.iter().copied()))
            .expect("valid flags");
        Cli::from_arg_matches(&matches).expect("flags map onto the settings")
    }

    fn file(text: &str) -> Settings {
        Settings::from_toml(text, "test.toml").expect("valid TOML")
    }

    #[test]
    fn nothing_set_means_every_default() {
        let cli = flags(&[]);
        assert_eq!(cli.settings, Settings::default());
        let config = Config::default();
        assert_eq!(config.listen(), defaults::LISTEN);
        assert_eq!(config.body_limit(), 4 << 20);
        assert_eq!(config.log_format(), LogFormat::Text);
        assert!(config.redis_urls().is_empty());
    }

    #[test]
    fn flags_beat_the_file() {
        let toml = file(
            r#"
            [server]
            listen = "127.0.0.1:7001"
            log_format = "json"
            [client]
            base_url = "http://127.0.0.1:9001/v1"
            [cache]
            ttl_secs = 10
            redis = ["redis://127.0.0.1:6001"]
            [pool]
            max_in_flight = 7
            [retry]
            max_retries = 1
            "#,
        );
        let merged = flags(&[]).settings.or(toml.clone());
        assert_eq!(merged, toml);

        let cli = flags(&[
            "--listen",
            "127.0.0.1:7003",
            "--upstream",
            "http://127.0.0.1:9003/v1",
            "--cache-ttl",
            "30",
            "--redis",
            "redis://127.0.0.1:6003",
            "--log-format",
            "text",
            "--max-retries",
            "0",
        ]);
        let s = cli.settings.or(toml);
        assert_eq!(s.server.listen, Some("127.0.0.1:7003".parse().unwrap()));
        assert_eq!(
            s.client.base_url.as_deref(),
            Some("http://127.0.0.1:9003/v1")
        );
        assert_eq!(s.cache.ttl_secs, Some(30));
        assert_eq!(
            s.cache.redis.as_deref(),
            Some(&["redis://127.0.0.1:6003".to_owned()][..])
        );
        assert_eq!(s.server.log_format, Some(LogFormat::Text));
        assert_eq!(s.retry.max_retries, Some(0));
        // What the flags did not set comes from the file.
        assert_eq!(s.pool.max_in_flight, Some(7));
    }

    #[test]
    fn redis_lists_from_repeats_and_commas() {
        let cli = flags(&[
            "--redis",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            "--redis",
            "redis://127.0.0.1:7002",
        ]);
        let config = Config {
            settings: cli.settings,
            ..Config::default()
        };
        assert_eq!(config.redis_urls().len(), 3);
        let config = Config {
            settings: file("[cache]\nredis = [' redis://a:1 , ,redis://b:2 ']\n"),
            ..Config::default()
        };
        assert_eq!(config.redis_urls(), ["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn secrets_never_print() {
        let config = Config {
            api_key: Some(Secret::new("sk-upstream-secret")),
            gateway_keys: vec![Secret::new("key-one")],
            ..Config::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-upstream-secret"), "{printed}");
        assert!(!printed.contains("key-one"), "{printed}");
    }

    #[test]
    fn unknown_file_keys_are_named_with_their_line() {
        let err = Settings::from_toml("[pool]\nmax_inflight = 3\n", "gw.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_inflight"), "{msg}");
        assert!(msg.contains("gw.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        let err = Settings::from_toml("[caches]\nttl_secs = 3\n", "gw.toml").unwrap_err();
        assert!(err.to_string().contains("caches"), "{err}");
    }

    #[test]
    fn zeros_are_refused_by_name() {
        for (toml, key) in [
            (
                "[client]\nread_timeout_secs = 0\n",
                "client.read_timeout_secs",
            ),
            ("[pool]\nmax_in_flight = 0\n", "pool.max_in_flight"),
            ("[cache]\nredis_timeout_ms = 0\n", "cache.redis_timeout_ms"),
        ] {
            let config = Config {
                settings: file(toml),
                ..Config::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            assert!(err.contains("--"), "names the flag too: {err}");
        }
    }

    #[test]
    fn every_number_is_refused_outside_its_range_by_name() {
        // The example file sets every setting: each number in it must have a range, and a
        // value past either end of it must stop the start with the key and the flag.
        let text = include_str!("../gateway.example.toml");
        let example = Settings::from_toml(text, "gateway.example.toml").unwrap();
        let example = serde_json::to_value(example).unwrap();
        let config_with = |section: &str, field: &str, value: u64| {
            let mut settings = example.clone();
            settings[section][field] = value.into();
            Config {
                settings: serde_json::from_value(settings).expect("the value fits the field"),
                ..Config::default()
            }
        };
        let mut numbers = 0;
        for (section, fields) in example.as_object().unwrap() {
            for (field, value) in fields.as_object().unwrap() {
                if !value.is_u64() {
                    continue;
                }
                numbers += 1;
                let key = format!("{section}.{field}");
                let range = range_of(&key).unwrap_or_else(|| panic!("{key} has no range"));
                let mut outside = vec![range.end() + 1];
                if *range.start() > 0 {
                    outside.push(range.start() - 1);
                }
                for value in outside {
                    let err = config_with(section, field, value).validate().unwrap_err();
                    let err = err.to_string();
                    assert!(err.starts_with(&key), "{key} = {value}: {err}");
                    assert!(err.contains("(--"), "names the flag: {err}");
                }
                // Both ends are in range (other rules, such as the backoff base not above its
                // cap, may still refuse them).
                for value in [*range.start(), *range.end()] {
                    if let Err(err) = config_with(section, field, value).validate() {
                        let err = err.to_string();
                        let out_of_range = err.contains("must be between")
                            || err.contains("must be greater than 0");
                        assert!(!out_of_range, "{key} = {value}: {err}");
                    }
                }
            }
        }
        assert!(numbers >= 27, "{numbers} numeric settings");
    }

    #[test]
    fn backoff_base_above_its_cap_is_refused_with_defaults_counted() {
        let config = Config {
            settings: file("[retry]\nbase_ms = 9000\n"),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("retry.base_ms") && err.contains("5000"),
            "{err}"
        );
    }

    #[test]
    fn public_address_needs_client_keys() {
        let settings = flags(&["--listen", "0.0.0.0:8080"]).settings;
        let config = Config {
            settings: settings.clone(),
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains(GATEWAY_KEYS_ENV), "{err}");
        let config = Config {
            settings,
            gateway_keys: vec![Secret::new("k1")],
            ..Config::default()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_example_file_parses_and_is_valid() {
        let text = include_str!("../gateway.example.toml");
        let settings = Settings::from_toml(text, "gateway.example.toml").unwrap();
        let config = Config {
            settings,
            ..Config::default()
        };
        config.validate().unwrap();
    }
}
