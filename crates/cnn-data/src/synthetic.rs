//! A built-in 10-class image set drawn from a seed (no files), hard enough that fitting it takes training.
//!
//! Each image is `size x size` RGB, generated on demand from `(seed, id)`:
//!
//! 1. **Background**: a random colour with a linear gradient of random direction and strength.
//! 2. **Clutter** (class-independent): 2-5 random line segments and 0-2 small blobs in random
//!    colours; about half are drawn behind the object and half over it.
//! 3. **Object**: the class's shape, centred anywhere in the middle 40% of each axis, radius
//!    20-38% of the image, rotated by up to +-15 degrees, in a random colour kept at least a
//!    fixed distance from the background colour (so shape, never colour, tells the class):
//!    0 disc, 1 ring, 2 square, 3 triangle, 4 plus, 5 X (diagonal cross), 6 horizontal stripes,
//!    7 vertical stripes, 8 checkerboard, 9 grid of dots (textures have a random period and
//!    phase). Edges are anti-aliased (2x2 supersampling).
//! 4. **Noise**: Gaussian, sigma 14 grey levels, per pixel and channel.
//!
//! Because colour, position, scale and clutter are random and independent of the class, a
//! nearest-class-mean classifier on raw pixels sits at chance (8.6% measured), one on contrast
//! maps reaches about 19% and one on orientation histograms about 33% (see
//! `tests/synthetic.rs`), while the shapes stay recognisable to a CNN. A diverging model
//! stays at 10%.

use crate::dataset::{ClassInfo, Dataset, Origin, Sample, Split};
use crate::error::DataError;
use crate::rgb::Rgb8;
use crate::rng::{Purpose, Stream};
use crate::spec::{BadFilePolicy, SyntheticSpec};

/// Class names of the synthetic set, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "disc",
    "ring",
    "square",
    "triangle",
    "plus",
    "x-cross",
    "h-stripes",
    "v-stripes",
    "checker",
    "dots",
];

/// Test samples use ids from here on, so they never repeat a training image.
const TEST_ID_BASE: u64 = 1 << 40;

pub(crate) fn open(spec: &SyntheticSpec) -> Result<Dataset, DataError> {
    if spec.image_size < 8 || spec.train_per_class == 0 {
        return Err(DataError::Config(format!(
            "synthetic set needs image_size >= 8 and train_per_class >= 1, got {spec:?}"
        )));
    }
    let make = |per_class: usize, base: u64| Split {
        samples: (0..per_class * 10)
            .map(|i| Sample {
                origin: Origin::Synthetic {
                    seed: spec.seed,
                    id: base + i as u64,
                    class: (i % 10) as u32,
                    size: spec.image_size,
                },
                label: (i % 10) as u32,
            })
            .collect(),
        bad_files: BadFilePolicy::Fail,
    };
    Ok(Dataset {
        description: format!(
            "synthetic 10-class shapes (seed {}, {}+{} per class, {}px)",
            spec.seed, spec.train_per_class, spec.test_per_class, spec.image_size
        ),
        classes: CLASS_NAMES
            .iter()
            .map(|n| ClassInfo {
                folder: n.to_string(),
                name: n.to_string(),
            })
            .collect(),
        train: make(spec.train_per_class, 0),
        test: make(spec.test_per_class, TEST_ID_BASE),
        skipped: Vec::new(),
        ignored: 0,
    })
}

type Colour = [f64; 3];

fn random_colour(rng: &mut Stream) -> Colour {
    [
        rng.uniform(0.0, 255.0),
        rng.uniform(0.0, 255.0),
        rng.uniform(0.0, 255.0),
    ]
}

fn distance(a: &Colour, b: &Colour) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A shape test in the object's unit frame (`u` right, `v` up, radius 1).
struct Shape {
    class: u32,
    period: f64,
    phase: f64,
}

impl Shape {
    fn inside(&self, u: f64, v: f64) -> bool {
        let r = (u * u + v * v).sqrt();
        let band = |t: f64| ((t + self.phase) / self.period).rem_euclid(2.0) < 1.0;
        match self.class {
            0 => r <= 1.0,
            1 => (0.62..=1.0).contains(&r),
            2 => u.abs().max(v.abs()) <= 0.8,
            3 => {
                let s = 3f64.sqrt();
                v >= -0.5 && s * u + v <= 1.0 && -s * u + v <= 1.0
            }
            4 => plus(u, v),
            5 => {
                let h = std::f64::consts::FRAC_1_SQRT_2;
                plus(h * (u - v), h * (u + v))
            }
            6 => r <= 1.0 && band(v),
            7 => r <= 1.0 && band(u),
            8 => u.abs().max(v.abs()) <= 0.85 && (band(u) ^ band(v)),
            _ => {
                let p = self.period * 2.0;
                let du = (u + self.phase).rem_euclid(p) - p / 2.0;
                let dv = (v + self.phase).rem_euclid(p) - p / 2.0;
                r <= 1.0 && (du * du + dv * dv).sqrt() <= 0.3 * p
            }
        }
    }
}

fn plus(u: f64, v: f64) -> bool {
    (u.abs() <= 0.24 && v.abs() <= 1.0) || (v.abs() <= 0.24 && u.abs() <= 1.0)
}

/// A float canvas with alpha-blended painting.
struct Canvas {
    size: usize,
    px: Vec<Colour>,
}

impl Canvas {
    /// Paints `colour` with coverage from 2x2 supersampling of `inside(x, y)` (pixel units).
    fn paint(
        &mut self,
        colour: Colour,
        bbox: (f64, f64, f64, f64),
        inside: impl Fn(f64, f64) -> bool,
    ) {
        let n = self.size as f64;
        let x0 = bbox.0.floor().clamp(0.0, n) as usize;
        let x1 = bbox.1.ceil().clamp(0.0, n) as usize;
        let y0 = bbox.2.floor().clamp(0.0, n) as usize;
        let y1 = bbox.3.ceil().clamp(0.0, n) as usize;
        for y in y0..y1 {
            for x in x0..x1 {
                let mut cover = 0.0;
                for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    if inside(x as f64 + dx, y as f64 + dy) {
                        cover += 0.25;
                    }
                }
                if cover > 0.0 {
                    let p = &mut self.px[y * self.size + x];
                    for c in 0..3 {
                        p[c] = p[c] * (1.0 - cover) + colour[c] * cover;
                    }
                }
            }
        }
    }
}

fn clutter(canvas: &mut Canvas, rng: &mut Stream) {
    let n = canvas.size as f64;
    let colour = random_colour(rng);
    if rng.unit() < 0.75 {
        // A line segment, 1-2.5 px thick.
        let (ax, ay) = (rng.uniform(0.0, n), rng.uniform(0.0, n));
        let (bx, by) = (rng.uniform(0.0, n), rng.uniform(0.0, n));
        let half = rng.uniform(0.5, 1.25) * n / 64.0;
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        let bbox = (
            ax.min(bx) - 2.0,
            ax.max(bx) + 2.0,
            ay.min(by) - 2.0,
            ay.max(by) + 2.0,
        );
        canvas.paint(colour, bbox, |x, y| {
            let t = (((x - ax) * dx + (y - ay) * dy) / len2).clamp(0.0, 1.0);
            let (px, py) = (ax + t * dx - x, ay + t * dy - y);
            (px * px + py * py).sqrt() <= half
        });
    } else {
        let (cx, cy) = (rng.uniform(0.0, n), rng.uniform(0.0, n));
        let r = rng.uniform(0.04, 0.1) * n;
        canvas.paint(colour, (cx - r, cx + r, cy - r, cy + r), |x, y| {
            (x - cx).powi(2) + (y - cy).powi(2) <= r * r
        });
    }
}

/// Draws sample `id` of class `class` at `size x size`.
pub fn generate(seed: u64, id: u64, class: u32, size: u32) -> Rgb8 {
    let mut rng = Stream::new(seed, Purpose::Synthetic, id, class as u64);
    let n = size as f64;
    let s = size as usize;

    // 1. Background with a gradient.
    let bg = random_colour(&mut rng);
    let angle = rng.uniform(0.0, std::f64::consts::TAU);
    let strength = rng.uniform(0.0, 60.0);
    let (gx, gy) = (angle.cos() * strength / n, angle.sin() * strength / n);
    let mut canvas = Canvas {
        size: s,
        px: (0..s * s)
            .map(|i| {
                let (x, y) = ((i % s) as f64 - n / 2.0, (i / s) as f64 - n / 2.0);
                let d = gx * x + gy * y;
                [bg[0] + d, bg[1] + d, bg[2] + d]
            })
            .collect(),
    };

    // 2. Clutter behind.
    let n_clutter = 2 + rng.below(4) as usize + rng.below(3) as usize / 2;
    let behind = rng.below(n_clutter as u64 + 1) as usize;
    for _ in 0..behind {
        clutter(&mut canvas, &mut rng);
    }

    // 3. The object.
    let mut fg = random_colour(&mut rng);
    for _ in 0..16 {
        if distance(&fg, &bg) >= 110.0 {
            break;
        }
        fg = random_colour(&mut rng);
    }
    let cx = rng.uniform(0.3, 0.7) * n;
    let cy = rng.uniform(0.3, 0.7) * n;
    let radius = rng.uniform(0.2, 0.38) * n;
    let theta = rng.uniform(-15f64, 15.0).to_radians();
    let shape = Shape {
        class,
        period: rng.uniform(0.18, 0.32),
        phase: rng.uniform(0.0, 1.0),
    };
    let (sin, cos) = theta.sin_cos();
    canvas.paint(
        fg,
        (
            cx - radius * 1.5,
            cx + radius * 1.5,
            cy - radius * 1.5,
            cy + radius * 1.5,
        ),
        |x, y| {
            let (dx, dy) = ((x - cx) / radius, (cy - y) / radius);
            shape.inside(cos * dx + sin * dy, -sin * dx + cos * dy)
        },
    );

    // 2b. Clutter in front.
    for _ in behind..n_clutter {
        clutter(&mut canvas, &mut rng);
    }

    // 4. Noise, then quantise.
    let pixels = canvas
        .px
        .iter()
        .flat_map(|p| *p)
        .map(|v| (v + 14.0 * rng.normal()).round().clamp(0.0, 255.0) as u8)
        .collect();
    Rgb8 {
        width: size,
        height: size,
        pixels,
    }
}
