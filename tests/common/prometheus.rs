//! A private Prometheus (Debian's `prometheus`) per test: a free loopback port, its own
//! storage in a temp dir, a generated configuration scraping the given targets every second;
//! killed on drop. Never a system-wide instance (Debian's service listens on :9090).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Fails (never skips) when Debian's `prometheus` package is not installed.
pub fn require_prometheus() {
    for tool in [PROMETHEUS, PROMTOOL] {
        assert!(
            Path::new(tool).exists(),
            "{tool} not found: this test needs Debian's prometheus package; `scripts/test` \
             installs it (apt-get install prometheus)"
        );
    }
}

pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) as job `roomcast` every second, with
    /// `rule_files` loaded (evaluated every second).
    pub fn start(targets: &[String], rule_files: &[PathBuf]) -> Self {
        require_prometheus();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text(targets, rule_files)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {PROMETHEUS}: {err}"));
        Self { port, child, dir }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Prometheus logged so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Waits for `/-/ready`; panics with Prometheus's log after `limit`.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let http = reqwest::Client::new();
        loop {
            let ready = http.get(format!("{}/-/ready", self.base())).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query through `/api/v1/query`: the result vector's samples, or why not.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.base()))
            .query(&[("query", expr)])
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let body: Value = response.json().await.map_err(|err| err.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        match body["data"]["result"].as_array() {
            Some(result) => Ok(result.clone()),
            None => Err(format!("not a vector: {body}")),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(targets: &[String], rule_files: &[PathBuf]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let rules: Vec<String> = rule_files
        .iter()
        .map(|f| format!("  - \"{}\"\n", f.display()))
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n{}\
         scrape_configs:\n  - job_name: roomcast\n    static_configs:\n      - targets: [{}]\n",
        rules.concat(),
        targets.join(", ")
    )
}
