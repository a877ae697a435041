//! A real haproxy in front of node processes: round robin, health checks on `/readyz`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Haproxy {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts haproxy balancing over `backends` (`host:port`), checking `/readyz` every 200 ms.
    /// `redispatch` sends a request that found its server gone to another one, as operators
    /// configure it in production; without it a client could hit a node that just stopped.
    pub fn start(backends: &[String]) -> Self {
        Self::start_with(backends, "check")
    }

    /// As [`Self::start`], with `server_options` on every server line instead of `check`
    /// (e.g. `check send-proxy-v2`).
    pub fn start_with(backends: &[String], server_options: &str) -> Self {
        Self::start_configured(backends, "", server_options)
    }

    /// As [`Self::start_with`], with `backend_lines` (e.g. `option forwardfor`) added to the
    /// backend.
    pub fn start_configured(
        backends: &[String],
        backend_lines: &str,
        server_options: &str,
    ) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  retries 3\n  option redispatch 1\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\n  timeout tunnel 1h\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             http-check expect status 200\n  default-server inter 200ms fall 1 rise 1\n"
        );
        for (i, addr) in backends.iter().enumerate() {
            config.push_str(&format!("  server n{i} {addr} {server_options}\n"));
        }
        for line in backend_lines.lines() {
            config.push_str(&format!("  {line}\n"));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start haproxy ({err}): this test needs it on PATH; \
                     `scripts/test` installs it (apt-get install haproxy)"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?user={user}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
