//! The `loadtest` binary: parses flags, runs the scenario (spawning worker processes of itself),
//! shows progress, prints the summary, writes `--json`/`--plot`, and sets the exit code:
//! 0 passed, 1 could not run, 2 ran but failed (connection failures, or loss with
//! `--expect-no-loss`).

#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use loadtest::webhooks::Receiver;
use loadtest::{Live, Overrides, Report, RunOptions, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load and correctness tester for roomcast"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenario TOML file (see loadtest/scenarios/). Flags below override its values.
    scenario: Option<PathBuf>,
    /// Target URL, ws:// or wss://, repeatable; users are spread round-robin
    /// (e.g. ws://127.0.0.1:8080/ws, wss://staging.example.com/ws).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Simulated users (one connection each).
    #[arg(long)]
    users: Option<u64>,
    /// Connections opened per second.
    #[arg(long)]
    ramp: Option<f64>,
    /// Seconds of publishing after the ramp.
    #[arg(long)]
    duration: Option<f64>,
    /// Longest wait for in-flight messages after publishing stops, seconds.
    #[arg(long)]
    drain: Option<f64>,
    /// Replace the room layout by this many rooms...
    #[arg(long)]
    rooms: Option<u64>,
    /// ...of this many members each.
    #[arg(long)]
    room_size: Option<u64>,
    /// Messages per second per publishing member.
    #[arg(long)]
    publish_rate: Option<f64>,
    /// Bytes of padding per message.
    #[arg(long)]
    message_bytes: Option<usize>,
    /// Direct messages per second per user.
    #[arg(long)]
    direct_rate: Option<f64>,
    /// Fraction of users that disconnect once and resume.
    #[arg(long)]
    churn: Option<f64>,
    /// How long a churned user stays offline, milliseconds.
    #[arg(long)]
    churn_down_ms: Option<u64>,
    /// Resume on the next URL instead of the same one (needs a cluster with a shared broker).
    #[arg(long)]
    resume_elsewhere: bool,
    /// Receive the nodes' lifecycle webhooks on this address (point their webhooks.url at
    /// http://ADDR/hook) and count user_online/user_offline against the run's truth: zero
    /// missing and zero extra, or the run fails.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<String>,
    /// The nodes' webhooks.secret, to check every request's signature.
    #[arg(long, default_value = "")]
    webhook_secret: String,
    /// The nodes' webhooks.debounce_ms.
    #[arg(long, default_value_t = 5000)]
    webhook_debounce_ms: u64,
    /// How long to keep receiving after the run before counting, milliseconds: at least the
    /// debounce plus a few linger periods.
    #[arg(long, default_value_t = 8000)]
    webhook_wait_ms: u64,
    /// Worker processes (0 = one per 15,000 users).
    #[arg(long)]
    workers: Option<u32>,
    /// Spread client sockets over source addresses 127.0.0.1..=127.0.0.N (loopback targets).
    #[arg(long)]
    source_ips: Option<u32>,
    /// The node's HS256 auth.secret: each user then sends a JWT for itself instead of ?user=.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
    /// Accept any TLS certificate from wss:// targets (a self-signed staging front end).
    /// DANGER: nothing then proves who answers; anyone on the route can read and change the
    /// traffic, tokens included. For a private CA prefer SSL_CERT_FILE=ca.pem, which verifies.
    #[arg(long)]
    insecure: bool,
    /// Offer permessage-deflate on every connection; the report counts those the server
    /// accepted, and wire bytes per delivery with or without it.
    #[arg(long)]
    deflate: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency percentiles and throughput per second to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Exit non-zero on any loss, gap, duplicate or out-of-order delivery.
    #[arg(long)]
    expect_no_loss: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Run workers as threads of this process instead of child processes (up to 19,000 users).
    #[arg(long)]
    in_process: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Internal: run one worker's share, driven over stdin/stdout by the coordinator.
    #[command(hide = true)]
    Worker,
    /// A fault campaign: start Redis and nodes, drive chat load, inject seeded faults, judge.
    Chaos(ChaosArgs),
}

#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// Campaign scenario (loadtest/scenarios/chaos-*.toml).
    scenario: PathBuf,
    /// Seeds to run, one campaign each, one after the other (e.g. `--seeds 1,2,3`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    /// Override the scenario's whole-run length, seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// The roomcast binary the nodes run (default: the one beside this executable).
    #[arg(long)]
    roomcast: Option<PathBuf>,
    /// Where Redis data and node logs go (one folder per seed).
    #[arg(long, default_value = "target/chaos")]
    dir: PathBuf,
    /// Write every campaign's report (a JSON array) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw each campaign's timeline to this SVG (`-seedN` is added before `.svg`).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Worker) = cli.command {
        return match loadtest::worker::worker_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Chaos(args)) = cli.command {
        return match chaos(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("loadtest chaos: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut scenario = match &cli.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    scenario.apply(&cli.overrides())?;

    let progress = progress_bar(cli.quiet, scenario.users);
    let bar = progress.clone();
    let worker_exe = if cli.in_process {
        None
    } else {
        Some(std::env::current_exe().context("locating the loadtest executable for workers")?)
    };
    let options = RunOptions {
        worker_exe,
        on_tick: Some(Box::new(move |l: &Live| show(&bar, l))),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver = match &cli.webhook_listen {
        Some(listen) => Some(
            runtime
                .block_on(Receiver::start(listen, cli.webhook_secret.clone()))
                .with_context(|| format!("listening for webhooks on {listen}"))?,
        ),
        None => None,
    };
    let result = runtime.block_on(loadtest::run(&scenario, options));
    progress.finish_and_clear();
    let report = result?;
    let code = conclude(&report, &cli)?;
    let Some(receiver) = receiver else {
        return Ok(code);
    };
    let wait = Duration::from_millis(cli.webhook_wait_ms);
    runtime.block_on(async { tokio::time::sleep(wait).await });
    let tally = receiver.tally();
    let c = loadtest::webhooks::check(&tally, &report, &scenario, cli.webhook_debounce_ms);
    println!(
        "webhooks: {} events in {} POSTs, {} missing, {} extra, {} repeats, {} users unsure, \
         {} bad signatures",
        c.events, tally.posts, c.missing, c.extra, c.repeats, c.unsure, c.bad_signatures
    );
    for kind in ["user_online", "user_offline"] {
        let (n, peak) = tally.peak(kind);
        println!("webhooks: {n} {kind}, at most {peak} within one second");
    }
    if c.passed() {
        Ok(code)
    } else {
        eprintln!("FAIL: webhook events do not match the run");
        Ok(ExitCode::from(2))
    }
}

impl Cli {
    /// The flags that replace scenario values.
    fn overrides(&self) -> Overrides {
        Overrides {
            users: self.users,
            ramp_per_sec: self.ramp,
            urls: self.urls.clone(),
            duration_secs: self.duration,
            drain_secs: self.drain,
            rooms: self.rooms,
            room_size: self.room_size,
            publish_per_sec: self.publish_rate,
            message_bytes: self.message_bytes,
            direct_per_sec: self.direct_rate,
            churn: self.churn,
            churn_down_ms: self.churn_down_ms,
            // A flag can only turn it on; absent, the scenario file decides.
            resume_elsewhere: self.resume_elsewhere.then_some(true),
            workers: self.workers,
            source_ips: self.source_ips,
            jwt_secret: self.jwt_secret.clone(),
            // Like `resume_elsewhere`: the flag turns it on, a scenario file may too.
            insecure: self.insecure.then_some(true),
            deflate: self.deflate.then_some(true),
        }
    }
}

/// The live progress line on stderr, hidden when quiet or when stderr is not a terminal (so
/// logs and pipes get only the summary).
fn progress_bar(quiet: bool, users: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(users), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:20}] {pos}/{len} connected  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints the table, writes `--json` and `--plot`, and turns the verdict into the exit code.
fn conclude(report: &Report, cli: &Cli) -> anyhow::Result<ExitCode> {
    println!("{}", report.table());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.plot {
        loadtest::plot::draw(report, path)?;
    }
    let problems = report.problems(cli.expect_no_loss);
    if problems.is_empty() {
        println!("PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("FAIL: {p}");
        }
        Ok(ExitCode::from(2))
    }
}

/// Exit 0 when every campaign kept the promise, 2 when one did not, 1 when one could not run.
fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    use loadtest::chaos::{self, ChaosScenario};
    let mut scenario = ChaosScenario::from_file(&args.scenario)?;
    if let Some(d) = args.duration {
        scenario.duration_secs = d;
        scenario.validate()?;
    }
    let roomcast = match args.roomcast.or_else(chaos::default_roomcast) {
        Some(path) => path,
        None => anyhow::bail!("no roomcast binary beside loadtest; build it or pass --roomcast"),
    };
    let mut reports = Vec::new();
    for &seed in &args.seeds {
        let dir = chaos::work_dir(&args.dir, seed)?;
        let options = chaos::Options {
            seed,
            roomcast: roomcast.clone(),
            dir,
        };
        let report = chaos::run(&scenario, &options)?;
        println!("{}", report.summary());
        if let Some(path) = &args.plot {
            let path = if args.seeds.len() > 1 {
                path.with_file_name(format!(
                    "{}-seed{seed}.svg",
                    path.file_stem().unwrap_or_default().to_string_lossy()
                ))
            } else {
                path.clone()
            };
            report.plot(&path).map_err(anyhow::Error::msg)?;
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", chaos::report::aggregate(&reports));
    if reports.iter().all(|r| r.passed()) {
        println!("PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAIL");
        Ok(ExitCode::from(2))
    }
}

fn show(bar: &ProgressBar, l: &Live) {
    let c = &l.counters;
    bar.set_position(l.connected);
    bar.set_message(format!(
        "| {} deliveries/s p99 {:.1} ms | acked {} | lost {} dup {} ooo {} | failed {}",
        l.deliveries_last_sec,
        l.p99_last_sec_us as f64 / 1000.0,
        c.acked,
        c.faults.lost_in_gaps + c.faults.lost_unrecovered,
        c.faults.duplicates,
        c.faults.out_of_order,
        c.connects_failed,
    ));
}
