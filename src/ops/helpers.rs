//! Non-differentiable tensor helpers the attacks and optimisers use.

use crate::backend::cpu::CpuStorage;
use crate::backend::{BackendStorage, Storage, Unary};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl Tensor {
    /// `sign x` ∈ {−1, 0, 1} elementwise.
    pub fn sign(&self) -> Result<Tensor> {
        self.map_unary(Unary::Sign)
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
        let count = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(x, y)| x == y).count();
        match (self.storage(), other.storage()) {
            (Storage::Cpu(CpuStorage::U32(a)), Storage::Cpu(CpuStorage::U32(b))) => Ok(count(a, b)),
            _ => Ok(count(&self.to_vec::<u32>()?, &other.to_vec::<u32>()?)),
        }
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
