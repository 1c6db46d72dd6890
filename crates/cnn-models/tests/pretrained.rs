//! PyTorch `.pth` checkpoints read against the values PyTorch wrote (fixtures made by
//! `tests/data/make_pth_fixtures.py`), the strict whole-checkpoint load, and the partial
//! load that fine-tuning starts from.

use candle_core::{Device, Tensor};
use cnn_models::{read_pth, read_tensors, Model, ModelError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The fixture's tensors in the script's order, with their shapes.
const SHAPES: [(&str, &[usize]); 7] = [
    ("conv1.weight", &[4, 3, 3, 3]),
    ("bn1.weight", &[4]),
    ("bn1.bias", &[4]),
    ("bn1.running_mean", &[4]),
    ("bn1.running_var", &[4]),
    ("fc.weight", &[2, 4]),
    ("fc.bias", &[2]),
];

/// Checks a fixture's state dict: names without any `module.` prefix, shapes, and every
/// value against the script's formula (tensor t, element i holds (t + 1) + i / 100).
fn check_fixture_state_dict(tensors: Vec<(String, Tensor)>) {
    let by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    names.sort();
    let mut expected: Vec<&str> = SHAPES.iter().map(|(n, _)| *n).collect();
    expected.push("bn1.num_batches_tracked");
    expected.sort();
    assert_eq!(names, expected);
    for (t, (name, shape)) in SHAPES.iter().enumerate() {
        let tensor = &by_name[*name];
        assert_eq!(tensor.dims(), *shape, "{name}");
        let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, v) in values.iter().enumerate() {
            let want = (t + 1) as f32 + i as f32 / 100.0;
            assert!(
                (v - want).abs() < 1e-6,
                "{name}[{i}] = {v}, PyTorch wrote {want}"
            );
        }
    }
    let steps = &by_name["bn1.num_batches_tracked"];
    assert_eq!(
        steps
            .to_dtype(candle_core::DType::I64)
            .unwrap()
            .to_scalar::<i64>()
            .unwrap(),
        7
    );
}

#[test]
fn pth_state_dicts_are_read_bare_nested_and_prefixed() {
    check_fixture_state_dict(read_pth(&fixture("bare.pth")).unwrap());
    // {"state_dict": {"module.conv1.weight": ...}, "epoch": 3, ...} as DataParallel runs save.
    check_fixture_state_dict(read_pth(&fixture("wrapped_dataparallel.pth")).unwrap());
    // {"model": {...}, "optimizer": {...}} as timm and torchvision's scripts save.
    check_fixture_state_dict(read_pth(&fixture("model_key.pth")).unwrap());
    // read_tensors tells a .pth from safetensors by content.
    let map = read_tensors(&fixture("wrapped_dataparallel.pth"), &Device::Cpu).unwrap();
    check_fixture_state_dict(map.into_iter().collect());
}

#[test]
fn files_that_are_not_state_dicts_get_errors_naming_them() {
    let path = fixture("not_a_state_dict.pth");
    let e = read_pth(&path).unwrap_err().to_string();
    assert!(
        e.contains("not_a_state_dict.pth")
            && e.contains("holds no tensors, so it is not a state dict"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"\x80\x02}q\x00.").unwrap(); // a legacy (non-zip) pickle
    let e = read_pth(&junk).unwrap_err().to_string();
    assert!(
        e.contains("junk.pth") && e.contains("not a PyTorch zip checkpoint"),
        "{e}"
    );
    let e = read_tensors(&junk, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("junk.pth") && e.contains("neither a PyTorch zip checkpoint nor safetensors"),
        "{e}"
    );
    let truncated = dir.path().join("truncated.pth");
    let bytes = std::fs::read(fixture("bare.pth")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = read_pth(&truncated).unwrap_err().to_string();
    assert!(
        e.contains("truncated.pth") && e.contains("cannot read"),
        "{e}"
    );
    let e = read_pth(&dir.path().join("absent.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("absent.pth") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn a_checkpoint_of_another_network_is_refused_strictly() {
    let Err(e) = Model::from_checkpoint("resnet18", &fixture("bare.pth"), &Device::Cpu) else {
        panic!("a tiny checkpoint loaded as resnet18");
    };
    let text = e.to_string();
    assert!(matches!(e, ModelError::WeightsMismatch { .. }), "{text}");
    assert!(
        text.contains("bare.pth: does not match resnet18")
            && text.contains("missing tensors: layer1.0.conv1.weight")
            && text
                .contains("wrong shapes: conv1.weight is [4, 3, 3, 3] in the file, [64, 3, 7, 7]"),
        "{text}"
    );
    // Partially: nothing matches by name and shape, so nothing is loaded.
    let model = Model::new("resnet18", 10, 0, &Device::Cpu).unwrap();
    let e = model
        .init_from(&fixture("bare.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bare.pth: no tensor matches resnet18"), "{e}");
}

fn values(model: &Model, name: &str) -> Vec<f32> {
    let p = model.params().get(name).unwrap();
    p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_whole_checkpoint_loads_with_its_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alexnet.safetensors");
    let trained = Model::new("alexnet", 7, 3, &Device::Cpu).unwrap();
    trained.save_weights(&path).unwrap();
    let loaded = Model::from_checkpoint("alexnet", &path, &Device::Cpu).unwrap();
    assert_eq!(loaded.num_classes(), 7);
    for p in trained.params().all() {
        assert_eq!(
            values(&trained, &p.name),
            values(&loaded, &p.name),
            "{}",
            p.name
        );
    }
}

#[test]
fn init_from_takes_the_backbone_and_starts_another_head_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ten.safetensors");
    let source = Model::new("resnet18", 10, 1, &Device::Cpu).unwrap();
    source.save_weights(&path).unwrap();

    let model = Model::new("resnet18", 4, 2, &Device::Cpu).unwrap();
    let head_before = values(&model, "fc.weight");
    let report = model.init_from(&path).unwrap();
    let all = model.params().all().len();
    assert_eq!(report.loaded.len(), all - 2);
    assert_eq!(report.fresh, ["fc.weight", "fc.bias"]);
    assert_eq!(report.file_classes, Some(10));
    assert_eq!(report.ignored.len(), 2);
    assert!(report.ignored[0]
        .1
        .contains("[10, 512] in the file, [4, 512] in the model"));
    assert_eq!(
        values(&model, "conv1.weight"),
        values(&source, "conv1.weight")
    );
    assert_eq!(
        values(&model, "layer4.1.bn2.running_var"),
        values(&source, "layer4.1.bn2.running_var")
    );
    assert_eq!(
        values(&model, "fc.weight"),
        head_before,
        "the new head keeps its init"
    );
    let text = report.describe();
    assert!(
        text.contains(&format!("loaded {} of {all} tensors", all - 2))
            && text.contains("classifier is for 10 classes")
            && text.contains("started fresh: fc.weight, fc.bias"),
        "{text}"
    );

    // The same class count: everything loads, nothing is fresh.
    let same = Model::new("resnet18", 10, 5, &Device::Cpu).unwrap();
    let report = same.init_from(&path).unwrap();
    assert_eq!(
        (report.loaded.len(), report.fresh.len(), report.file_classes),
        (all, 0, None)
    );
    assert_eq!(values(&same, "fc.bias"), values(&source, "fc.bias"));

    // ResNet34 from ResNet18: the shared names load, the extra blocks start fresh.
    let deeper = Model::new("resnet34", 10, 0, &Device::Cpu).unwrap();
    let report = deeper.init_from(&path).unwrap();
    assert!(report.fresh.iter().any(|n| n.starts_with("layer3.5.")));
    assert!(report.loaded.contains(&"layer3.1.conv1.weight".to_string()));
}
