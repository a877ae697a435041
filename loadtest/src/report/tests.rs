//! The summary table, byte for byte: it is what people read and paste, so any change to it
//! should be a decision, not a side effect of a refactor.

use std::collections::BTreeMap;

use super::*;
use crate::stats::RoomFaults;

fn lat(count: u64, base_us: u64) -> Summary {
    Summary {
        count,
        min_us: base_us,
        mean_us: base_us as f64 * 1.5,
        p50_us: base_us,
        p90_us: base_us * 2,
        p99_us: base_us * 3,
        p999_us: base_us * 4,
        max_us: base_us * 5,
    }
}

fn tallied(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

fn problem(room: &str, n: u64) -> RoomProblem {
    RoomProblem {
        room: room.into(),
        epoch: format!("e{n}"),
        faults: RoomFaults {
            gaps: n,
            lost_in_gaps: n + 1,
            duplicates: n + 2,
            out_of_order: n + 3,
            seq_regressions: n + 4,
            lost_unrecovered: n + 5,
        },
        lost_at_tail: n + 6,
        acked_not_observed: n + 7,
    }
}

/// A report with every optional row present (errors, problem rooms beyond those listed, worker
/// memory, error samples).
fn full() -> Report {
    Report {
        scenario: "smoke".into(),
        run_id: "r42".into(),
        urls: vec!["ws://127.0.0.1:1/ws".into(), "ws://127.0.0.1:2/ws".into()],
        users: 120,
        workers: 2,
        mode: "processes".into(),
        ramp_secs: 1.25,
        duration_secs: 10.0,
        wall_secs: 12.345,
        connections: connections(),
        messages: messages(),
        direct: Direct {
            sent: 10,
            acked: 9,
            received: 8,
            latency: lat(8, 321),
        },
        correctness: correctness(),
        cpu: cpu(),
        error_samples: vec!["connect: refused".into(), "join: timeout".into()],
        series: Vec::new(),
    }
}

fn connections() -> Connections {
    Connections {
        attempted: 120,
        ok: 118,
        failed: 2,
        reconnects_ok: 7,
        reconnects_failed: 1,
        churn_disconnects: 6,
        server_drains: 2,
        unexpected_disconnects: 3,
        close_codes: tallied(&[("1006", 2), ("eof", 1)]),
        errors: tallied(&[("timeout", 2)]),
        joins_ok: 118,
        join_failed: 0,
        peak_concurrent: 117,
        pings: 9,
        deflate_negotiated: 118,
        connect_time: lat(118, 1234),
    }
}

fn messages() -> Messages {
    Messages {
        published: 1000,
        acked: 990,
        request_errors: 4,
        errors_by_code: tallied(&[("rate_limited", 3), ("unknown", 1)]),
        unanswered: 5,
        abandoned: 1,
        deliveries: 9876,
        deliveries_per_sec: 987.6,
        deliveries_per_sec_peak: 1500,
        frames_received: 11000,
        bytes_received: 3 * 1048576 + 524288,
        wire_bytes_received: 1048576,
        wire_bytes_per_delivery: 106.2,
        latency: lat(9876, 456),
        ack_latency: lat(990, 789),
    }
}

fn correctness() -> Correctness {
    Correctness {
        rooms: 12,
        acked_distinct: 990,
        observed_distinct: 985,
        acked_not_observed: 5,
        lost: 30,
        lost_in_gaps: 11,
        gaps: 3,
        lost_at_tail: 12,
        lost_unrecovered: 7,
        resumes_recovered: 6,
        resumes_unrecovered: 1,
        replayed: 40,
        duplicates: 2,
        out_of_order: 1,
        seq_regressions: 1,
        foreign_payloads: 0,
        rooms_with_problems: 3,
        problem_rooms: vec![problem("a", 1), problem("b", 10)],
    }
}

fn cpu() -> Cpu {
    Cpu {
        total_secs: 3.456,
        coordinator: CpuTime {
            user_secs: 0.1,
            sys_secs: 0.05,
        },
        workers: vec![CpuTime::default(), CpuTime::default()],
        deliveries_per_cpu_sec: 2857.4,
        peak_second_cpu: 0.456,
        busiest_worker_load: 0.1234,
        worker_peak_rss_kib: vec![10240, 20480],
        rss_per_user_kib: 256.0,
    }
}

#[test]
fn table_with_every_row() {
    let expected = r#"  scenario               smoke (run r42, 2 worker processes)
  targets                ws://127.0.0.1:1/ws, ws://127.0.0.1:2/ws
  timing                 ramp 1.2 s, publish 10.0 s, wall 12.3 s
  connections            118 ok / 120 attempted, 2 failed; 117 open at peak, 9 server pings answered
  connect errors         timeout×2
  reconnects             7 ok, 1 failed; 6 churned, 2 server drains (1001), 3 unexpected closes (1006×2, eof×1)
  connect time           p50 1.23 ms  p90 2.47 ms  p99 3.70 ms  p99.9 4.94 ms  max 6.17 ms  (n=118)
  published / acked      1000 / 990 (4 errors (rate_limited×3, unknown×1), 5 unanswered, 1 abandoned)
  deliveries             9876 (988/s mean, 1500/s peak), 3.5 MiB received
  wire                   106.2 bytes per delivery (1.0 MiB of frames read); permessage-deflate on 118 connections
  latency                p50 0.46 ms  p90 0.91 ms  p99 1.37 ms  p99.9 1.82 ms  max 2.28 ms  (n=9876)
  ack latency            p50 0.79 ms  p90 1.58 ms  p99 2.37 ms  p99.9 3.16 ms  max 3.94 ms  (n=990)
  direct                 10 sent, 9 acked, 8 received; p50 0.32 ms  p90 0.64 ms  p99 0.96 ms  p99.9 1.28 ms  max 1.60 ms  (n=8)
  rooms                  12 histories, 990 acked, 985 observed, 5 acked-not-observed
  loss                   30 lost (11 in 3 gaps, 12 at tail, 7 unrecovered)
  order                  2 duplicates, 1 out of order, 1 seq regressions
  resumes                6 recovered (40 messages replayed), 1 not recovered
  problem room           a (epoch e1): 2 lost in 1 gaps, 7 at tail, 6 unrecovered, 8 acked-not-observed, 3 dup, 4 ooo, 5 seq
  problem room           b (epoch e10): 11 lost in 10 gaps, 16 at tail, 15 unrecovered, 17 acked-not-observed, 12 dup, 13 ooo, 14 seq
  problem rooms          3 in all (worst 2 listed)
  tester cpu             3.46 s over 2 worker(s): busiest 12% of a core over the run, peak second 46% of a core (all workers); 2857 deliveries per cpu-second while receiving
  tester memory          256.0 KiB per user (peak RSS summed over workers; largest worker 20.0 MiB)
  error sample           connect: refused
  error sample           join: timeout
"#;
    assert_eq!(full().table(), expected);
}

#[test]
fn table_without_optional_rows() {
    let mut r = full();
    r.mode = "threads".into();
    r.workers = 1;
    r.connections.errors.clear();
    r.connections.close_codes.clear();
    r.messages.errors_by_code.clear();
    r.messages.latency = Summary::default();
    r.direct.latency = Summary::default();
    r.correctness.rooms_with_problems = 2;
    r.cpu.worker_peak_rss_kib.clear();
    r.error_samples.clear();
    let expected = r#"  scenario               smoke (run r42, 1 worker thread)
  targets                ws://127.0.0.1:1/ws, ws://127.0.0.1:2/ws
  timing                 ramp 1.2 s, publish 10.0 s, wall 12.3 s
  connections            118 ok / 120 attempted, 2 failed; 117 open at peak, 9 server pings answered
  reconnects             7 ok, 1 failed; 6 churned, 2 server drains (1001), 3 unexpected closes (none)
  connect time           p50 1.23 ms  p90 2.47 ms  p99 3.70 ms  p99.9 4.94 ms  max 6.17 ms  (n=118)
  published / acked      1000 / 990 (4 errors (none), 5 unanswered, 1 abandoned)
  deliveries             9876 (988/s mean, 1500/s peak), 3.5 MiB received
  wire                   106.2 bytes per delivery (1.0 MiB of frames read); permessage-deflate on 118 connections
  latency                no samples
  ack latency            p50 0.79 ms  p90 1.58 ms  p99 2.37 ms  p99.9 3.16 ms  max 3.94 ms  (n=990)
  direct                 10 sent, 9 acked, 8 received; no samples
  rooms                  12 histories, 990 acked, 985 observed, 5 acked-not-observed
  loss                   30 lost (11 in 3 gaps, 12 at tail, 7 unrecovered)
  order                  2 duplicates, 1 out of order, 1 seq regressions
  resumes                6 recovered (40 messages replayed), 1 not recovered
  problem room           a (epoch e1): 2 lost in 1 gaps, 7 at tail, 6 unrecovered, 8 acked-not-observed, 3 dup, 4 ooo, 5 seq
  problem room           b (epoch e10): 11 lost in 10 gaps, 16 at tail, 15 unrecovered, 17 acked-not-observed, 12 dup, 13 ooo, 14 seq
  tester cpu             3.46 s over 2 worker(s): busiest 12% of a core over the run, peak second 46% of a core (all workers); 2857 deliveries per cpu-second while receiving
"#;
    assert_eq!(r.table(), expected);
}
