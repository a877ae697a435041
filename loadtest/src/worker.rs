//! Running engines: as child processes of this binary (`loadtest worker`, talking JSON lines
//! over stdin/stdout) or as threads of this process. Either way the coordinator sees the same
//! stream of `(worker, WorkerEvent)` and sends `Control` back.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::engine::{self, Control, WorkerEvent, WorkerPlan};

/// Events from all workers, tagged with the worker number.
pub type Events = mpsc::Sender<(u32, WorkerEvent)>;

/// A running worker, whichever kind.
pub enum Handle {
    // Boxed: a `Child` is large and handles are few, so the enum stays small.
    Process {
        child: Box<Child>,
        stdin: ChildStdin,
    },
    Thread {
        control: mpsc::Sender<Control>,
    },
}

impl Handle {
    /// Tells the worker to close. Errors mean the worker is gone, which the event stream reports.
    pub async fn send(&mut self, control: Control) {
        match self {
            Handle::Process { stdin, .. } => {
                if let Ok(mut line) = serde_json::to_string(&control) {
                    line.push('\n');
                    let _ = stdin.write_all(line.as_bytes()).await;
                    let _ = stdin.flush().await;
                }
            }
            Handle::Thread { control: tx } => {
                let _ = tx.send(control).await;
            }
        }
    }

    /// Ends a worker process that overran (threads end with their runtime's deadline).
    pub async fn kill(&mut self) {
        if let Handle::Process { child, .. } = self {
            let _ = child.kill().await;
        }
    }
}

/// Starts `plan` as a child process running `exe worker`.
pub async fn spawn_process(
    exe: &Path,
    plan: &WorkerPlan,
    events: Events,
) -> std::io::Result<Handle> {
    let mut child = Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let mut line = serde_json::to_string(plan).map_err(std::io::Error::other)?;
    line.push('\n');
    stdin.write_all(line.as_bytes()).await?;
    stdin.flush().await?;
    let worker = plan.worker;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut done = false;
        // A read error ends the stream like EOF: either way the worker is gone.
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<WorkerEvent>(&line) {
                Ok(event) => {
                    done |= matches!(event, WorkerEvent::Done(_) | WorkerEvent::Failed { .. });
                    if events.send((worker, event)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let message = format!("unreadable worker output: {e}");
                    let _ = events.send((worker, WorkerEvent::Failed { message })).await;
                    return;
                }
            }
        }
        if !done {
            let message = "worker process exited without a report".to_string();
            let _ = events.send((worker, WorkerEvent::Failed { message })).await;
        }
    });
    Ok(Handle::Process {
        child: Box::new(child),
        stdin,
    })
}

/// Starts `plan` on a thread of this process.
pub fn spawn_thread(plan: WorkerPlan, events: Events) -> std::io::Result<Handle> {
    let (control_tx, control_rx) = mpsc::channel(4);
    let (event_tx, mut event_rx) = mpsc::channel(256);
    let worker = plan.worker;
    std::thread::Builder::new()
        .name(format!("loadtest-worker-{worker}"))
        .spawn(move || {
            let report = engine::run_blocking(plan, event_tx.clone(), control_rx);
            let _ = event_tx.blocking_send(WorkerEvent::Done(Box::new(report)));
        })?;
    tokio::spawn(async move {
        while let Some(event) = event_rx.recv().await {
            if events.send((worker, event)).await.is_err() {
                return;
            }
        }
    });
    Ok(Handle::Thread {
        control: control_tx,
    })
}

/// The `worker` subcommand: reads a plan line from stdin, runs it, writes events as JSON lines
/// to stdout, and takes `Control` lines from stdin. Returns an error message on failure.
pub fn worker_main() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .map_err(|e| format!("reading plan: {e}"))?;
    let mut plan: WorkerPlan =
        serde_json::from_str(&first).map_err(|e| format!("bad plan on stdin: {e}"))?;
    plan.whole_process = true;

    let (control_tx, control_rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(control) = serde_json::from_str::<Control>(&line) {
                if control_tx.blocking_send(control).is_err() {
                    return;
                }
            }
        }
        // stdin closed: the coordinator is gone; close as if told to.
        let _ = control_tx.blocking_send(Control::Close);
    });

    let (event_tx, mut event_rx) = mpsc::channel::<WorkerEvent>(256);
    let writer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        while let Some(event) = event_rx.blocking_recv() {
            let mut out = stdout.lock();
            if serde_json::to_writer(&mut out, &event).is_err() || out.write_all(b"\n").is_err() {
                return;
            }
            let _ = out.flush();
        }
    });
    let report = engine::run_blocking(plan, event_tx.clone(), control_rx);
    let _ = event_tx.blocking_send(WorkerEvent::Done(Box::new(report)));
    drop(event_tx);
    writer
        .join()
        .map_err(|_| "stdout writer panicked".to_string())
}
