//! The semantic cache's bench (issue 12), a plain program (`harness = false`): it reports
//! percentiles, recall and bytes, which criterion does not.
//!
//! 1. **Index**, for each size × dimension (default 10,000 and 100,000 entries × 256 and 1,536
//!    dimensions, all in one context bucket, the worst case): insert cost per entry; lookup p50
//!    and p99 of `SemanticIndex::search`; recall@1 against an exact `f32` brute force over the
//!    original (unquantised) vectors, and where its misses come from (the graph against an
//!    exact scan of the same `i8` vectors, that scan against `f32`); memory per entry three ways
//!    (the index's own byte accounting, `usearch`'s `memory_usage` of the graph, and the growth
//!    of the process's resident set while the index was built).
//!
//!    The vectors are clustered like embeddings of related questions: points around
//!    `entries / 100` random centres, cosine about 0.8 to each other within a cluster. Half the
//!    queries are *paraphrases* (a stored vector moved to cosine about 0.96 of it: what the cache
//!    must hit), half *new questions* (fresh points of a cluster, stored nowhere, whose nearest
//!    stored neighbour is at about 0.8: what it must miss at the 0.95 threshold, and where ties
//!    make the nearest one hardest to pick).
//!
//! 2. **What a semantic miss adds beyond the embedding call**: the same stream of distinct
//!    questions through `CacheLayer` over an upstream that answers at once, with and without
//!    `SemanticCacheLayer` inside it, the embedder returning a ready 1,536-dimension vector (so
//!    its cost is nil and what is left is the layer's: request plan, quantisation, index search,
//!    recording the vector). The two run in alternating rounds so load from other processes
//!    falls on both alike.
//!
//! ```text
//! cargo bench -p holysheep-semantic --bench semantic
//! SEMANTIC_BENCH_ENTRIES=2000 SEMANTIC_BENCH_DIMS=64 cargo bench -p holysheep-semantic --bench semantic  # quick
//! ```
//!
//! Knobs (environment): `SEMANTIC_BENCH_ENTRIES` (comma-separated, default `10000,100000`),
//! `SEMANTIC_BENCH_DIMS` (default `256,1536`), `SEMANTIC_BENCH_QUERIES` (default 1000),
//! `SEMANTIC_BENCH_MISSES` (requests per configuration for part 2, default 5000; 0 skips it).

#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use holysheep_cache::{CacheLayer, MemoryStore};
use holysheep_core::BoxError;
use holysheep_semantic::index::{Quantized, SemanticIndex, now_millis};
use holysheep_semantic::{EmbedError, Embedder, Embedding, SemanticCacheLayer};
use holysheep_testkit::{ChatAnswer, chat_request};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

/// Cosine of a point to its cluster's centre is `1 / sqrt(1 + SPREAD²)`; two points of a
/// cluster are about `1 / (1 + SPREAD²)` = 0.8 apart.
const SPREAD: f32 = 0.5;
/// A paraphrase is its stored vector plus noise of this norm: cosine about 0.96.
const PARAPHRASE_NOISE: f32 = 0.29;
/// Entries per cluster.
const CLUSTER: usize = 100;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: {s:?} is not a number: {e}"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// xorshift64*: deterministic, fast, good enough to spread vectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Roughly normal (sum of four uniforms, centred).
    fn gauss(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }

    /// A random unit vector scaled to `norm`.
    fn direction(&mut self, dims: usize, norm: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims).map(|_| self.gauss()).collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x *= norm / n);
        v
    }
}

/// In eight lanes, which the compiler vectorises (a single running `f32` sum it may not
/// reorder): the brute force over 100,000 × 1,536 is most of the bench's time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = dot(&v, &v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `base` plus noise of norm `noise`, normalised.
fn near(rng: &mut Rng, base: &[f32], noise: f32) -> Vec<f32> {
    let n = rng.direction(base.len(), noise);
    normalised(base.iter().zip(&n).map(|(a, b)| a + b).collect())
}

/// The resident set of this process, in bytes (Linux); `None` elsewhere.
fn rss() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn key(i: usize) -> Arc<str> {
    // As long as an exact-cache key: prefix, model, SHA-256 in hex.
    format!("holysheep:cache:gpt-4.1:{i:064x}").into()
}

/// The position of the item of `items` scoring highest, and its score: an exact scan, split
/// over the machine's cores.
fn nearest<T: Sync>(items: &[T], score: impl Fn(&T) -> f32 + Sync) -> (usize, f32) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads);
    let score = &score;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .enumerate()
            .map(|(t, part)| {
                s.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, v)| (t * per + i, score(v)))
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                })
            })
            .collect();
        parts
            .into_iter()
            .filter_map(|p| p.join().expect("a brute-force thread"))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a non-empty index")
    })
}

struct Recall {
    queries: usize,
    exact: usize,
}

impl Recall {
    fn new() -> Self {
        Self {
            queries: 0,
            exact: 0,
        }
    }

    fn add(&mut self, exact: bool) {
        self.queries += 1;
        self.exact += usize::from(exact);
    }

    fn rate(&self) -> f64 {
        self.exact as f64 / self.queries.max(1) as f64
    }
}

fn index_bench(entries: usize, dims: usize, queries: usize) {
    let mut rng = Rng(0x5eed_0000 ^ (entries as u64) << 16 ^ dims as u64);
    let clusters = entries.div_ceil(CLUSTER).max(1);
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.direction(dims, 1.0)).collect();
    let mut stored = Vec::with_capacity(entries * dims);
    for i in 0..entries {
        stored.extend(near(&mut rng, &centres[i % clusters], SPREAD));
    }
    let quantised: Vec<Quantized> = stored
        .chunks(dims)
        .map(|v| Quantized::new(v).expect("a finite non-zero vector"))
        .collect();
    let keys: Vec<Arc<str>> = (0..entries).map(key).collect();
    // For the brute forces: the original vectors, and the quantised ones the index holds.
    let rows: Vec<&[f32]> = stored.chunks(dims).collect();
    let held_vectors = quantised.clone();

    let index = SemanticIndex::new(SemanticCacheLayer::DEFAULT_MAX_BYTES);
    let expires = now_millis() + 3_600_000;
    let rss_before = rss();
    let mut inserts = Vec::with_capacity(entries);
    let started = Instant::now();
    for (k, v) in keys.iter().zip(quantised) {
        let t = Instant::now();
        let stored = index.insert(1, Arc::clone(k), v, expires);
        inserts.push(t.elapsed());
        assert!(stored, "the index refused an entry");
    }
    let build = started.elapsed();
    let rss_after = rss();
    let held = index.len();
    inserts.sort_unstable();

    let mut lookups = Vec::with_capacity(queries);
    let (mut all, mut paraphrase, mut new, mut above) =
        (Recall::new(), Recall::new(), Recall::new(), Recall::new());
    // Where the misses come from: the graph against an exact scan of the same `i8` vectors,
    // and that scan against the `f32` truth.
    let (mut graph, mut quantisation) = (Recall::new(), Recall::new());
    let mut paraphrase_found_source = 0;
    for q in 0..queries {
        let is_paraphrase = q % 2 == 0;
        let source = (rng.next() % entries as u64) as usize;
        let query = if is_paraphrase {
            near(
                &mut rng,
                &stored[source * dims..(source + 1) * dims],
                PARAPHRASE_NOISE,
            )
        } else {
            near(&mut rng, &centres[source % clusters], SPREAD)
        };
        let quantised = Quantized::new(&query).expect("a finite non-zero vector");
        let t = Instant::now();
        let found = index.search(1, &quantised);
        lookups.push(t.elapsed());
        let found = found.expect("a non-empty bucket answers");
        let (best, best_cos) = nearest(&rows, |v| dot(v, &query));
        let (best_i8, _) = nearest(&held_vectors, |v| v.cosine(&quantised));
        let exact = *found.key == *keys[best];
        all.add(exact);
        graph.add(*found.key == *keys[best_i8]);
        quantisation.add(best_i8 == best);
        if is_paraphrase {
            paraphrase.add(exact);
            paraphrase_found_source += usize::from(*found.key == *keys[source]);
        } else {
            new.add(exact);
        }
        if best_cos >= SemanticCacheLayer::DEFAULT_THRESHOLD {
            above.add(exact);
        }
    }
    lookups.sort_unstable();

    let per = |bytes: usize| bytes as f64 / held as f64;
    let rss_growth = rss_before.zip(rss_after).map(|(b, a)| a.saturating_sub(b));
    println!(
        "index entries={entries} dims={dims}: held {held}; insert mean {:.1} µs p99 {:.1} µs (build {:.1} s); \
         lookup p50 {:.1} µs p99 {:.1} µs max {:.1} µs ({queries} queries); \
         recall@1 {:.4} (paraphrases {:.4}, new questions {:.4}, true nearest >= 0.95: {:.4} of {}); \
         paraphrases finding their source {:.4}; \
         graph vs i8 scan {:.4}, i8 scan vs f32 {:.4}; \
         bytes/entry: accounted {:.0}, usearch memory_usage {:.0}, RSS growth {}; \
         total: accounted {:.1} MiB, usearch {:.1} MiB, RSS growth {}",
        micros(build) / entries as f64,
        micros(percentile(&inserts, 0.99)),
        build.as_secs_f64(),
        micros(percentile(&lookups, 0.50)),
        micros(percentile(&lookups, 0.99)),
        micros(*lookups.last().expect("queries > 0")),
        all.rate(),
        paraphrase.rate(),
        new.rate(),
        above.rate(),
        above.queries,
        paraphrase_found_source as f64 / paraphrase.queries.max(1) as f64,
        graph.rate(),
        quantisation.rate(),
        per(index.bytes()),
        per(index.graph_memory()),
        rss_growth.map_or("n/a".into(), |g| format!("{:.0}", per(g))),
        index.bytes() as f64 / (1 << 20) as f64,
        index.graph_memory() as f64 / (1 << 20) as f64,
        rss_growth.map_or("n/a".into(), |g| format!(
            "{:.1} MiB",
            g as f64 / (1 << 20) as f64
        )),
    );
}

/// An embedder whose vectors are made in advance: the next one each call, all far apart, so
/// every question is a semantic miss and the embedding itself costs nothing.
struct Ready {
    vectors: Vec<Vec<f32>>,
    next: AtomicUsize,
}

impl Embedder for Ready {
    fn embed<'a>(&'a self, _text: &'a str) -> BoxFuture<'a, Result<Embedding, EmbedError>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let vector = self.vectors[i % self.vectors.len()].clone();
        Box::pin(std::future::ready(Ok(Embedding { vector, tokens: 0 })))
    }

    fn model(&self) -> &str {
        "ready"
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Body>, BoxError>;

fn upstream() -> BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError> {
    let body = ChatAnswer::new("gpt-4.1", "A short answer to a question.")
        .id("chatcmpl-bench")
        .created(1)
        .to_json();
    BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.clone();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(body))?,
            )
        }
    }))
}

fn boxed<S, B>(svc: S) -> Svc
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneService::new(
        svc.map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync())),
    )
}

async fn call(svc: &Svc, question: &str) -> Duration {
    let req = chat_request(&serde_json::json!({
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": question}],
    }));
    let t = Instant::now();
    let res = svc.clone().oneshot(req).await.expect("an answer");
    assert_eq!(res.headers()["x-cache"], "MISS", "every question is new");
    res.into_body().collect().await.expect("a body");
    t.elapsed()
}

fn miss_bench(requests: usize) {
    const ROUNDS: usize = 10;
    const DIMS: usize = 1536;
    let mut rng = Rng(0xfeed);
    let ready = Ready {
        // One vector per question asked (plus warm-up): random directions, cosine about 0.
        vectors: (0..requests + 200)
            .map(|_| rng.direction(DIMS, 1.0))
            .collect(),
        next: AtomicUsize::new(0),
    };
    let exact_only = boxed(CacheLayer::new(MemoryStore::new(256 << 20)).layer(upstream()));
    let with_semantic = boxed(
        CacheLayer::new(MemoryStore::new(256 << 20))
            .layer(SemanticCacheLayer::new().embedder(ready).layer(upstream())),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let question = |i: usize| format!("Question number {i}: how do I keep connections warm?");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..100 {
            call(&exact_only, &question(usize::MAX - i)).await;
            call(&with_semantic, &question(usize::MAX - i)).await;
        }
        let per_round = requests / ROUNDS;
        for round in 0..ROUNDS {
            for i in round * per_round..(round + 1) * per_round {
                without.push(call(&exact_only, &question(i)).await);
            }
            for i in round * per_round..(round + 1) * per_round {
                with.push(call(&with_semantic, &question(i)).await);
            }
        }
    });
    without.sort_unstable();
    with.sort_unstable();
    let mean = |v: &[Duration]| micros(v.iter().sum::<Duration>()) / v.len() as f64;
    println!(
        "miss ({} requests each, {DIMS}-dimension vectors, index grows to {} entries): \
         without the layer p50 {:.1} µs p99 {:.1} µs mean {:.1} µs; \
         with the layer p50 {:.1} µs p99 {:.1} µs mean {:.1} µs; \
         added: p50 {:+.1} µs, p99 {:+.1} µs, mean {:+.1} µs",
        without.len(),
        with.len() + 100,
        micros(percentile(&without, 0.50)),
        micros(percentile(&without, 0.99)),
        mean(&without),
        micros(percentile(&with, 0.50)),
        micros(percentile(&with, 0.99)),
        mean(&with),
        micros(percentile(&with, 0.50)) - micros(percentile(&without, 0.50)),
        micros(percentile(&with, 0.99)) - micros(percentile(&without, 0.99)),
        mean(&with) - mean(&without),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with neither, as a smoke
    // test at small sizes.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (entries, dims, queries, misses) = if smoke {
        (vec![600], vec![32], 50, 200)
    } else {
        (
            env_list("SEMANTIC_BENCH_ENTRIES", &[10_000, 100_000]),
            env_list("SEMANTIC_BENCH_DIMS", &[256, 1536]),
            env_list("SEMANTIC_BENCH_QUERIES", &[1000])[0],
            env_list("SEMANTIC_BENCH_MISSES", &[5000])[0],
        )
    };
    println!(
        "usearch {} ({}); load average {}",
        usearch::version(),
        usearch::hardware_acceleration_available(),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "n/a".into())
    );
    for &d in &dims {
        for &n in &entries {
            index_bench(n, d, queries.max(1));
        }
    }
    if misses > 0 {
        miss_bench(misses.max(10));
    }
}
