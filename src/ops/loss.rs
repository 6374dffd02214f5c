//! Fused, numerically stable softmax cross-entropy.
//!
//! For logits `x: [N, C]` and labels `y ∈ {0..C−1}ᴺ`, with the row max
//! `mᵢ = maxⱼ xᵢⱼ`:
//!
//! `L = (1/N) Σᵢ (mᵢ + ln Σⱼ e^{xᵢⱼ − mᵢ} − xᵢ,yᵢ)`
//!
//! and, with `p = softmax(x)` saved by the forward pass and `g` the output
//! gradient, `dx = g·(p − onehot(y))/N`.

use crate::backend::BackendStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::shape::Shape;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

fn check(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (n, c) = logits.shape().as_matrix().ok_or_else(|| Error::BadShape {
        op: "softmax_cross_entropy",
        msg: format!("logits must be [N, C], got {}", logits.shape()),
    })?;
    if labels.dtype() != DType::U32 {
        return Err(Error::invalid(format!(
            "softmax_cross_entropy: labels must be u32 class indices, got {}",
            labels.dtype()
        )));
    }
    if labels.dims() != [n] {
        return Err(Error::ShapeMismatch {
            op: "softmax_cross_entropy",
            lhs: logits.shape().clone(),
            rhs: labels.shape().clone(),
        });
    }
    if c == 0 {
        return Err(Error::BadShape {
            op: "softmax_cross_entropy",
            msg: "logits have no classes".into(),
        });
    }
    Ok((n, c))
}

impl Tensor {
    /// The mean softmax cross-entropy of logits `[N, C]` against u32
    /// `labels [N]`, and the softmax probabilities `[N, C]`.
    pub fn softmax_cross_entropy(&self, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c) = check(self, labels)?;
        let (loss, probs) = self.storage().softmax_xent(labels.storage(), c)?;
        Ok((
            Tensor::from_storage(loss, Shape::scalar()),
            Tensor::from_storage(probs, self.shape().clone()),
        ))
    }

    /// Softmax of each row of a matrix.
    pub fn softmax(&self) -> Result<Tensor> {
        let n = self.shape().as_matrix().map_or(0, |(n, _)| n);
        let labels = Tensor::zeros([n], DType::U32).to_device(self.device())?;
        Ok(self.softmax_cross_entropy(&labels)?.1)
    }
}

impl Tape {
    /// Records the mean softmax cross-entropy of `logits: [N, C]` against
    /// u32 `labels: [N]`; the result is a scalar.
    pub fn softmax_cross_entropy(&mut self, logits: Var, labels: &Tensor) -> Result<Var> {
        let (loss, probs) = self.value(logits)?.softmax_cross_entropy(labels)?;
        let op = Op::SoftmaxCrossEntropy {
            labels: labels.clone(),
            probs,
        };
        self.record(op, &[logits], loss)
    }
}

/// `dx = g·(p − onehot(y))/N`.
pub(super) fn softmax_cross_entropy_backward(
    probs: &Tensor,
    labels: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let (_, c) = check(probs, labels)?;
    let out = probs
        .storage()
        .softmax_xent_backward(labels.storage(), g.storage(), c)?;
    Ok(Tensor::from_storage(out, probs.shape().clone()))
}
