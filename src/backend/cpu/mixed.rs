//! Matrix products in a precision: f32 or f64 on the f32/f64 gemm, bf16 and
//! f16 on [`gemm_half`](super::gemm::gemm_half) with f32 sums and an f32
//! result.
//!
//! The product's type: a bf16 or f16 operand's own type (two half operands
//! must agree); else, for f32 operands, the autocast precision; f64
//! operands are never rounded. An f32 operand of a half product is rounded
//! as it is packed, never copied whole.

use half::{bf16, f16};

use super::gemm::{self, HalfFloat, HalfOperand};
use super::{kernels, CpuElement, CpuStorage};
use crate::backend::{Activation, BackendStorage, MatmulDims};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::Precision;

/// The type `a·b` runs in under `precision`, or `None` for the full
/// precision product of operands of one type (the CUDA backend's rule too).
pub(crate) fn half_type(
    op: &'static str,
    a: DType,
    b: DType,
    precision: Precision,
) -> Result<Option<DType>> {
    let mismatch = || Error::DTypeMismatch { op, lhs: a, rhs: b };
    match (a, b) {
        (a, b) if a.is_half() && b.is_half() && a != b => Err(mismatch()),
        (a, b) if a.is_half() || b.is_half() => {
            let half = if a.is_half() { a } else { b };
            let other = if a.is_half() { b } else { a };
            match other {
                DType::F32 => Ok(Some(half)),
                d if d == half => Ok(Some(half)),
                _ => Err(mismatch()),
            }
        }
        (DType::F32, DType::F32) if precision.is_half() => Ok(Some(precision.dtype())),
        _ => Ok(None),
    }
}

/// `s` as a [`HalfOperand`] of `H`: its own values, or f32 ones to round.
fn operand<'a, H: CpuElement>(s: &'a CpuStorage) -> HalfOperand<'a, H> {
    match (H::slice(s), s) {
        (Some(v), _) => HalfOperand::Half(v),
        (None, CpuStorage::F32(v)) => HalfOperand::F32(v),
        _ => unreachable!("half_type admits f32 and H operands only"),
    }
}

/// The half product `op(a)·op(b)` in `H`, then `epilogue` on each finished
/// stretch of a row.
fn product<H: HalfFloat + CpuElement>(
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    epilogue: Option<&gemm::Epilogue<'_, f32>>,
) -> Vec<f32> {
    let (a, b) = (operand::<H>(a), operand::<H>(b));
    match epilogue {
        None => gemm::gemm_half_new(d.m, d.n, d.k, a, d.a_trans, b, d.b_trans),
        Some(e) => gemm::gemm_half_new_then(d.m, d.n, d.k, a, d.a_trans, b, d.b_trans, e),
    }
}

/// [`product`] for the half type `dtype`.
fn half_product(
    dtype: DType,
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    epilogue: Option<&gemm::Epilogue<'_, f32>>,
) -> Vec<f32> {
    match dtype {
        DType::F16 => product::<f16>(a, b, d, epilogue),
        _ => product::<bf16>(a, b, d, epilogue),
    }
}

/// `op(a)·op(b)` in `precision` (see the [module docs](self)).
pub(super) fn matmul_in(
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    precision: Precision,
) -> Result<CpuStorage> {
    match half_type("matmul", a.dtype(), b.dtype(), precision)? {
        None => a.matmul(b, d),
        Some(h) => Ok(CpuStorage::F32(half_product(h, a, b, d, None))),
    }
}

/// `f(op(a)·op(b) + row)` with the product in `precision`, the bias and
/// `f` in f32 on each finished strip of the product.
pub(super) fn matmul_bias_act_in(
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    row: &CpuStorage,
    act: Activation,
    precision: Precision,
) -> Result<CpuStorage> {
    let Some(h) = half_type("linear_act", a.dtype(), b.dtype(), precision)? else {
        return a.matmul_bias_act(b, d, row, act);
    };
    if !row.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op: "linear_act",
            dtype: row.dtype(),
        });
    }
    let bias = row.cast(DType::F32);
    let CpuStorage::F32(bias) = &bias else {
        unreachable!("cast to f32 gives f32")
    };
    if bias.len() != d.n {
        return Err(Error::invalid(format!(
            "linear_act: a bias of {} values for {} columns",
            bias.len(),
            d.n
        )));
    }
    let epilogue = |_: usize, j: usize, c: &mut [f32]| {
        kernels::bias_act_in_place(c, &bias[j..], act);
    };
    Ok(CpuStorage::F32(half_product(h, a, b, d, Some(&epilogue))))
}
