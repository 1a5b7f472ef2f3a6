//! The client-count sweep drawn as an SVG: throughput (left) and p99
//! latency (right) against concurrent clients, log-log, one line per system
//! and workload.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::sweep::SweepPoint;

/// Draws `points` into an SVG at `path`.
pub fn draw(points: &[SweepPoint], title: &str, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let max_clients = points.iter().map(|p| p.clients).max().unwrap_or(1).max(2) as f64;
    let mut series: Vec<(String, Vec<&SweepPoint>)> = Vec::new();
    for p in points {
        let name = format!("{} {}", p.system.name(), p.workload.label());
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(p),
            None => series.push((name, vec![p])),
        }
    }
    type Figure = fn(&SweepPoint) -> f64;
    let panels: [(_, &str, Figure); 2] = [
        (&left, "throughput (ops/s)", |p| p.figures.ops_per_s),
        (&right, "p99 latency (ms)", |p| p.figures.p99_ms),
    ];
    for (area, label, value) in panels {
        let values: Vec<f64> = points.iter().map(value).filter(|v| *v > 0.0).collect();
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo * 0.7 } else { 0.1 };
        let hi = values.iter().cloned().fold(0.0, f64::max).max(lo * 2.0) * 1.4;
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .caption(label, ("sans-serif", 18))
            .build_cartesian_2d(
                (0.8..max_clients * 1.25).log_scale().with_key_points(client_points(max_clients)),
                (lo.max(0.01)..hi).log_scale().with_key_points(nice_points(lo.max(0.01), hi)),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .y_desc(label)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| if *v >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") })
            .draw()
            .map_err(plot_err)?;
        let (mut etcd_n, mut keelson_n) = (0, 0);
        for (name, pts) in &series {
            // etcd in warm colours, Keelson in cool ones.
            let color = if name.starts_with("etcd") {
                etcd_n += 1;
                ETCD_COLORS[(etcd_n - 1) % ETCD_COLORS.len()]
            } else {
                keelson_n += 1;
                KEELSON_COLORS[(keelson_n - 1) % KEELSON_COLORS.len()]
            };
            let style = ShapeStyle::from(&color).stroke_width(2);
            let data: Vec<(f64, f64)> =
                pts.iter().map(|p| (p.clients as f64, value(p))).filter(|(_, v)| *v > 0.0).collect();
            chart
                .draw_series(LineSeries::new(data.clone(), style))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(data.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// 1, 2, 5 × powers of ten between `lo` and `hi`: labels for a log axis.
fn nice_points(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// Powers of two up to `max`: the client counts a sweep uses.
fn client_points(max: f64) -> Vec<f64> {
    std::iter::successors(Some(1.0), |v| Some(v * 2.0)).take_while(|v| *v <= max * 1.25).collect()
}

const ETCD_COLORS: [RGBColor; 3] = [RGBColor(214, 39, 40), RGBColor(255, 127, 14), RGBColor(140, 86, 75)];
const KEELSON_COLORS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(23, 190, 207)];

/// Redraws the plot of a report saved with `--json` (its `sweep` and
/// versions), so a figure can be restyled without measuring again.
pub fn redraw(report_json: &Path, out: &Path) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Saved {
        sweep: Vec<SweepPoint>,
        etcd_version: String,
        keelson_version: String,
        members: usize,
        settings: serde_json::Value,
        machine: serde_json::Value,
    }
    let text =
        std::fs::read_to_string(report_json).with_context(|| format!("read {}", report_json.display()))?;
    let saved: Saved = serde_json::from_str(&text).context("parse the saved report")?;
    anyhow::ensure!(
        !saved.sweep.is_empty(),
        "{} has no sweep: it was not run with --plot",
        report_json.display()
    );
    let title = format!(
        "etcd {} vs keelson {}: {} member(s), {}-byte values, {} cpus",
        saved.etcd_version,
        saved.keelson_version,
        saved.members,
        saved.settings["load"]["val_size"],
        saved.machine["cpus"]
    );
    draw(&saved.sweep, &title, out)
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("draw plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::System;
    use crate::compare::Figures;
    use crate::workload::Workload;

    #[test]
    fn log_axis_labels() {
        assert_eq!(nice_points(1500.0, 30_000.0), vec![2000.0, 5000.0, 10_000.0, 20_000.0]);
        assert_eq!(client_points(256.0).len(), 9);
    }

    #[test]
    fn draws_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let mut points = Vec::new();
        for system in [System::Etcd, System::Keelson] {
            for clients in [1, 8, 64] {
                let figures = Figures {
                    ops_per_s: 100.0 * clients as f64,
                    p99_ms: 1.0 + clients as f64 / 10.0,
                    ..Figures::default()
                };
                points.push(SweepPoint {
                    system,
                    workload: Workload::Put,
                    clients,
                    conns: clients.min(8),
                    figures,
                });
            }
        }
        draw(&points, "test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("keelson put") && svg.contains("etcd put"), "{svg}");

        // The same from a saved report.
        let saved = dir.path().join("report.json");
        let report = serde_json::json!({
            "sweep": points, "etcd_version": "3.4.23", "keelson_version": "0.1.0", "members": 1,
            "settings": {"load": {"val_size": 256}}, "machine": {"cpus": 2},
        });
        std::fs::write(&saved, report.to_string()).unwrap();
        let again = dir.path().join("again.svg");
        redraw(&saved, &again).unwrap();
        assert!(std::fs::read_to_string(&again).unwrap().contains("etcd 3.4.23 vs keelson 0.1.0"));
    }
}
