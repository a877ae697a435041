//! The merged result of a run: every figure (serialized as the `--json` file), the summary
//! table (in `table`), and the verdict (what makes the exit code non-zero).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuTime;
use crate::engine::WorkerReport;
use crate::stats::{Counters, Hist, RoomProblem, RoomTotals, SecondStats, Summary, merge_rooms};

mod table;
#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub run_id: String,
    pub urls: Vec<String>,
    pub users: u64,
    pub workers: u32,
    /// `processes` (worker processes) or `threads` (in-process engines).
    pub mode: String,
    pub ramp_secs: f64,
    pub duration_secs: f64,
    /// From the start of the ramp to the last worker's report.
    pub wall_secs: f64,
    pub connections: Connections,
    pub messages: Messages,
    pub direct: Direct,
    pub correctness: Correctness,
    pub cpu: Cpu,
    /// A few distinct error texts, for diagnosis.
    pub error_samples: Vec<String>,
    /// One point per second of the run.
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connections {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub reconnects_ok: u64,
    pub reconnects_failed: u64,
    pub churn_disconnects: u64,
    /// Closes with 1001 from a draining server (rolling restarts): reconnected, not failures.
    pub server_drains: u64,
    pub unexpected_disconnects: u64,
    /// Close codes (or `eof`) of unexpected disconnects.
    pub close_codes: BTreeMap<String, u64>,
    /// Failed connection attempts by cause, e.g. `429 too_many_connections` or `timeout`.
    pub errors: BTreeMap<String, u64>,
    pub joins_ok: u64,
    pub join_failed: u64,
    /// Most connections open at once (sampled each second).
    pub peak_concurrent: u64,
    /// Server heartbeat pings received and answered: idle connections stayed alive.
    pub pings: u64,
    /// Connections (first connects and reconnects) whose server accepted permessage-deflate.
    #[serde(default)]
    pub deflate_negotiated: u64,
    /// TCP connect + WebSocket handshake.
    pub connect_time: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Messages {
    pub published: u64,
    pub acked: u64,
    pub request_errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub unanswered: u64,
    pub abandoned: u64,
    /// Room `message` frames received, over all members.
    pub deliveries: u64,
    /// Mean over the seconds that had deliveries.
    pub deliveries_per_sec: f64,
    pub deliveries_per_sec_peak: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// WebSocket bytes read off the connections: every frame with its header, compressed as
    /// the server sent it (above TLS; HTTP handshakes excluded).
    #[serde(default)]
    pub wire_bytes_received: u64,
    /// `wire_bytes_received / deliveries` (0 without deliveries): what one delivery costs on
    /// the wire, replies, pings and framing included.
    #[serde(default)]
    pub wire_bytes_per_delivery: f64,
    /// Publish (sender's clock) to delivery (receiver's clock).
    pub latency: Summary,
    /// Publish to `ack`.
    pub ack_latency: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direct {
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Correctness {
    /// Distinct room histories (room name + epoch).
    pub rooms: u64,
    pub acked_distinct: u64,
    pub observed_distinct: u64,
    /// Acknowledged messages that no member received.
    pub acked_not_observed: u64,
    /// All missed deliveries: `lost_in_gaps + lost_at_tail + lost_unrecovered`.
    pub lost: u64,
    pub lost_in_gaps: u64,
    pub gaps: u64,
    pub lost_at_tail: u64,
    pub lost_unrecovered: u64,
    pub resumes_recovered: u64,
    pub resumes_unrecovered: u64,
    /// Messages replayed by recovered resumes (counted in deliveries, not in latency).
    pub replayed: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// A publisher's seq that failed to rise in a member's stream (content delivered twice).
    pub seq_regressions: u64,
    pub foreign_payloads: u64,
    /// Room histories with any fault, and the worst few with their own figures.
    pub rooms_with_problems: u64,
    pub problem_rooms: Vec<RoomProblem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cpu {
    /// All CPU the tester used: workers plus coordinator.
    pub total_secs: f64,
    pub coordinator: CpuTime,
    pub workers: Vec<CpuTime>,
    /// Deliveries received per CPU second of the tester, over the seconds that had deliveries
    /// (so connection set-up in an idle ramp does not count): what one fully busy core takes.
    pub deliveries_per_cpu_sec: f64,
    /// The most CPU the tester used in any one second (1.0 = one core), all workers together.
    pub peak_second_cpu: f64,
    /// The busiest worker's CPU seconds over wall seconds (1.0 = one core saturated).
    pub busiest_worker_load: f64,
    /// Peak RSS of each worker process in KiB (empty with worker threads, whose process is
    /// shared), and their sum over the users: the measured memory cost of one simulated user,
    /// each process's fixed overhead included.
    pub worker_peak_rss_kib: Vec<u64>,
    pub rss_per_user_kib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub second: u64,
    pub connected: u64,
    pub deliveries: u64,
    pub bytes: u64,
    pub acks: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// CPU seconds the tester used in this second, all workers together.
    pub tester_cpu_secs: f64,
}

/// Per-second figures merged over workers, keyed by second.
pub type Series = BTreeMap<u64, (SecondStats, u64)>;

/// Run facts the workers do not know.
pub struct RunInfo {
    pub scenario: String,
    pub run_id: String,
    pub urls: Vec<String>,
    pub users: u64,
    pub mode: &'static str,
    pub ramp_secs: f64,
    pub duration_secs: f64,
    pub wall_secs: f64,
    pub coordinator_cpu: CpuTime,
}

impl Report {
    pub fn build(info: RunInfo, workers: &[WorkerReport], series: &Series) -> Report {
        let merged = Merged::of(workers);
        let rooms = merge_rooms(workers.iter().flat_map(|w| &w.rooms));
        let series = points(series);
        Report {
            scenario: info.scenario.clone(),
            run_id: info.run_id.clone(),
            urls: info.urls.clone(),
            users: info.users,
            workers: workers.len() as u32,
            mode: info.mode.to_string(),
            ramp_secs: info.ramp_secs,
            duration_secs: info.duration_secs,
            wall_secs: info.wall_secs,
            connections: connections(&info, workers, &merged, &series),
            messages: messages(&merged, &series),
            direct: Direct {
                sent: merged.c.direct_sent,
                acked: merged.c.direct_acked,
                received: merged.c.direct_received,
                latency: merged.direct.summary(),
            },
            correctness: correctness(&merged.c, rooms),
            cpu: cpu(&info, workers, &series),
            error_samples: merged.samples,
            series,
        }
    }

    /// What went wrong, one line each. Connection failures always count; loss, duplicates and
    /// disorder count when `expect_no_loss`.
    pub fn problems(&self, expect_no_loss: bool) -> Vec<String> {
        let mut out = Vec::new();
        let k = &self.connections;
        if k.failed > 0 {
            out.push(format!(
                "{} of {} connections failed ({})",
                k.failed,
                k.attempted,
                tally(&k.errors)
            ));
        }
        if k.reconnects_failed > 0 {
            out.push(format!("{} reconnects failed", k.reconnects_failed));
        }
        if k.join_failed > 0 {
            out.push(format!("{} joins failed", k.join_failed));
        }
        if expect_no_loss {
            let c = &self.correctness;
            for (n, what) in [
                (c.lost, "messages lost"),
                (c.duplicates, "duplicate deliveries"),
                (c.out_of_order, "out-of-order deliveries"),
                (c.seq_regressions, "publisher seq regressions"),
                (c.acked_not_observed, "acked messages never delivered"),
                (
                    self.connections.unexpected_disconnects,
                    "unexpected disconnects",
                ),
            ] {
                if n > 0 {
                    out.push(format!("{n} {what}"));
                }
            }
        }
        out
    }
}

/// `code×count, ...`, or `none`.
fn tally(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    parts.join(", ")
}

/// The workers' counters, histograms and first error samples, merged.
struct Merged {
    c: Counters,
    connect: Hist,
    latency: Hist,
    ack: Hist,
    direct: Hist,
    samples: Vec<String>,
}

impl Merged {
    fn of(workers: &[WorkerReport]) -> Self {
        let mut m = Merged {
            c: Counters::default(),
            connect: Hist::default(),
            latency: Hist::default(),
            ack: Hist::default(),
            direct: Hist::default(),
            samples: Vec::new(),
        };
        for w in workers {
            m.c.merge(&w.counters);
            m.connect.merge(&w.connect_time);
            m.latency.merge(&w.latency);
            m.ack.merge(&w.ack_latency);
            m.direct.merge(&w.direct_latency);
            for s in &w.error_samples {
                if m.samples.len() < 10 && !m.samples.contains(s) {
                    m.samples.push(s.clone());
                }
            }
        }
        m
    }
}

/// The per-second series, with each second's latency percentiles.
fn points(series: &Series) -> Vec<Point> {
    series
        .iter()
        .map(|(&second, (s, connected))| Point {
            second,
            connected: *connected,
            deliveries: s.deliveries,
            bytes: s.bytes,
            acks: s.acks,
            p50_us: s.latency.quantile(0.5),
            p90_us: s.latency.quantile(0.9),
            p99_us: s.latency.quantile(0.99),
            max_us: s.latency.max(),
            tester_cpu_secs: s.cpu_secs,
        })
        .collect()
}

fn connections(
    info: &RunInfo,
    workers: &[WorkerReport],
    m: &Merged,
    series: &[Point],
) -> Connections {
    let c = &m.c;
    let connect = &m.connect;
    Connections {
        attempted: info.users,
        ok: c.connects_ok,
        failed: c.connects_failed + (info.users - workers.iter().map(|w| w.users).sum::<u64>()),
        reconnects_ok: c.reconnects_ok,
        reconnects_failed: c.reconnects_failed,
        churn_disconnects: c.churn_disconnects,
        server_drains: c.server_drains,
        unexpected_disconnects: c.unexpected_disconnects,
        close_codes: c.close_codes.clone(),
        errors: c.connect_errors.clone(),
        joins_ok: c.joins_ok,
        join_failed: c.join_failed,
        peak_concurrent: series.iter().map(|p| p.connected).max().unwrap_or(0),
        pings: c.pings,
        deflate_negotiated: c.deflate_connections,
        connect_time: connect.summary(),
    }
}

fn messages(m: &Merged, series: &[Point]) -> Messages {
    let (c, latency, ack) = (&m.c, &m.latency, &m.ack);
    let busy: Vec<u64> = series
        .iter()
        .map(|p| p.deliveries)
        .filter(|&d| d > 0)
        .collect();
    Messages {
        published: c.published,
        acked: c.acked,
        request_errors: c.request_errors,
        errors_by_code: c.errors_by_code.clone(),
        unanswered: c.unanswered,
        abandoned: c.abandoned,
        deliveries: c.deliveries,
        deliveries_per_sec: if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<u64>() as f64 / busy.len() as f64
        },
        deliveries_per_sec_peak: busy.iter().copied().max().unwrap_or(0),
        frames_received: c.frames_received,
        bytes_received: c.bytes_received,
        wire_bytes_received: c.wire_bytes_received,
        wire_bytes_per_delivery: if c.deliveries == 0 {
            0.0
        } else {
            c.wire_bytes_received as f64 / c.deliveries as f64
        },
        latency: latency.summary(),
        ack_latency: ack.summary(),
    }
}

fn correctness(c: &Counters, rooms: RoomTotals) -> Correctness {
    Correctness {
        rooms: rooms.rooms,
        acked_distinct: rooms.acked_distinct,
        observed_distinct: rooms.observed_distinct,
        acked_not_observed: rooms.acked_not_observed,
        lost: c.faults.lost_in_gaps
            + rooms.lost_at_tail
            + c.faults.lost_unrecovered
            + rooms.lost_moved,
        lost_in_gaps: c.faults.lost_in_gaps,
        gaps: c.faults.gaps,
        lost_at_tail: rooms.lost_at_tail,
        lost_unrecovered: c.faults.lost_unrecovered + rooms.lost_moved,
        resumes_recovered: c.resumes_recovered,
        resumes_unrecovered: c.resumes_unrecovered,
        replayed: c.replayed,
        duplicates: c.faults.duplicates,
        out_of_order: c.faults.out_of_order,
        seq_regressions: c.faults.seq_regressions,
        foreign_payloads: c.foreign_payloads,
        rooms_with_problems: rooms.rooms_with_problems,
        problem_rooms: rooms.problem_rooms,
    }
}

fn cpu(info: &RunInfo, workers: &[WorkerReport], series: &[Point]) -> Cpu {
    let receiving = series.iter().filter(|p| p.deliveries > 0);
    let (recv_deliveries, recv_cpu) = receiving.fold((0u64, 0f64), |(d, c), p| {
        (d + p.deliveries, c + p.tester_cpu_secs)
    });
    let worker_cpu: Vec<CpuTime> = workers.iter().map(|w| w.cpu).collect();
    let worker_secs: f64 = worker_cpu.iter().map(CpuTime::total).sum();
    let busiest = worker_cpu.iter().map(CpuTime::total).fold(0.0, f64::max);
    let rss: Vec<u64> = workers
        .iter()
        .map(|w| w.peak_rss_kib)
        .filter(|&k| k > 0)
        .collect();
    Cpu {
        total_secs: worker_secs + info.coordinator_cpu.total(),
        coordinator: info.coordinator_cpu,
        workers: worker_cpu,
        deliveries_per_cpu_sec: if recv_cpu > 0.0 {
            recv_deliveries as f64 / recv_cpu
        } else {
            0.0
        },
        peak_second_cpu: series.iter().map(|p| p.tester_cpu_secs).fold(0.0, f64::max),
        busiest_worker_load: if info.wall_secs > 0.0 {
            busiest / info.wall_secs
        } else {
            0.0
        },
        rss_per_user_kib: if rss.is_empty() {
            0.0
        } else {
            rss.iter().sum::<u64>() as f64 / info.users as f64
        },
        worker_peak_rss_kib: rss,
    }
}
