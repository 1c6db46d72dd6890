//! Helpers shared by the integration tests: locating `../shared` and comparing tensors.

use candle_core::Tensor;
use std::path::PathBuf;

/// The read-only shared folder (`../shared` beside the repository), or `$CNN_SHARED_DIR`.
#[allow(dead_code)]
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("CNN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// `path` under the shared folder. Missing data fails the test: CI always has it.
#[allow(dead_code)]
pub fn shared_file(relative: &str) -> PathBuf {
    let path = shared_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: tests need ../shared (or set CNN_SHARED_DIR)",
        path.display()
    );
    path
}

/// ‖a − b‖ / ‖b‖ over all elements, in f64.
#[allow(dead_code)]
pub fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f64> = a
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = b
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(f64::MIN_POSITIVE)
}
