//! The `--plot` SVG: latency percentiles and throughput per second. Uses plotters' SVG backend
//! without font features: text is emitted as SVG `<text>` and sized by estimate, so no system
//! fonts or fontconfig are needed.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Point, Report};

/// One plotted line: legend, the figure it shows, colour.
type Line = (&'static str, fn(&Point) -> u64, RGBColor);

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// One panel: its title, y-axis label and top, and the lines drawn from the series (each
/// point mapped to `(second, value)`, or skipped).
struct Panel<'a> {
    title: String,
    y_desc: &'a str,
    y_max: f64,
    lines: &'a [Line],
    value: fn(&Point, u64) -> Option<f64>,
}

/// Draws `report.series` to `path` as SVG.
pub fn draw(report: &Report, path: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(380);
    let s = &report.series;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = Panel {
        title: format!(
            "{}: publish → deliver latency per second (ms)",
            report.scenario
        ),
        y_desc: "ms",
        y_max: s.iter().map(|p| ms(p.p99_us)).fold(1.0, f64::max) * 1.1,
        lines: &[
            ("p50", |p| p.p50_us, BLUE),
            ("p90", |p| p.p90_us, GREEN),
            ("p99", |p| p.p99_us, RED),
        ],
        // Seconds without deliveries have no latency to show.
        value: |p, v| (p.deliveries > 0).then(|| v as f64 / 1000.0),
    };
    let throughput = Panel {
        title: "throughput per second".into(),
        y_desc: "per second",
        y_max: s
            .iter()
            .map(|p| p.deliveries.max(p.acks))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.1,
        lines: &[
            ("deliveries/s", |p| p.deliveries, BLUE),
            ("acks/s", |p| p.acks, MAGENTA),
        ],
        value: |_, v| Some(v as f64),
    };
    panel(&top, s, &latency).map_err(|e| err(&e))?;
    panel(&bottom, s, &throughput).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Point],
    panel: &Panel<'_>,
) -> Result<(), Box<dyn std::error::Error>> {
    let last = series.last().map_or(1, |p| p.second).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..last, 0f64..panel.y_max)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc(panel.y_desc)
        .draw()?;
    for &(name, get, color) in panel.lines {
        let value = panel.value;
        chart
            .draw_series(LineSeries::new(
                series
                    .iter()
                    .filter_map(|p| value(p, get(p)).map(|v| (p.second, v))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
