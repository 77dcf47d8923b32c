//! Cache keys and stores: what a cache lookup costs before any upstream call.
//!
//! - key derivation for 1 KB, 10 KB and 100 KB chat requests: "parse + key" (what the layer pays
//!   per request: a `ParsedBody`, then the key), "parse-value + key" (through a
//!   `serde_json::Value`, the path before `ParsedBody`, for comparison) and "key" alone (from an
//!   already parsed `ParsedBody`);
//! - `MemoryStore` get hit;
//! - `RedisStore` get hit over loopback, against a `redis-server` the bench starts itself (or
//!   `REDIS_URL`); skipped with a note when neither is available.
//!
//! `cargo bench --bench cache_store`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use holysheep_cache::__bench::parsed_from_value;
use holysheep_cache::{
    CacheStore, DefaultKeyPolicy, KeyPolicy, KeyRequest, MemoryStore, ParsedBody, RedisStore,
};
use holysheep_testkit::redis::RedisServer;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const UPSTREAM: &str = "https://api.holysheep.ai/v1";
const PATH: &str = "/v1/chat/completions";

/// A multi-turn chat request whose JSON is at least `target` bytes.
fn chat_request(target: usize) -> Vec<u8> {
    let turns = [
        "Summarise the attached quarterly report in three bullet points, in Thai: สรุปรายงาน.",
        "Revenue grew 12% quarter on quarter, driven by API usage; costs fell 8% after caching.",
        "Now list the three largest risks, with one mitigation each, as a JSON array.",
        "[{\"risk\": \"vendor lock-in\", \"mitigation\": \"OpenAI-compatible gateway\"}, ...]",
    ];
    let mut messages =
        vec![json!({"role": "system", "content": "You are a careful analyst. Answer briefly."})];
    let mut body = json!({});
    for i in 0.. {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": turns[i % turns.len()]}));
        body = json!({
            "model": "gpt-4o-mini",
            "messages": messages,
            "temperature": 0.7,
            "max_tokens": 1000,
            "top_p": 1.0,
            "stream": false,
            "response_format": {"type": "text"}
        });
        if serde_json::to_vec(&body).map_or(0, |v| v.len()) >= target {
            break;
        }
    }
    serde_json::to_vec(&body).expect("serialisable")
}

fn key_of(
    policy: &DefaultKeyPolicy,
    namespace: Option<&str>,
    body: &ParsedBody<'_>,
) -> Option<String> {
    policy
        .key(&KeyRequest {
            path: PATH,
            upstream: UPSTREAM,
            namespace,
            body,
        })
        .map(|k| k.as_str().to_owned())
}

fn keys(c: &mut Criterion) {
    let canonical = DefaultKeyPolicy::new();
    let python_compat = DefaultKeyPolicy::python_compat();
    let mut group = c.benchmark_group("cache_key");
    for (label, size) in [("1KB", 1_000), ("10KB", 10_000), ("100KB", 100_000)] {
        let raw = chat_request(size);
        let parsed = ParsedBody::parse(&raw).expect("valid JSON");
        group.throughput(Throughput::Bytes(raw.len() as u64));
        // What the layer pays: one parse into a `ParsedBody`, then the key.
        group.bench_with_input(BenchmarkId::new("parse+key", label), &raw, |b, raw| {
            b.iter(|| {
                let body = ParsedBody::parse(black_box(raw)).expect("valid JSON");
                black_box(key_of(&canonical, Some("tenant-a"), &body))
            })
        });
        // The same through a `serde_json::Value`, the path before `ParsedBody`.
        group.bench_with_input(
            BenchmarkId::new("parse-value+key", label),
            &raw,
            |b, raw| {
                b.iter(|| {
                    let body: Value = serde_json::from_slice(black_box(raw)).expect("valid JSON");
                    black_box(key_of(
                        &canonical,
                        Some("tenant-a"),
                        &parsed_from_value(body),
                    ))
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("key", label), &parsed, |b, body| {
            b.iter(|| black_box(key_of(&canonical, Some("tenant-a"), black_box(body))))
        });
        if label == "10KB" {
            let value = parsed.to_value();
            let chat = json!({"model": value["model"], "messages": value["messages"]}).to_string();
            let chat = ParsedBody::parse(chat.as_bytes()).expect("valid JSON");
            group.bench_with_input(
                BenchmarkId::new("python-compat-key", label),
                &chat,
                |b, body| b.iter(|| black_box(key_of(&python_compat, None, black_box(body)))),
            );
        }
    }
    group.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let store = MemoryStore::default();
    let key = "holysheep:cache:gpt-4o-mini:0123456789abcdef0123456789abcdef";
    let answer = Bytes::from(vec![b'x'; 2_000]);
    rt.block_on(async {
        for i in 0..10_000 {
            let other = format!("holysheep:cache:gpt-4o-mini:{i:032x}");
            let _ = store
                .put(&other, answer.clone(), Duration::from_secs(3600))
                .await;
        }
        store
            .put(key, answer.clone(), Duration::from_secs(3600))
            .await
            .expect("memory put");
    });
    c.bench_function("cache_store/memory_get_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let hit = store.get(black_box(key)).await.expect("memory get");
            black_box(hit.expect("a hit"))
        })
    });
}

fn redis_store(c: &mut Criterion) {
    let server = match RedisServer::from_env_or_start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("cache_store/redis_get_hit skipped: {why}");
            return;
        }
    };
    let rt = Runtime::new().expect("tokio runtime");
    let key = "holysheep:cache:bench:0123456789abcdef0123456789abcdef";
    let url = server.url();
    let store = rt.block_on(async {
        let store = RedisStore::connect(url)
            .await
            .expect("a valid URL")
            .timeout(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(Instant::now() < deadline, "redis at {url} not reachable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store
            .put(
                key,
                Bytes::from(vec![b'x'; 2_000]),
                Duration::from_secs(3600),
            )
            .await
            .expect("redis put");
        store
    });
    c.bench_function("cache_store/redis_get_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let hit = store.get(black_box(key)).await.expect("redis get");
            black_box(hit.expect("a hit"))
        })
    });
}

criterion_group!(benches, keys, memory_store, redis_store);
criterion_main!(benches);
