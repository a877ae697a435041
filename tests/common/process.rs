//! The real `roomcast` binary as a child process: for signals, exit codes and SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running node process and the address it reported.
pub struct Process {
    pub child: Child,
    pub addr: String,
}

/// Spawns the binary with `args` and `env` (stdout and stderr piped).
pub fn spawn_binary(args: &[&str], env: &[(&str, &str)]) -> Child {
    command(args, env)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning roomcast")
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    cmd.args(args).stdout(Stdio::piped());
    // Run where no config/default.toml exists so only what the test gives applies.
    cmd.current_dir(std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Process {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts a node on a free loopback port and waits for its "listening" line. Its logs
    /// are discarded so a long run can never block on a full pipe.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(args, env, &[])
    }

    /// Starts a node as [`Process::start`] does, with the variables `removed` taken out of the
    /// environment it inherits from the test.
    pub fn start_without_env(removed: &[&str]) -> Self {
        Self::launch(&[], &[], removed)
    }

    /// Starts a node listening on `listen` (a port reserved earlier, e.g. one a load balancer
    /// already lists), as [`Process::start_with_env`] does.
    pub fn start_on(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec!["--listen", listen];
        all.extend_from_slice(args);
        Self::spawn(&all, env, &[])
    }

    fn launch(args: &[&str], env: &[(&str, &str)], removed: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::spawn(&all, env, removed)
    }

    fn spawn(all: &[&str], env: &[(&str, &str)], removed: &[&str]) -> Self {
        let mut command = command(all, env);
        for var in removed {
            command.env_remove(var);
        }
        let mut child = command
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning roomcast");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("roomcast listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, addr }
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?user={user}", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGKILL: the node vanishes without a goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("roomcast did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
