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

/// A chart's value axis: its label, linear or logarithmic, and an optional horizontal
/// reference line with its legend text (for a loss: ln(classes), a uniform guess's).
pub struct ValueAxis {
    pub label: String,
    pub log: bool,
    pub reference: Option<(f64, String)>,
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

/// Draws `series` against epochs (integer ticks) into a 720x420 PNG at `path`. A log axis
/// plots log10 of the values, labelled with the values themselves (values <= 0 are left
/// out).
pub fn line_chart(path: &Path, title: &str, axis: &ValueAxis, series: &[Series]) -> Result<()> {
    let to_axis = |y: f64| match axis.log {
        true => y.log10(),
        false => y,
    };
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().map(|&(x, y)| (x, to_axis(y))).collect(),
        })
        .collect();
    let reference = axis
        .reference
        .as_ref()
        .map(|(y, label)| (to_axis(*y), label));
    let points = series.iter().flat_map(|s| s.points.iter());
    let mut finite: Vec<(f64, f64)> = points.filter(|(_, y)| y.is_finite()).copied().collect();
    if let Some((y, _)) = reference.filter(|(y, _)| y.is_finite()) {
        finite.push((1.0, y));
    }
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
                .y_label_area_size(72);
        }
        let mut chart =
            builder.build_cartesian_2d(0.5..x_max + 0.5, (y_min - pad)..(y_max + pad))?;
        let mut mesh = chart.configure_mesh();
        let whole = |x: &f64| match (x - x.round()).abs() < 1e-9 {
            true => format!("{}", x.round()),
            false => String::new(),
        };
        let value = |y: &f64| match axis.log {
            true => three_digits(10f64.powf(*y)),
            false => format!("{y:.1}"),
        };
        if text {
            mesh.x_desc("epoch")
                .y_desc(axis.label.as_str())
                .x_labels((x_max as usize).clamp(2, 21))
                .x_label_formatter(&whole)
                .y_label_formatter(&value);
        } else {
            mesh.disable_x_mesh()
                .disable_y_mesh()
                .x_labels(0)
                .y_labels(0);
        }
        mesh.draw()?;
        if let Some((y, label)) = reference {
            let grey = RGBColor(120, 120, 120);
            let line = LineSeries::new([(0.5, y), (x_max + 0.5, y)], grey.stroke_width(1));
            let drawn = chart.draw_series(line)?;
            if text {
                let label = label.clone();
                drawn.label(label).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], grey.stroke_width(1))
                });
            }
        }
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
            let mut labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
            labels.extend(reference.map(|(_, l)| l.as_str()));
            let (x_range, y_range) = ((0.5, x_max + 0.5), (y_min - pad, y_max + pad));
            let plotted: Vec<&[(f64, f64)]> = series.iter().map(|s| &s.points[..]).collect();
            chart
                .configure_series_labels()
                .position(legend_corner(&plotted, &labels, x_range, y_range))
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

/// The corner of the plot where the legend box covers the fewest stretches of the lines
/// (each line sampled at 20 points an epoch), so it hides as little as it can; the upper
/// right on a tie. The box's size is estimated from the labels: ~7 px a character and 20 px
/// a line, of a plot area ~620x310 px.
fn legend_corner(
    lines: &[&[(f64, f64)]],
    labels: &[&str],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let width = ((longest * 7 + 50) as f64 / 620.0).min(0.9);
    let height = ((labels.len() * 20 + 16) as f64 / 310.0).min(0.9);
    let mut samples = Vec::new();
    for line in lines {
        let finite: Vec<_> = line.iter().filter(|(_, y)| y.is_finite()).collect();
        samples.extend(finite.first().map(|p| **p));
        for w in finite.windows(2) {
            let ((ax, ay), (bx, by)) = (*w[0], *w[1]);
            for k in 1..=20 {
                let t = k as f64 / 20.0;
                samples.push((ax + t * (bx - ax), ay + t * (by - ay)));
            }
        }
    }
    // Each sample as a fraction of the plot, from its lower left corner.
    let fractions: Vec<(f64, f64)> = samples
        .iter()
        .map(|&(x, y)| ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)))
        .collect();
    let covered = |left: bool, upper: bool| {
        fractions
            .iter()
            .filter(|&&(fx, fy)| {
                let in_x = if left { fx <= width } else { fx >= 1.0 - width };
                let in_y = if upper {
                    fy >= 1.0 - height
                } else {
                    fy <= height
                };
                in_x && in_y
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, false, true),
        (SeriesLabelPosition::LowerRight, false, false),
        (SeriesLabelPosition::UpperLeft, true, true),
        (SeriesLabelPosition::LowerLeft, true, false),
    ]
    .into_iter()
    .min_by_key(|&(_, left, upper)| covered(left, upper))
    .map(|(corner, _, _)| corner)
    .expect("four corners")
}

/// `v` to about three significant digits, for a log axis's labels.
fn three_digits(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corner(lines: &[&[(f64, f64)]]) -> &'static str {
        match legend_corner(lines, &["a label"], (0.5, 10.5), (0.0, 100.0)) {
            SeriesLabelPosition::UpperRight => "upper right",
            SeriesLabelPosition::LowerRight => "lower right",
            SeriesLabelPosition::UpperLeft => "upper left",
            SeriesLabelPosition::LowerLeft => "lower left",
            _ => "elsewhere",
        }
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let rising: Vec<(f64, f64)> = (1..=10).map(|e| (e as f64, e as f64 * 10.0)).collect();
        let falling: Vec<(f64, f64)> = (1..=10)
            .map(|e| (e as f64, 100.0 - e as f64 * 10.0))
            .collect();
        let high: Vec<(f64, f64)> = (1..=10).map(|e| (e as f64, 95.0)).collect();
        // A rising line leaves the upper left and lower right free: upper right is taken.
        assert_eq!(corner(&[&rising]), "lower right");
        assert_eq!(corner(&[&falling]), "upper right");
        // Rising and a flat line along the top: only the lower right is free.
        assert_eq!(corner(&[&rising, &high]), "lower right");
        assert_eq!(corner(&[&falling, &high]), "lower left");
        assert_eq!(corner(&[]), "upper right");
    }
}
