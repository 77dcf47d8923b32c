//! The mock upstream every other integration test relies on, seen from the root package.

use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, expected_content, post_chat, sse_chunks, start_mock,
    stream_body, stream_content,
};
use http::StatusCode;

#[tokio::test]
async fn mock_answers_a_chat_completion() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let body = chat_body("gpt-4.1", "How do I pool connections?");

    let reply = post_chat(&mock.base_url(), Some(UPSTREAM_KEY), &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["model"], "gpt-4.1");
    assert_eq!(reply.content(), expected_content(&body));

    let streamed = post_chat(
        &mock.base_url(),
        Some(UPSTREAM_KEY),
        &stream_body("gpt-4.1", "How do I pool connections?", true),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::OK);
    let (chunks, done) = sse_chunks(&streamed.body);
    assert!(done);
    assert_eq!(stream_content(&chunks), reply.content());
    assert_eq!(
        chunks.last().unwrap()["usage"]["total_tokens"],
        json["usage"]["total_tokens"]
    );

    let stats = mock.stats();
    assert_eq!((stats.chat_requests(), stats.stream_requests()), (2, 1));
    let seen = stats.last_request().unwrap();
    assert_eq!(
        seen.authorization(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn mock_refuses_a_wrong_key() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let reply = post_chat(
        &mock.base_url(),
        Some("sk-caller"),
        &chat_body("gpt-4.1", "hi"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");
    assert_eq!(mock.stats().chat_requests(), 0);
}
