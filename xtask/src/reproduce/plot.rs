//! Loss and accuracy curves as PNG images (plotters, bitmap backend).

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One line of a chart: a label and its (epoch, value) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Fonts plotters can draw with: registered once from the system's DejaVu Sans. Without it,
/// charts are drawn without text (the report's tables still carry every number).
fn fonts_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ];
        let Some(bytes) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
            return false;
        };
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Draws `series` against epochs into a `width`x`height` PNG at `path`.
pub fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<(f64, f64)> = points.filter(|(_, y)| y.is_finite()).copied().collect();
    let x_max = finite.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = finite.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    if finite.is_empty() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let text = fonts_available();
        let mut builder = ChartBuilder::on(&root);
        builder.margin(12);
        if text {
            builder
                .caption(title, ("sans-serif", 20))
                .x_label_area_size(36)
                .y_label_area_size(56);
        }
        let mut chart =
            builder.build_cartesian_2d(0.5..x_max + 0.5, (y_min - pad)..(y_max + pad))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("epoch").y_desc(y_label);
        } else {
            mesh.disable_x_mesh()
                .disable_y_mesh()
                .x_labels(0)
                .y_labels(0);
        }
        mesh.draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line = s.points.iter().filter(|(_, y)| y.is_finite()).copied();
            // Markers too, so that a one-epoch run still shows its point.
            chart.draw_series(line.clone().map(|p| Circle::new(p, 3, colour.filled())))?;
            let drawn = chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
            if text {
                drawn.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}
