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

/// A bare HTTP/1.1 upstream on loopback that answers every request `200` with a completion of
/// `model` and these extra headers (such as `x-ratelimit-*`), counting what it answered.
pub struct HeaderUpstream {
    pub base_url: String,
    pub answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeaderUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn header_upstream(headers: &'static [(&'static str, &'static str)]) -> HeaderUpstream {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = answered.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request per connection: read its head and its declared body.
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    break;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"id":"x","object":"chat.completion","created":0,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    HeaderUpstream {
        base_url,
        answered,
        task,
    }
}
