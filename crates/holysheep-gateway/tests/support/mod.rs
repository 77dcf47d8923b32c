//! The `holysheep-gateway` binary as an operator runs it: a child process with the environment
//! the test gives, its address read from its first lines, its output kept for the test to read.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
