//! A campaign's report: the seed, the fault timeline with what each fault cost, the verdict
//! with every violation, deliveries per second; as a summary, JSON and an SVG timeline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::check::Verdict;
use super::client::{Event, UserLog};
use super::faults::{Fault, FaultKind, Planned};
use super::scenario::ChaosScenario;

#[derive(Debug, Clone, Serialize)]
pub struct FaultLine {
    pub kind: FaultKind,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// (member, acknowledged message) pairs told lost because of this fault.
    pub told_lost: u64,
    /// From the fault's end until everything sent before that end was delivered.
    pub recovery_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub scenario: ChaosScenario,
    pub seed: u64,
    pub planned: Vec<Planned>,
    pub faults: Vec<FaultLine>,
    pub verdict: Verdict,
    pub deliveries_per_sec: Vec<u64>,
    pub node_logs: Vec<PathBuf>,
}

impl ChaosReport {
    pub fn new(
        scenario: &ChaosScenario,
        seed: u64,
        planned: Vec<Planned>,
        faults: Vec<Fault>,
        mut verdict: Verdict,
        users: &[UserLog],
        node_logs: Vec<PathBuf>,
    ) -> Self {
        let per_fault = std::mem::take(&mut verdict.per_fault);
        let faults = faults
            .into_iter()
            .zip(per_fault)
            .map(|(f, (told_lost, recovery_ms))| FaultLine {
                kind: f.kind,
                target: f.target,
                start_ms: f.start_ms,
                end_ms: f.end_ms,
                told_lost,
                recovery_ms,
            })
            .collect();
        let mut deliveries_per_sec = vec![0; scenario.duration_secs.ceil() as usize + 5];
        for e in users.iter().flat_map(|u| &u.events) {
            if let Event::Message { at, .. } = e {
                if let Some(slot) = deliveries_per_sec.get_mut((*at / 1000) as usize) {
                    *slot += 1;
                }
            }
        }
        Self {
            scenario: scenario.clone(),
            seed,
            planned,
            faults,
            verdict,
            deliveries_per_sec,
            node_logs,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }

    pub fn summary(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} seed {}: {} faults in {} s, {} nodes, {} users",
            self.scenario.name,
            self.seed,
            self.faults.len(),
            self.scenario.duration_secs,
            self.scenario.nodes,
            self.scenario.rooms * self.scenario.members
        );
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  {:>6.1}–{:>6.1} s  {:<22} {:<7} told lost {:>4}  recovered in {} ms",
                f.start_ms as f64 / 1000.0,
                f.end_ms as f64 / 1000.0,
                format!("{:?}", f.kind),
                f.target,
                f.told_lost,
                f.recovery_ms
            );
        }
        let _ = writeln!(
            out,
            "acked {}; (member, message) pairs: {} expected, {} delivered, {} told lost, {} silently lost",
            v.acked, v.expected, v.delivered, v.told_lost, v.silent_lost
        );
        let _ = writeln!(
            out,
            "silent gaps {}, duplicates {}, reorders {}, divergent {}, false acks {}, false presence {}, \
             presence wrong at end {}, false readiness {:.1} s, not rejoined {}, unacked at end {}",
            v.silent_gaps,
            v.duplicates,
            v.reorders,
            v.divergent,
            v.false_acks,
            v.false_presence,
            v.presence_wrong_at_end,
            v.false_ready_secs,
            v.not_rejoined,
            v.unacked_at_end
        );
        let _ = writeln!(
            out,
            "told lost by fault kind: {:?}; worst recovery {} ms",
            v.told_lost_by_kind, v.worst_recovery_ms
        );
        for line in &v.violations {
            let at = line
                .at_ms
                .map_or(String::new(), |t| format!(" at {:.1} s", t as f64 / 1000.0));
            let _ = writeln!(out, "VIOLATION{at}: {}", line.what);
        }
        out
    }

    /// Deliveries per second over the run, each fault a shaded span named by its kind.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        self.draw(path)
            .map_err(|e| format!("drawing {}: {e}", path.display()))
    }

    fn draw(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let secs = self.deliveries_per_sec.len() as f64;
        let top = self
            .deliveries_per_sec
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.3;
        let v = &self.verdict;
        let title = format!(
            "{} seed {}: {} violations, {} told lost, worst recovery {} ms",
            self.scenario.name,
            self.seed,
            v.violations.len(),
            v.told_lost,
            v.worst_recovery_ms
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..secs, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc("deliveries/s")
            .draw()?;
        for (i, f) in self.faults.iter().enumerate() {
            let (a, b) = (
                f.start_ms as f64 / 1000.0,
                (f.end_ms as f64 / 1000.0).max(f.start_ms as f64 / 1000.0 + 0.2),
            );
            let colour = if f.told_lost > 0 {
                RED.mix(0.25)
            } else {
                BLUE.mix(0.15)
            };
            chart.draw_series([Rectangle::new([(a, 0.0), (b, top)], colour.filled())])?;
            let y = top * (0.97 - 0.05 * (i % 4) as f64);
            chart.draw_series([Text::new(
                format!("{:?} {}", f.kind, f.target),
                (a, y),
                ("sans-serif", 11),
            )])?;
        }
        // Each violation with a moment: a red mark standing on the time axis.
        let marks = v.violations.iter().filter_map(|x| x.at_ms);
        chart.draw_series(marks.map(|t| {
            let x = t as f64 / 1000.0;
            PathElement::new(vec![(x, 0.0), (x, top * 0.12)], RED.stroke_width(2))
        }))?;
        chart.draw_series(LineSeries::new(
            self.deliveries_per_sec
                .iter()
                .enumerate()
                .map(|(s, d)| (s as f64 + 0.5, *d as f64)),
            BLACK.stroke_width(2),
        ))?;
        root.present()?;
        Ok(())
    }
}

/// Several campaigns (seeds) at once: the sums, told-lost per fault kind, and the worst
/// recovery over all of them.
pub fn aggregate(reports: &[ChaosReport]) -> String {
    let mut by_kind: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for f in reports.iter().flat_map(|r| &r.faults) {
        let e = by_kind.entry(format!("{:?}", f.kind)).or_default();
        e.0 += 1;
        e.1 += f.told_lost;
        e.2 = e.2.max(f.recovery_ms);
    }
    let sum = |get: fn(&Verdict) -> u64| reports.iter().map(|r| get(&r.verdict)).sum::<u64>();
    let mut out = format!(
        "{} campaigns, {} faults: acked {}, pairs delivered {}, told lost {}, silently lost {}, \
         silent gaps {}, duplicates {}, reorders {}, divergent {}, false acks {}, false presence {}, \
         presence wrong at end {}, false readiness {:.1} s, not rejoined {}\n",
        reports.len(),
        reports.iter().map(|r| r.faults.len()).sum::<usize>(),
        sum(|v| v.acked),
        sum(|v| v.delivered),
        sum(|v| v.told_lost),
        sum(|v| v.silent_lost),
        sum(|v| v.silent_gaps),
        sum(|v| v.duplicates),
        sum(|v| v.reorders),
        sum(|v| v.divergent),
        sum(|v| v.false_acks),
        sum(|v| v.false_presence),
        sum(|v| v.presence_wrong_at_end),
        reports
            .iter()
            .map(|r| r.verdict.false_ready_secs)
            .sum::<f64>(),
        sum(|v| v.not_rejoined),
    );
    out.push_str(
        "| fault kind | injected | told-lost pairs | worst recovery (ms) |\n|---|---|---|---|\n",
    );
    for (kind, (n, told, worst)) in by_kind {
        let _ = writeln!(out, "| {kind} | {n} | {told} | {worst} |");
    }
    out
}
