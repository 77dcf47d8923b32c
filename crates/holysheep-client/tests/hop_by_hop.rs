//! Headers of the upstream's connection stay with it (RFC 9110 §7.6.1): an upstream over
//! loopback TCP that names a header in `Connection` does not get it into the answer the client
//! returns.

use bytes::Bytes;
use holysheep_client::HolySheepClient;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Answers one request with a head that names `x-upstream-hop` in `Connection`; returns the
/// request head it read.
async fn answer_once(listener: TcpListener) -> String {
    let (mut stream, _) = listener.accept().await.expect("the client connects");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
              connection: keep-alive, x-upstream-hop\r\nx-upstream-hop: upstream-only\r\n\
              keep-alive: timeout=5\r\nx-end-to-end: kept\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .expect("the answer is written");
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_connection_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(answer_once(listener));
    let client = HolySheepClient::builder()
        .base_url(format!("http://{addr}/v1"))
        .api_key("sk-test")
        .build()
        .expect("client builds");

    let request = Request::get("/models")
        .header("connection", "x-caller-hop")
        .header("x-caller-hop", "caller-only")
        .header("x-request-id", "r-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{}");

    assert_eq!(headers["x-end-to-end"], "kept");
    for gone in ["x-upstream-hop", "keep-alive", "connection"] {
        assert!(headers.get(gone).is_none(), "{gone}: {headers:?}");
    }
    let head = upstream.await.unwrap();
    assert!(head.contains("x-request-id: r-1"), "{head}");
    assert!(!head.contains("x-caller-hop"), "{head}");
}
