//! Grad-CAM: its arithmetic by hand, ResNet's map against the classic CAM its global pool
//! makes it equal to, and a network built by hand to answer from one region of the image,
//! whose map must be hottest there wherever that region is.

use candle_core::{DType, Device, IndexOp, Tensor};
use cnn_models::{grad_cam_map, Model, ModelError, Pass};

#[test]
fn grad_cam_map_weighs_channels_by_their_mean_gradient() {
    let dev = Device::Cpu;
    // Two channels of a 2x2 grid.
    let a = Tensor::new(&[[[1f32, 2.], [3., 4.]], [[4., 0.], [0., 1.]]], &dev).unwrap();
    // Channel 0's gradient averages 1, channel 1's -2 (unevenly spread: only the mean counts).
    let g = Tensor::new(&[[[1f32, 1.], [1., 1.]], [[-4., 0.], [0., -4.]]], &dev).unwrap();
    // 1 * A0 - 2 * A1 = [[-7, 2], [3, 2]], negatives to zero.
    let map = grad_cam_map(&a, &g).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(map, vec![vec![0.0, 2.0], vec![3.0, 2.0]]);
}

/// ResNet ends in a global average pool and one Linear, so the gradient of logit c with
/// respect to `layer4`'s output is `w_c / (H * W)` everywhere and Grad-CAM is the original
/// CAM (Zhou et al., 2016), `ReLU(sum_k w_ck A_k)`: computed here from the kept output and
/// the classifier's weights, with no backward pass.
#[test]
fn resnet_grad_cam_is_the_classic_cam() {
    let dev = Device::Cpu;
    let model = Model::new("resnet18", 5, 7, &dev).unwrap();
    assert_eq!(model.cam_layer(), "layer4.1");
    let image = Tensor::randn(0f32, 1.0, (1, 3, 128, 128), &dev).unwrap();
    let pass = Pass::eval().keeping_outputs();
    let logits = model.forward(&image, &pass).unwrap().i(0).unwrap();
    let a = pass
        .take_outputs()
        .into_iter()
        .find(|o| o.name == "layer4.1")
        .expect("layer4.1 kept")
        .output
        .i(0)
        .unwrap();
    let fc = model
        .params()
        .get("fc.weight")
        .unwrap()
        .var
        .as_tensor()
        .clone();
    let top = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap() as usize;
    for class in [None, Some(top), Some((top + 1) % 5)] {
        let cam = model.grad_cam(&image, class).unwrap();
        let c = class.unwrap_or(top);
        assert_eq!((cam.class, cam.layer), (c, "layer4.1"));
        assert_eq!((cam.height, cam.width), (4, 4));
        let logit = logits.i(c).unwrap().to_scalar::<f32>().unwrap();
        assert!((cam.logit - logit).abs() < 1e-4, "{} vs {logit}", cam.logit);
        let w = fc.i(c).unwrap().reshape((512, 1, 1)).unwrap();
        let classic = a.broadcast_mul(&w).unwrap().sum(0).unwrap().relu().unwrap();
        let classic = classic.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max = classic.iter().copied().fold(0f32, f32::max);
        if c == top {
            assert!(max > 0.0, "the top class's map should not be all zero");
        }
        for (got, want) in cam.values.iter().zip(&classic) {
            let want = if max > 0.0 { want / max } else { 0.0 };
            assert!((got - want).abs() < 1e-4, "{:?}\n{classic:?}", cam.values);
        }
    }
}

/// torchvision's AlexNet with weights set by hand so that its answer comes from one place:
/// channel 0 of every convolution carries "how much of input channel 0 is here" down to the
/// last map, the classifier sums that channel into class 0's logit, and class 1 is a constant
/// 0.5. An image that is zero but for one square of channel 0 is class 0 because of that
/// square alone.
fn square_detector() -> Model {
    let model = Model::new("alexnet", 2, 0, &Device::Cpu).unwrap();
    for p in model.params().all() {
        let dims = p.torch_dims();
        let mut v = vec![0f32; dims.iter().product()];
        let at = |idx: &[usize]| idx.iter().zip(&dims).fold(0, |flat, (&i, &d)| flat * d + i);
        match p.name.as_str() {
            // Mean of input channel 0 over the 11x11 window.
            "features.0.weight" => (0..11)
                .flat_map(|y| (0..11).map(move |x| (y, x)))
                .for_each(|(y, x)| v[at(&[0, 0, y, x])] = 1.0 / 121.0),
            // Channel 0 passed on unchanged (the centre tap).
            "features.3.weight" => v[at(&[0, 0, 2, 2])] = 1.0,
            "features.6.weight" | "features.8.weight" | "features.10.weight" => {
                v[at(&[0, 0, 1, 1])] = 1.0
            }
            // Unit 0 sums channel 0's 6x6 pooled map (the first 36 inputs); passed on.
            "classifier.1.weight" => (0..36).for_each(|i| v[at(&[0, i])] = 1.0),
            "classifier.4.weight" => v[at(&[0, 0])] = 1.0,
            "classifier.6.weight" => v[at(&[0, 0])] = 1.0,
            "classifier.6.bias" => v[1] = 0.5,
            _ => {}
        }
        let t = Tensor::from_vec(v, dims, &Device::Cpu).unwrap();
        p.var.set(&p.from_torch(&t).unwrap()).unwrap();
    }
    model
}

#[test]
fn the_map_is_hottest_where_the_answer_comes_from() {
    let model = square_detector();
    assert_eq!(model.cam_layer(), "features.11");
    // At 127 px the last map is 7x7; cell n is centred on pixel 16n + 15.
    let side = 127;
    for (row, col) in [(5usize, 1usize), (1, 4), (3, 3), (6, 6)] {
        let mut pixels = vec![0f32; 3 * side * side];
        let (cy, cx) = (16 * row + 15, 16 * col + 15);
        for y in cy - 8..cy + 8 {
            for x in cx - 8..cx + 8 {
                pixels[y * side + x] = 1.0;
            }
        }
        let image = Tensor::from_vec(pixels, (1, 3, side, side), &Device::Cpu).unwrap();
        let cam = model.grad_cam(&image, None).unwrap();
        assert_eq!(cam.class, 0, "the square makes it class 0");
        assert_eq!((cam.height, cam.width), (7, 7));
        let value = |r: usize, c: usize| cam.values[r * 7 + c];
        assert_eq!(value(row, col), 1.0, "{:?}", cam.values);
        for r in 0..7usize {
            for c in 0..7usize {
                let near = r.abs_diff(row) <= 1 && c.abs_diff(col) <= 1;
                if !near {
                    assert_eq!(value(r, c), 0.0, "({r}, {c}) far from the square");
                }
            }
        }
        // Class 1 is a constant: nothing in the image speaks for it.
        let other = model.grad_cam(&image, Some(1)).unwrap();
        assert!(other.values.iter().all(|&v| v == 0.0), "{:?}", other.values);
    }
}

#[test]
fn grad_cam_refuses_what_it_cannot_explain() {
    let model = Model::new("resnet18", 3, 0, &Device::Cpu).unwrap();
    let one = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = model.grad_cam(&one, Some(3)).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::NoSuchClass {
                class: 3,
                classes: 3
            }
        ),
        "{err}"
    );
    let two = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.grad_cam(&two, None).unwrap_err(),
        ModelError::BadInput { .. }
    ));
    // A 32 px input leaves layer4 a 1x1 map: still a map, one value.
    let cam = model.grad_cam(&one, None).unwrap();
    assert_eq!((cam.height, cam.width, cam.values.len()), (1, 1, 1));
}
