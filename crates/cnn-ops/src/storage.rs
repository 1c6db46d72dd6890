//! Reading candle's CPU storage: the f32 or f64 slices of contiguous tensors, handed to
//! an op's function for that type, and timed when op timing is on.

use crate::timing;
use candle_core::{bail, CpuStorage, Layout, Result};

/// Runs the f32 or f64 function on one contiguous CPU storage (a unary op's CPU forward);
/// `name` names the op in errors.
pub(crate) fn dispatch1(
    name: &'static str,
    (s, l): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l]);
    Ok(match s {
        CpuStorage::F32(a) => CpuStorage::F32(f32_fn(contiguous_slice(a, l, name)?)),
        CpuStorage::F64(a) => CpuStorage::F64(f64_fn(contiguous_slice(a, l, name)?)),
        _ => bail!("{name}: only f32 or f64 tensors are supported"),
    })
}

/// Runs the f32 or f64 function on two same-typed contiguous CPU storages (a binary op's
/// CPU forward); `name` names the op in errors.
pub(crate) fn dispatch2(
    name: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l1, l2]);
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(f32_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(f64_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
        )),
        _ => bail!("{name}: only f32 or f64 tensors of one type are supported"),
    })
}

/// [`dispatch2`] for a ternary op: the f32 or f64 function on three same-typed contiguous
/// CPU storages.
pub(crate) fn dispatch3(
    name: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32], &[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l1, l2, l3]);
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32(f32_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
            contiguous_slice(c, l3, name)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64(f64_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
            contiguous_slice(c, l3, name)?,
        )),
        _ => bail!("{name}: only f32 or f64 tensors of one type are supported"),
    })
}

/// The values of a contiguous CPU tensor's storage; `op` names the caller in the error.
pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected contiguous tensors"),
    }
}
