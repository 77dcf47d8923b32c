//! Real `redis-server` processes: one node on a free loopback port, or a Redis Cluster of
//! several. Each process is a child of the caller, killed on drop; its data lives in a temporary
//! directory removed with it. Every wait is bounded, and every server listens on `127.0.0.1`
//! only.
//!
//! `REDIS_URL`, if set and not empty, points [`RedisServer::from_env_or_start`] at an existing
//! server instead; that server is never killed ([`RedisServer::is_external`]).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// The variable that names an existing Redis to use instead of starting one.
pub const REDIS_URL_ENV: &str = "REDIS_URL";

/// How long a fresh server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new cluster may take until every node says `cluster_state:ok`.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `redis-cli` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// A free TCP port on loopback: bound once and released, so a server can take it next (good
/// enough for tests).
pub fn free_port() -> io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A key prefix unique to this process and moment, so runs against a shared `REDIS_URL` server
/// do not see each other's keys.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("holysheep-test:{test}:{}:{nanos}", std::process::id())
}

/// One `redis-server` on loopback, or the server `REDIS_URL` names.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    url: String,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// `None` for a `REDIS_URL` server.
    dir: Option<TempDir>,
}

impl RedisServer {
    /// The server `REDIS_URL` names if it is set, else a new one on a free port.
    pub fn from_env_or_start() -> io::Result<Self> {
        match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(Self {
                port: 0,
                url,
                child: None,
                extra_args: Vec::new(),
                dir: None,
            }),
            _ => Self::start(),
        }
    }

    /// A new server on a free loopback port.
    pub fn start() -> io::Result<Self> {
        Self::start_on(free_port()?, &[])
    }

    /// A new server on loopback `port`, with extra `redis-server` arguments. Fails when
    /// `redis-server` cannot be run, exits early, or does not answer `PING` within 10 s.
    pub fn start_on(port: u16, extra_args: &[&str]) -> io::Result<Self> {
        let mut server = Self {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            child: None,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            dir: Some(tempfile::tempdir()?),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Err(io::Error::other("cannot start the REDIS_URL server"));
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run `redis-server` (install it, or set {REDIS_URL_ENV}): {e}"),
                )
            })?;
        // Held before the wait, so a failed start is still killed on drop.
        let child = self.child.insert(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_ping(self.port) {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited early: {status}",
                    self.port
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                        self.port
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `redis://127.0.0.1:{port}`, or `REDIS_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The loopback port of a server started here (0 for a `REDIS_URL` server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `true` for the `REDIS_URL` server, which is not ours to kill or restart.
    pub fn is_external(&self) -> bool {
        self.dir.is_none()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Does nothing to a `REDIS_URL`
    /// server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts a new, empty one on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters without replicas, each a [`RedisServer`] on a free loopback port.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// and waits (30 s at most) until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            let port = free_port()?;
            let config_file = format!("nodes-{port}.conf");
            nodes.push(RedisServer::start_on(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config_file,
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?);
        }
        let cluster = Self { nodes };
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]).args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        run_bounded(&mut create, CLUSTER_CREATE_TIMEOUT)?;

        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        for port in cluster.ports() {
            loop {
                let info = cluster.cli(port, &["cluster", "info"]).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("cluster node {port} not ok within {CLUSTER_OK_TIMEOUT:?}: {info}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(cluster)
    }

    /// `redis://127.0.0.1:{port}` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_owned()).collect()
    }

    /// The ports of the nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Runs `redis-cli -p port args…` against a node (10 s at most) and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args);
        run_bounded(&mut cmd, CLI_TIMEOUT)
    }
}

/// `true` if something on `127.0.0.1:port` answers `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// Runs `cmd`, killing it after `limit`; its stdout and stderr when it succeeds, an error with
/// them when it fails or is killed.
fn run_bounded(cmd: &mut Command, limit: Duration) -> io::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `redis-cli`: {e}")))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait()? {
            Some(status) => break Some(status),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => {
                let _ = child.kill();
                break None;
            }
        }
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut text)?;
    }
    child.wait()?;
    match status {
        Some(status) if status.success() => Ok(text),
        Some(status) => Err(io::Error::other(format!(
            "{cmd:?} failed ({status}): {text}"
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{cmd:?} took longer than {limit:?}: {text}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefixes_differ() {
        let a = unique_prefix("t");
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, unique_prefix("t"));
        assert!(a.starts_with("holysheep-test:t:"));
    }

    #[test]
    fn nothing_answers_ping_on_a_free_port() {
        assert!(!answers_ping(free_port().unwrap()));
    }

    #[test]
    fn a_server_starts_answers_and_is_gone_after_kill() {
        let mut server = RedisServer::start().expect("redis-server starts");
        assert!(!server.is_external());
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        assert!(answers_ping(server.port()));
        server.kill();
        assert!(!answers_ping(server.port()));
        server.restart().expect("redis-server restarts");
        assert!(answers_ping(server.port()));
    }

    #[test]
    fn a_bad_argument_is_an_error_not_a_hang() {
        let port = free_port().unwrap();
        let err = RedisServer::start_on(port, &["--no-such-option", "x"]).unwrap_err();
        assert!(err.to_string().contains("exited early"), "{err}");
    }
}
