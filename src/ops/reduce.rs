//! Reductions to a scalar.
//!
//! - `sum(x) = Σᵢ xᵢ`, `dx = g·1`.
//! - `mean(x) = (1/n) Σᵢ xᵢ`, `dx = (g/n)·1`.

use crate::backend::BackendStorage;
use crate::error::Result;
use crate::ops::Op;
use crate::shape::Shape;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl Tensor {
    /// `Σᵢ xᵢ` over all elements, as a scalar tensor.
    pub fn sum(&self) -> Result<Tensor> {
        let out = self.storage().sum_all()?;
        Ok(Tensor::from_storage(out, Shape::scalar()))
    }

    /// `(1/n) Σᵢ xᵢ` over all elements, as a scalar tensor.
    pub fn mean(&self) -> Result<Tensor> {
        self.sum()?.scale(1.0 / self.numel().max(1) as f64)
    }
}

impl Tape {
    /// Records `Σ x`.
    pub fn sum(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.sum()?;
        self.record(Op::Sum, &[x], out)
    }

    /// Records `mean x`.
    pub fn mean(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.mean()?;
        self.record(Op::Mean, &[x], out)
    }
}

/// `dx = scale·g·1`, shaped like `x`.
pub(super) fn sum_backward(x: &Tensor, g: &Tensor, scale: f64) -> Result<Tensor> {
    let out = g.storage().broadcast_scalar(x.numel(), scale)?;
    Ok(Tensor::from_storage(out, x.shape().clone()))
}
