//! One worker's share of the users, on one thread: spawns the users, ticks per-second figures
//! out, drains after the publishing phase and closes on the coordinator's word. Used alike by
//! worker processes and by in-process worker threads.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::cpu::{self, CpuTime};
use crate::pad::Pad;
use crate::scenario::Scenario;
use crate::stats::{Counters, Hist, RoomReport, SecondStats, WorkerStats};
use crate::target::{self, Endpoint};
use crate::user::{self, Shared};
use crate::wire::now_us;

/// The drain ends once no frame arrived for this long and no request awaits a reply.
const QUIET: Duration = Duration::from_millis(300);
/// How long closing users get to say goodbye before their tasks are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// What a worker is told to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: u32,
    pub scenario: Scenario,
    /// Global indices of this worker's users: `first`, `first + stride`, ... (`count` of them).
    /// Interleaved rather than a block, so every worker connects its share throughout the ramp
    /// and a room's members are spread over the workers.
    pub first: u64,
    pub stride: u64,
    pub count: u64,
    pub run_id: String,
    /// When the ramp starts, in unix µs, the same for all workers.
    pub start_unix_us: u64,
    /// Report the CPU of the whole process (a worker process) or of the engine thread only.
    pub whole_process: bool,
}

/// From coordinator to worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum Control {
    /// Every worker has drained: close the connections and report.
    Close,
}

/// From worker to coordinator, one JSON line each in process mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// One second of the run: that second's figures and the running totals.
    Tick(Box<Tick>),
    /// Publishing is over and this worker's requests are all answered.
    Drained,
    Done(Box<WorkerReport>),
    Failed {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the start of the run.
    pub second: u64,
    pub connected: u64,
    pub second_stats: SecondStats,
    pub counters: Counters,
}

/// Everything one worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: u32,
    pub users: u64,
    pub counters: Counters,
    pub connect_time: Hist,
    pub latency: Hist,
    pub ack_latency: Hist,
    pub direct_latency: Hist,
    pub rooms: Vec<RoomReport>,
    pub error_samples: Vec<String>,
    pub cpu: CpuTime,
    /// Peak RSS of the worker process in KiB; 0 for a worker thread (its process is shared).
    pub peak_rss_kib: u64,
}

/// Runs `plan` to completion on the calling thread with its own single-threaded runtime.
pub fn run_blocking(
    plan: WorkerPlan,
    events: mpsc::Sender<WorkerEvent>,
    control: mpsc::Receiver<Control>,
) -> WorkerReport {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = events.blocking_send(WorkerEvent::Failed {
                message: format!("runtime: {e}"),
            });
            return WorkerReport::default();
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(plan, events, control))
}

/// The tester's own CPU clock: the whole process for a worker process, this thread for an
/// in-process worker thread.
#[derive(Clone, Copy)]
struct Clock {
    whole_process: bool,
}

impl Clock {
    fn now(self) -> CpuTime {
        if self.whole_process {
            cpu::process()
        } else {
            cpu::thread()
        }
    }

    /// CPU spent since `start` (a process counts from its own start).
    fn spent(self, start: &CpuTime) -> CpuTime {
        if self.whole_process {
            cpu::process()
        } else {
            cpu::thread().since(start)
        }
    }

    fn peak_rss_kib(self) -> u64 {
        if self.whole_process {
            cpu::peak_rss_kib()
        } else {
            0
        }
    }
}

async fn run(
    plan: WorkerPlan,
    events: mpsc::Sender<WorkerEvent>,
    mut control: mpsc::Receiver<Control>,
) -> WorkerReport {
    let clock = Clock {
        whole_process: plan.whole_process,
    };
    let cpu_start = if plan.whole_process {
        CpuTime::default()
    } else {
        cpu::thread()
    };
    // A worker process resolves for itself (the coordinator's addresses are not passed on).
    let endpoints = match plan.scenario.targets() {
        Ok(targets) => target::endpoints(&targets, plan.scenario.insecure, plan.scenario.deflate)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let targets = match endpoints {
        Ok(t) => t,
        Err(message) => {
            let _ = events.send(WorkerEvent::Failed { message }).await;
            return WorkerReport::default();
        }
    };
    let (close_tx, closing) = watch::channel(false);
    let shared = Rc::new(shared_state(&plan, targets, closing));
    let mut users = JoinSet::new();
    for k in 0..plan.count {
        users.spawn_local(user::run(
            shared.clone(),
            plan.first + k * plan.stride.max(1),
        ));
    }
    follow(&shared, clock, &events, &mut control).await;
    let _ = close_tx.send(true);
    let all_done = async { while users.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_GRACE, all_done).await.is_err() {
        users.abort_all();
    }
    let mut st = shared.stats.borrow_mut();
    let stats = std::mem::take(&mut *st);
    WorkerReport {
        worker: plan.worker,
        users: plan.count,
        counters: stats.counters,
        connect_time: stats.connect_time,
        latency: stats.latency,
        ack_latency: stats.ack_latency,
        direct_latency: stats.direct_latency,
        rooms: stats.rooms,
        error_samples: stats.error_samples,
        cpu: clock.spent(&cpu_start),
        peak_rss_kib: clock.peak_rss_kib(),
    }
}

/// What this worker's users share: the scenario, its timeline and the stats.
fn shared_state(
    plan: &WorkerPlan,
    targets: Vec<Endpoint>,
    closing: watch::Receiver<bool>,
) -> Shared {
    let s = plan.scenario.clone();
    let wait = Duration::from_micros(plan.start_unix_us.saturating_sub(now_us()));
    let start = Instant::now() + wait;
    let publish_end = start + Duration::from_secs_f64(s.ramp_secs() + s.duration_secs);
    let seed = seed_of(&plan.run_id);
    Shared {
        pad: Pad::new(s.pad, s.message_bytes, seed),
        prefix: format!("lt{}", plan.run_id),
        seed,
        credentials: s.credentials(),
        scenario: s,
        targets,
        start,
        publish_end,
        stats: RefCell::new(WorkerStats::default()),
        closing,
    }
}

/// Phase 1: ramp and publish; phase 2: drain until quiet; phase 3: wait for the word to close.
/// Sends a tick every second throughout.
async fn follow(
    shared: &Shared,
    clock: Clock,
    events: &mpsc::Sender<WorkerEvent>,
    control: &mut mpsc::Receiver<Control>,
) {
    let (start, publish_end) = (shared.start, shared.publish_end);
    let drain_end = publish_end + Duration::from_secs_f64(shared.scenario.drain_secs);
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut second = 0u64;
    let mut drained = false;
    // CPU per second, beside deliveries per second: the tester's cost per delivery at each load.
    let mut cpu_last = clock.now();
    loop {
        let now = Instant::now();
        if !drained && now >= publish_end {
            let settled = {
                let st = shared.stats.borrow();
                let quiet = now_us().saturating_sub(st.last_frame_us) >= QUIET.as_micros() as u64;
                st.pending == 0 && st.away == 0 && quiet
            };
            if settled || now >= drain_end {
                drained = true;
                let _ = events.send(WorkerEvent::Drained).await;
            }
        }
        tokio::select! {
            _ = ticker.tick() => {
                second += 1;
                let cpu = clock.now();
                let tick = {
                    let mut st = shared.stats.borrow_mut();
                    let mut second_stats = st.take_second();
                    second_stats.cpu_secs = cpu.since(&cpu_last).total();
                    Tick { second, connected: st.connected, second_stats, counters: st.counters.clone() }
                };
                cpu_last = cpu;
                let _ = events.send(WorkerEvent::Tick(Box::new(tick))).await;
            }
            () = sleep_until(now + Duration::from_millis(50)), if now >= publish_end && !drained => {}
            msg = control.recv(), if drained => match msg {
                Some(Control::Close) | None => return,
            },
            // Should the coordinator never answer, close by ourselves.
            () = sleep_until(drain_end + Duration::from_secs(2)), if drained => return,
        }
    }
}

/// The run's seed for users' choices, from its id: every worker draws the same.
pub fn seed_of(run_id: &str) -> u64 {
    run_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)))
}
