//! Helpers the gateway's test files share: a gateway in front of the mock, a log sink, and the
//! `holysheep-gateway` binary run as an operator runs it.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holysheep_gateway::{Config, Gateway, GatewayHandle};
use holysheep_testkit::{MockConfig, MockServer, UPSTREAM_KEY, start_mock};
use serde_json::Value;

/// A gateway configuration for tests: an ephemeral loopback port, the mock as upstream with its
/// key, quick retries.
pub(crate) fn test_config(mock: &MockServer) -> Config {
    let mut config = Config::in_process(mock.base_url(), UPSTREAM_KEY);
    let s = &mut config.settings;
    s.server.shutdown_grace_secs = Some(10);
    s.retry.base_ms = Some(1);
    s.retry.cap_ms = Some(10);
    config
}

pub(crate) async fn start(config: Config) -> GatewayHandle {
    Gateway::start(config).await.expect("the gateway starts")
}

/// A mock that requires the upstream key, and a gateway in front of it.
pub(crate) async fn mock_and_gateway(
    change: impl FnOnce(&mut Config),
) -> (MockServer, GatewayHandle) {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let mut config = test_config(&mock);
    change(&mut config);
    let gateway = start(config).await;
    (mock, gateway)
}

pub(crate) fn url(gateway: &GatewayHandle, path: &str) -> String {
    format!("http://{}{path}", gateway.addr())
}

/// A log sink for one test: every line the gateway writes while the subscriber's guard lives.
#[derive(Clone, Default)]
pub(crate) struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    /// Everything written, as text.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).expect("log lines are UTF-8")
    }

    /// Every line, parsed as the JSON object of a JSON log line.
    pub(crate) fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }
}

/// A running gateway binary, killed when dropped however the test ends.
pub(crate) struct Binary {
    child: Child,
    /// Where it listens.
    pub(crate) addr: String,
    /// Every line it has written to stdout so far (its log lines included).
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the binary with `args` and only the environment `env`, and waits until it listens.
    pub(crate) async fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holysheep-gateway"))
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("a piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&lines);
        // Read to the end: a closed pipe would fail the gateway's next line of output.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("holysheep gateway listening on http://") {
                    let _ = tx.send(addr.to_owned());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("the reader runs")
            .expect("the gateway says where it listens");
        Self { child, addr, lines }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
