//! Hostile and careless callers over real loopback sockets: headers dripped a byte at a time,
//! stalled bodies, idle keep-alive connections, h2 streams that never end, more connections than
//! the cap, a body written whole before the answer is read, a flood of readiness probes, log
//! injection through the model, and hop-by-hop headers in both directions.
//!
//! Each timeout is configured short, so the tests wait fractions of a second; every wait on the
//! gateway is bounded, so a gateway that never closes fails the test instead of hanging it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, http_client, json_request, start_mock, stream_body,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use holysheep_gateway::Gateway;

mod support;
use support::{mock_and_gateway, test_config, url};

/// Long enough for any answer on loopback, short enough that a gateway that never closes fails
/// the test quickly.
const BOUND: Duration = Duration::from_secs(5);

/// What a caller reads within [`BOUND`]: until `enough` holds for what arrived, or the gateway
/// closes the connection; `None` if neither happened in time.
async fn read_from(
    stream: &mut (impl AsyncRead + Unpin),
    enough: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        while !enough(&String::from_utf8_lossy(&received)) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.ok()?;
    Some(String::from_utf8_lossy(&received).into_owned())
}

/// Reads until the gateway closes the connection; `None` if it is still open after [`BOUND`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    read_from(stream, |_| false).await
}

/// Reads an answer that ends with `needle`, on a connection that stays open.
async fn read_answer(stream: &mut TcpStream, needle: &str) -> String {
    let answer = read_from(stream, |text| text.contains(needle))
        .await
        .unwrap_or_else(|| panic!("no {needle:?} within {BOUND:?}"));
    assert!(
        answer.contains(needle),
        "closed before {needle:?}: {answer}"
    );
    answer
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";

#[tokio::test]
async fn headers_dripped_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.header_read_timeout_ms = Some(300);
    })
    .await;
    let stream = TcpStream::connect(gateway.addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-padding: 0123456789abcdef\r\n\r\n";
    // 60-odd bytes, one every 50 ms: about 3 s for the whole head, ten times the timeout.
    let drip = async {
        for byte in head {
            writer.write_all(&[*byte]).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, std::io::Error>(())
    };
    let closed = async {
        let mut received = Vec::new();
        let _ = reader.read_to_end(&mut received).await;
        received
    };
    tokio::select! {
        biased;
        received = closed => assert!(
            received.is_empty(),
            "an unfinished head gets no answer: {}",
            String::from_utf8_lossy(&received)
        ),
        sent = drip => assert!(
            sent.is_err(),
            "the whole head went out a byte at a time and the connection was not closed"
        ),
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.header_read_timeout_ms = Some(200);
    })
    .await;
    let mut silent = TcpStream::connect(gateway.addr()).await.unwrap();
    let received = read_until_closed(&mut silent)
        .await
        .expect("a silent connection is closed");
    assert!(received.is_empty());

    let mut partial = TcpStream::connect(gateway.addr()).await.unwrap();
    partial.write_all(b"POST /v1/chat/comp").await.unwrap();
    assert!(read_until_closed(&mut partial).await.is_some());
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_keep_alive_timeout() {
    // The header timeout is long: only the keep-alive timeout can close the idle connection
    // within the bound.
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.header_read_timeout_ms = Some(60_000);
        c.settings.server.keep_alive_timeout_ms = Some(300);
    })
    .await;
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    for _ in 0..2 {
        // Kept alive between requests that follow each other closely.
        stream.write_all(HEALTHZ).await.unwrap();
        let answer = read_answer(&mut stream, r#"{"status":"ok"}"#).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let rest = read_until_closed(&mut stream)
        .await
        .expect("the idle connection is closed");
    assert!(rest.is_empty(), "{rest}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_body_dripped_slowly_gets_408_at_the_body_timeout() {
    let (mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.body_read_timeout_ms = Some(300);
    })
    .await;
    let stream = TcpStream::connect(gateway.addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    // A byte every 50 ms: the gap never reaches the timeout, the whole body would take 50 s.
    let drip = tokio::spawn(async move {
        for _ in 0..999 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let answer = read_from(&mut reader, |text| text.contains("\r\n\r\n")).await;
    drip.abort();
    let answer = answer.expect("an answer to a body dripped for longer than the bound");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(mock.stats().requests(), 0, "nothing was forwarded");
    gateway.shutdown().await;
}

/// An h2 connection with prior knowledge (what `curl --http2-prior-knowledge` makes).
async fn h2_connect(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<
    StreamBody<tokio_stream::Receiver<Result<http_body::Frame<Bytes>, std::io::Error>>>,
> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("an h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A `Stream` over an mpsc receiver, for request bodies a test feeds by hand.
mod tokio_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Receiver<T>(pub(crate) tokio::sync::mpsc::Receiver<T>);

    impl<T> futures_util::Stream for Receiver<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[tokio::test]
async fn an_h2_stream_without_end_stream_gets_408_at_the_body_timeout() {
    let (mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.body_read_timeout_ms = Some(300);
    })
    .await;
    let mut sender = h2_connect(gateway.addr()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(
        b"{\"model\"",
    ))))
    .await
    .unwrap();
    let request = Request::post(url(&gateway, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(StreamBody::new(tokio_stream::Receiver(rx)))
        .unwrap();
    // `tx` stays alive: the stream never sends END_STREAM.
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .expect("an answer to a stream that never ends")
        .expect("a response, not a reset");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    assert_eq!(mock.stats().requests(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn h2_connections_are_told_the_stream_limit() {
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.h2_max_concurrent_streams = Some(3);
    })
    .await;
    let tcp = TcpStream::connect(gateway.addr()).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let request = Request::get(url(&gateway, "/healthz")).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    // The connection future carries the frames; the server's settings arrive with the answer.
    let response = tokio::select! {
        response = response => response.expect("an answer"),
        result = &mut connection => panic!("the connection ended first: {result:?}"),
    };
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(connection.max_concurrent_send_streams(), 3);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_with_503() {
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.max_connections = Some(2);
    })
    .await;
    // Two kept-alive connections, each shown to be served: they hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        read_answer(&mut stream, r#"{"status":"ok"}"#).await;
        held.push(stream);
    }
    let mut third = TcpStream::connect(gateway.addr()).await.unwrap();
    let answer = read_until_closed(&mut third)
        .await
        .expect("the connection past the cap is closed, not left waiting");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after"), "{answer}");

    // A place freed is a place for the next caller.
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        let answer = read_from(&mut stream, |text| text.contains(r#"{"status":"ok"}"#)).await;
        if answer.is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served,
        "the freed place was never given to a new connection"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_client_that_writes_the_whole_oversized_body_first_reads_the_413() {
    // What Python's urllib does: send the whole request, then read the answer.
    let (mock, gateway) = mock_and_gateway(|_| {}).await;
    let body_len = 5 << 20;
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n\
         content-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    );
    let mut request = head.into_bytes();
    request.resize(request.len() + body_len, b' ');
    tokio::time::timeout(BOUND, stream.write_all(&request))
        .await
        .expect("the body is taken within the bound")
        .expect("the whole body is written without a broken pipe");
    let answer = read_until_closed(&mut stream)
        .await
        .expect("the gateway closes after answering");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    assert_eq!(mock.stats().requests(), 0);
    // The caller closes too, which ends the gateway's lingering at once.
    drop(stream);
    assert!(
        gateway.shutdown().await,
        "every connection ended within the grace period"
    );
}

#[tokio::test]
async fn many_readiness_probes_make_one_upstream_probe_per_interval() {
    let (mock, gateway) = mock_and_gateway(|c| {
        c.settings.server.ready_cache_ms = Some(60_000);
    })
    .await;
    let client = http_client();
    let readyz = url(&gateway, "/readyz");
    let probes = (0..300).map(|_| {
        let request = json_request(Method::GET, &readyz, None, String::new());
        holysheep_testkit::send(&client, request)
    });
    let replies = futures_util::future::join_all(probes).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["status"], "ready");
    }
    assert_eq!(mock.stats().requests_for_path("/v1/models"), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_readiness_probe_waits_for_a_pool_slot_like_any_call() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(20)
            .stream_gap(Duration::from_millis(100)),
    )
    .await;
    let mut config = test_config(&mock);
    let s = &mut config.settings;
    s.pool.max_in_flight = Some(1);
    s.pool.per_host = Some(1);
    s.server.ready_timeout_ms = Some(200);
    let gateway = Gateway::start(config).await.expect("the gateway starts");

    // A stream holds the only slot for about two seconds.
    let request = json_request(
        Method::POST,
        &url(&gateway, "/v1/chat/completions"),
        None,
        stream_body("gpt-4.1", "hold the slot", false).to_string(),
    );
    let stream = http_client().request(request).await.expect("a stream");
    assert_eq!(stream.status(), StatusCode::OK);

    let ready = holysheep_testkit::send(
        &http_client(),
        json_request(Method::GET, &url(&gateway, "/readyz"), None, String::new()),
    )
    .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        mock.stats().requests_for_path("/v1/models"),
        0,
        "the probe queued for the slot instead of going past the pool"
    );
    drop(stream);
    gateway.shutdown().await;
}

#[tokio::test]
async fn not_ready_says_so_without_internals() {
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.settings.client.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
    })
    .await;
    let ready = holysheep_testkit::send(
        &http_client(),
        json_request(Method::GET, &url(&gateway, "/readyz"), None, String::new()),
    )
    .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.json();
    assert_eq!(body["error"]["code"], "not_ready");
    let text = ready.text();
    for internal in [
        "upstream",
        "127.0.0.1",
        &port.to_string(),
        "onnect",
        "error",
    ] {
        assert!(
            !text.to_lowercase().contains(&internal.to_lowercase()) || internal == "error",
            "the body names {internal:?}: {text}"
        );
    }
    assert!(
        !body["error"]["message"].as_str().unwrap().contains(':'),
        "{text}"
    );
    gateway.shutdown().await;
}

/// An upstream that answers every request with the same head, naming `x-upstream-hop` in
/// `Connection`, and records the request heads it received.
async fn hop_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          connection: x-upstream-hop\r\nx-upstream-hop: upstream-connection\r\n\
                          keep-alive: timeout=5\r\nx-upstream-end: kept\r\n\
                          content-length: 2\r\n\r\n{}",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), heads)
}

#[tokio::test]
async fn headers_named_in_connection_stay_on_their_hop_both_ways() {
    let (base_url, heads) = hop_upstream().await;
    let mock = start_mock(MockConfig::default()).await;
    let mut config = test_config(&mock);
    config.settings.client.base_url = Some(base_url);
    let gateway = Gateway::start(config).await.expect("the gateway starts");

    let request = Request::get(url(&gateway, "/v1/models"))
        .header("connection", "keep-alive, x-caller-hop")
        .header("x-caller-hop", "caller-connection")
        .header("x-caller-end", "kept")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = http_client().request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await;

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].contains("x-caller-end: kept"), "{}", heads[0]);
    assert!(!heads[0].contains("x-caller-hop"), "{}", heads[0]);

    assert_eq!(headers["x-upstream-end"], "kept");
    assert!(headers.get("x-upstream-hop").is_none(), "{headers:?}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_empty_get_leaves_the_connection_reusable() {
    // The hardening must not cost keep-alive: many requests, one connection.
    let (_mock, gateway) = mock_and_gateway(|_| {}).await;
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    for _ in 0..20 {
        stream.write_all(HEALTHZ).await.unwrap();
        let answer = read_answer(&mut stream, r#"{"status":"ok"}"#).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    gateway.shutdown().await;
}

/// The issue's scene at the binary: a low open-file limit (`ulimit -n 256`) and 250 connections
/// that send nothing. Without a cap and a header bound they took every descriptor for good:
/// accepting failed in a loop and every normal request timed out. Now the cap (fitted under the
/// limit at start) turns the extra ones away with 503, the header bound closes the silent ones,
/// and a normal request is served.
#[tokio::test]
async fn a_low_open_file_limit_and_silent_connections_do_not_starve_callers() {
    use std::io::BufRead;

    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_holysheep-gateway"))
        .args([
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--header-read-timeout-ms",
            "500",
        ])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let log_lines = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("holysheep gateway listening on http://") {
                let _ = addr_tx.send(addr.to_owned());
            }
            let mut log = log_lines.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr: SocketAddr = addr_rx
        .recv_timeout(BOUND)
        .expect("the gateway starts")
        .parse()
        .expect("an address");

    let mut silent = Vec::new();
    for _ in 0..250 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            silent.push(stream);
        }
    }
    let client = http_client();
    let healthz = format!("http://{addr}/healthz");
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut served = false;
    while !served && tokio::time::Instant::now() < deadline {
        let request = json_request(Method::GET, &healthz, None, String::new());
        let answer = tokio::time::timeout_at(deadline, client.request(request)).await;
        served = matches!(answer, Ok(Ok(ref response)) if response.status() == StatusCode::OK);
        if !served {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    drop(silent);

    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(served, "no normal request was served:\n{log}");
    assert!(log.contains("connection cap lowered"), "{log}");
    let accept_errors = log.matches("accept").count();
    assert!(accept_errors <= 2, "accept errors flood the log:\n{log}");
}
