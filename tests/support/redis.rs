//! Real `redis-server` processes for the Redis tests: one node on a free loopback port, or a
//! three-node Redis Cluster. Each process is a child of the test, killed on drop; data lives
//! in a temporary directory.
//!
//! `REDIS_URL`, if set, points the single-node tests at an existing server instead (then
//! [`RedisServer::can_restart`] is false and kill/restart tests skip with a note).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A free TCP port on loopback (bound once and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A unique prefix for keys, so runs against a shared `REDIS_URL` server do not collide.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("holysheep-test:{test}:{}:{nanos}", std::process::id())
}

/// `true` if something on `127.0.0.1:port` answers `PING` with `+PONG`.
pub fn answers_ping(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// One `redis-server` on loopback (or the server `REDIS_URL` names).
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    external: Option<String>,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// The server `REDIS_URL` names if set, else a new one on a free port.
    pub fn from_env_or_start() -> Self {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => RedisServer {
                port: 0,
                child: None,
                external: Some(url),
                extra_args: Vec::new(),
                dir: tempfile::tempdir().expect("a temporary directory"),
            },
            _ => RedisServer::start(),
        }
    }

    /// A new server on a free loopback port.
    pub fn start() -> Self {
        RedisServer::start_on(free_port(), Vec::new())
    }

    /// A new server on `port`, with extra `redis-server` arguments.
    pub fn start_on(port: u16, extra_args: Vec<String>) -> Self {
        let mut server = RedisServer {
            port,
            child: None,
            external: None,
            extra_args,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("the Redis tests need `redis-server` on PATH (or REDIS_URL set): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_ping(self.port) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {} exited early: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:{port}` (or `REDIS_URL`).
    pub fn url(&self) -> String {
        match &self.external {
            Some(url) => url.clone(),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port of a server this test started.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `false` for a `REDIS_URL` server, which tests must not kill.
    pub fn can_restart(&self) -> bool {
        self.external.is_none()
    }

    /// Kills the server (SIGKILL) and waits until its port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts a new one on the same port (data is lost).
    pub fn restart(&mut self) {
        assert!(self.can_restart(), "cannot restart the REDIS_URL server");
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `n` masters (no replicas) on free loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers, joins them with `redis-cli --cluster create` and waits
    /// for `cluster_state:ok` on every node.
    pub fn start(n: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let port = free_port();
                RedisServer::start_on(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--cluster-node-timeout".into(),
                        "5000".into(),
                    ],
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let out = run_bounded(&mut create, Duration::from_secs(60));
        assert!(out.0, "redis-cli --cluster create failed: {}", out.1);

        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            loop {
                let info = cluster.cli(node.port(), &["cluster", "info"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ok: {info}",
                    node.port()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:{port}` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The ports of the nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Runs `redis-cli -p port args...` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args);
        run_bounded(&mut cmd, Duration::from_secs(10)).1
    }
}

/// Runs `cmd`, killing it after `limit`; returns (success, stdout + stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("the Redis Cluster test needs `redis-cli` on PATH: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break None;
            }
        }
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    let _ = child.wait();
    (status.is_some_and(|s| s.success()), text)
}
