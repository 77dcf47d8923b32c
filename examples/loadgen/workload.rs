//! What the harness asks: chat requests whose prompts follow a Zipf law over a fixed prompt set
//! (so many requests repeat an earlier prompt, as real traffic does), or unique prompts.
//!
//! Sampling is a pure function of `(seed, request index)`, so the "before" and "after" runs of
//! one table send exactly the same sequence whatever the concurrency or timing.

use bytes::Bytes;

/// The article's four models; prompt `k` goes to `MODELS[k % 4]`.
pub(crate) const MODELS: [&str; 4] = [
    "gpt-4.1",
    "claude-sonnet-4.5",
    "gemini-2.5-flash",
    "deepseek-v3.2",
];

/// SplitMix64: a tiny, well-mixed hash/generator; enough for sampling, no dependency.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in `[0, 1)` from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Zipf over ranks `0..n` with exponent `s`: rank `k` has weight `1 / (k + 1)^s`.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n` ranks (at least one).
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let n = n.max(1);
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += ((k + 1) as f64).powf(-s);
            cumulative.push(total);
        }
        for c in &mut cumulative {
            *c /= total;
        }
        Zipf { cumulative }
    }

    /// The number of ranks.
    pub(crate) fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// The probability of rank `k`.
    fn p(&self, k: usize) -> f64 {
        let below = if k == 0 { 0.0 } else { self.cumulative[k - 1] };
        self.cumulative[k] - below
    }

    /// The rank for a uniform draw `u` in `[0, 1)` (inverse CDF by binary search).
    pub(crate) fn rank(&self, u: f64) -> usize {
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }

    /// The expected share of `draws` requests whose rank was already drawn before:
    /// `1 - E[distinct] / draws`, with `E[distinct] = Σ 1 - (1 - p_k)^draws`.
    pub(crate) fn expected_repeat_share(&self, draws: u64) -> f64 {
        if draws == 0 {
            return 0.0;
        }
        let n = draws as f64;
        let distinct: f64 = (0..self.len())
            .map(|k| 1.0 - (1.0 - self.p(k)).powf(n))
            .sum();
        1.0 - distinct / n
    }
}

/// The share of `draws` requests drawn from `zipf` (the rest unique) whose expected repeat
/// share is `target`: the repeat share `h - E[distinct of h·draws Zipf draws] / draws` grows
/// with `h`, so a bisection finds it. `None` when even `h = 1` falls short.
pub(crate) fn calibrate_hot(zipf: &Zipf, draws: u64, target: f64) -> Option<f64> {
    let share = |h: f64| {
        let hot_draws = (h * draws as f64).round() as u64;
        h * zipf.expected_repeat_share(hot_draws)
    };
    if share(1.0) < target {
        return None;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if share(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// How prompts are chosen.
#[derive(Debug, Clone)]
pub(crate) enum Prompts {
    /// With probability `hot` a Zipf draw over a fixed set of popular prompts, else a prompt
    /// never asked before: a repeat share that stays put however many requests a run sends,
    /// so a fast client and a slow one see the same mix.
    Mixed {
        /// The popular prompts.
        zipf: Zipf,
        /// The share of requests drawn from them.
        hot: f64,
    },
    /// A new prompt for every request (no cache hit is possible).
    Unique,
    /// Round robin over the first `n` prompts (for hit-latency runs on a warmed cache).
    Cycle(u64),
}

/// A request generator.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    prompts: Prompts,
    seed: u64,
}

impl Workload {
    /// A generator with this prompt law and seed.
    pub(crate) fn new(prompts: Prompts, seed: u64) -> Self {
        Workload { prompts, seed }
    }

    /// The prompt number of request `index`.
    pub(crate) fn prompt_of(&self, index: u64) -> u64 {
        match &self.prompts {
            Prompts::Mixed { zipf, hot } => {
                let draw = splitmix64(self.seed ^ splitmix64(index));
                if unit(draw) < *hot {
                    zipf.rank(unit(splitmix64(draw))) as u64
                } else {
                    (1 << 40) + index
                }
            }
            // Far above any Zipf rank, so unique prompts never meet a cached one.
            Prompts::Unique => (1 << 40) + index,
            Prompts::Cycle(n) => index % (*n).max(1),
        }
    }

    /// The JSON body of request `index` and its prompt number.
    pub(crate) fn request(&self, index: u64) -> (u64, Bytes) {
        let prompt = self.prompt_of(index);
        (prompt, body_for(prompt, self.seed))
    }
}

/// The chat request for prompt `prompt`: a short user question to one of the article's models.
pub(crate) fn body_for(prompt: u64, seed: u64) -> Bytes {
    chat_body(prompt, seed, false)
}

/// [`body_for`]'s request, asking for a streamed answer (`"stream": true`) when `stream` is set.
pub(crate) fn chat_body(prompt: u64, seed: u64, stream: bool) -> Bytes {
    let model = MODELS[(prompt % MODELS.len() as u64) as usize];
    let stream = if stream { r#","stream":true"# } else { "" };
    Bytes::from(format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a concise support assistant."}},{{"role":"user","content":"Question {prompt} (set {seed}): how do I rotate my API key without downtime?"}}],"temperature":0{stream}}}"#
    ))
}

/// Counts how many requests repeat an earlier prompt; the measured repeat share.
#[derive(Debug, Default)]
pub(crate) struct RepeatCounter {
    seen: std::collections::HashSet<u64>,
    total: u64,
    repeats: u64,
}

impl RepeatCounter {
    /// Notes one request's prompt.
    pub(crate) fn note(&mut self, prompt: u64) {
        self.total += 1;
        if !self.seen.insert(prompt) {
            self.repeats += 1;
        }
    }

    /// The share of noted requests whose prompt came before.
    pub(crate) fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.repeats as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(100, 1.0);
        let mut counts = [0u32; 100];
        for i in 0..100_000u64 {
            let k = zipf.rank(unit(splitmix64(i)));
            counts[k] += 1;
        }
        // Rank 0 has weight 1/H(100) ≈ 0.193; rank 1 half of that.
        let share0 = f64::from(counts[0]) / 100_000.0;
        assert!((0.18..0.21).contains(&share0), "rank 0 share {share0}");
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_999), 99);
    }

    #[test]
    fn sampled_repeat_share_matches_the_expectation() {
        let draws = 3000;
        let zipf = Zipf::new(1000, 1.0);
        let expected = zipf.expected_repeat_share(draws);
        assert!((0.5..0.9).contains(&expected), "expected {expected}");
        let workload = Workload::new(Prompts::Mixed { zipf, hot: 1.0 }, 42);
        let mut counter = RepeatCounter::default();
        for i in 0..draws {
            counter.note(workload.prompt_of(i));
        }
        assert_eq!(counter.total, draws);
        assert!(
            (counter.share() - expected).abs() < 0.03,
            "measured {} expected {expected}",
            counter.share()
        );
        assert_eq!(Zipf::new(10, 1.0).expected_repeat_share(0), 0.0);
    }

    #[test]
    fn mixed_prompts_keep_their_repeat_share_as_runs_grow() {
        let zipf = Zipf::new(200, 1.0);
        let hot = calibrate_hot(&zipf, 4000, 0.70).expect("reachable");
        assert!((0.70..0.80).contains(&hot), "hot {hot}");
        let workload = Workload::new(Prompts::Mixed { zipf, hot }, 9);
        let measured = |n: u64| {
            let mut counter = RepeatCounter::default();
            for i in 0..n {
                counter.note(workload.prompt_of(i));
            }
            counter.share()
        };
        let short = measured(4000);
        let long = measured(40_000);
        assert!((short - 0.70).abs() < 0.03, "short run {short}");
        // Ten times the requests: the share creeps up towards `hot`, no further.
        assert!(long >= short && long <= hot + 0.01, "long run {long}");
        assert!(calibrate_hot(&Zipf::new(200, 1.0), 100, 0.70).is_none());
    }

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        let zipf = Zipf::new(500, 1.0);
        let mixed = |seed| {
            let zipf = zipf.clone();
            Workload::new(Prompts::Mixed { zipf, hot: 0.7 }, seed)
        };
        let (a, b, c) = (mixed(1), mixed(1), mixed(2));
        let seq = |w: &Workload| (0..200).map(|i| w.prompt_of(i)).collect::<Vec<_>>();
        assert_eq!(seq(&a), seq(&b));
        assert_ne!(seq(&a), seq(&c));
    }

    #[test]
    fn unique_prompts_never_repeat_and_bodies_are_json() {
        let workload = Workload::new(Prompts::Unique, 3);
        let mut counter = RepeatCounter::default();
        for i in 0..1000 {
            let (prompt, body) = workload.request(i);
            counter.note(prompt);
            let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert!(MODELS.contains(&json["model"].as_str().unwrap_or_default()));
        }
        assert_eq!(counter.share(), 0.0);
        let streamed: serde_json::Value =
            serde_json::from_slice(&chat_body(5, 3, true)).expect("valid JSON");
        let plain: serde_json::Value = serde_json::from_slice(&body_for(5, 3)).expect("valid JSON");
        assert_eq!(streamed["stream"], true);
        assert!(plain.get("stream").is_none());
        assert_eq!(streamed["messages"], plain["messages"]);
        let cycle = Workload::new(Prompts::Cycle(10), 3);
        assert_eq!(cycle.prompt_of(23), 3);
    }
}
