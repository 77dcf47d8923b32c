//! The semantic cache inside the exact cache, against the mock upstream over loopback, with the
//! mock's word-overlap embeddings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use holysheep_cache::{Cache, CacheLayer, MemoryStore};
use holysheep_client::HolySheepClient;
use holysheep_core::price::ModelPrice;
use holysheep_core::signal::{CacheOutcome, Namespace, SemanticHit};
use holysheep_mock::{EmbeddingMode, MockConfig, MockServer};
use holysheep_semantic::{
    EmbedError, Embedder, Embedding, SemanticCache, SemanticCacheLayer, SkipRules,
};
use holysheep_testkit::{
    Reply, chat_request, expected_content, sse_chunks, start_mock, upstream_client, wait_until,
};
use http::Request;
use http_body_util::Full;
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

type Stack = Cache<SemanticCache<HolySheepClient>>;

async fn mock() -> MockServer {
    start_mock(
        MockConfig::default()
            .api_key(holysheep_testkit::UPSTREAM_KEY)
            .embedding_mode(EmbeddingMode::WordOverlap),
    )
    .await
}

/// The layer as a user builds it, but with an embedding timeout no loaded machine runs out of:
/// these tests are about what is answered, not about the timeout (which one test sets).
fn layer() -> SemanticCacheLayer {
    SemanticCacheLayer::new().embedding_timeout(Duration::from_secs(30))
}

fn stack(mock: &MockServer, semantic: SemanticCacheLayer) -> Stack {
    CacheLayer::new(MemoryStore::new(16 << 20)).layer(semantic.layer(upstream_client(mock)))
}

fn ask(question: &str) -> Value {
    json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": question}]})
}

async fn send(stack: &Stack, req: Request<Full<Bytes>>) -> Reply {
    let res = stack.clone().oneshot(req).await.expect("an answer");
    let reply = Reply::from_response(res).await;
    // The exact cache writes its entry in a task once the answer ended.
    tokio::time::sleep(Duration::from_millis(20)).await;
    reply
}

async fn post(stack: &Stack, body: &Value) -> Reply {
    send(stack, chat_request(body)).await
}

/// A change made to a request body.
type Change = dyn Fn(&mut Value);

fn is_semantic_hit(reply: &Reply) -> bool {
    reply.header("cache-status") == Some("holysheep; hit; detail=semantic")
}

#[tokio::test]
async fn a_paraphrase_is_answered_with_the_stored_answer() {
    let mock = mock().await;
    let stack = stack(&mock, layer());
    let first = post(&stack, &ask("What's the capital of France?")).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post(&stack, &ask("what is the capital of france")).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(is_semantic_hit(&second), "{:?}", second.headers);
    assert_eq!(
        second.header("x-holysheep-semantic-similarity"),
        Some("1.0000")
    );
    assert_eq!(
        second.extensions.get::<CacheOutcome>(),
        Some(&CacheOutcome::Hit)
    );
    assert!(second.extensions.get::<SemanticHit>().is_some());
    // The stored answer itself: same id, same created, same text.
    assert_eq!(second.json()["id"], first.json()["id"]);
    assert_eq!(second.json()["created"], first.json()["created"]);
    assert_eq!(
        second.content(),
        expected_content(&ask("What's the capital of France?"))
    );
    assert_eq!(mock.stats().chat_requests(), 1);
    // An exact repeat is an exact hit and costs no embedding.
    let embeddings = mock.stats().embedding_requests();
    let third = post(&stack, &ask("What's the capital of France?")).await;
    assert_eq!(third.header("cache-status"), Some("holysheep; hit"));
    assert_eq!(mock.stats().embedding_requests(), embeddings);
}

/// Same words, another question: word order carries the meaning.
const ADVERSARIAL: &[(&str, &str)] = &[
    ("Does the dog bite the man?", "Does the man bite the dog?"),
    (
        "Flights from Paris to London tomorrow",
        "Flights from London to Paris tomorrow",
    ),
    (
        "Is a kilogram heavier than a pound?",
        "Is a pound heavier than a kilogram?",
    ),
    (
        "Convert 100 dollars to euros",
        "Convert 100 euros to dollars",
    ),
    (
        "Why does Alice owe Bob money?",
        "Why does Bob owe Alice money?",
    ),
    (
        "What's the capital of France?",
        "What's the capital of Spain?",
    ),
];

#[tokio::test]
async fn different_questions_with_the_same_words_miss() {
    let mock = mock().await;
    let stack = stack(&mock, layer());
    for (stored, other) in ADVERSARIAL {
        let first = post(&stack, &ask(stored)).await;
        let second = post(&stack, &ask(other)).await;
        assert_eq!(
            second.header("x-cache"),
            Some("MISS"),
            "{stored:?} answered {other:?}"
        );
        assert_eq!(second.content(), expected_content(&ask(other)));
        assert_ne!(second.content(), first.content());
    }
    assert_eq!(mock.stats().chat_requests(), 2 * ADVERSARIAL.len() as u64);
}

#[tokio::test]
async fn another_context_misses() {
    let mock = mock().await;
    let stack = stack(&mock, layer());
    let q = |s: &str| json!({"role": "user", "content": s});
    let stored = json!({"model": "gpt-4.1", "temperature": 0.7,
        "messages": [{"role": "system", "content": "Be brief."}, q("Hello"), {"role": "assistant", "content": "Hi!"}, q("What's the capital of France?")]});
    post(&stack, &stored).await;
    let paraphrase = |f: &dyn Fn(&mut Value)| {
        let mut body = stored.clone();
        body["messages"][3]["content"] = "what is the capital of france".into();
        f(&mut body);
        body
    };
    // The paraphrase in the same context hits.
    assert!(is_semantic_hit(&post(&stack, &paraphrase(&|_| {})).await));
    let others: [(&str, &Change); 6] = [
        ("system prompt", &|b| {
            b["messages"][0]["content"] = "Be thorough.".into()
        }),
        ("earlier turn", &|b| {
            b["messages"][1]["content"] = "Good morning".into()
        }),
        ("temperature", &|b| b["temperature"] = 0.2.into()),
        ("model", &|b| b["model"] = "deepseek-v3.2".into()),
        ("max_tokens", &|b| b["max_tokens"] = 5.into()),
        ("tools", &|b| {
            b["tools"] = json!([{"type": "function", "function": {"name": "f"}}])
        }),
    ];
    for (what, change) in others {
        let reply = post(&stack, &paraphrase(change)).await;
        assert_eq!(
            reply.header("x-cache"),
            Some("MISS"),
            "another {what} must miss"
        );
    }
    // Another tenant.
    let mut req = chat_request(&paraphrase(&|_| {}));
    req.extensions_mut()
        .insert(Namespace(Arc::from("tenant-b")));
    assert_eq!(send(&stack, req).await.header("x-cache"), Some("MISS"));
}

#[tokio::test]
async fn the_threshold_is_respected() {
    // One filler word more: similar, not the same (cosine about 0.87 with the mock).
    let stored = "What is the capital of France?";
    let near = "What is the capital city of France?";
    let a = holysheep_mock::word_overlap_embedding(stored, 1536);
    let b = holysheep_mock::word_overlap_embedding(near, 1536);
    let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((0.6..0.95).contains(&cos), "{cos}");

    let mock = mock().await;
    let strict = stack(&mock, layer());
    post(&strict, &ask(stored)).await;
    assert_eq!(
        post(&strict, &ask(near)).await.header("x-cache"),
        Some("MISS")
    );

    let loose = stack(&mock, layer().threshold(cos - 0.05));
    post(&loose, &ask(stored)).await;
    let reply = post(&loose, &ask(near)).await;
    assert!(is_semantic_hit(&reply));
    let shown: f32 = reply
        .header("x-holysheep-semantic-similarity")
        .unwrap()
        .parse()
        .unwrap();
    assert!((shown - cos).abs() < 0.01, "{shown} vs {cos}");
}

#[tokio::test]
async fn hits_come_in_the_shape_asked_for() {
    let mock = mock().await;
    let stack = stack(&mock, layer());
    let stored = ask("How do I keep HTTP connections warm?");
    let json_answer = post(&stack, &stored).await;
    let mut streamed = ask("how do i keep http connections warm");
    streamed["stream"] = true.into();
    let reply = post(&stack, &streamed).await;
    assert!(is_semantic_hit(&reply));
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (chunks, done) = sse_chunks(&reply.body);
    assert!(done && !chunks.is_empty());
    assert_eq!(reply.content(), json_answer.content());
    assert_eq!(chunks[0]["id"], json_answer.json()["id"]);

    // And the other way: a streamed answer served as JSON. It must carry its usage (as every
    // stream does behind `IncludeUsageLayer`): the exact cache makes no JSON answer without one.
    let mut stored = ask("Which Redis data type fits a leaderboard?");
    stored["stream"] = true.into();
    stored["stream_options"] = json!({"include_usage": true});
    let first = post(&stack, &stored).await;
    let reply = post(&stack, &ask("which redis data type fits a leaderboard")).await;
    assert!(is_semantic_hit(&reply), "{:?}", reply.headers);
    assert_eq!(reply.json()["object"], "chat.completion");
    assert_eq!(reply.content(), first.content());
    assert_eq!(mock.stats().chat_requests(), 2);
}

fn recorder() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

/// The sum of the counters `name` carrying every one of `labels`, since the recorder was
/// installed. A snapshot of the debugging recorder takes the counts since the previous one (and
/// tests snapshot in parallel), so every snapshot is added to running totals.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    static TOTALS: OnceLock<Mutex<HashMap<CompositeKey, u64>>> = OnceLock::new();
    let mut totals = TOTALS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (key, _, _, value) in recorder().snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            *totals.entry(key).or_default() += n;
        }
    }
    totals
        .iter()
        .filter(|(key, _)| {
            key.key().name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, n)| n)
        .sum()
}

/// An embedder that never answers in time, or fails.
struct Broken {
    slow: bool,
}

impl Embedder for Broken {
    fn embed<'a>(&'a self, _text: &'a str) -> BoxFuture<'a, Result<Embedding, EmbedError>> {
        Box::pin(async move {
            if self.slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(EmbedError::new("the embeddings endpoint is down"))
        })
    }

    fn model(&self) -> &str {
        "broken"
    }
}

#[tokio::test]
async fn a_failing_or_slow_embedder_is_a_counted_miss() {
    recorder();
    let mock = mock().await;
    for (slow, outcome) in [(false, "error"), (true, "timeout")] {
        let before = counter(
            holysheep_semantic::names::EMBEDDINGS,
            &[("outcome", outcome)],
        );
        let layer = layer()
            .embedder(Broken { slow })
            .embedding_timeout(Duration::from_millis(50));
        let stack = stack(&mock, layer);
        for question in [
            "What's the capital of France?",
            "what is the capital of france",
        ] {
            let reply = post(&stack, &ask(question)).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("x-cache"), Some("MISS"));
            assert_eq!(reply.content(), expected_content(&ask(question)));
        }
        let after = counter(
            holysheep_semantic::names::EMBEDDINGS,
            &[("outcome", outcome)],
        );
        assert!(after >= before + 2, "{outcome}: {before} → {after}");
    }
    // And the upstream's embeddings endpoint failing: the request still answers.
    let stack = stack(&mock, layer());
    mock.fail_next(1, http::StatusCode::INTERNAL_SERVER_ERROR);
    let reply = post(&stack, &ask("A question while embeddings fail")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content(),
        expected_content(&ask("A question while embeddings fail"))
    );
}

#[tokio::test]
async fn embedding_calls_tokens_and_dollars_are_counted() {
    use holysheep_semantic::names::{EMBEDDING_COST, EMBEDDING_TOKENS, EMBEDDINGS};
    recorder();
    let mock = mock().await;
    // A model no other test asks for: this test's counters are its own.
    let model = "text-embedding-counted";
    let stack = stack(
        &mock,
        layer()
            .embedding_model(model)
            // Whatever the machine's load: this test is about counting, not timing out.
            .embedding_timeout(Duration::from_secs(30))
            // $1 a million tokens: a micro-dollar a token.
            .embedding_price(ModelPrice::flat(1.0)),
    );
    let question = ask("How many tokens does embedding this question cost?");
    post(&stack, &question).await;
    let calls = |outcome| counter(EMBEDDINGS, &[("model", model), ("outcome", outcome)]);
    let tokens = counter(EMBEDDING_TOKENS, &[("model", model)]);
    assert_eq!(calls("ok"), 1);
    assert!(tokens > 0, "no embedding tokens counted");
    assert_eq!(counter(EMBEDDING_COST, &[("model", model)]), tokens);
    assert_eq!(mock.stats().embedding_requests(), 1);

    // The same words in another context: an exact miss whose embedding is already known.
    let mut other = question.clone();
    other["temperature"] = 0.3.into();
    assert_eq!(post(&stack, &other).await.header("x-cache"), Some("MISS"));
    assert_eq!((calls("ok"), calls("cached")), (1, 1));
    assert_eq!(counter(EMBEDDING_TOKENS, &[("model", model)]), tokens);
    assert_eq!(mock.stats().embedding_requests(), 1);
}

#[tokio::test]
async fn vectors_expire_with_their_ttl() {
    let mock = mock().await;
    let stack = stack(&mock, layer().ttl(Duration::from_millis(300)));
    post(&stack, &ask("What's the capital of France?")).await;
    assert_eq!(stack.get_ref().index().len(), 1);
    assert!(
        wait_until(Duration::from_secs(3), || stack
            .get_ref()
            .index()
            .is_empty())
        .await,
        "the vector outlived its TTL"
    );
    // The exact entry still lives (its TTL is the exact cache's), but no paraphrase finds it.
    assert_eq!(
        post(&stack, &ask("what is the capital of france"))
            .await
            .header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test]
async fn requests_and_tenants_opt_in_and_out() {
    let mock = mock().await;
    let stack = stack(&mock, layer().enabled(false).tenant("opted-in", true));
    let with = |body: &Value, tenant: Option<&'static str>, header: Option<&'static str>| {
        let mut req = chat_request(body);
        if let Some(t) = tenant {
            req.extensions_mut().insert(Namespace(Arc::from(t)));
        }
        if let Some(h) = header {
            req = holysheep_testkit::with_header(req, "x-holysheep-semantic-cache", h);
        }
        req
    };
    let (a, b) = (
        ask("What's the capital of France?"),
        ask("what is the capital of france"),
    );
    // Off by default here: no lookup, no vector.
    send(&stack, with(&a, None, None)).await;
    assert!(stack.get_ref().index().is_empty());
    // A request may opt in.
    send(&stack, with(&a, None, Some("on"))).await; // an exact hit: nothing recorded
    send(
        &stack,
        with(&ask("What's the capital of Italy?"), None, Some("on")),
    )
    .await;
    assert_eq!(stack.get_ref().index().len(), 1);
    let hit = send(
        &stack,
        with(&ask("what is the capital of italy"), None, Some("on")),
    )
    .await;
    assert!(is_semantic_hit(&hit));
    // A tenant opted in, unless its request says off; the header never goes upstream.
    send(&stack, with(&a, Some("opted-in"), None)).await;
    assert!(is_semantic_hit(
        &send(&stack, with(&b, Some("opted-in"), None)).await
    ));
    let off = send(
        &stack,
        with(
            &ask("WHAT is the capital of FRANCE"),
            Some("opted-in"),
            Some("off"),
        ),
    )
    .await;
    assert_eq!(off.header("x-cache"), Some("MISS"));
    let last = mock.stats().last_request().unwrap();
    assert!(!last.headers.contains_key("x-holysheep-semantic-cache"));
}

#[tokio::test]
async fn skipped_requests_go_upstream_untouched() {
    let mock = mock().await;
    let rules = SkipRules::default();
    let stack = stack(&mock, layer().skip_rules(rules));
    post(&stack, &ask("What's the capital of France?")).await;
    let mut n = ask("what is the capital of france");
    n["n"] = 2.into();
    assert_eq!(post(&stack, &n).await.header("x-cache"), Some("MISS"));
    let no_cache = holysheep_testkit::with_header(
        chat_request(&ask("what is the capital of france")),
        "cache-control",
        "no-cache",
    );
    assert_eq!(send(&stack, no_cache).await.header("x-cache"), Some("MISS"));
    assert_eq!(mock.stats().chat_requests(), 3);
}
