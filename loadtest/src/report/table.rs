//! The human summary table: one line per figure, a label and its headline values, in the
//! order a reader asks (what ran, did it connect, did messages flow, were they right, could the
//! tester keep up).

use std::fmt::Write as _;

use super::{Report, tally};
use crate::stats::{RoomProblem, Summary};

/// The table being written, one `  label  value` line per row.
#[derive(Default)]
struct Rows(String);

impl Rows {
    fn row(&mut self, label: &str, value: String) {
        let _ = writeln!(self.0, "  {label:<22} {value}");
    }
}

impl Report {
    /// The human summary table.
    pub fn table(&self) -> String {
        let mut t = Rows::default();
        self.run_rows(&mut t);
        self.connection_rows(&mut t);
        self.message_rows(&mut t);
        self.correctness_rows(&mut t);
        self.problem_room_rows(&mut t);
        self.tester_rows(&mut t);
        for e in &self.error_samples {
            t.row("error sample", e.clone());
        }
        t.0
    }

    /// What ran, against which targets, for how long.
    fn run_rows(&self, t: &mut Rows) {
        let workers = match (self.mode.as_str(), self.workers) {
            ("processes", 1) => "worker process",
            ("processes", _) => "worker processes",
            (_, 1) => "worker thread",
            _ => "worker threads",
        };
        t.row(
            "scenario",
            format!(
                "{} (run {}, {} {workers})",
                self.scenario, self.run_id, self.workers
            ),
        );
        t.row("targets", self.urls.join(", "));
        t.row(
            "timing",
            format!(
                "ramp {:.1} s, publish {:.1} s, wall {:.1} s",
                self.ramp_secs, self.duration_secs, self.wall_secs
            ),
        );
    }

    fn connection_rows(&self, t: &mut Rows) {
        let k = &self.connections;
        t.row(
            "connections",
            format!(
                "{} ok / {} attempted, {} failed; {} open at peak, {} server pings answered",
                k.ok, k.attempted, k.failed, k.peak_concurrent, k.pings
            ),
        );
        if !k.errors.is_empty() {
            t.row("connect errors", tally(&k.errors));
        }
        t.row(
            "reconnects",
            format!(
                "{} ok, {} failed; {} churned, {} server drains (1001), {} unexpected closes ({})",
                k.reconnects_ok,
                k.reconnects_failed,
                k.churn_disconnects,
                k.server_drains,
                k.unexpected_disconnects,
                tally(&k.close_codes)
            ),
        );
        t.row("connect time", latency(&k.connect_time));
    }

    /// Room messages and direct messages: how many, how fast.
    fn message_rows(&self, t: &mut Rows) {
        let m = &self.messages;
        t.row(
            "published / acked",
            format!(
                "{} / {} ({} errors ({}), {} unanswered, {} abandoned)",
                m.published,
                m.acked,
                m.request_errors,
                tally(&m.errors_by_code),
                m.unanswered,
                m.abandoned
            ),
        );
        t.row(
            "deliveries",
            format!(
                "{} ({:.0}/s mean, {}/s peak), {:.1} MiB received",
                m.deliveries,
                m.deliveries_per_sec,
                m.deliveries_per_sec_peak,
                m.bytes_received as f64 / 1048576.0
            ),
        );
        t.row(
            "wire",
            format!(
                "{:.1} bytes per delivery ({:.1} MiB of frames read); permessage-deflate on {} connections",
                m.wire_bytes_per_delivery,
                m.wire_bytes_received as f64 / 1048576.0,
                self.connections.deflate_negotiated
            ),
        );
        t.row("latency", latency(&m.latency));
        t.row("ack latency", latency(&m.ack_latency));
        let d = &self.direct;
        t.row(
            "direct",
            format!(
                "{} sent, {} acked, {} received; {}",
                d.sent,
                d.acked,
                d.received,
                latency(&d.latency)
            ),
        );
    }

    /// Whether every member saw every acknowledged message once and in order.
    fn correctness_rows(&self, t: &mut Rows) {
        let c = &self.correctness;
        t.row(
            "rooms",
            format!(
                "{} histories, {} acked, {} observed, {} acked-not-observed",
                c.rooms, c.acked_distinct, c.observed_distinct, c.acked_not_observed
            ),
        );
        t.row(
            "loss",
            format!(
                "{} lost ({} in {} gaps, {} at tail, {} unrecovered)",
                c.lost, c.lost_in_gaps, c.gaps, c.lost_at_tail, c.lost_unrecovered
            ),
        );
        t.row(
            "order",
            format!(
                "{} duplicates, {} out of order, {} seq regressions",
                c.duplicates, c.out_of_order, c.seq_regressions
            ),
        );
        t.row(
            "resumes",
            format!(
                "{} recovered ({} messages replayed), {} not recovered",
                c.resumes_recovered, c.replayed, c.resumes_unrecovered
            ),
        );
    }

    /// The worst rooms one per row, then how many more there were: the report lists only a few.
    fn problem_room_rows(&self, t: &mut Rows) {
        let c = &self.correctness;
        for p in &c.problem_rooms {
            t.row("problem room", problem_room(p));
        }
        if c.rooms_with_problems > c.problem_rooms.len() as u64 {
            t.row(
                "problem rooms",
                format!(
                    "{} in all (worst {} listed)",
                    c.rooms_with_problems,
                    c.problem_rooms.len()
                ),
            );
        }
    }

    /// The tester's own cost, so a saturated tester is not mistaken for a slow server.
    fn tester_rows(&self, t: &mut Rows) {
        let cpu = &self.cpu;
        t.row(
            "tester cpu",
            format!(
                "{:.2} s over {} worker(s): busiest {:.0}% of a core over the run, peak second \
                 {:.0}% of a core (all workers); {:.0} deliveries per cpu-second while receiving",
                cpu.total_secs,
                cpu.workers.len(),
                cpu.busiest_worker_load * 100.0,
                cpu.peak_second_cpu * 100.0,
                cpu.deliveries_per_cpu_sec
            ),
        );
        // Worker threads share this process, so there is no per-worker memory to show.
        if let Some(&peak) = cpu.worker_peak_rss_kib.iter().max() {
            t.row(
                "tester memory",
                format!(
                    "{:.1} KiB per user (peak RSS summed over workers; largest worker {:.1} MiB)",
                    cpu.rss_per_user_kib,
                    peak as f64 / 1024.0
                ),
            );
        }
    }
}

fn problem_room(p: &RoomProblem) -> String {
    let f = &p.faults;
    format!(
        "{} (epoch {}): {} lost in {} gaps, {} at tail, {} unrecovered, {} acked-not-observed, {} dup, {} ooo, {} seq",
        p.room,
        p.epoch,
        f.lost_in_gaps,
        f.gaps,
        p.lost_at_tail,
        f.lost_unrecovered,
        p.acked_not_observed,
        f.duplicates,
        f.out_of_order,
        f.seq_regressions
    )
}

/// Percentiles in milliseconds with the sample count, or `no samples`.
fn latency(s: &Summary) -> String {
    if s.count == 0 {
        return "no samples".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us),
        s.count
    )
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}
