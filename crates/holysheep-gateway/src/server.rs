//! Starting and stopping the gateway, in-process: the binary, the tests and the load harness
//! share it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use holysheep_core::BoxError;
use holysheep_mock::{MockConfig, MockServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::config::Config;
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
            let mock = MockServer::start(MockConfig::default().api_key(api_key.clone()))
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
        let upstream = built.stack.client().base_url().to_string();

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
        let app = crate::telemetry::traced(router(state, Auth::new(&config.gateway_keys)));

        // axum leaves Nagle's algorithm on: a response whose head and body go out in two
        // writes would wait for the caller's ACK of the first before sending the second.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(error = %error, "cannot set TCP_NODELAY on a caller's connection");
            }
        });

        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                // A dropped sender stops the server as well.
                let _ = stopped.await;
            })
            .await
        });

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
