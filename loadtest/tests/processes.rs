//! The binary as people run it: worker child processes coordinated over pipes, one merged
//! report, `--json`, `--plot`, and the exit code of `--expect-no-loss`.

mod common;

use common::{RUN_LIMIT, Server, run_binary, scenario_path, smoke_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_merge_into_one_report() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("report.svg");
    let (ran, r) = smoke_binary(&server.url(), 3, &["--plot", svg.to_str().unwrap()]).await;
    assert!(ran.stdout.contains("3 worker processes"), "{}", ran.stdout);
    assert_eq!((r.mode.as_str(), r.workers), ("processes", 3));
    // Each process measured its own share (8 users each) and its own CPU and memory.
    assert_eq!(r.cpu.workers.len(), 3);
    assert!(
        r.cpu.workers.iter().all(|w| w.total() > 0.0),
        "{:?}",
        r.cpu.workers
    );
    assert_eq!(r.cpu.worker_peak_rss_kib.len(), 3);
    assert_eq!((r.connections.ok, r.connections.failed), (24, 0));
    // Every room has members in several processes: only the merged view can tell that each
    // acknowledged offset reached somebody and that nobody was left behind.
    let c = &r.correctness;
    assert_eq!(c.rooms, 4);
    assert!(r.messages.deliveries > 0 && r.messages.acked > 0);
    assert_eq!(c.acked_distinct, r.messages.acked);
    assert_eq!(
        (c.acked_not_observed, c.lost, c.duplicates, c.out_of_order),
        (0, 0, 0, 0)
    );
    assert_eq!(r.direct.received, r.direct.sent);
    assert!(!r.series.is_empty());

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("deliveries/s"),
        "{}",
        &plot[..200]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_no_loss_fails_the_exit_code_on_loss() {
    // Resumes that the server cannot recover (history of 1 message) lose messages.
    let server = Server::with(|c| c.history.size = 1).await;
    let churn = scenario_path("churn-resume");
    let url = server.url();
    let args = [
        churn.to_str().unwrap(),
        "--url",
        &url,
        "--users",
        "20",
        "--rooms",
        "2",
        "--room-size",
        "10",
        "--duration",
        "2.5",
        "--publish-rate",
        "10",
        "--churn",
        "1",
        "--churn-down-ms",
        "400",
        "--workers",
        "2",
    ];
    let strict: Vec<&str> = args.iter().copied().chain(["--expect-no-loss"]).collect();
    let ran = run_binary(&strict, RUN_LIMIT).await;
    assert_eq!(
        ran.code,
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stderr.contains("messages lost"), "{}", ran.stderr);
    assert!(ran.stdout.contains("problem room"), "{}", ran.stdout);
    server.stop().await;
}
