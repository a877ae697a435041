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
    let last = s.last().map_or(1, |p| p.second).max(1);
    let ms = |us: u64| us as f64 / 1000.0;
    let lat_max = s.iter().map(|p| ms(p.p99_us)).fold(1.0, f64::max) * 1.1;
    let title = format!(
        "{}: publish → deliver latency per second (ms)",
        report.scenario
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..last, 0f64..lat_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    let lines: [Line; 3] = [
        ("p50", |p| p.p50_us, BLUE),
        ("p90", |p| p.p90_us, GREEN),
        ("p99", |p| p.p99_us, RED),
    ];
    for (name, get, color) in lines {
        chart
            .draw_series(LineSeries::new(
                s.iter()
                    .filter(|p| p.deliveries > 0)
                    .map(|p| (p.second, ms(get(p)))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    let thr_max = s
        .iter()
        .map(|p| p.deliveries.max(p.acks))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("throughput per second", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..last, 0f64..thr_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("per second")
        .draw()
        .map_err(|e| err(&e))?;
    let lines: [Line; 2] = [
        ("deliveries/s", |p| p.deliveries, BLUE),
        ("acks/s", |p| p.acks, MAGENTA),
    ];
    for (name, get, color) in lines {
        chart
            .draw_series(LineSeries::new(
                s.iter().map(|p| (p.second, get(p) as f64)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
