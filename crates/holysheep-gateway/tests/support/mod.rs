//! Helpers the gateway's test files share: a gateway in front of the mock, and a log sink.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

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
