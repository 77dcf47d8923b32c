//! The client against the mock upstream over loopback TCP.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use holysheep_client::{Error, HolySheepClient, ResponseBody};
use holysheep_mock::{CONNECTION_HEADER, Latency, MockConfig};
use holysheep_testkit::{
    UPSTREAM_KEY, chat_body, chat_request, io_error_kinds, sse_chunks, start_mock, stream_body,
    upstream_builder,
};
use http::{Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{Service, ServiceExt};

fn chat() -> Value {
    chat_body("gpt-4.1", "hello")
}

fn chat_stream() -> Value {
    stream_body("gpt-4.1", "hello", false)
}

async fn call(
    client: &mut HolySheepClient,
    request: http::Request<Full<Bytes>>,
) -> Result<Response<ResponseBody>, Error> {
    ServiceExt::<http::Request<Full<Bytes>>>::ready(client)
        .await?
        .call(request)
        .await
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_and_pay_the_cold_penalty_once() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .cold_penalty(Duration::from_millis(50)),
    )
    .await;
    let mut client = upstream_builder(&mock).build().expect("client builds");

    for _ in 0..100 {
        let response = call(&mut client, chat_request(&chat()))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONNECTION_HEADER], "1");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(answer["object"], "chat.completion");
    }
    assert_eq!(mock.stats().chat_requests(), 100);
    assert_eq!(mock.stats().connections(), 1);
    assert_eq!(mock.stats().cold_starts(), 1);
}

#[tokio::test]
async fn upstream_sees_our_key_and_host_never_the_callers() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let mut client = upstream_builder(&mock).build().expect("client builds");

    let mut request = chat_request(&chat());
    let headers = request.headers_mut();
    headers.insert(
        header::AUTHORIZATION,
        "Bearer caller-key".parse().expect("value"),
    );
    headers.insert(header::HOST, "gateway.example".parse().expect("value"));
    // Callers behind an h2 front end hand over HTTP/2 requests; the upstream speaks HTTP/1.1.
    *request.version_mut() = Version::HTTP_2;
    let response = call(&mut client, request).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);

    let seen = mock.stats().last_request().expect("recorded");
    assert_eq!(seen.uri.path(), "/v1/chat/completions");
    let auth: Vec<_> = seen.headers.get_all(header::AUTHORIZATION).iter().collect();
    assert_eq!(auth, [format!("Bearer {UPSTREAM_KEY}").as_str()]);
    assert_eq!(seen.headers[header::HOST], mock.addr().to_string().as_str());
    assert_eq!(seen.body, chat().to_string().as_bytes());
}

#[tokio::test]
async fn without_a_key_no_authorization_goes_upstream() {
    let mock = start_mock(MockConfig::default()).await;
    let mut client = HolySheepClient::builder()
        .base_url(mock.base_url())
        .build()
        .expect("client builds");
    let mut request = chat_request(&chat());
    request.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer caller-key".parse().expect("value"),
    );
    let response = call(&mut client, request).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = mock.stats().last_request().expect("recorded");
    assert!(!seen.headers.contains_key(header::AUTHORIZATION));
}

#[tokio::test]
async fn non_2xx_answers_are_responses_not_errors() {
    let mock = start_mock(MockConfig::default().api_key("sk-other")).await;
    let mut client = upstream_builder(&mock).build().expect("client builds");

    let response = call(&mut client, chat_request(&chat()))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let error: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(error["error"]["message"].is_string());

    mock.update(|cfg| cfg.api_key = None);
    mock.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    let response = call(&mut client, chat_request(&chat()))
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn headers_timeout_fires_against_a_slow_upstream() {
    let mock =
        start_mock(MockConfig::default().latency(Latency::fixed(Duration::from_secs(5)))).await;
    let mut client = upstream_builder(&mock)
        .api_key("sk-slow-secret")
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client builds");

    let error = call(&mut client, chat_request(&chat()))
        .await
        .expect_err("too slow");
    assert!(error.is_timeout(), "{error:?}");
    assert!(!error.is_connect() && !error.is_body(), "{error:?}");
    assert_eq!(io_error_kinds(&error), [io::ErrorKind::TimedOut]);
    assert_eq!(
        error.to_string(),
        "upstream sent no response headers within 200ms"
    );
    assert!(!format!("{error:?}").contains("sk-slow-secret"));
}

#[tokio::test]
async fn read_timeout_fires_between_stream_chunks() {
    let mock = start_mock(
        MockConfig::default()
            .stream_chunks(4)
            .stream_gap(Duration::from_secs(5)),
    )
    .await;
    let mut client = upstream_builder(&mock)
        .read_timeout(Duration::from_millis(200))
        .build()
        .expect("client builds");

    let response = call(&mut client, chat_request(&chat_stream()))
        .await
        .expect("headers");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first frame")
        .expect("first chunk comes at once");
    assert!(first.is_data());
    let error = loop {
        match body.frame().await {
            Some(Ok(_)) => continue,
            Some(Err(error)) => break error,
            None => panic!("the stream ended without the read timeout firing"),
        }
    };
    assert!(error.is_timeout() && error.is_body(), "{error:?}");
    assert_eq!(io_error_kinds(&error), [io::ErrorKind::TimedOut]);
    // After the timeout the body is over.
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn stream_chunks_reach_the_caller_while_the_upstream_is_still_sending() {
    let mock = start_mock(
        MockConfig::default()
            .stream_chunks(20)
            .stream_gap(Duration::from_millis(100)),
    )
    .await;
    let mut client = upstream_builder(&mock).build().expect("client builds");

    let response = call(&mut client, chat_request(&chat_stream()))
        .await
        .expect("headers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();

    let first = body
        .frame()
        .await
        .expect("a first frame")
        .expect("no error")
        .into_data()
        .expect("data");
    // The upstream is still streaming: its response is in flight until the last chunk.
    assert_eq!(mock.stats().in_flight(), 1);

    let mut all = first.to_vec();
    let mut frames = 1;
    while let Some(frame) = body.frame().await {
        let data = frame.expect("no error").into_data().expect("data");
        all.extend_from_slice(&data);
        frames += 1;
    }
    assert!(sse_chunks(&all).1, "the stream ends with [DONE]");
    // 20 chunks 100 ms apart cannot arrive as one buffered block.
    assert!(frames >= 10, "only {frames} frames");
}

#[tokio::test]
async fn http2_only_speaks_h2c_to_the_upstream() {
    let mock = start_mock(MockConfig::default()).await;
    let mut client = upstream_builder(&mock)
        .http2_only(true)
        .build()
        .expect("client builds");
    for _ in 0..3 {
        let response = call(&mut client, chat_request(&chat()))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        response.into_body().collect().await.expect("body");
    }
    assert_eq!(mock.stats().connections(), 1);
}

#[tokio::test]
async fn concurrent_requests_through_a_service_builder() {
    let mock =
        start_mock(MockConfig::default().latency(Latency::fixed(Duration::from_millis(20)))).await;
    let client = upstream_builder(&mock).build().expect("client builds");
    let service = tower::ServiceBuilder::new()
        .concurrency_limit(4)
        .service(client);

    let mut tasks = Vec::new();
    for _ in 0..16 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let response = service.oneshot(chat_request(&chat())).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, Error>(status)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("answered"), StatusCode::OK);
    }
    assert_eq!(mock.stats().chat_requests(), 16);
    assert!(
        mock.stats().connections() <= 4,
        "{}",
        mock.stats().connections()
    );
}
