//! The running mock: accept loop, connections, and the handle tests hold.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::MockConfig;
use crate::conn::{ConnCtl, ConnStream};
use crate::faults::Faults;
use crate::handler;
use crate::stats::Stats;

/// A running mock upstream, serving HTTP/1.1 and cleartext HTTP/2 on one TCP port.
///
/// Dropping the handle stops the server at once, cutting open connections;
/// [`shutdown`](MockServer::shutdown) stops it gracefully.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// State shared by the handle, the accept loop and every request.
#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<Arc<MockConfig>>,
    faults: Mutex<Faults>,
    pub(crate) stats: Arc<Stats>,
    /// Numbers answers and request ids.
    pub(crate) next_id: AtomicU64,
    next_conn: AtomicU64,
}

impl Shared {
    /// The configuration as it is now; a request keeps the one it started with.
    pub(crate) fn config(&self) -> Arc<MockConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        // Fault state is a generator and counters; a panic elsewhere cannot corrupt it.
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MockServer {
    /// Starts a mock on an ephemeral loopback port (`127.0.0.1:0`).
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a mock listening on `addr`.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, config)
    }

    /// Starts a mock on a listener the caller bound.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the server runs as a spawned task).
    pub fn from_listener(listener: TcpListener, config: MockConfig) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::new(config.seed)),
            config: RwLock::new(Arc::new(config)),
            stats: Arc::new(Stats::new()),
            next_id: AtomicU64::new(0),
            next_conn: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL of the mock, e.g. `http://127.0.0.1:41234/v1`. An unspecified listen
    /// address (`0.0.0.0`, `::`) is shown as loopback, which is where a local client finds it.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}/v1")
    }

    /// The URL of a path under the base URL: `url("/chat/completions")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> MockConfig {
        MockConfig::clone(&self.shared.config())
    }

    /// Replaces the configuration. Requests already running keep the one they started with.
    pub fn set_config(&self, config: MockConfig) {
        self.shared.faults().reseed(config.seed);
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Changes the configuration in place:
    /// `server.update(|c| c.error_rate = 0.5)`.
    pub fn update(&self, change: impl FnOnce(&mut MockConfig)) {
        let mut config = self.config();
        change(&mut config);
        self.set_config(config);
    }

    /// Makes the next `n` requests fail with `status` and an OpenAI-style error body (a 429
    /// carries `Retry-After`). Calls queue up: `fail_next(2, 503)` then `fail_next(1, 429)`
    /// gives 503, 503, 429. Forced failures come after forced resets and before random faults,
    /// and count every request that passes the key check, whatever its route.
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        self.shared.faults().fail_next(n, status);
    }

    /// Makes the next `n` requests that pass the key check reset their TCP connection without
    /// any response, like an upstream that crashed or a middlebox that dropped the connection.
    /// Over HTTP/2 the reset takes every other stream of that connection with it.
    pub fn reset_next(&self, n: usize) {
        self.shared.faults().reset_next(n);
    }

    /// Cuts off the next `n` streamed answers half-way: no `finish_reason`, no `[DONE]`, and
    /// the connection is closed. Over HTTP/1.1 the events before the cut are delivered; over
    /// HTTP/2 the whole connection goes, and the last events may go with it.
    pub fn truncate_next(&self, n: usize) {
        self.shared.faults().truncate_next(n);
    }

    /// Forgets every forced fault not yet used.
    pub fn clear_forced_faults(&self) {
        self.shared.faults().clear();
    }

    /// Stops accepting connections, lets requests in flight finish (streams included), closes
    /// idle keep-alive connections, and returns once every connection is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            // The accept loop does not panic; if it did, there is nothing left to stop.
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Aborting the accept loop drops its `JoinSet`, which aborts every connection.
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Also fires when the handle is gone without a shutdown.
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&shared),
                        builder.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some to free up.
                    tracing::warn!(error = %e, "mock upstream: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small answers and SSE events must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let _open = shared.stats.connection_opened();
    let id = shared
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let ctl = Arc::new(ConnCtl::new(id));
    let io = TokioIo::new(ConnStream::new(stream, Arc::clone(&ctl)));
    let service = {
        let ctl = Arc::clone(&ctl);
        service_fn(move |req| handler::handle(Arc::clone(&shared), Arc::clone(&ctl), req))
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, connection = id, "mock upstream: connection ended with an error");
                }
                return;
            }
            // Dropping the connection closes the socket (or resets it; see `ConnStream`).
            () = ctl.cut_requested() => return,
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
