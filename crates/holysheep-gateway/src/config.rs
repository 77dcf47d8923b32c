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
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use holysheep::StackBuilder;
use holysheep::cache::KeyScheme;

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
        /// On SIGTERM/SIGINT, how long in-flight requests and streams may finish [default: 30]
        #[arg(long = "shutdown-grace-secs", env = "HOLYSHEEP_SHUTDOWN_GRACE_SECS", value_name = "SECONDS")]
        shutdown_grace_secs: u64,
        /// How long GET /readyz waits for the upstream (and Redis) [default: 2000]
        #[arg(long = "ready-timeout-ms", env = "HOLYSHEEP_READY_TIMEOUT_MS", value_name = "MS")]
        ready_timeout_ms: u64,
        /// Log lines as text or one JSON object per line [default: text]
        #[arg(long = "log-format", env = "HOLYSHEEP_LOG_FORMAT", value_enum, value_name = "FORMAT")]
        log_format: LogFormat,
    }
}

section! {
    /// `[client]`: the pooled upstream client.
    pub struct ClientSettings {
        /// Upstream base URL [default: https://api.holysheep.ai/v1]
        #[arg(long = "upstream", env = "HOLYSHEEP_BASE_URL", value_name = "URL")]
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
        /// How cache keys are derived: canonical or python-compat [default: canonical]
        #[arg(long = "cache-key-scheme", env = "HOLYSHEEP_CACHE_KEY_SCHEME", value_name = "SCHEME")]
        key_scheme: KeyScheme,
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
        let sections: [(&str, &[&str]); 5] = [
            ("server", ServerSettings::KEYS),
            ("client", ClientSettings::KEYS),
            ("pool", PoolSettings::KEYS),
            ("retry", RetrySettings::KEYS),
            ("cache", CacheSettings::KEYS),
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

    /// The log line format.
    pub fn log_format(&self) -> LogFormat {
        self.settings.server.log_format.unwrap_or_default()
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

    /// Rejects values that would make the gateway useless or unsafe, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        let zero = |value: Option<u64>| value == Some(0);
        let zero_usize = |value: Option<usize>| value == Some(0);
        let must_be_positive = [
            (
                "server.body_limit_bytes",
                zero_usize(s.server.body_limit_bytes),
            ),
            ("server.ready_timeout_ms", zero(s.server.ready_timeout_ms)),
            (
                "client.connect_timeout_secs",
                zero(s.client.connect_timeout_secs),
            ),
            ("client.timeout_secs", zero(s.client.timeout_secs)),
            ("client.read_timeout_secs", zero(s.client.read_timeout_secs)),
            ("pool.max_in_flight", zero_usize(s.pool.max_in_flight)),
            ("pool.per_host", zero_usize(s.pool.per_host)),
            ("retry.deadline_secs", zero(s.retry.deadline_secs)),
            ("cache.max_entry_bytes", zero_usize(s.cache.max_entry_bytes)),
            ("cache.memory_max_bytes", zero(s.cache.memory_max_bytes)),
            ("cache.redis_timeout_ms", zero(s.cache.redis_timeout_ms)),
        ];
        if let Some((name, _)) = must_be_positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError(format!(
                "{name} must be greater than 0 ({})",
                flag_of(name)
            )));
        }
        if s.retry.budget_percent.is_some_and(|p| p > 1000) {
            return Err(ConfigError(
                "retry.budget_percent must be at most 1000 (--retry-budget-percent)".into(),
            ));
        }
        if let (Some(base), Some(cap)) = (s.retry.base_ms, s.retry.cap_ms)
            && base > cap
        {
            return Err(ConfigError(
                "retry.base_ms must not be larger than retry.cap_ms".into(),
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
        let listen = self.listen();
        if self.gateway_keys.is_empty() && !listen.ip().is_loopback() {
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

    let secs = |d: Duration| d.as_secs().to_string();
    let millis = |d: Duration| d.as_millis().to_string();
    Some(match key {
        "server.listen" => defaults::LISTEN.to_string(),
        "server.body_limit_bytes" => defaults::BODY_LIMIT_BYTES.to_string(),
        "server.shutdown_grace_secs" => secs(defaults::SHUTDOWN_GRACE),
        "server.ready_timeout_ms" => millis(defaults::READY_TIMEOUT),
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
        "cache.key_scheme" => Scheme::default().to_string(),
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
