//! Starting and stopping the gateway, in-process: the binary, the tests and the load harness
//! share it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use holysheep_core::BoxError;
use holysheep_core::error::ErrorBody;
use holysheep_mock::{EmbeddingMode, MockConfig, MockServer};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{Config, defaults};
use crate::conn::{ConnIo, ConnService, ConnState, Timeouts, linger};
use crate::routes::{AppState, router};
use crate::stack;

/// The upstream key the demo mock expects and the gateway sends when no key is configured.
pub const DEMO_API_KEY: &str = "sk-holysheep-demo";

/// The gateway server.
#[derive(Debug)]
pub struct Gateway;

/// A running gateway; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct GatewayHandle {
    addr: SocketAddr,
    upstream: String,
    grace: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    demo: Option<MockServer>,
}

/// Why the gateway did not start.
#[derive(Debug)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl StartError {
    fn new(context: &str, error: impl fmt::Display) -> Self {
        Self(format!("{context}: {error}"))
    }
}

impl Gateway {
    /// Validates the configuration, builds the stack, binds the listener and starts serving.
    ///
    /// In demo mode the mock upstream is started first, in-process, and used as the upstream.
    pub async fn start(config: Config) -> Result<GatewayHandle, StartError> {
        config
            .validate()
            .map_err(|e| StartError::new("invalid configuration", e))?;

        let (demo, demo_url, api_key) = if config.demo {
            let api_key = config
                .api_key
                .as_ref()
                .map_or(DEMO_API_KEY, |k| k.expose())
                .to_owned();
            let mock = MockServer::start(
                MockConfig::default()
                    .api_key(api_key.clone())
                    // Stand-in embeddings for the semantic cache (`--semantic-cache`).
                    .embedding_mode(EmbeddingMode::WordOverlap),
            )
            .await
            .map_err(|e| StartError::new("cannot start the demo upstream", e))?;
            let url = mock.base_url();
            (Some(mock), Some(url), Some(api_key))
        } else {
            let key = config.api_key.as_ref().map(|k| k.expose().to_owned());
            (None, None, key)
        };

        let built = stack::build(&config, demo_url.as_deref(), api_key.as_deref())
            .await
            .map_err(|e: BoxError| StartError::new("cannot build the upstream stack", e))?;
        let upstream = match built.stack.router() {
            // Several deployments: their base URLs, comma-separated.
            Some(router) => (router.base_urls().iter())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            None => built.stack.client().base_url().to_string(),
        };

        let listen = config.listen();
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::new(&format!("cannot listen on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::new("cannot read the listen address", e))?;

        let state = AppState {
            stack: built.stack,
            body_limit: config.body_limit(),
            readiness: built.readiness,
            render_metrics: built.render_metrics,
        };
        let auth = crate::tenants::auth(&config, &state.stack);
        let app = crate::telemetry::traced(router(state, auth), config.otlp());
        let serving = Serving {
            app,
            timeouts: Timeouts {
                header_read: config.header_read_timeout(),
                body_read: config.body_read_timeout(),
                keep_alive: config.keep_alive_timeout(),
                linger: config.linger_timeout(),
            },
            max_connections: connection_cap(&config),
            h2_max_concurrent_streams: config.h2_max_concurrent_streams(),
        };

        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serving.run(listener, stopped));

        Ok(GatewayHandle {
            addr,
            upstream,
            grace: config.shutdown_grace(),
            stop: Some(stop),
            task,
            demo,
        })
    }
}

impl GatewayHandle {
    /// The address the gateway listens on (the real port when the configuration said `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream base URL in use (the mock's in demo mode).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// A ready-to-paste curl line that asks the gateway for a chat completion.
    pub fn curl_example(&self) -> String {
        format!(
            "curl -s http://{}/v1/chat/completions -H 'content-type: application/json' \
             -d '{{\"model\":\"gpt-4.1\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello, HolySheep!\"}}]}}'",
            self.addr
        )
    }

    /// Stops accepting connections, lets in-flight requests and streams finish for at most the
    /// configured grace period, then cuts what is left. Returns whether everything finished
    /// within the grace period.
    pub async fn shutdown(mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let clean = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(error))) => {
                tracing::error!(error = %error, "server failed while shutting down");
                false
            }
            Ok(Err(join_error)) => {
                tracing::error!(error = %join_error, "server task failed");
                false
            }
            Err(_) => {
                tracing::warn!(
                    grace_secs = self.grace.as_secs_f64(),
                    "shutdown grace period elapsed; closing the remaining connections"
                );
                self.task.abort();
                false
            }
        };
        if let Some(mock) = self.demo.take() {
            mock.shutdown().await;
        }
        clean
    }
}

/// The server loop and what it needs: the routes, the connection bounds, the protocol settings.
///
/// It is hyper-util's connection builder on a plain accept loop rather than `axum::serve`:
/// axum's server has no place for the bounds a public listener needs (a connection cap, read
/// timeouts, the HTTP/2 stream limit, how accept errors are handled), while hyper-util's
/// builder takes the HTTP/2 settings and leaves the loop, and so the cap and the accept errors,
/// to us. The read timeouts are on each connection's socket ([`crate::conn`]).
struct Serving {
    app: Router,
    timeouts: Timeouts,
    max_connections: usize,
    h2_max_concurrent_streams: u32,
}

impl Serving {
    /// Accepts until `stopped`, then lets every open connection finish (a graceful shutdown of
    /// each) and returns. Dropping the future cuts them all.
    async fn run(
        self,
        listener: TcpListener,
        mut stopped: oneshot::Receiver<()>,
    ) -> io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The header bound is the socket's own (see `conn`): hyper's would also cut idle
        // kept-alive connections at the header bound.
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .max_concurrent_streams(self.h2_max_concurrent_streams);
        let builder = Arc::new(builder);
        let places = Arc::new(Semaphore::new(self.max_connections));
        let shed_answer = shed_answer();
        let (shutdown, shutting_down) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut accept_errors = AcceptErrors::default();
        let mut sheds = ShedLog::default();

        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                // Reaps finished connection tasks, so the set holds only open ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        accept_errors.recovered();
                        match Arc::clone(&places).try_acquire_owned() {
                            Ok(place) => {
                                connections.spawn(serve_connection(
                                    stream,
                                    peer,
                                    Arc::clone(&builder),
                                    self.app.clone(),
                                    self.timeouts,
                                    place,
                                    shutting_down.clone(),
                                ));
                            }
                            Err(_) => {
                                // Answered and closed at once, never left waiting in the
                                // backlog; best effort, the socket takes it or not.
                                let _ = stream.try_write(&shed_answer);
                                sheds.shed(self.max_connections);
                            }
                        }
                    }
                    Err(error) => {
                        if let Some(pause) = accept_errors.failed(&error) {
                            tokio::select! {
                                _ = &mut stopped => break,
                                () = tokio::time::sleep(pause) => {}
                            }
                        }
                    }
                },
            }
        }
        drop(listener);
        let _ = shutdown.send(true);
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Serves one connection until it ends, then lingers if it ended with an unread request body;
/// its place under the connection cap is held until then.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    timeouts: Timeouts,
    _place: OwnedSemaphorePermit,
    mut shutting_down: watch::Receiver<bool>,
) {
    // Nagle's algorithm would hold a response's second write until the caller acknowledges
    // the first.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "cannot set TCP_NODELAY on a caller's connection");
    }
    let state = Arc::new(ConnState::default());
    let io = ConnIo::new(stream, Arc::clone(&state), timeouts);
    let service = ConnService {
        app,
        peer,
        state: Arc::clone(&state),
        body_read_timeout: timeouts.body_read,
    };
    {
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, peer = %peer, "connection ended with an error");
                    }
                    break;
                }
                _ = shutting_down.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        // The connection is dropped here, and the socket with it, which comes back through
        // `state` if it must linger.
    }
    if let Some(stream) = state.take_linger() {
        linger(stream, timeouts.linger).await;
    }
}

/// The answer a connection past the cap gets before it is closed.
fn shed_answer() -> Vec<u8> {
    let body = ErrorBody::new(
        "The gateway has as many connections open as it serves; retry shortly.",
        "server_error",
    )
    .with_code("overloaded")
    .to_bytes();
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Logs sheds at most once per [`ShedLog::EVERY`], with how many there were: a flood of
/// connections must not become a flood of log lines.
#[derive(Debug, Default)]
struct ShedLog {
    count: u64,
    logged: Option<Instant>,
}

impl ShedLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn shed(&mut self, cap: usize) {
        self.count += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= Self::EVERY) {
            tracing::warn!(
                shed = self.count,
                max_connections = cap,
                "connection limit reached: new connections are answered 503 and closed"
            );
            self.count = 0;
            self.logged = Some(Instant::now());
        }
    }
}

/// How the accept loop meets a failing `accept`: out of file descriptors (`EMFILE`), out of
/// memory, and the like. Retrying at once would spin and log in a loop; so it waits, from
/// [`FIRST_PAUSE`](Self::FIRST_PAUSE) doubling up to [`MAX_PAUSE`](Self::MAX_PAUSE), logs the
/// first error of a run and, once an accept succeeds again, how many there were.
#[derive(Debug, Default)]
struct AcceptErrors {
    run: u64,
    pause: Duration,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(5);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// The pause before the next accept, or `None` for an error that concerns one connection
    /// only (it went away before it was accepted).
    fn failed(&mut self, error: &io::Error) -> Option<Duration> {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            return None;
        }
        self.run += 1;
        self.pause = if self.run == 1 {
            tracing::error!(
                error = %error,
                "cannot accept connections; retrying with backoff (if it is `Too many open \
                 files`, raise `ulimit -n` or lower server.max_connections)"
            );
            Self::FIRST_PAUSE
        } else {
            (self.pause * 2).min(Self::MAX_PAUSE)
        };
        Some(self.pause)
    }

    /// An accept succeeded: the run of errors, if any, is over.
    fn recovered(&mut self) {
        if self.run > 0 {
            tracing::warn!(errors = self.run, "accepting connections again");
            self.run = 0;
        }
    }
}

/// The connection cap in force: the configured one; or, left unset, the default lowered to fit
/// the process's open-file limit less what the upstream pool and the rest of the process use,
/// so that the cap, not `EMFILE`, is what turns connections away.
fn connection_cap(config: &Config) -> usize {
    let cap = config.max_connections();
    let Some(limit) = open_file_limit() else {
        return cap;
    };
    let max_in_flight = config
        .settings
        .pool
        .max_in_flight
        .unwrap_or(holysheep::pool_limit::PoolLimitLayer::DEFAULT_TOTAL)
        // Each of the `[[deployments]]` has a pool of its own.
        .saturating_mul(config.settings.deployments.len().max(1));
    // Upstream connections, Redis, the listener, logs, the mock in demo mode.
    let reserve = u64::try_from(max_in_flight)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    let fits = usize::try_from(limit.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX);
    if cap <= fits {
        return cap;
    }
    if config.settings.server.max_connections.is_some() {
        tracing::warn!(
            max_connections = cap,
            open_file_limit = limit,
            "server.max_connections is above what the open-file limit leaves ({fits}); past \
             it, accepting fails instead of answering 503: raise `ulimit -n` or lower \
             --max-connections"
        );
        cap
    } else {
        tracing::info!(
            max_connections = fits,
            open_file_limit = limit,
            "connection cap lowered from its default {} to fit the open-file limit",
            defaults::MAX_CONNECTIONS
        );
        fits
    }
}

/// The soft limit on open files (`ulimit -n`), where there is one.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_log_once_per_run() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..12).filter_map(|_| errors.failed(&emfile)).collect();
        assert_eq!(pauses[0], AcceptErrors::FIRST_PAUSE);
        assert!(
            pauses
                .windows(2)
                .all(|w| w[1] == (w[0] * 2).min(AcceptErrors::MAX_PAUSE))
        );
        assert_eq!(*pauses.last().unwrap(), AcceptErrors::MAX_PAUSE);
        errors.recovered();
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::FIRST_PAUSE));

        // A caller that gave up before its connection was accepted is no reason to wait.
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&aborted), None);
    }

    #[test]
    fn the_shed_answer_is_a_complete_response() {
        let answer = String::from_utf8(shed_answer()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let parsed: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code.as_deref(), Some("overloaded"));
    }
}
