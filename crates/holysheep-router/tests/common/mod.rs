//! Shared by the router's integration tests: mocks on loopback and a router over them.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use holysheep_router::{Deployment, Router};
use holysheep_testkit::{MockConfig, MockServer, Reply, UPSTREAM_KEY, chat_request, start_mock};
use serde_json::Value;
use tower::ServiceExt;

/// A mock that checks the test key, with this latency.
pub async fn mock(latency: Duration) -> MockServer {
    start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(holysheep_mock::Latency::fixed(latency)),
    )
    .await
}

/// A deployment named `name` on `mock`.
pub fn deployment(name: &str, mock: &MockServer) -> Deployment {
    Deployment::new(mock.base_url(), UPSTREAM_KEY).name(name)
}

/// Sends `body` through the router; the whole answer, or the error's text.
pub async fn ask(router: &Router, body: &Value) -> Result<Reply, String> {
    match router.clone().oneshot(chat_request(body)).await {
        Ok(res) => Ok(Reply::from_response(res).await),
        Err(error) => Err(error.to_string()),
    }
}

/// Chat requests the mock got.
pub fn chats(mock: &MockServer) -> u64 {
    mock.stats().chat_requests()
}
