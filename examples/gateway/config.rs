//! The gateway's configuration: command-line flags, environment, an optional TOML file, defaults.
//!
//! Precedence is flags > environment > `--config FILE` > defaults. [`resolve`] is a pure function
//! over the three sources so tests never touch the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use holysheep::cache::KeyScheme;
use serde::Deserialize;

/// Where the gateway listens unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The upstream unless told otherwise.
pub(crate) const DEFAULT_UPSTREAM: &str = "https://api.holysheep.ai/v1";

/// The environment variables the gateway reads; nothing else of the environment is looked at.
pub(crate) const ENV_VARS: &[&str] = &[
    "HOLYSHEEP_LISTEN",
    "HOLYSHEEP_BASE_URL",
    "HOLYSHEEP_API_KEY",
    "REDIS_URL",
    "HOLYSHEEP_CACHE_TTL",
    "HOLYSHEEP_CACHE_KEY_SCHEME",
    "HOLYSHEEP_GATEWAY_KEYS",
    "HOLYSHEEP_CONFIG",
    "HOLYSHEEP_LOG_FORMAT",
];

/// Command-line flags. Every flag is optional so "not given" can fall through to the
/// environment, the file and the defaults.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "holysheep-gateway",
    version,
    about = "An OpenAI-compatible gateway in front of HolySheep: cache, retry, pool limit, metrics.",
    after_help = "Precedence: flags > environment > --config FILE > defaults.\n\
                  The upstream key is read from HOLYSHEEP_API_KEY only, client keys from \
                  HOLYSHEEP_GATEWAY_KEYS only (secrets never go on a command line)."
)]
pub(crate) struct Flags {
    /// Address to listen on [env: HOLYSHEEP_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Upstream base URL [env: HOLYSHEEP_BASE_URL] [default: https://api.holysheep.ai/v1]
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,
    /// Redis URL for the shared cache; repeat it or give a comma list for a Redis Cluster
    /// [env: REDIS_URL] [default: none, in-memory cache]
    #[arg(long = "redis", value_name = "URL", value_delimiter = ',')]
    pub(crate) redis: Vec<String>,
    /// Cache entry lifetime in seconds [env: HOLYSHEEP_CACHE_TTL] [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub(crate) cache_ttl: Option<u64>,
    /// Cache key derivation: canonical or python-compat [env: HOLYSHEEP_CACHE_KEY_SCHEME]
    /// [default: canonical]
    #[arg(long, value_name = "SCHEME", value_parser = clap::value_parser!(KeyScheme))]
    pub(crate) cache_key_scheme: Option<KeyScheme>,
    /// Start the built-in mock upstream in-process and point the gateway at it
    #[arg(long)]
    pub(crate) demo: bool,
    /// TOML configuration file [env: HOLYSHEEP_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log one JSON object per line instead of text [env: HOLYSHEEP_LOG_FORMAT=json]
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Most upstream calls in flight at once; pool.per_host (default 30) caps calls to the one
    /// upstream host as well [file: pool.max_in_flight] [default: 100]
    #[arg(long, value_name = "N")]
    pub(crate) max_in_flight: Option<usize>,
    /// Most retries per request [file: retry.max_retries] [default: 3]
    #[arg(long, value_name = "N")]
    pub(crate) max_retries: Option<u32>,
    /// Largest accepted request body in bytes [file: server.body_limit_bytes] [default: 4194304]
    #[arg(long, value_name = "BYTES")]
    pub(crate) body_limit_bytes: Option<usize>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret string: its `Debug` never shows the value, so it cannot leak through a log of the
/// configuration.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The TOML file. Unknown keys are an error that names the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    client: ClientFile,
    #[serde(default)]
    pool: PoolFile,
    #[serde(default)]
    retry: RetryFile,
    #[serde(default)]
    cache: CacheFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<SocketAddr>,
    body_limit_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    ready_timeout_ms: Option<u64>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    base_url: Option<String>,
    connect_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
    read_timeout_secs: Option<u64>,
    pool_idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    max_in_flight: Option<usize>,
    per_host: Option<usize>,
    queue_timeout_ms: Option<u64>,
    queue_depth: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFile {
    max_retries: Option<u32>,
    base_ms: Option<u64>,
    cap_ms: Option<u64>,
    deadline_secs: Option<u64>,
    budget_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    ttl_secs: Option<u64>,
    max_entry_bytes: Option<usize>,
    memory_max_bytes: Option<u64>,
    redis: Option<Vec<String>>,
    redis_timeout_ms: Option<u64>,
    key_scheme: Option<KeyScheme>,
}

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// The upstream base URL; the gateway's `/v1/...` paths are joined onto it without `/v1`.
    pub(crate) upstream: String,
    /// The upstream key (`HOLYSHEEP_API_KEY`).
    pub(crate) api_key: Option<Secret>,
    /// Client keys (`HOLYSHEEP_GATEWAY_KEYS`); empty means loopback callers only.
    pub(crate) gateway_keys: Vec<Secret>,
    /// Start the in-process mock upstream and use it.
    pub(crate) demo: bool,
    /// Log line format.
    pub(crate) log_format: LogFormat,
    /// Server knobs.
    pub(crate) server: ServerSettings,
    /// Upstream client knobs.
    pub(crate) client: ClientSettings,
    /// Pool-limit knobs.
    pub(crate) pool: PoolSettings,
    /// Retry knobs.
    pub(crate) retry: RetrySettings,
    /// Cache knobs.
    pub(crate) cache: CacheSettings,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerSettings {
    /// Largest accepted request body; larger ones get 413.
    pub(crate) body_limit_bytes: usize,
    /// How long a shutdown waits for in-flight requests and streams.
    pub(crate) shutdown_grace: Duration,
    /// How long `/readyz` waits for the upstream (and Redis) to answer.
    pub(crate) ready_timeout: Duration,
}

/// `[client]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientSettings {
    /// TCP + TLS connect bound.
    pub(crate) connect_timeout: Duration,
    /// Bound on the wait for response headers.
    pub(crate) timeout: Duration,
    /// Bound on the gap between two body reads (a stalled stream).
    pub(crate) read_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub(crate) pool_idle_timeout: Duration,
}

/// `[pool]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolSettings {
    /// Most upstream calls in flight at once.
    pub(crate) max_in_flight: usize,
    /// Most upstream calls in flight to one host, and idle connections kept per host.
    pub(crate) per_host: usize,
    /// How long a request may wait for a slot before it is shed with 503.
    pub(crate) queue_timeout: Duration,
    /// How many requests may wait for a slot before new ones are shed at once.
    pub(crate) queue_depth: usize,
}

/// `[retry]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetrySettings {
    /// Most retries per request (attempts = retries + 1).
    pub(crate) max_retries: u32,
    /// First backoff.
    pub(crate) base: Duration,
    /// Largest backoff.
    pub(crate) cap: Duration,
    /// Bound on the whole call, retries included.
    pub(crate) deadline: Duration,
    /// Retries allowed as a percentage of first attempts.
    pub(crate) budget_percent: u32,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CacheSettings {
    /// Entry lifetime.
    pub(crate) ttl: Duration,
    /// Largest answer that is stored.
    pub(crate) max_entry_bytes: usize,
    /// Bound of the in-process cache.
    pub(crate) memory_max_bytes: u64,
    /// Redis URLs: none = in-memory only, one = a node, more = a Redis Cluster.
    pub(crate) redis: Vec<String>,
    /// Per-operation Redis bound; slower answers count as misses.
    pub(crate) redis_timeout: Duration,
    /// Key derivation.
    pub(crate) key_scheme: KeyScheme,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            upstream: DEFAULT_UPSTREAM.to_owned(),
            api_key: None,
            gateway_keys: Vec::new(),
            demo: false,
            log_format: LogFormat::Text,
            server: ServerSettings {
                body_limit_bytes: 4 * 1024 * 1024,
                shutdown_grace: Duration::from_secs(30),
                ready_timeout: Duration::from_secs(2),
            },
            client: ClientSettings {
                connect_timeout: Duration::from_secs(10),
                timeout: Duration::from_secs(60),
                read_timeout: Duration::from_secs(50),
                pool_idle_timeout: Duration::from_secs(120),
            },
            pool: PoolSettings {
                max_in_flight: 100,
                per_host: 30,
                queue_timeout: Duration::from_secs(5),
                queue_depth: 1000,
            },
            retry: RetrySettings {
                max_retries: 3,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                deadline: Duration::from_secs(60),
                budget_percent: 20,
            },
            cache: CacheSettings {
                ttl: Duration::from_secs(3600),
                max_entry_bytes: 1024 * 1024,
                memory_max_bytes: 256 * 1024 * 1024,
                redis: Vec::new(),
                redis_timeout: Duration::from_millis(50),
                key_scheme: KeyScheme::Canonical,
            },
        }
    }
}

/// A configuration that cannot be used; the message says which setting and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError(String);

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    /// Parses TOML text; `origin` names the file in error messages.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::new(format!("{origin}: {}", e.message().trim_end()))
                .with_span(e.span(), text)
        })
    }

    /// Reads and parses a TOML file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

impl ConfigError {
    /// Adds the line of the offending key, which the TOML message alone does not say.
    fn with_span(self, span: Option<std::ops::Range<usize>>, text: &str) -> Self {
        match span {
            Some(span) => {
                let line = text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1;
                Self(format!("{} (line {line})", self.0))
            }
            None => self,
        }
    }
}

/// The config file to read: `--config` wins over `HOLYSHEEP_CONFIG`.
pub(crate) fn config_path(flags: &Flags, env: &HashMap<String, String>) -> Option<PathBuf> {
    flags
        .config
        .clone()
        .or_else(|| env_value(env, "HOLYSHEEP_CONFIG").map(PathBuf::from))
}

/// The environment variables in [`ENV_VARS`], read from the process.
pub(crate) fn process_env() -> HashMap<String, String> {
    ENV_VARS
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect()
}

/// An environment variable; empty counts as unset, as shells make empty variables easily.
fn env_value<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn env_parse<T>(env: &HashMap<String, String>, name: &str) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    env_value(env, name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| ConfigError::new(format!("{name}={v:?} is not valid: {e}")))
        })
        .transpose()
}

/// Splits comma lists, trims, drops empty items.
fn split_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    items
        .into_iter()
        .flat_map(|item| item.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Merges flags, environment and file over the defaults: flags > env > file > defaults.
pub(crate) fn resolve(
    flags: &Flags,
    env: &HashMap<String, String>,
    file: Option<&FileConfig>,
) -> Result<Config, ConfigError> {
    let empty = FileConfig::default();
    let file = file.unwrap_or(&empty);
    let mut config = Config::default();

    if let Some(listen) = flags
        .listen
        .or(env_parse(env, "HOLYSHEEP_LISTEN")?)
        .or(file.server.listen)
    {
        config.listen = listen;
    }
    if let Some(upstream) = flags
        .upstream
        .clone()
        .or_else(|| env_value(env, "HOLYSHEEP_BASE_URL").map(str::to_owned))
        .or_else(|| file.client.base_url.clone())
    {
        config.upstream = upstream;
    }
    config.api_key = env_value(env, "HOLYSHEEP_API_KEY").map(Secret::new);
    config.gateway_keys = env_value(env, "HOLYSHEEP_GATEWAY_KEYS")
        .map(|keys| split_list([keys]).into_iter().map(Secret::new).collect())
        .unwrap_or_default();
    config.demo = flags.demo;

    let env_log_format = match env_value(env, "HOLYSHEEP_LOG_FORMAT") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
        Some(v) if v.eq_ignore_ascii_case("text") => Some(LogFormat::Text),
        Some(v) => {
            return Err(ConfigError::new(format!(
                "HOLYSHEEP_LOG_FORMAT={v:?} is not valid: expected text or json"
            )));
        }
    };
    config.log_format = if flags.log_json {
        LogFormat::Json
    } else {
        env_log_format
            .or(file.server.log_format)
            .unwrap_or(config.log_format)
    };

    let server = &file.server;
    let s = &mut config.server;
    s.body_limit_bytes = flags
        .body_limit_bytes
        .or(server.body_limit_bytes)
        .unwrap_or(s.body_limit_bytes);
    set_secs(&mut s.shutdown_grace, server.shutdown_grace_secs);
    set_millis(&mut s.ready_timeout, server.ready_timeout_ms);

    let client = &file.client;
    let c = &mut config.client;
    set_secs(&mut c.connect_timeout, client.connect_timeout_secs);
    set_secs(&mut c.timeout, client.timeout_secs);
    set_secs(&mut c.read_timeout, client.read_timeout_secs);
    set_secs(&mut c.pool_idle_timeout, client.pool_idle_timeout_secs);

    let pool = &file.pool;
    let p = &mut config.pool;
    p.max_in_flight = flags
        .max_in_flight
        .or(pool.max_in_flight)
        .unwrap_or(p.max_in_flight);
    p.per_host = pool.per_host.unwrap_or(p.per_host);
    set_millis(&mut p.queue_timeout, pool.queue_timeout_ms);
    p.queue_depth = pool.queue_depth.unwrap_or(p.queue_depth);

    let retry = &file.retry;
    let r = &mut config.retry;
    r.max_retries = flags
        .max_retries
        .or(retry.max_retries)
        .unwrap_or(r.max_retries);
    set_millis(&mut r.base, retry.base_ms);
    set_millis(&mut r.cap, retry.cap_ms);
    set_secs(&mut r.deadline, retry.deadline_secs);
    r.budget_percent = retry.budget_percent.unwrap_or(r.budget_percent);

    let cache = &file.cache;
    let k = &mut config.cache;
    if let Some(ttl) = flags
        .cache_ttl
        .or(env_parse(env, "HOLYSHEEP_CACHE_TTL")?)
        .or(cache.ttl_secs)
    {
        k.ttl = Duration::from_secs(ttl);
    }
    k.max_entry_bytes = cache.max_entry_bytes.unwrap_or(k.max_entry_bytes);
    k.memory_max_bytes = cache.memory_max_bytes.unwrap_or(k.memory_max_bytes);
    k.redis = if !flags.redis.is_empty() {
        split_list(flags.redis.iter().map(String::as_str))
    } else if let Some(urls) = env_value(env, "REDIS_URL") {
        split_list([urls])
    } else {
        split_list(cache.redis.iter().flatten().map(String::as_str))
    };
    set_millis(&mut k.redis_timeout, cache.redis_timeout_ms);
    let env_scheme = match env_value(env, "HOLYSHEEP_CACHE_KEY_SCHEME") {
        None => None,
        Some(v) => Some(v.parse::<KeyScheme>().map_err(|e| {
            ConfigError::new(format!(
                "HOLYSHEEP_CACHE_KEY_SCHEME={v:?} is not valid: {e}"
            ))
        })?),
    };
    k.key_scheme = flags
        .cache_key_scheme
        .or(env_scheme)
        .or(cache.key_scheme)
        .unwrap_or(k.key_scheme);

    config.validate()?;
    Ok(config)
}

fn set_secs(target: &mut Duration, secs: Option<u64>) {
    if let Some(secs) = secs {
        *target = Duration::from_secs(secs);
    }
}

fn set_millis(target: &mut Duration, millis: Option<u64>) {
    if let Some(millis) = millis {
        *target = Duration::from_millis(millis);
    }
}

impl Config {
    /// Rejects values that would make the gateway useless or unsafe.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.body_limit_bytes", self.server.body_limit_bytes == 0),
            ("pool.max_in_flight", self.pool.max_in_flight == 0),
            ("client.timeout_secs", self.client.timeout.is_zero()),
            (
                "client.connect_timeout_secs",
                self.client.connect_timeout.is_zero(),
            ),
            ("retry.deadline_secs", self.retry.deadline.is_zero()),
            (
                "server.ready_timeout_ms",
                self.server.ready_timeout.is_zero(),
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::new(format!("{name} must be greater than 0")));
        }
        if self.retry.budget_percent > 1000 {
            return Err(ConfigError::new(
                "retry.budget_percent must be at most 1000",
            ));
        }
        if self.retry.base > self.retry.cap {
            return Err(ConfigError::new(
                "retry.base_ms must not be larger than retry.cap_ms",
            ));
        }
        if !self.demo
            && !self.upstream.starts_with("http://")
            && !self.upstream.starts_with("https://")
        {
            return Err(ConfigError::new(
                "the upstream URL (--upstream, HOLYSHEEP_BASE_URL, client.base_url) must start \
                 with http:// or https://",
            ));
        }
        if self.gateway_keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::new(format!(
                "refusing to listen on {} without client keys: set HOLYSHEEP_GATEWAY_KEYS to a \
                 comma list of keys callers must send as `Authorization: Bearer <key>`, or \
                 listen on a loopback address such as {DEFAULT_LISTEN}",
                self.listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, "test.toml").expect("valid TOML")
    }

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn defaults_without_any_source() {
        let config = resolve(&Flags::default(), &env(&[]), None).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.upstream, DEFAULT_UPSTREAM);
        assert_eq!(config.cache.ttl, Duration::from_secs(3600));
        assert_eq!(config.cache.key_scheme, KeyScheme::Canonical);
        assert!(config.cache.redis.is_empty());
        assert_eq!(config.server.body_limit_bytes, 4_194_304);
        assert_eq!(config.pool.max_in_flight, 100);
        assert_eq!(config.pool.per_host, 30);
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.client.read_timeout, Duration::from_secs(50));
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(config.api_key.is_none() && config.gateway_keys.is_empty());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let toml = file(
            r#"
            [server]
            listen = "127.0.0.1:7001"
            log_format = "json"
            [client]
            base_url = "http://127.0.0.1:9001/v1"
            [cache]
            ttl_secs = 10
            key_scheme = "python-compat"
            redis = ["redis://127.0.0.1:6001"]
            [pool]
            max_in_flight = 7
            [retry]
            max_retries = 1
            "#,
        );
        let all_env = env(&[
            ("HOLYSHEEP_LISTEN", "127.0.0.1:7002"),
            ("HOLYSHEEP_BASE_URL", "http://127.0.0.1:9002/v1"),
            ("HOLYSHEEP_CACHE_TTL", "20"),
            ("HOLYSHEEP_CACHE_KEY_SCHEME", "canonical"),
            ("REDIS_URL", "redis://127.0.0.1:6002"),
            ("HOLYSHEEP_LOG_FORMAT", "text"),
        ]);

        // file over defaults
        let c = resolve(&Flags::default(), &env(&[]), Some(&toml)).unwrap();
        assert_eq!(c.listen.port(), 7001);
        assert_eq!(c.upstream, "http://127.0.0.1:9001/v1");
        assert_eq!(c.cache.ttl, Duration::from_secs(10));
        assert_eq!(c.cache.key_scheme, KeyScheme::PythonCompat);
        assert_eq!(c.cache.redis, ["redis://127.0.0.1:6001"]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.pool.max_in_flight, 7);
        assert_eq!(c.retry.max_retries, 1);

        // env over file
        let c = resolve(&Flags::default(), &all_env, Some(&toml)).unwrap();
        assert_eq!(c.listen.port(), 7002);
        assert_eq!(c.upstream, "http://127.0.0.1:9002/v1");
        assert_eq!(c.cache.ttl, Duration::from_secs(20));
        assert_eq!(c.cache.key_scheme, KeyScheme::Canonical);
        assert_eq!(c.cache.redis, ["redis://127.0.0.1:6002"]);
        assert_eq!(c.log_format, LogFormat::Text);

        // flags over env
        let f = flags(&[
            "--listen",
            "127.0.0.1:7003",
            "--upstream",
            "http://127.0.0.1:9003/v1",
            "--cache-ttl",
            "30",
            "--cache-key-scheme",
            "python-compat",
            "--redis",
            "redis://127.0.0.1:6003",
            "--log-json",
            "--max-in-flight",
            "9",
            "--max-retries",
            "0",
        ]);
        let c = resolve(&f, &all_env, Some(&toml)).unwrap();
        assert_eq!(c.listen.port(), 7003);
        assert_eq!(c.upstream, "http://127.0.0.1:9003/v1");
        assert_eq!(c.cache.ttl, Duration::from_secs(30));
        assert_eq!(c.cache.key_scheme, KeyScheme::PythonCompat);
        assert_eq!(c.cache.redis, ["redis://127.0.0.1:6003"]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.pool.max_in_flight, 9);
        assert_eq!(c.retry.max_retries, 0);
    }

    #[test]
    fn redis_lists_from_repeats_and_commas() {
        let f = flags(&[
            "--redis",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            "--redis",
            "redis://127.0.0.1:7002",
        ]);
        let c = resolve(&f, &env(&[]), None).unwrap();
        assert_eq!(c.cache.redis.len(), 3);
        let e = env(&[("REDIS_URL", " redis://a:1 , ,redis://b:2 ")]);
        let c = resolve(&Flags::default(), &e, None).unwrap();
        assert_eq!(c.cache.redis, ["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn secrets_come_from_env_and_never_print() {
        let e = env(&[
            ("HOLYSHEEP_API_KEY", "sk-upstream-secret"),
            ("HOLYSHEEP_GATEWAY_KEYS", "key-one, key-two,,"),
        ]);
        let c = resolve(&Flags::default(), &e, None).unwrap();
        assert_eq!(
            c.api_key.as_ref().map(Secret::expose),
            Some("sk-upstream-secret")
        );
        let keys: Vec<_> = c.gateway_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["key-one", "key-two"]);
        let printed = format!("{c:?}");
        assert!(!printed.contains("sk-upstream-secret"), "{printed}");
        assert!(!printed.contains("key-one"), "{printed}");
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let e = env(&[("HOLYSHEEP_LISTEN", ""), ("HOLYSHEEP_API_KEY", "  ")]);
        let c = resolve(&Flags::default(), &e, None).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(c.api_key.is_none());
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let err = FileConfig::parse("[pool]\nmax_inflight = 3\n", "gw.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_inflight"), "{msg}");
        assert!(msg.contains("gw.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        let err = FileConfig::parse("[caches]\nttl_secs = 3\n", "gw.toml").unwrap_err();
        assert!(err.to_string().contains("caches"), "{err}");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = resolve(
            &Flags::default(),
            &env(&[("HOLYSHEEP_CACHE_TTL", "soon")]),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("HOLYSHEEP_CACHE_TTL"), "{err}");
        let err = resolve(
            &Flags::default(),
            &env(&[("HOLYSHEEP_CACHE_KEY_SCHEME", "fuzzy")]),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("HOLYSHEEP_CACHE_KEY_SCHEME")
                && err.to_string().contains("python-compat"),
            "{err}"
        );
    }

    #[test]
    fn key_scheme_names_are_the_cache_crate_ones() {
        let c = resolve(
            &Flags::default(),
            &env(&[("HOLYSHEEP_CACHE_KEY_SCHEME", "Python-Compat")]),
            None,
        )
        .unwrap();
        assert_eq!(c.cache.key_scheme, KeyScheme::PythonCompat);
        let err = Flags::try_parse_from(["gateway", "--cache-key-scheme", "sha256"]).unwrap_err();
        assert!(err.to_string().contains("python-compat"), "{err}");
        assert!(FileConfig::parse("[cache]\nkey_scheme = \"sha256\"", "test.toml").is_err());
    }

    #[test]
    fn public_address_needs_client_keys() {
        let f = flags(&["--listen", "0.0.0.0:8080"]);
        let err = resolve(&f, &env(&[]), None).unwrap_err();
        assert!(err.to_string().contains("HOLYSHEEP_GATEWAY_KEYS"), "{err}");
        let c = resolve(&f, &env(&[("HOLYSHEEP_GATEWAY_KEYS", "k1")]), None).unwrap();
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn config_path_flag_beats_env() {
        let e = env(&[("HOLYSHEEP_CONFIG", "/etc/env.toml")]);
        assert_eq!(
            config_path(&Flags::default(), &e),
            Some(PathBuf::from("/etc/env.toml"))
        );
        let f = flags(&["--config", "/etc/flag.toml"]);
        assert_eq!(config_path(&f, &e), Some(PathBuf::from("/etc/flag.toml")));
    }

    #[test]
    fn the_example_file_is_complete_and_valid() {
        let text = include_str!("gateway.example.toml");
        let parsed = FileConfig::parse(text, "gateway.example.toml").unwrap();
        let c = resolve(&Flags::default(), &env(&[]), Some(&parsed)).unwrap();
        // The example spells out the defaults, so it must resolve to them.
        let d = Config::default();
        assert_eq!(c.server, d.server);
        assert_eq!(c.client, d.client);
        assert_eq!(c.pool, d.pool);
        assert_eq!(c.retry, d.retry);
        assert_eq!(c.cache, d.cache);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.upstream, d.upstream);
    }
}
