//! The synthetic set: deterministic from its seed, learnable, and not trivially separable.

use cnn_data::{open, synthetic, DataSpec, LastBatch, Loader, LoaderConfig, SyntheticSpec};

fn spec(seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        seed,
        train_per_class: 200,
        test_per_class: 50,
        image_size: 32,
    }
}

#[derive(Clone, Copy)]
enum Feature {
    Raw,
    /// Colour-blind contrast map: |grey - mean| / std, per image.
    Contrast,
    /// Position-invariant histogram of gradient orientations (16 bins, magnitude-weighted).
    Orientation,
}

fn grey(img: &cnn_data::Rgb8) -> Vec<f64> {
    img.pixels
        .chunks(3)
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect()
}

fn features(img: &cnn_data::Rgb8, kind: Feature) -> Vec<f64> {
    let grey = grey(img);
    match kind {
        Feature::Raw => return img.pixels.iter().map(|&v| v as f64).collect(),
        Feature::Orientation => {
            let w = img.width as usize;
            let mut hist = [0.0; 16];
            for y in 1..img.height as usize - 1 {
                for x in 1..w - 1 {
                    let gx = grey[y * w + x + 1] - grey[y * w + x - 1];
                    let gy = grey[(y + 1) * w + x] - grey[(y - 1) * w + x];
                    // orientation modulo pi: polarity (light-on-dark or not) is random
                    let a = gy.atan2(gx).rem_euclid(std::f64::consts::PI);
                    let bin = ((a / std::f64::consts::PI * 16.0) as usize).min(15);
                    hist[bin] += (gx * gx + gy * gy).sqrt();
                }
            }
            let total: f64 = hist.iter().sum::<f64>().max(1e-9);
            return hist.iter().map(|h| h / total * 16.0).collect();
        }
        Feature::Contrast => {}
    }
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    let sd = (grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64).sqrt();
    grey.iter()
        .map(|g| (g - mean).abs() / sd.max(1e-6))
        .collect()
}

fn ncm_accuracy(seed: u64, kind: Feature) -> f64 {
    let s = spec(seed);
    let draw = |id: u64, class: u32| synthetic::generate(seed, id, class, s.image_size);
    let dim = features(&draw(0, 0), kind).len();
    let mut means = vec![vec![0.0; dim]; 10];
    for i in 0..s.train_per_class * 10 {
        let class = (i % 10) as u32;
        for (m, f) in means[class as usize]
            .iter_mut()
            .zip(features(&draw(i as u64, class), kind))
        {
            *m += f / s.train_per_class as f64;
        }
    }
    let mut correct = 0;
    let n_test = s.test_per_class * 10;
    for i in 0..n_test {
        let class = (i % 10) as u32;
        let f = features(&draw((1 << 40) + i as u64, class), kind);
        let dist = |m: &Vec<f64>| m.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        let best = (0..10)
            .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
            .unwrap();
        correct += (best == class as usize) as usize;
    }
    correct as f64 / n_test as f64
}

#[test]
fn nearest_class_mean_is_far_from_perfect() {
    let raw = ncm_accuracy(1, Feature::Raw);
    let contrast = ncm_accuracy(1, Feature::Contrast);
    let orient = ncm_accuracy(1, Feature::Orientation);
    println!(
        "nearest-class-mean accuracy (chance 0.10): raw pixels {raw:.3}, contrast maps \
         {contrast:.3}, orientation histograms {orient:.3}"
    );
    // Raw pixels carry no class signal a linear template can use: chance level.
    assert!(
        raw < 0.2,
        "raw-pixel NCM reached {raw}: colour or position gives the class away"
    );
    // Hand-made features find some shape signal (so there is something to learn: above
    // chance by several standard errors, 0.013 at 500 test images) but far from all of it.
    assert!(contrast > 0.14 && contrast < 0.6, "contrast NCM {contrast}");
    assert!(orient > 0.14 && orient < 0.7, "orientation NCM {orient}");
}

#[test]
fn deterministic_from_the_seed() {
    let a = synthetic::generate(5, 17, 3, 48);
    assert_eq!(a, synthetic::generate(5, 17, 3, 48));
    assert_ne!(a, synthetic::generate(6, 17, 3, 48));
    assert_ne!(a, synthetic::generate(5, 18, 3, 48));
    assert_eq!((a.width, a.height, a.pixels.len()), (48, 48, 48 * 48 * 3));
    // Images are not flat: they use a good part of the 8-bit range.
    let (lo, hi) = (
        a.pixels.iter().min().unwrap(),
        a.pixels.iter().max().unwrap(),
    );
    assert!(hi - lo > 100, "{lo}..{hi}");
}

#[test]
fn opens_and_loads_through_the_loader() {
    let ds = open(&DataSpec::Synthetic(SyntheticSpec {
        seed: 3,
        train_per_class: 4,
        test_per_class: 2,
        image_size: 40,
    }))
    .unwrap();
    assert_eq!(ds.class_names()[9], "dots");
    assert_eq!((ds.train.len(), ds.test.len()), (40, 20));
    assert_eq!(ds.train.class_counts(10), vec![4; 10]);
    let cfg = LoaderConfig {
        last_batch: LastBatch::Keep,
        ..LoaderConfig::train(32, 16)
    };
    let loader = Loader::new(&ds.train, cfg.clone()).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![16, 16, 8]
    );
    assert_eq!(batches[0].images.shape(), &[16, 3, 32, 32]);
    let again: Vec<_> = Loader::new(&ds.train, cfg)
        .unwrap()
        .epoch(0)
        .map(Result::unwrap)
        .collect();
    assert_eq!(batches, again);
    // Same seed, fresh open: same pixels.
    let ds2 = open(&DataSpec::Synthetic(SyntheticSpec {
        seed: 3,
        train_per_class: 4,
        test_per_class: 2,
        image_size: 40,
    }))
    .unwrap();
    let third: Vec<_> = Loader::new(
        &ds2.train,
        LoaderConfig {
            last_batch: LastBatch::Keep,
            ..LoaderConfig::train(32, 16)
        },
    )
    .unwrap()
    .epoch(0)
    .map(Result::unwrap)
    .collect();
    assert_eq!(batches, third);
}
