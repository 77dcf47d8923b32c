//! The gateway with `[semantic] enabled`, in front of the mock in its word-overlap embeddings
//! mode, as a caller sees it: a paraphrase is answered with the stored answer (JSON and SSE), a
//! different question goes upstream, and the semantic metrics show at `/metrics`.

use holysheep_mock::EmbeddingMode;
use holysheep_testkit::{
    MockConfig, Reply, UPSTREAM_KEY, chat_body, expected_content, http_client, json_request,
    post_json, sse_chunks, start_mock, stream_body,
};
use http::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

mod support;
use support::{start, test_config, url};

fn is_semantic_hit(reply: &Reply) -> bool {
    reply.header("cache-status") == Some("holysheep; hit; detail=semantic")
        && reply.header("x-cache") == Some("HIT")
}

/// Waits until the exact cache holds the answer to `body` (it writes its entry in a task once
/// the answer ended, a moment after the client has it), asking the same question again until
/// it is an exact hit (5 s at most).
async fn stored(chat: &str, body: &Value) {
    for _ in 0..100 {
        if post_json(chat, None, body).await.header("cache-status") == Some("holysheep; hit") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the answer to {body} was never stored");
}

#[tokio::test]
async fn paraphrases_are_answered_from_the_cache_through_the_gateway() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .embedding_mode(EmbeddingMode::WordOverlap),
    )
    .await;
    let mut config = test_config(&mock);
    config.settings.semantic.enabled = Some(true);
    // However loaded the machine: this test is about hits, not embedding timeouts.
    config.settings.semantic.embedding_timeout_ms = Some(30_000);
    let gateway = start(config).await;
    let chat = url(&gateway, "/v1/chat/completions");

    let question = chat_body("gpt-4.1", "What's the capital of France?");
    let first = post_json(&chat, None, &question).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.content(), expected_content(&question));
    stored(&chat, &question).await;
    let upstream = mock.stats().chat_requests();

    // A paraphrase: the stored answer, unchanged, with the similarity.
    let paraphrase = chat_body("gpt-4.1", "what is the capital of france");
    let hit = post_json(&chat, None, &paraphrase).await;
    assert_eq!(hit.status, StatusCode::OK, "{}", hit.text());
    assert!(is_semantic_hit(&hit), "{:?}", hit.headers);
    assert_eq!(
        hit.header("x-holysheep-semantic-similarity"),
        Some("1.0000")
    );
    assert_eq!(hit.json()["id"], first.json()["id"]);
    assert_eq!(hit.json()["created"], first.json()["created"]);
    assert_eq!(hit.content(), first.content());
    assert_eq!(mock.stats().chat_requests(), upstream);

    // A different question with much the same words: upstream, its own answer.
    let other = chat_body("gpt-4.1", "What's the capital of Spain?");
    let miss = post_json(&chat, None, &other).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.content(), expected_content(&other));
    assert_eq!(mock.stats().chat_requests(), upstream + 1);

    // A streamed paraphrase: the stored answer as SSE.
    let streamed = stream_body("gpt-4.1", "WHAT is the capital of France", false);
    let hit = post_json(&chat, None, &streamed).await;
    assert_eq!(hit.status, StatusCode::OK, "{}", hit.text());
    assert!(is_semantic_hit(&hit), "{:?}", hit.headers);
    assert!(
        hit.header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        hit.headers
    );
    let (chunks, done) = sse_chunks(&hit.body);
    assert!(done && !chunks.is_empty(), "{}", hit.text());
    assert_eq!(chunks[0]["id"], first.json()["id"]);
    assert_eq!(hit.content(), first.content());
    assert_eq!(mock.stats().chat_requests(), upstream + 1);

    // The semantic metrics: lookups by result, the similarity of hits, embedding calls.
    let metrics = holysheep_testkit::send(
        &http_client(),
        json_request(Method::GET, &url(&gateway, "/metrics"), None, ""),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    for name in [
        holysheep::semantic::names::LOOKUPS,
        holysheep::semantic::names::SIMILARITY,
        holysheep::semantic::names::EMBEDDINGS,
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // The similarity is a histogram (buckets where thresholds live), not a summary.
    for line in [
        format!(
            "{}_bucket{{le=\"0.95\"}}",
            holysheep::semantic::names::SIMILARITY
        ),
        format!(
            "{}_bucket{{le=\"1\"}}",
            holysheep::semantic::names::SIMILARITY
        ),
    ] {
        assert!(
            text.contains(&line),
            "{line} missing from /metrics:\n{text}"
        );
    }
    let hits = metric_lines(&text, holysheep::semantic::names::LOOKUPS, "result=\"hit\"");
    assert!(
        !hits.is_empty(),
        "no semantic hit counted at /metrics:\n{text}"
    );
    // Dollars saved by semantic hits, apart from exact hits.
    assert!(
        !metric_lines(
            &text,
            "holysheep_cost_saved_microusd_total",
            "via=\"semantic\""
        )
        .is_empty(),
        "no saving by semantic hits at /metrics:\n{text}"
    );
    gateway.shutdown().await;
}

/// The sample lines of `name` whose labels contain `label`.
fn metric_lines<'a>(text: &'a str, name: &str, label: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .collect()
}
