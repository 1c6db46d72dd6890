//! Every network in float32 against the same network, same weights and input, in float64:
//! logits, loss, the gradient of every parameter, and (train mode) the running statistics
//! after the step, each within 10x PyTorch's own float32 error on that quantity.
//!
//! PyTorch's figures sit in `precision/pytorch_f32.tsv`, measured once at the same weights
//! and input by `precision/measure_pytorch.py` (its header says how). The float64 path is
//! itself checked against PyTorch's float64 in `parity.rs`.
//!
//! A ReLU network's gradient jumps where a pre-activation crosses zero. Where one lies
//! within float32 rounding of zero (PyTorch's float32 met one on 5 of 12 inputs of ResNet34
//! at 224 px), float32 may take the other side of it than float64, and every gradient upstream of it then differs by
//! that element's share (1e-4..2e-3 of conv1's gradient in ResNet34 at 224 px), in this
//! project and in PyTorch alike (see docs/PRECISION.md). Such an input says nothing about
//! either implementation, so each network is compared at the first input seed where every
//! ReLU of the float32 pass decides as the float64 pass does (train mode, whose batch
//! statistics cancel, rounds ~10x coarser and so needs more tries). A float32 path that
//! loses precision beyond the tolerance fails at every input; a wrong formula, the same in
//! both types, is parity.rs's and gradcheck.rs's to catch. (Max-pool's choice between two
//! near-equal inputs is the same kind of jump; rarer at these sizes, it is not screened.)

mod common;

use candle_core::{DType, Device, Tensor};
use cnn_models::{Init, InitRng, Model, ParamKind, Pass};
use common::relative_error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The smallest side at which the AlexNets' last feature maps are still 2x2.
const SIZE: usize = 97;
const BATCH: usize = 2;
const LABELS: [u32; BATCH] = [3, 7];
/// Input seeds tried in order, for each mode, until one has every ReLU decided alike.
const INPUT_SEEDS: std::ops::RangeInclusive<u64> = 1..=16;
/// About float32's unit roundoff (6e-8): no float32 result is closer to float64 than that.
const FLOOR: f64 = 1e-7;

/// What one pass gives: logits, loss, gradients (torchvision's layouts), running
/// statistics after it (train mode), and the ReLUs' outputs (where they decide).
struct Outcome {
    quantities: BTreeMap<String, Tensor>,
    relus: Vec<Tensor>,
}

/// `arch` with seeded weights; BatchNorm's weight, bias and running statistics drawn too, so
/// eval mode exercises them (as the PyTorch parity fixture does).
fn model(arch: &str) -> Model {
    let model = Model::new(arch, 10, 0, &Device::Cpu).unwrap();
    let mut rng = InitRng::new(1);
    let mut uniform = |len: usize, centre: f32, half_width: f32| {
        let u = rng.draw(Init::TorchDefault { fan_in: 1 }, len);
        let values: Vec<f32> = u.iter().map(|v| centre + half_width * v).collect();
        Tensor::from_vec(values, len, &Device::Cpu).unwrap()
    };
    for p in model.params().all() {
        let len = p.var.elem_count();
        let drawn = match p.name.rsplit('.').next().unwrap() {
            "running_mean" => uniform(len, 0.0, 0.1),
            "running_var" => uniform(len, 1.0, 0.5),
            _ if p.name.contains("bn") || p.name.contains("downsample.1") => {
                match p.name.ends_with(".weight") {
                    true => uniform(len, 1.0, 0.5),
                    false => uniform(len, 0.0, 0.1),
                }
            }
            _ => continue,
        };
        p.var.set(&drawn).unwrap();
    }
    model
}

fn input(seed: u64) -> Tensor {
    let len = BATCH * 3 * SIZE * SIZE;
    let values = InitRng::new(seed).draw(Init::KaimingNormalFanOut { fan_out: 2 }, len);
    Tensor::from_vec(values, (BATCH, 3, SIZE, SIZE), &Device::Cpu).unwrap()
}

/// One forward and backward of a copy of `base` in `dtype` (so train mode's running
/// statistics start from `base`'s each time).
fn run(base: &Model, dtype: DType, x: &Tensor, train: bool) -> Outcome {
    let model = base.to_dtype(dtype).unwrap();
    let pass = match train {
        true => Pass::train(5),
        false => Pass::eval(),
    };
    let pass = pass.keeping_outputs();
    let logits = model.forward(&x.to_dtype(dtype).unwrap(), &pass).unwrap();
    let labels = Tensor::new(&LABELS, &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let grads = loss.backward().unwrap();
    let mut quantities = BTreeMap::new();
    quantities.insert("logits".to_string(), logits);
    quantities.insert("loss".to_string(), loss.reshape(1).unwrap());
    for p in model.params().all() {
        let (key, value) = match p.kind {
            ParamKind::Trainable => {
                let grad = grads
                    .get(p.var.as_tensor())
                    .unwrap_or_else(|| panic!("{}: no gradient for {}", base.arch(), p.name));
                (format!("grad.{}", p.name), p.to_torch(grad).unwrap())
            }
            ParamKind::Buffer if train => (format!("after.{}", p.name), p.var.as_tensor().clone()),
            ParamKind::Buffer => continue,
        };
        quantities.insert(key, value);
    }
    let relus = pass
        .take_outputs()
        .into_iter()
        .filter(|o| o.kind == "ReLU")
        .map(|o| o.output)
        .collect();
    Outcome { quantities, relus }
}

/// How many elements are positive in one pass's ReLU outputs and not in the other's.
fn decisions_differing(a: &Outcome, b: &Outcome) -> usize {
    assert_eq!(a.relus.len(), b.relus.len(), "passes kept different layers");
    a.relus
        .iter()
        .zip(&b.relus)
        .map(|(a, b)| {
            let positive = |t: &Tensor| t.gt(0.0).unwrap().to_dtype(DType::F32).unwrap();
            let differ = (positive(a) - positive(b)).unwrap().abs().unwrap();
            differ.sum_all().unwrap().to_scalar::<f32>().unwrap() as usize
        })
        .sum()
}

/// PyTorch's float32 error per (arch, mode, quantity), from the measured table.
fn pytorch_errors() -> BTreeMap<(String, String, String), f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/precision/pytorch_f32.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("arch\t"))
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let key = (f[0].to_string(), f[1].to_string(), f[2].to_string());
            (key, f[3].parse().unwrap())
        })
        .collect()
}

/// Where `CNN_PRECISION_DUMP` points, if set: the tests then write the weights, inputs and
/// this project's errors there for `measure_pytorch.py` and the docs' table, and compare
/// nothing (the table they would compare with is what that makes).
fn dump_dir() -> Option<PathBuf> {
    std::env::var_os("CNN_PRECISION_DUMP").map(PathBuf::from)
}

/// One mode's comparison: the input seed it took, its input, and both passes.
struct Compared {
    mode: &'static str,
    seed: u64,
    input: Tensor,
    ours: Outcome,
    reference: Outcome,
}

/// The float32 and float64 passes in `mode` at the first input seed where every ReLU decides
/// alike (see the module's comment), or a panic listing each seed's disagreements.
fn compare(base: &Model, mode: &'static str) -> Compared {
    let mut tried = Vec::new();
    for seed in INPUT_SEEDS {
        let input = input(seed);
        let train = mode == "train";
        let ours = run(base, DType::F32, &input, train);
        let reference = run(base, DType::F64, &input, train);
        match decisions_differing(&ours, &reference) {
            0 => {
                return Compared {
                    mode,
                    seed,
                    input,
                    ours,
                    reference,
                }
            }
            n => tried.push(format!("seed {seed}: {n}")),
        }
    }
    panic!(
        "{} {mode}: every input seed has ReLUs deciding otherwise in float32 than in float64 ({})",
        base.arch(),
        tried.join(", ")
    );
}

/// Writes the weights, each mode's input and this project's errors for `measure_pytorch.py`.
fn dump(dir: &Path, base: &Model, compared: &[Compared]) {
    let arch = base.arch();
    std::fs::create_dir_all(dir).unwrap();
    base.save_weights(dir.join(format!("{arch}.weights.safetensors")))
        .unwrap();
    let mut tensors = std::collections::HashMap::new();
    let labels = Tensor::new(&LABELS.map(i64::from), &Device::Cpu).unwrap();
    tensors.insert("labels".to_string(), labels);
    let mut rows = String::new();
    for c in compared {
        tensors.insert(format!("input_{}", c.mode), c.input.clone());
        for (name, value) in &c.ours.quantities {
            let err = relative_error(value, &c.reference.quantities[name]);
            rows += &format!("{arch}\t{}\t{name}\t{err:.3e}\t{}\n", c.mode, c.seed);
        }
    }
    let path = dir.join(format!("{arch}.input.safetensors"));
    candle_core::safetensors::save(&tensors, path).unwrap();
    std::fs::write(dir.join(format!("{arch}.ours.tsv")), rows).unwrap();
}

fn check(arch: &str) {
    let base = model(arch);
    let compared = [compare(&base, "eval"), compare(&base, "train")];
    if let Some(dir) = dump_dir() {
        return dump(&dir, &base, &compared);
    }
    let table = pytorch_errors();
    let mut failures = Vec::new();
    for c in &compared {
        let mode = c.mode;
        let rows = table
            .keys()
            .filter(|(a, m, _)| a == arch && m == mode)
            .count();
        assert_eq!(
            rows,
            c.ours.quantities.len(),
            "{arch} {mode}: pytorch_f32.tsv has {rows} rows for {} quantities; re-measure",
            c.ours.quantities.len()
        );
        for (name, value) in &c.ours.quantities {
            let key = (arch.to_string(), mode.to_string(), name.clone());
            let pytorch = *table
                .get(&key)
                .unwrap_or_else(|| panic!("pytorch_f32.tsv lacks {key:?}"));
            let tolerance = (10.0 * pytorch).max(FLOOR);
            let err = relative_error(value, &c.reference.quantities[name]);
            if err >= tolerance {
                failures.push(format!(
                    "{mode} (input seed {}) {name}: {err:.2e} (PyTorch {pytorch:.1e}, tolerance {tolerance:.1e})",
                    c.seed
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{arch}, float32 against float64:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn alexnet_float32_is_as_exact_as_pytorch() {
    check("alexnet");
}

#[test]
fn alexnet_d2l_float32_is_as_exact_as_pytorch() {
    check("alexnet-d2l");
}

#[test]
fn resnet18_float32_is_as_exact_as_pytorch() {
    check("resnet18");
}

#[test]
fn resnet34_float32_is_as_exact_as_pytorch() {
    check("resnet34");
}
