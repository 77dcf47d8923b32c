//! nginx beside the gateway: the reference rows of the overhead and hit runs.
//!
//! One `nginx` process (Debian's package, `worker_processes 1`, no access log) started from a
//! configuration written into a temporary prefix, with two loopback servers:
//!
//! - a **reverse proxy** to the mock (the path passed as it came, the mock's base URL being
//!   `/v1` as the gateway's is; HTTP/1.1 with a keep-alive pool to the upstream, no buffering of
//!   the answer), the best-engineered proxy
//!   there is, doing the least a proxy can: the forward path's reference;
//! - a **static answer**: one stored chat completion returned as it is, the fastest any cache
//!   hit served over HTTP could be.
//!
//! Without an `nginx` binary the rows are skipped with a message; nothing else depends on it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holysheep_core::BoxError;
use holysheep_testkit::redis::free_port;

/// How long nginx gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; killed when dropped.
pub(crate) struct Nginx {
    child: Child,
    proxy: SocketAddr,
    fixed: SocketAddr,
    // Held so the prefix (configuration, logs, temp paths) lives as long as the process.
    _prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx proxying to `upstream` (`host:port` of the mock) and answering `answer`
    /// (a JSON document) on its static server.
    pub(crate) fn start(upstream: SocketAddr, answer: &str) -> Result<Self, BoxError> {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no nginx binary (apt-get install nginx)")?;
        let prefix = tempfile::tempdir()?;
        let proxy = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let fixed = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        std::fs::create_dir(prefix.path().join("tmp"))?;
        let conf = prefix.path().join("nginx.conf");
        std::fs::write(&conf, config(upstream, proxy, fixed, answer)?)?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nginx = Nginx {
            child,
            proxy,
            fixed,
            _prefix: prefix,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(proxy).is_err() || TcpStream::connect(fixed).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                return Err(format!("nginx exited at start: {status}").into());
            }
            if Instant::now() >= deadline {
                return Err("nginx did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The proxy's chat completions URL (the gateway's path).
    pub(crate) fn proxy_url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.proxy)
    }

    /// The static answer's URL.
    pub(crate) fn static_url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.fixed)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: one worker (as the reference run), the upstream pool kept alive,
/// every temporary path inside the prefix.
fn config(
    upstream: SocketAddr,
    proxy: SocketAddr,
    fixed: SocketAddr,
    answer: &str,
) -> Result<String, BoxError> {
    // `return` takes a quoted string in which `$` starts a variable; a JSON answer never
    // needs one, and a quote or backslash is escaped.
    if answer.contains('$') {
        return Err("the static answer holds a `$`, which nginx would read as a variable".into());
    }
    let quoted = answer.replace('\\', "\\\\").replace('\'', "\\'");
    Ok(format!(
        "worker_processes 1;
error_log error.log error;
pid nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 1000000;
    tcp_nodelay on;
    upstream mock {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen {proxy};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
    server {{
        listen {fixed};
        location / {{
            default_type application/json;
            return 200 '{quoted}';
        }}
    }}
}}
"
    ))
}
