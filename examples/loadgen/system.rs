//! The machine the numbers come from, the process's resident memory, and a `redis-server` to
//! measure Redis hits against.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `VmRSS` of this process in kB, from `/proc/self/status`.
pub(crate) fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kb(&status, "VmRSS:")
}

/// `VmRSS` of process `pid` in kB.
pub(crate) fn rss_kb_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kb(&status, "VmRSS:")
}

/// The value in kB of a `/proc/*/status` or `/proc/meminfo` line starting with `key`.
pub(crate) fn parse_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// One line describing the machine: CPU model, logical CPUs, memory, kernel.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_kb(&m, "MemTotal:"))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}; nproc {cpus}; memory {:.1} GiB; Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// A Redis to measure against: `REDIS_URL`, or a `redis-server` child on a free loopback port,
/// killed on drop.
pub(crate) struct Redis {
    url: String,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
}

impl Redis {
    /// `REDIS_URL` if set, else a new `redis-server`; `Err` says why there is none.
    pub(crate) fn from_env_or_start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return Ok(Redis {
                url,
                child: None,
                dir: None,
            });
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let dir = std::env::temp_dir().join(format!("loadgen-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let mut redis = Redis {
            url: format!("redis://127.0.0.1:{port}"),
            child: Some(child),
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            if let Some(Ok(Some(status))) = redis.child.as_mut().map(Child::try_wait) {
                return Err(format!("redis-server exited early: {status}"));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Where it came from, for the report.
    pub(crate) fn origin(&self) -> &'static str {
        if self.child.is_some() {
            "redis-server started by the harness"
        } else {
            "REDIS_URL"
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn answers_ping(port: u16) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        let status = "Name:\tloadgen\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_kb(status, "VmRSS:"), Some(12345));
        assert_eq!(parse_kb(status, "VmSwap:"), None);
        assert!(rss_kb().is_some_and(|kb| kb > 0));
        assert!(machine().contains("nproc"));
    }
}
