//! The knobs of the mock: auth, latency, faults and streaming shape.

use std::time::Duration;

use rand::Rng;

use crate::embedding::EmbeddingMode;

/// The models the mock lists by default: the article's four plus one embedding model.
pub const DEFAULT_MODELS: &[&str] = &[
    "gpt-4.1",
    "claude-sonnet-4.5",
    "gemini-2.5-flash",
    "deepseek-v3.2",
    "text-embedding-3-small",
];

/// How long the mock thinks before it answers.
///
/// The delay is added to every request after the cold-connection penalty, before any fault or
/// answer; for a streamed answer it is the time to the first byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// `base` plus a uniform random delay in `0..=jitter`.
    Uniform {
        /// The fixed part.
        base: Duration,
        /// The width of the uniform random part.
        jitter: Duration,
    },
    /// A log-normal distribution given by its median and its 99th percentile, the shape real
    /// LLM latencies have (most answers quick, a long tail). Samples are capped at ten times
    /// the p99 so one unlucky draw cannot hang a test.
    LogNormal {
        /// The median delay.
        median: Duration,
        /// The 99th-percentile delay; a value below the median is treated as the median.
        p99: Duration,
    },
}

/// The standard normal quantile at 0.99, which ties a log-normal's sigma to its p99.
const Z_99: f64 = 2.326_347_874_040_840_8;

impl Latency {
    /// No delay at all.
    pub const ZERO: Latency = Latency::Uniform {
        base: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    /// Always exactly `base`.
    pub fn fixed(base: Duration) -> Self {
        Latency::Uniform {
            base,
            jitter: Duration::ZERO,
        }
    }

    /// `base` plus a uniform random delay in `0..=jitter`.
    pub fn uniform(base: Duration, jitter: Duration) -> Self {
        Latency::Uniform { base, jitter }
    }

    /// A log-normal delay with the given median and 99th percentile.
    pub fn log_normal(median: Duration, p99: Duration) -> Self {
        Latency::LogNormal { median, p99 }
    }

    /// Draws one delay.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Latency::Uniform { base, jitter } => {
                if jitter.is_zero() {
                    return base;
                }
                let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                base.saturating_add(Duration::from_nanos(rng.random_range(0..=nanos)))
            }
            Latency::LogNormal { median, p99 } => {
                let median_s = median.as_secs_f64();
                if median_s <= 0.0 {
                    return Duration::ZERO;
                }
                let p99_s = p99.as_secs_f64().max(median_s);
                let sigma = (p99_s.ln() - median_s.ln()) / Z_99;
                // Box-Muller: `1 - u` lies in (0, 1], so the logarithm is finite.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let secs = (median_s.ln() + sigma * z).exp().min(p99_s * 10.0);
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
            }
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::ZERO
    }
}

/// Everything the mock can be told to do. Change it on a running server with
/// [`MockServer::update`](crate::MockServer::update) or
/// [`MockServer::set_config`](crate::MockServer::set_config); each request reads the
/// configuration once, when it arrives.
///
/// Rates are probabilities in `0.0..=1.0`, drawn per request from one seedable generator.
/// The default answers everything at once, with no faults and no key check.
///
/// ```
/// use std::time::Duration;
/// use holysheep_mock::{Latency, MockConfig};
///
/// let cfg = MockConfig::default()
///     .api_key("sk-upstream")
///     .latency(Latency::uniform(Duration::from_millis(800), Duration::from_millis(200)))
///     .cold_penalty(Duration::from_millis(300))
///     .error_rate(0.023)
///     .seed(7);
/// assert_eq!(cfg.api_key.as_deref(), Some("sk-upstream"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// The bearer key callers must send (`Authorization: Bearer <key>`); `None` accepts any.
    pub api_key: Option<String>,
    /// The delay before every answer.
    pub latency: Latency,
    /// The extra wait of the first request on each new TCP connection, standing in for DNS,
    /// TCP and TLS set-up so the win of connection pooling shows on loopback.
    pub cold_penalty: Duration,
    /// The share of requests answered 500, 502 or 503 (picked at random among them).
    pub error_rate: f64,
    /// The share of requests answered 429 with a `Retry-After` header.
    pub rate_limit_rate: f64,
    /// The `Retry-After` value of a 429, in seconds.
    pub retry_after_secs: u64,
    /// The share of requests whose connection is reset without any answer.
    pub reset_rate: f64,
    /// The share of streamed answers cut off mid-way: no `finish_reason`, no `[DONE]`, and the
    /// connection is closed.
    pub truncate_rate: f64,
    /// How many content chunks a streamed answer has (at least 1; fewer when the answer is
    /// shorter than this many characters).
    pub stream_chunks: usize,
    /// The pause before each streamed chunk after the first.
    pub stream_gap: Duration,
    /// The seed of the random generator; `None` seeds from the operating system.
    /// Setting a new seed on a running server restarts the sequence.
    pub seed: Option<u64>,
    /// The models `GET /v1/models` lists. Chat and embeddings accept any model name.
    pub models: Vec<String>,
    /// The dimension of embedding vectors when the request does not ask for one.
    pub embedding_dimensions: usize,
    /// How embedding vectors are computed (default [`EmbeddingMode::Random`]).
    pub embedding_mode: EmbeddingMode,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            latency: Latency::ZERO,
            cold_penalty: Duration::ZERO,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            reset_rate: 0.0,
            truncate_rate: 0.0,
            stream_chunks: 8,
            stream_gap: Duration::ZERO,
            seed: None,
            models: DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
            embedding_dimensions: 64,
            embedding_mode: EmbeddingMode::Random,
        }
    }
}

impl MockConfig {
    /// The default configuration: instant answers, no faults, any key accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `Authorization: Bearer <key>`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the delay before every answer.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the wait of the first request on each new connection.
    pub fn cold_penalty(mut self, penalty: Duration) -> Self {
        self.cold_penalty = penalty;
        self
    }

    /// Sets the share of 500/502/503 answers.
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Sets the share of 429 answers.
    pub fn rate_limit_rate(mut self, rate: f64) -> Self {
        self.rate_limit_rate = rate;
        self
    }

    /// Sets the `Retry-After` seconds of 429 answers.
    pub fn retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after_secs = secs;
        self
    }

    /// Sets the share of requests whose connection is reset.
    pub fn reset_rate(mut self, rate: f64) -> Self {
        self.reset_rate = rate;
        self
    }

    /// Sets the share of streamed answers cut off mid-way.
    pub fn truncate_rate(mut self, rate: f64) -> Self {
        self.truncate_rate = rate;
        self
    }

    /// Sets the number of content chunks of a streamed answer.
    pub fn stream_chunks(mut self, chunks: usize) -> Self {
        self.stream_chunks = chunks;
        self
    }

    /// Sets the pause between streamed chunks.
    pub fn stream_gap(mut self, gap: Duration) -> Self {
        self.stream_gap = gap;
        self
    }

    /// Seeds the random generator, for reproducible fault sequences.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Replaces the listed models.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the default embedding dimension.
    pub fn embedding_dimensions(mut self, dimensions: usize) -> Self {
        self.embedding_dimensions = dimensions;
        self
    }

    /// Sets how embedding vectors are computed: [`EmbeddingMode::WordOverlap`] for a semantic
    /// cache's tests and demo.
    pub fn embedding_mode(mut self, mode: EmbeddingMode) -> Self {
        self.embedding_mode = mode;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn uniform_stays_in_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let l = Latency::uniform(Duration::from_millis(100), Duration::from_millis(50));
        for _ in 0..1000 {
            let d = l.sample(&mut rng);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(150));
        }
        assert_eq!(
            Latency::fixed(Duration::from_millis(3)).sample(&mut rng),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn log_normal_has_its_median_and_tail() {
        let mut rng = StdRng::seed_from_u64(2);
        let l = Latency::log_normal(Duration::from_millis(100), Duration::from_millis(400));
        let mut v: Vec<Duration> = (0..20_000).map(|_| l.sample(&mut rng)).collect();
        v.sort();
        let median = v[v.len() / 2].as_secs_f64();
        let p99 = v[v.len() * 99 / 100].as_secs_f64();
        assert!((0.09..0.11).contains(&median), "median {median}");
        assert!((0.33..0.48).contains(&p99), "p99 {p99}");
        assert!(v.iter().all(|d| *d <= Duration::from_secs(4)));
    }

    #[test]
    fn log_normal_degenerate_inputs() {
        let mut rng = StdRng::seed_from_u64(3);
        let zero = Latency::log_normal(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.sample(&mut rng), Duration::ZERO);
        let flat = Latency::log_normal(Duration::from_millis(50), Duration::from_millis(10));
        let d = flat.sample(&mut rng);
        assert!((d.as_secs_f64() - 0.05).abs() < 1e-6);
    }
}
