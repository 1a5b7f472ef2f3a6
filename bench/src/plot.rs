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
            .build_cartesian_2d((0.8..max_clients * 1.25).log_scale(), (lo.max(0.01)..hi).log_scale())
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

const ETCD_COLORS: [RGBColor; 3] = [RGBColor(214, 39, 40), RGBColor(255, 127, 14), RGBColor(140, 86, 75)];
const KEELSON_COLORS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(23, 190, 207)];

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
    }
}
