//! The four networks: sizes and names as torchvision's, seeded initialisation with
//! torchvision's distributions, a sane starting loss, collected weight gradients equal to
//! candle's own, one step that learns, weights I/O and its errors, input-size limits and
//! the layer summary.

use candle_core::{DType, Device, Tensor};
use cnn_models::{Model, ModelError, ParamKind, Pass, ARCHITECTURES};
use std::collections::HashMap;

const ARCHS: [(&str, usize); 4] = [
    ("alexnet", 57_044_810),
    ("alexnet-d2l", 46_787_978),
    ("resnet18", 11_181_642),
    ("resnet34", 21_289_802),
];

fn model(arch: &str, seed: u64) -> Model {
    Model::new(arch, 10, seed, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// A seeded batch of standard-normal images and labels 0..n.
fn batch(n: usize, size: usize) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = cnn_models::InitRng::new(99).draw(
        cnn_models::Init::KaimingNormalFanOut { fan_out: 2 },
        n * 3 * size * size,
    );
    let x = Tensor::from_vec(x, (n, 3, size, size), &dev).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &dev).unwrap();
    (x, y)
}

fn loss(m: &Model, x: &Tensor, y: &Tensor, pass: &Pass) -> Tensor {
    candle_nn::loss::cross_entropy(&m.forward(x, pass).unwrap(), y).unwrap()
}

#[test]
fn parameter_counts_and_names_match_torchvision() {
    for (arch, count) in ARCHS {
        let m = model(arch, 0);
        assert_eq!(m.params().trainable_count(), count, "{arch}");
    }
    let names = |arch| {
        model(arch, 0)
            .params()
            .all()
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    let alexnet = names("alexnet");
    assert_eq!(alexnet.first().unwrap(), "features.0.weight");
    assert_eq!(alexnet.last().unwrap(), "classifier.6.bias");
    let d2l = names("alexnet-d2l");
    assert_eq!(
        (d2l[0].as_str(), d2l.last().unwrap().as_str()),
        ("0.weight", "20.bias")
    );
    let r18 = names("resnet18");
    for n in [
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.downsample.0.weight",
        "layer4.1.bn2.bias",
        "fc.bias",
    ] {
        assert!(r18.contains(&n.to_string()), "resnet18 lacks {n}");
    }
    // Every name of the PyTorch fixture's state_dict, and nothing else, is a tensor here.
    let r18 = model("resnet18", 0);
    assert_eq!(
        r18.params()
            .all()
            .iter()
            .filter(|p| p.kind == ParamKind::Buffer)
            .count(),
        2 * 20
    );
    let r34 = model("resnet34", 0);
    let kernel = r34.params().get("layer3.5.conv2.weight").unwrap();
    assert_eq!(kernel.torch_dims(), [256, 256, 3, 3]);
    assert_eq!(
        kernel.var.dims(),
        [256, 3, 3, 256],
        "held tap by tap (OHWI)"
    );
}

#[test]
fn any_number_of_classes() {
    for (arch, _) in ARCHS {
        let m = Model::new(arch, 3, 0, &Device::Cpu).unwrap();
        let (x, _) = batch(2, 96);
        assert_eq!(
            m.forward(&x, &Pass::eval()).unwrap().dims(),
            &[2, 3],
            "{arch}"
        );
    }
    assert!(matches!(
        Model::new("resnet18", 0, 0, &Device::Cpu),
        Err(ModelError::NoClasses { .. })
    ));
}

#[test]
fn initialisation_is_seeded_and_follows_torchvision_distributions() {
    let a = model("resnet18", 7);
    let b = model("resnet18", 7);
    let c = model("resnet18", 8);
    let w = |m: &Model, n: &str| values(m.params().get(n).unwrap().var.as_tensor());
    assert_eq!(
        w(&a, "layer1.0.conv1.weight"),
        w(&b, "layer1.0.conv1.weight"),
        "same seed, same weights"
    );
    assert_ne!(
        w(&a, "layer1.0.conv1.weight"),
        w(&c, "layer1.0.conv1.weight")
    );

    let std = |v: &[f32]| {
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    // ResNet convs: kaiming normal, fan_out = 256 * 3 * 3.
    let conv = w(&a, "layer3.1.conv2.weight");
    let expected = (2.0 / (256.0 * 9.0f64)).sqrt();
    assert!(
        (std(&conv) / expected - 1.0).abs() < 0.02,
        "conv std {} vs {expected}",
        std(&conv)
    );
    assert!(w(&a, "layer2.0.bn1.weight").iter().all(|&v| v == 1.0));
    assert!(w(&a, "layer2.0.bn1.bias").iter().all(|&v| v == 0.0));
    // fc and AlexNet: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    for (m, name, fan_in) in [
        (&a, "fc.weight", 512.0),
        (&model("alexnet", 0), "features.3.weight", 64.0 * 25.0),
        (&model("alexnet", 0), "classifier.1.bias", 9216.0),
    ] {
        let v = w(m, name);
        let bound = 1.0 / f64::sqrt(fan_in);
        assert!(
            v.iter().all(|&x| (x as f64).abs() <= bound),
            "{name} outside the bound"
        );
        assert!(
            (std(&v) / (bound / 3f64.sqrt()) - 1.0).abs() < 0.1,
            "{name}: std {} vs uniform {}",
            std(&v),
            bound / 3f64.sqrt()
        );
    }
}

#[test]
fn a_fresh_model_starts_near_ln_10() {
    let (x, y) = batch(8, 96);
    for (arch, _) in ARCHS {
        let l = loss(&model(arch, 0), &x, &y, &Pass::train(1))
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (l - 10f32.ln()).abs() < 0.5,
            "{arch}: initial loss {l} is far from ln 10 = 2.303"
        );
    }
}

#[test]
fn one_training_step_lowers_the_loss_on_a_fixed_batch() {
    let (x, y) = batch(8, 72);
    for (arch, _) in ARCHS {
        let m = model(arch, 0);
        // The same dropout masks before and after the step, so only the weights differ.
        let before = loss(&m, &x, &y, &Pass::train(5));
        let grads = before.backward().unwrap();
        for p in m.params().trainable() {
            let g = grads
                .get(p.var.as_tensor())
                .unwrap_or_else(|| panic!("{arch}: no gradient for {}", p.name));
            p.var
                .set(&(p.var.as_tensor() - (g * 0.01).unwrap()).unwrap())
                .unwrap();
        }
        let after = loss(&m, &x, &y, &Pass::train(5))
            .to_scalar::<f32>()
            .unwrap();
        let before = before.to_scalar::<f32>().unwrap();
        assert!(
            after < before - 1e-4,
            "{arch}: loss {before} -> {after} after one SGD step"
        );
    }
}

#[test]
fn dropout_is_seeded_and_off_in_eval_mode() {
    let m = model("alexnet", 0);
    let (x, _) = batch(2, 64);
    let run = |p: &Pass| values(&m.forward(&x, p).unwrap());
    assert_eq!(run(&Pass::train(3)), run(&Pass::train(3)));
    assert_ne!(run(&Pass::train(3)), run(&Pass::train(4)));
    assert_eq!(run(&Pass::eval()), run(&Pass::eval()));
    assert_ne!(run(&Pass::eval()), run(&Pass::train(3)));
}

#[test]
fn input_size_limits_are_known_and_enforced() {
    for spec in ARCHITECTURES {
        let m = Model::new(spec.name, 10, 0, &Device::Cpu).unwrap();
        let min = spec.min_image_size;
        let ok = Tensor::zeros((2, 3, min, min), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            m.forward(&ok, &Pass::eval()).unwrap().dims(),
            &[2, 10],
            "{} at its minimum {min}",
            spec.name
        );
        if min > 1 {
            let small = Tensor::zeros((2, 3, min - 1, min), DType::F32, &Device::Cpu).unwrap();
            let err = m.forward(&small, &Pass::eval()).unwrap_err();
            assert!(
                matches!(err, ModelError::ImageTooSmall { .. }),
                "{}: {err}",
                spec.name
            );
        }
    }
    let m = model("resnet18", 0);
    let grey = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(m
        .forward(&grey, &Pass::eval())
        .unwrap_err()
        .to_string()
        .contains("(batch, 3, height, width)"));
    let err = Model::new("vgg16", 10, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vgg16") && err.contains("resnet34"), "{err}");
    assert!(Model::new("AlexNet_D2L", 10, 0, &Device::Cpu).is_ok());
}

#[test]
fn summary_lists_layers_shapes_and_totals() {
    let s = model("resnet18", 0).summary(224, 64).unwrap();
    let row = |name: &str| {
        s.layers
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    assert_eq!(row("conv1").output_shape, vec![64, 112, 112]);
    assert_eq!(row("conv1").params, 64 * 3 * 7 * 7);
    assert_eq!(row("maxpool").output_shape, vec![64, 56, 56]);
    assert_eq!(row("layer4.1").output_shape, vec![512, 7, 7]);
    assert_eq!(row("fc").output_shape, vec![10]);
    assert_eq!(s.layers.iter().filter(|l| l.kind == "Conv2d").count(), 20);
    // Each convolution's geometry, as torchvision's resnet18 builds it.
    assert_eq!(s.convs.len(), 20);
    let conv = |name: &str| s.convs.iter().find(|c| c.name == name).unwrap();
    let geometry =
        |c: &cnn_models::ConvLayer| (c.input, c.out_channels, c.kernel, c.stride, c.padding);
    assert_eq!(geometry(conv("conv1")), ([3, 224, 224], 64, [7, 7], 2, 3));
    assert_eq!(
        geometry(conv("layer1.1.conv2")),
        ([64, 56, 56], 64, [3, 3], 1, 1)
    );
    assert_eq!(
        geometry(conv("layer2.0.conv1")),
        ([64, 56, 56], 128, [3, 3], 2, 1)
    );
    assert_eq!(
        geometry(conv("layer2.0.downsample.0")),
        ([64, 56, 56], 128, [1, 1], 2, 0)
    );
    assert_eq!(
        geometry(conv("layer4.1.conv2")),
        ([512, 7, 7], 512, [3, 3], 1, 1)
    );
    assert_eq!(s.trainable_params, 11_181_642);
    assert_eq!(s.param_bytes, 4 * 11_181_642);
    let outputs: usize = s
        .layers
        .iter()
        .map(|l| l.output_shape.iter().product::<usize>())
        .sum();
    assert_eq!(s.activation_bytes, 2 * 4 * 64 * outputs);
    let text = s.to_string();
    assert!(text.contains("Total params: 11,181,642"), "{text}");
    assert!(text.contains("layer2.0.downsample.0"));
    // d2l's classifier input is the 6400 of the course's code at 224.
    let d2l = model("alexnet-d2l", 0).summary(224, 1).unwrap();
    assert_eq!(
        d2l.layers
            .iter()
            .find(|l| l.name == "13")
            .unwrap()
            .output_shape,
        vec![6400]
    );
}

#[test]
fn weights_round_trip_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = model("resnet18", 1);
    // Move the running statistics off their defaults so the round trip carries them.
    a.forward(&batch(4, 32).0, &Pass::train(0)).unwrap();
    a.save_weights(&path).unwrap();
    assert!(
        !dir.path().join("w.safetensors.tmp").exists(),
        "temporary file left behind"
    );
    let b = model("resnet18", 2);
    b.load_weights(&path).unwrap();
    for (p, q) in a.params().all().iter().zip(b.params().all()) {
        assert_eq!(
            values(p.var.as_tensor()),
            values(q.var.as_tensor()),
            "{}",
            p.name
        );
    }
    let (x, _) = batch(2, 64);
    assert_eq!(
        values(&a.forward(&x, &Pass::eval()).unwrap()),
        values(&b.forward(&x, &Pass::eval()).unwrap())
    );
}

fn write(path: &std::path::Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn state(m: &Model) -> HashMap<String, Tensor> {
    m.params()
        .tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect()
}

#[test]
fn bad_weight_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let m = model("resnet18", 0);
    let before = values(m.params().get("conv1.weight").unwrap().var.as_tensor());
    let path = dir.path().join("bad.safetensors");
    let err = |t: &HashMap<String, Tensor>| {
        write(&path, t);
        m.load_weights(&path).unwrap_err().to_string()
    };

    let mut t = state(&m);
    t.remove("layer1.0.bn1.running_mean");
    t.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "conv1.weight".into(),
        Tensor::zeros((64, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = err(&t);
    assert!(
        e.contains("bad.safetensors") && e.contains("missing tensors: layer1.0.bn1.running_mean"),
        "{e}"
    );
    assert!(e.contains("unexpected tensors: extra.weight"), "{e}");
    assert!(
        e.contains("conv1.weight is [64, 3, 3, 3] in the file, [64, 3, 7, 7] in the model"),
        "{e}"
    );
    assert_eq!(
        values(m.params().get("conv1.weight").unwrap().var.as_tensor()),
        before,
        "a refused file changed the model"
    );

    let e = err(&state(&Model::new("resnet18", 5, 0, &Device::Cpu).unwrap()));
    assert!(
        e.contains("5 classes") && e.contains("build the model for 5 classes"),
        "{e}"
    );

    let e = err(&state(&model("resnet34", 0)));
    assert!(e.contains("unexpected tensors: layer1.2.bn1.bias"), "{e}");

    std::fs::write(&path, b"not a safetensors file").unwrap();
    let e = m.load_weights(&path).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors: cannot read weights"), "{e}");
    let e = m
        .load_weights(dir.path().join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("absent.safetensors: cannot read weights: no such file"),
        "{e}"
    );
}

#[test]
fn a_torchvision_state_dict_with_step_counters_and_f64_loads() {
    // torchvision state_dicts carry `num_batches_tracked` (i64); converted files may be f64.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tv.safetensors");
    let src = model("resnet18", 3);
    let mut t: HashMap<String, Tensor> = state(&src)
        .into_iter()
        .map(|(n, v)| (n, v.to_dtype(DType::F64).unwrap()))
        .collect();
    t.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[0i64], &Device::Cpu).unwrap(),
    );
    write(&path, &t);
    let m = model("resnet18", 0);
    m.load_weights(&path).unwrap();
    assert_eq!(
        values(m.params().get("fc.weight").unwrap().var.as_tensor()),
        values(src.params().get("fc.weight").unwrap().var.as_tensor())
    );
}

#[test]
fn inference_matches_eval_and_keeps_no_graph() {
    let m = model("resnet18", 0);
    let (x, _) = batch(2, 64);
    let eval = m.forward(&x, &Pass::eval()).unwrap();
    let infer = m.forward(&x, &Pass::infer()).unwrap();
    assert_eq!(values(&eval), values(&infer));
    assert!(eval.track_op(), "eval keeps the graph (gradients can flow)");
    assert!(!infer.track_op(), "inference keeps no graph");
}

#[test]
fn a_model_converts_to_float64_with_every_tensor_equal_and_refuses_half_precision() {
    let model = Model::new("resnet18", 10, 3, &Device::Cpu).unwrap();
    let wide = model.to_dtype(DType::F64).unwrap();
    assert_eq!(model.dtype(), DType::F32);
    assert_eq!(wide.dtype(), DType::F64);
    // A seed builds the same model in either type.
    let built = Model::with_dtype("resnet18", 10, 3, &Device::Cpu, DType::F64).unwrap();
    for ((a, b), c) in model
        .params()
        .all()
        .iter()
        .zip(wide.params().all())
        .zip(built.params().all())
    {
        assert_eq!(b.var.dtype(), DType::F64, "{}", b.name);
        let a = a.var.as_tensor().to_dtype(DType::F64).unwrap();
        let same = |t: &candle_core::Tensor| {
            (&a - t)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert_eq!(
            same(b.var.as_tensor()),
            0.0,
            "{} differs after to_dtype",
            b.name
        );
        assert_eq!(
            same(c.var.as_tensor()),
            0.0,
            "{} differs when built in f64",
            c.name
        );
    }
    let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = wide
        .forward(&x, &Pass::infer())
        .expect_err("f32 input to f64 model");
    assert!(
        matches!(err, ModelError::InputDTypeMismatch { .. }) && err.to_string().contains("F64"),
        "{err}"
    );
    let err = Model::with_dtype("resnet18", 10, 0, &Device::Cpu, DType::F16)
        .err()
        .expect("f16 is refused");
    assert!(err.to_string().contains("F16"), "{err}");
}
