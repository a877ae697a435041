//! A whole run: checks targets, splits users over workers (processes or threads), follows their
//! ticks, tells them to close once all have drained, enforces the hard deadline, and merges the
//! report.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::Credentials;
use crate::cpu;
use crate::engine::{Control, Tick, WorkerEvent, WorkerPlan, WorkerReport};
use crate::report::{Report, RunInfo, Series};
use crate::scenario::{MAX_USERS_PER_WORKER, Scenario, ScenarioError};
use crate::stats::Counters;
use crate::target::{self, Endpoint, ResolveError};
use crate::wire::now_us;
use crate::worker;

/// How to run.
#[derive(Default)]
pub struct RunOptions {
    /// Spawn worker processes from this executable (`EXE worker`). `None` runs the workers as
    /// threads of this process, which shares one open-files cap (tests use this).
    pub worker_exe: Option<PathBuf>,
    /// Called about once a second with running totals (the progress line).
    pub on_tick: Option<OnTick>,
}

/// The progress callback.
pub type OnTick = Box<dyn FnMut(&Live) + Send>;

/// Running totals for the progress line.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub second: u64,
    pub users: u64,
    pub connected: u64,
    pub deliveries_last_sec: u64,
    pub p99_last_sec_us: u64,
    pub counters: Counters,
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "{users} users exceed what one process may hold ({MAX_USERS_PER_WORKER}, open-files cap); \
         use the loadtest binary, which spreads users over worker processes"
    )]
    TooManyInProcess { users: u64 },
    #[error("starting worker {worker}: {source}")]
    Spawn { worker: u32, source: std::io::Error },
    #[error("worker {worker} failed: {message}")]
    Worker { worker: u32, message: String },
    #[error("the run passed its hard deadline ({secs:.0} s) and was stopped")]
    Deadline { secs: f64 },
}

/// Slack on top of ramp + duration + drain before the run is stopped by force.
const DEADLINE_SLACK: Duration = Duration::from_secs(20);
/// Extra quiet time after every worker drained, for deliveries crossing between workers.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs `scenario` and returns the merged report. Bounded in time: ramp + duration + drain +
/// connect timeout + 20 s at most, then workers are killed and `RunError::Deadline` returned.
pub async fn run(scenario: &Scenario, mut options: RunOptions) -> Result<Report, RunError> {
    let in_process = options.worker_exe.is_none();
    preflight(scenario, in_process).await?;
    let run_id = format!("{:x}", now_us() % 0xff_ffff_ffff);
    // Processes need a moment to start; everyone begins the ramp at the same instant.
    let lead = if in_process { 200_000 } else { 1_000_000 };
    let start_unix_us = now_us() + lead;
    let (tx, mut rx) = mpsc::channel(1024);
    let mut handles = spawn_workers(scenario, &options, &run_id, start_unix_us, tx).await?;
    let budget = Duration::from_secs_f64(
        scenario.ramp_secs() + scenario.duration_secs + scenario.drain_secs,
    ) + Duration::from_millis(scenario.connect_timeout_ms + lead / 1000)
        + DEADLINE_SLACK;
    let followed = follow(scenario, &mut options, &mut rx, &mut handles, budget).await;
    let (mut reports, series) = match followed {
        Ok(done) => done,
        Err(err) => {
            for h in &mut handles {
                h.send(Control::Close).await;
                h.kill().await;
            }
            return Err(err);
        }
    };
    reports.sort_by_key(|r| r.worker);
    let wall = now_us().saturating_sub(start_unix_us) as f64 / 1e6;
    let info = RunInfo {
        scenario: scenario.name.clone(),
        run_id,
        urls: scenario.urls.clone(),
        users: scenario.users,
        mode: if in_process { "threads" } else { "processes" },
        ramp_secs: scenario.ramp_secs(),
        duration_secs: scenario.duration_secs,
        wall_secs: wall,
        coordinator_cpu: if in_process {
            Default::default()
        } else {
            cpu::process()
        },
    };
    Ok(Report::build(info, &reports, &series))
}

/// Everything that can be refused before a worker starts: the scenario, the in-process bound,
/// each target's address and TLS set-up, source addresses that cannot reach a target, and one
/// probe connection per target.
async fn preflight(scenario: &Scenario, in_process: bool) -> Result<(), RunError> {
    scenario.validate()?;
    let targets = scenario.targets().map_err(ScenarioError::from)?;
    if in_process && scenario.users > MAX_USERS_PER_WORKER {
        return Err(RunError::TooManyInProcess {
            users: scenario.users,
        });
    }
    let endpoints = target::endpoints(&targets, scenario.insecure, scenario.deflate).await?;
    if scenario.source_ips > 1 {
        if let Some(e) = endpoints.iter().find(|e| !e.addr.ip().is_loopback()) {
            return Err(ScenarioError::Invalid {
                key: "source_ips",
                message: format!(
                    "spreads over 127.0.0.N, which cannot reach {} ({}); leave it at 1",
                    e.target.url, e.addr
                ),
            }
            .into());
        }
    }
    let probe_limit = Duration::from_millis(scenario.connect_timeout_ms.min(3000));
    let credentials = scenario.credentials();
    for e in &endpoints {
        probe(e, credentials.as_ref(), probe_limit).await?;
    }
    Ok(())
}

/// One worker per share of the users (user `first`, `first + stride`, …), as processes or threads.
async fn spawn_workers(
    scenario: &Scenario,
    options: &RunOptions,
    run_id: &str,
    start_unix_us: u64,
    tx: worker::Events,
) -> Result<Vec<worker::Handle>, RunError> {
    let workers = scenario.worker_count();
    let mut handles = Vec::new();
    for w in 0..workers {
        let first = u64::from(w);
        let stride = u64::from(workers);
        let plan = WorkerPlan {
            worker: w,
            scenario: scenario.clone(),
            first,
            stride,
            count: scenario.users.saturating_sub(first).div_ceil(stride),
            run_id: run_id.to_string(),
            start_unix_us,
            whole_process: false,
        };
        let handle = match &options.worker_exe {
            Some(exe) => worker::spawn_process(exe, &plan, tx.clone()).await,
            None => worker::spawn_thread(plan, tx.clone()),
        };
        handles.push(handle.map_err(|source| RunError::Spawn { worker: w, source })?);
    }
    Ok(handles)
}

/// Follows the workers until each has reported: merges their ticks into the series (and the
/// progress callback), tells them to close once all drained and settled, and stops at `budget`.
async fn follow(
    scenario: &Scenario,
    options: &mut RunOptions,
    rx: &mut mpsc::Receiver<(u32, WorkerEvent)>,
    handles: &mut [worker::Handle],
    budget: Duration,
) -> Result<(Vec<WorkerReport>, Series), RunError> {
    let workers = handles.len();
    let deadline = tokio::time::Instant::now() + budget;
    let mut latest: Vec<Option<Tick>> = vec![None; workers];
    let mut series = Series::new();
    let mut reports: Vec<WorkerReport> = Vec::new();
    let mut drained = 0;
    let mut close_at: Option<tokio::time::Instant> = None;
    while reports.len() < workers {
        let settle = async {
            match close_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = rx.recv() => match event {
                Some((w, WorkerEvent::Tick(tick))) => {
                    let entry = series.entry(tick.second).or_default();
                    entry.0.merge(&tick.second_stats);
                    entry.1 += tick.connected;
                    latest[w as usize] = Some(*tick);
                    if let Some(f) = options.on_tick.as_mut() {
                        f(&live(scenario.users, &latest, &series));
                    }
                }
                Some((_, WorkerEvent::Drained)) => {
                    drained += 1;
                    if drained == workers {
                        close_at = Some(tokio::time::Instant::now() + SETTLE);
                    }
                }
                Some((_, WorkerEvent::Done(report))) => reports.push(*report),
                Some((worker, WorkerEvent::Failed { message })) => return Err(RunError::Worker { worker, message }),
                None => return Err(RunError::Worker { worker: 0, message: "workers vanished".into() }),
            },
            () = settle => {
                close_at = None;
                for h in handles.iter_mut() {
                    h.send(Control::Close).await;
                }
            }
            () = tokio::time::sleep_until(deadline) => return Err(RunError::Deadline { secs: budget.as_secs_f64() }),
        }
    }
    Ok((reports, series))
}

/// One connection to `target` before the run, so an unreachable URL fails in seconds with one
/// clear error instead of thousands of failed users. That includes a node refusing the probe's
/// identity (401 `token_*` for a wrong `jwt_secret`, 400 `user_not_allowed` for none).
async fn probe(
    endpoint: &Endpoint,
    credentials: Option<&Credentials>,
    limit: Duration,
) -> Result<(), RunError> {
    let name = format!("lt-probe-{}", std::process::id());
    match target::connect(endpoint, None, &name, credentials, limit).await {
        Ok(mut ws) => {
            let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
            Ok(())
        }
        Err(e) => Err(RunError::Unreachable {
            url: endpoint.target.url.clone(),
            reason: e.to_string(),
        }),
    }
}

fn live(users: u64, latest: &[Option<Tick>], series: &Series) -> Live {
    let mut l = Live {
        users,
        ..Default::default()
    };
    for t in latest.iter().flatten() {
        l.second = l.second.max(t.second);
        l.connected += t.connected;
        l.counters.merge(&t.counters);
    }
    if let Some((_, (s, _))) = series.get_key_value(&l.second) {
        l.deliveries_last_sec = s.deliveries;
        l.p99_last_sec_us = s.latency.quantile(0.99);
    }
    l
}
