use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    cnn_models::ops::tune_candle_pool();
    let dev = Device::Cpu;
    for &(c, hw) in &[(64usize, 16usize), (128, 8), (64, 56), (256, 14)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, c, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::ones(c, candle_core::DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(c, candle_core::DType::F32, &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (32, c, hw, hw), &dev)?;
        let mut ts = vec![];
        for _ in 0..15 {
            let t = Instant::now();
            let (y, _) = cnn_models::ops::batch_norm_relu_train(
                x.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                1e-5,
            )?;
            let g = (y * &r)?.sum_all()?.backward()?;
            std::hint::black_box(g.get(x.as_tensor()).unwrap());
            ts.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{c}x{hw}x{hw}: median {:.2} ms", ts[7]);
    }
    Ok(())
}
