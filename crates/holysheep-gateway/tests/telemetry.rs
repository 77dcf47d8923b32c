//! What the gateway tells about each request: its id, and what it cost at the prices of a
//! price file. (Span export is in `otlp.rs`, with the `otlp` feature.)

use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, expected_usage, http_client, json_request, send,
    start_mock,
};
use http::Method;

use holysheep_gateway::{Config, Gateway};

mod support;

#[tokio::test]
async fn request_ids_round_trip_and_a_litellm_price_file_prices_the_answer() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("model_prices_and_context_window.json");
    // LiteLLM's shape: USD per token. $3 / $9 per million for a model the preset lacks.
    std::fs::write(
        &prices,
        r#"{"sample_spec": {"input_cost_per_token": 0.0},
            "priced-by-file": {"input_cost_per_token": 3e-06, "output_cost_per_token": 9e-06, "mode": "chat"}}"#,
    )
    .unwrap();
    let mut config = Config::in_process(mock.base_url(), UPSTREAM_KEY);
    config.settings.metrics.price_files = Some(vec![prices]);
    let gateway = Gateway::start(config).await.expect("the gateway starts");
    let url = format!("http://{}/v1/chat/completions", gateway.addr());
    let client = http_client();
    let body = chat_body("priced-by-file", "what does this cost");

    let mut request = json_request(Method::POST, &url, None, body.to_string());
    request
        .headers_mut()
        .insert("x-request-id", "caller-42".parse().unwrap());
    let reply = send(&client, request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-request-id"), Some("caller-42"));
    // The upstream's own id is kept apart.
    assert!(reply.header("x-upstream-request-id").is_some());

    // No id, or one unfit for a log line: a new UUID.
    for id in [None, Some("x".repeat(200)), Some("two words".to_owned())] {
        let mut request = json_request(Method::POST, &url, None, body.to_string());
        if let Some(id) = &id {
            request
                .headers_mut()
                .insert("x-request-id", id.parse().unwrap());
        }
        let reply = send(&client, request).await;
        let got = reply.header("x-request-id").expect("an id");
        assert_eq!(got.len(), 36, "{id:?} became {got}");
        assert_ne!(Some(got), id.as_deref());
    }

    let metrics = send(
        &client,
        json_request(
            Method::GET,
            &format!("http://{}/metrics", gateway.addr()),
            None,
            String::new(),
        ),
    )
    .await
    .text();
    let usage = expected_usage(&body);
    let micro = 3 * usage.prompt_tokens + 9 * usage.completion_tokens;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("holysheep_cost_microusd_total{")
                && l.contains("model=\"priced-by-file\"")
        })
        .unwrap_or_else(|| panic!("no cost for the file's model:\n{metrics}"));
    assert_eq!(
        line.rsplit(' ').next(),
        Some(micro.to_string().as_str()),
        "{line}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_price_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[models.m]\ninput = -1.0\n").unwrap();
    let mut config = Config::in_process("http://127.0.0.1:9/v1", UPSTREAM_KEY);
    config.settings.metrics.price_files = Some(vec![prices.clone()]);
    let error = Gateway::start(config).await.unwrap_err().to_string();
    assert!(error.contains("prices.toml"), "{error}");
    assert!(error.contains("not negative"), "{error}");
}

#[tokio::test]
async fn log_lines_carry_the_request_id_and_no_prompt() {
    let gateway = support::Binary::start(
        &["--demo", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info".to_owned())],
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", gateway.addr);
    let body = chat_body("gpt-4.1", "a prompt that stays private");
    let mut request = json_request(Method::POST, &url, None, body.to_string());
    request
        .headers_mut()
        .insert("x-request-id", "log-me-7".parse().unwrap());
    let reply = send(&http_client(), request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let logged = holysheep_testkit::wait_until(std::time::Duration::from_secs(10), || {
        gateway
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("request_id=\"log-me-7\""))
    })
    .await;
    let lines = gateway.lines.lock().unwrap().clone();
    assert!(logged, "{lines:#?}");
    let line = lines.iter().find(|l| l.contains("log-me-7")).unwrap();
    assert!(
        line.contains("model=gpt-4.1") && line.contains("status=200"),
        "{line}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("stays private")),
        "{lines:#?}"
    );
}
