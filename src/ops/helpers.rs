//! Non-differentiable tensor helpers the attacks and optimisers use.

use std::ops::Range;

use crate::backend::cpu::{CpuElement, CpuStorage};
use crate::backend::{pool, BackendStorage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// `sign x` ∈ {−1, 0, 1} elementwise.
    pub fn sign(&self) -> Result<Tensor> {
        let out = self.storage().sign()?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `min(max(x, lo), hi)` elementwise.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi || lo.is_nan() || hi.is_nan() {
            return Err(Error::invalid(format!("clamp: empty range [{lo}, {hi}]")));
        }
        let out = self.storage().clamp(lo, hi)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// The index of the largest value in each row of a matrix `[m, n] → [m]`
    /// (u32; the first on ties).
    pub fn argmax_rows(&self) -> Result<Tensor> {
        let (m, n) = self.shape().as_matrix().ok_or_else(|| Error::BadShape {
            op: "argmax_rows",
            msg: format!("expected a matrix, got {}", self.shape()),
        })?;
        if n == 0 {
            return Err(Error::BadShape {
                op: "argmax_rows",
                msg: "rows are empty".into(),
            });
        }
        let out = self.storage().argmax_rows(n)?;
        Ok(Tensor::from_storage(out, [m].into()))
    }

    /// The number of positions where two u32 tensors of one shape hold the
    /// same value (correct predictions, given `argmax_rows` and labels).
    pub fn count_equal(&self, other: &Tensor) -> Result<usize> {
        if self.shape() != other.shape() {
            return Err(Error::ShapeMismatch {
                op: "count_equal",
                lhs: self.shape().clone(),
                rhs: other.shape().clone(),
            });
        }
        let (a, b) = (self.storage().on_host()?, other.storage().on_host()?);
        match (&*a, &*b) {
            (CpuStorage::U32(a), CpuStorage::U32(b)) => {
                Ok(a.iter().zip(b).filter(|(x, y)| x == y).count())
            }
            _ => Err(Error::DTypeMismatch {
                op: "count_equal",
                lhs: self.dtype(),
                rhs: other.dtype(),
            }),
        }
    }

    /// A copy of the rows `range` of a tensor `[n, …]` (along the first
    /// axis), on its device (copied there, nothing read back).
    pub fn rows(&self, range: Range<usize>) -> Result<Tensor> {
        let n = self.dims().first().copied().unwrap_or(0);
        if self.rank() == 0 || range.start > range.end || range.end > n {
            return Err(Error::BadShape {
                op: "rows",
                msg: format!("rows {range:?} of a tensor of shape {}", self.shape()),
            });
        }
        let row = self.numel() / n.max(1);
        let mut dims = self.dims().to_vec();
        dims[0] = range.len();
        let piece = self.storage().range(range.start * row, range.end * row)?;
        Ok(Tensor::from_storage(piece, dims.into()))
    }

    /// The tensors stacked along the first axis: `[n₁, …] ⊕ [n₂, …] → [n₁ + n₂, …]`;
    /// the other axes, the dtype and the device must agree.
    pub fn cat_rows(parts: &[Tensor]) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error::invalid("cat_rows: no tensors"))?;
        let tail = first.dims().get(1..).unwrap_or(&[]);
        for p in parts {
            if p.rank() == 0 || p.dims()[1..] != *tail || p.dtype() != first.dtype() {
                return Err(Error::ShapeMismatch {
                    op: "cat_rows",
                    lhs: first.shape().clone(),
                    rhs: p.shape().clone(),
                });
            }
        }
        let mut dims = first.dims().to_vec();
        dims[0] = parts.iter().map(|p| p.dims()[0]).sum();
        let total = parts.iter().map(Tensor::numel).sum();
        fn join<T: CpuElement>(parts: &[Tensor], total: usize, dims: Vec<usize>) -> Result<Tensor> {
            let mut out = pool::take(total);
            for p in parts {
                out.extend_from_slice(T::slice(&*p.storage().on_host()?).unwrap_or(&[]));
            }
            Tensor::from_vec(out, dims)
        }
        let host = match first.dtype() {
            DType::F32 => join::<f32>(parts, total, dims),
            DType::F64 => join::<f64>(parts, total, dims),
            DType::U32 => join::<u32>(parts, total, dims),
            DType::F16 => join::<half::f16>(parts, total, dims),
            DType::BF16 => join::<half::bf16>(parts, total, dims),
        }?;
        host.to_device(first.device())
    }

    /// The projection of `self` onto the L∞ ball of radius `eps` around
    /// `center`, intersected with the box `[lo, hi]`.
    pub fn project_linf(&self, center: &Tensor, eps: f64, lo: f64, hi: f64) -> Result<Tensor> {
        if self.shape() != center.shape() {
            return Err(Error::ShapeMismatch {
                op: "project_linf",
                lhs: self.shape().clone(),
                rhs: center.shape().clone(),
            });
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::invalid(format!(
                "project_linf: eps must be ≥ 0, got {eps}"
            )));
        }
        let out = self.storage().project_linf(center.storage(), eps, lo, hi)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// One signed-gradient step projected back onto the L∞ ball of radius
    /// `eps` around `center`, intersected with `[lo, hi]`:
    /// `min(max(x + α·sign g, max(c − eps, lo)), min(c + eps, hi))`, in one
    /// pass where the backend fuses it (the update of FGSM, BIM and PGD).
    pub fn sign_step(
        &self,
        grad: &Tensor,
        center: &Tensor,
        alpha: f64,
        eps: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Tensor> {
        for other in [grad, center] {
            if self.shape() != other.shape() {
                return Err(Error::ShapeMismatch {
                    op: "sign_step",
                    lhs: self.shape().clone(),
                    rhs: other.shape().clone(),
                });
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::invalid(format!(
                "sign_step: eps must be ≥ 0, got {eps}"
            )));
        }
        let out = self
            .storage()
            .sign_step(grad.storage(), center.storage(), alpha, eps, lo, hi)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// In place: `self ← self + alpha·x` (same shapes).
    pub fn axpy_(&mut self, alpha: f64, x: &Tensor) -> Result<()> {
        if self.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op: "axpy",
                lhs: self.shape().clone(),
                rhs: x.shape().clone(),
            });
        }
        self.storage_mut().axpy(alpha, x.storage())
    }
}
