//! Connect failures over loopback: refused connections and the connect timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use holysheep_client::{Error, HolySheepClient};
use holysheep_testkit::io_error_kinds;
use http_body_util::Empty;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::ServiceExt;

async fn get(
    client: HolySheepClient,
) -> Result<http::Response<holysheep_client::ResponseBody>, Error> {
    let request = http::Request::get("/models")
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    client.oneshot(request).await
}

#[tokio::test]
async fn refused_connection_is_a_connect_error_with_the_io_cause() {
    // Bind, learn the port, close: nothing listens there any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let client = HolySheepClient::builder()
        .base_url(format!("http://{addr}/v1"))
        .api_key("sk-refused-secret")
        .build()
        .expect("client builds");

    let error = get(client).await.expect_err("nothing listens");
    assert!(error.is_connect(), "{error:?}");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(
        io_error_kinds(&error).contains(&io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
    assert!(!error.to_string().contains("sk-refused-secret"));
    assert!(!format!("{error:?}").contains("sk-refused-secret"));
}

/// A listener that never accepts, with its accept queue filled, so further SYNs go
/// unanswered (Linux drops them) and a connect hangs.
async fn black_hole() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(error)) => panic!("filling the backlog failed: {error}"),
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the accept queue never filled; cannot provoke a connect timeout here");
}

#[tokio::test]
async fn connect_timeout_fires_and_reads_as_timed_out() {
    let (addr, _listener, _held) = black_hole().await;
    let client = HolySheepClient::builder()
        .base_url(format!("http://{addr}"))
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");

    let error = get(client).await.expect_err("connect cannot finish");
    assert!(error.is_timeout(), "{error:?}");
    assert!(error.is_connect(), "{error:?}");
    assert!(
        io_error_kinds(&error).contains(&io::ErrorKind::TimedOut),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "timed out connecting to the upstream");
}

#[tokio::test]
async fn headers_deadline_covers_a_hanging_connect() {
    let (addr, _listener, _held) = black_hole().await;
    let client = HolySheepClient::builder()
        .base_url(format!("http://{addr}"))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client builds");

    let error = get(client).await.expect_err("connect cannot finish");
    assert!(error.is_timeout(), "{error:?}");
    assert!(!error.is_connect(), "{error:?}");
    assert_eq!(io_error_kinds(&error), [io::ErrorKind::TimedOut]);
}
