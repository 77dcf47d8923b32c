//! The gateway's log lines, captured from a subscriber of the test's own.
//!
//! These tests are a binary of their own: tracing caches per call site whether anyone listens,
//! and a test on another thread of the same process that reaches a call site while no
//! subscriber of its own is set can leave "no one" cached just as a test here sets its own.
//! Here every test sets its subscriber before the gateway logs anything.

use holysheep_testkit::{UPSTREAM_KEY, chat_body, post_json};
use http::StatusCode;
use serde_json::Value;

use holysheep_gateway::Secret;

mod support;
use support::{LogSink, mock_and_gateway, url};

// The default (current-thread) runtime runs the server's tasks on this thread, so the
// thread-local subscriber sees everything the gateway logs.
#[tokio::test]
async fn one_log_line_per_request_and_no_key_in_any_log() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_mock, gateway) = mock_and_gateway(|c| {
        c.gateway_keys = vec![Secret::new("gw-log-key")];
    })
    .await;
    let chat = url(&gateway, "/v1/chat/completions");
    let body = chat_body("gemini-2.5-flash", "log me once");
    assert_eq!(
        post_json(&chat, Some("gw-log-key"), &body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_json(&chat, Some("wrong-key"), &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    gateway.shutdown().await;

    let lines = sink.lines();
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["level"] == "INFO")
        .collect();
    assert_eq!(requests.len(), 2, "{lines:#?}");
    let ok = requests[0];
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["route"], "/v1/chat/completions");
    assert_eq!(ok["model"], "gemini-2.5-flash");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["cache"], "miss");
    assert_eq!(ok["attempts"], 1);
    assert!(ok["duration_ms"].as_f64().is_some());
    assert_eq!(requests[1]["status"], 401);
    // The tenant: the key's namespace (a digest prefix), never the key; none for a refusal.
    let tenant = ok["tenant"].as_str().expect("a tenant field");
    assert_eq!(tenant.len(), 16, "{tenant}");
    assert!(tenant.bytes().all(|b| b.is_ascii_hexdigit()), "{tenant}");
    assert_eq!(requests[1]["tenant"], "-");

    let all = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [UPSTREAM_KEY, "gw-log-key", "wrong-key"] {
        assert!(!all.contains(secret), "{secret} appeared in the logs");
    }
}

// The default (current-thread) runtime runs the server's tasks on this thread, so the
// thread-local subscriber sees everything the gateway logs.
#[tokio::test]
async fn caller_supplied_fields_cannot_forge_or_flood_text_log_lines() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_mock, gateway) = mock_and_gateway(|_| {}).await;
    let chat = url(&gateway, "/v1/chat/completions");
    let forged = "gpt-4.1\nINJECTED LOG LINE status=200\r\u{1b}[31mred\u{1b}[0m\u{7}";
    let huge = "m".repeat(1 << 20);
    for model in [forged, huge.as_str()] {
        let reply = post_json(&chat, None, &chat_body(model, "log me")).await;
        assert!(reply.status.as_u16() < 500, "{}", reply.text());
    }
    gateway.shutdown().await;

    let text = sink.text();
    let requests: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" request "))
        .collect();
    assert_eq!(requests.len(), 2, "one line per request: {text}");
    assert!(
        !text.lines().any(|line| line.starts_with("INJECTED")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'));
    assert!(
        requests[0].contains(r"gpt-4.1\nINJECTED LOG LINE"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains(r"\u{1b}[31m"), "{}", requests[0]);
    assert!(
        requests[1].len() < 4096,
        "a 1 MiB model makes a {}-byte line",
        requests[1].len()
    );
    assert!(
        requests[1].contains("bytes"),
        "says it was cut: {}",
        requests[1]
    );
}
