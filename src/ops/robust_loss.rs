//! The losses of robustness evaluation and training (APGD, TRADES, MART)
//! and the row-wise pieces they are built from. Logits are `z: [N, C]`;
//! a loss of one value per row is `[N]` (sum or average it with `sum` or
//! `mean`). `g` is the gradient flowing into the output.
//!
//! - `log_softmax(z)ᵢⱼ = zᵢⱼ − ln Σₖ e^{zᵢₖ}` (computed from the row max),
//!   `dzᵢⱼ = gᵢⱼ − softmax(z)ᵢⱼ·Σₖ gᵢₖ`.
//! - `exp(x) = eˣ`, `dx = g ⊙ eˣ`; `ln(x)`, `dx = g ⊙ e^{−ln x} = g/x`.
//! - `pick(z, k)ᵢ = zᵢ,ₖᵢ` (one entry per row, u32 columns `k`),
//!   `dzᵢⱼ = gᵢ·[j = kᵢ]`; `−pick(log_softmax(z), y)` is the per-example
//!   cross-entropy.
//! - `kl_div(a, b)ᵢ = KL(pᵢ ‖ qᵢ) = Σⱼ pᵢⱼ (ln pᵢⱼ − ln qᵢⱼ)` with
//!   `p = softmax(a)`, `q = softmax(b)`: `daᵢⱼ = gᵢ·pᵢⱼ·(ln pᵢⱼ − ln qᵢⱼ − KLᵢ)`,
//!   `dbᵢⱼ = gᵢ·(qᵢⱼ − pᵢⱼ)`.
//! - `dlr(z, y)ᵢ = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e−12)` and
//!   `dlr_targeted(z, y, t)ᵢ = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12)`,
//!   the difference-of-logits ratios of Croce & Hein (2020), where `π`
//!   orders the classes by decreasing logit: with `n` the numerator, `D`
//!   the denominator and `m` the class subtracted in the numerator,
//!   `dz = −g·(e_y − e_m)/D + g·(n/D²)·∂D/∂z`, `∂D/∂z = e_π1 − e_π3`
//!   (targeted `e_π1 − (e_π3 + e_π4)/2`). The ratio is invariant to shifting
//!   and scaling the logits, which is what makes it hard to mask.

use smallvec::smallvec;

use crate::backend::BackendStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{InputGrads, Op};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// `(N, C)` of a logit matrix.
fn matrix(op: &'static str, z: &Tensor) -> Result<(usize, usize)> {
    z.shape().as_matrix().ok_or_else(|| Error::BadShape {
        op,
        msg: format!("expected logits [N, C], got {}", z.shape()),
    })
}

/// Checks u32 classes `[N]` for rows of `z`.
fn row_classes(op: &'static str, z: &Tensor, k: &Tensor) -> Result<(usize, usize)> {
    let (n, c) = matrix(op, z)?;
    if k.dtype() != DType::U32 || k.dims() != [n] {
        return Err(Error::BadShape {
            op,
            msg: format!(
                "expected u32 classes [{n}] for logits {}, got {} {}",
                z.shape(),
                k.dtype(),
                k.shape()
            ),
        });
    }
    Ok((n, c))
}

impl Tensor {
    /// Row-wise `log_softmax` of a matrix `[N, C]`.
    pub fn log_softmax(&self) -> Result<Tensor> {
        let (_, c) = matrix("log_softmax", self)?;
        let out = self.storage().log_softmax(c)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `eˣ` elementwise.
    pub fn exp(&self) -> Result<Tensor> {
        Ok(Tensor::from_storage(
            self.storage().exp()?,
            self.shape().clone(),
        ))
    }

    /// `ln x` elementwise.
    pub fn ln(&self) -> Result<Tensor> {
        Ok(Tensor::from_storage(
            self.storage().ln()?,
            self.shape().clone(),
        ))
    }

    /// One entry per row of a matrix `[N, C]`: `yᵢ = selfᵢ,ₖᵢ` for u32
    /// columns `k: [N]`.
    pub fn pick(&self, k: &Tensor) -> Result<Tensor> {
        let (n, c) = row_classes("pick", self, k)?;
        let out = self.storage().pick_rows(k.storage(), c)?;
        Ok(Tensor::from_storage(out, [n].into()))
    }

    /// `KL(softmax(selfᵢ) ‖ softmax(otherᵢ))` for each row of two logit
    /// matrices of one shape, `[N]`.
    pub fn kl_div(&self, other: &Tensor) -> Result<Tensor> {
        let (n, c) = matrix("kl_div", self)?;
        if other.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "kl_div",
                lhs: self.shape().clone(),
                rhs: other.shape().clone(),
            });
        }
        let out = self.storage().kl_div_rows(other.storage(), c)?;
        Ok(Tensor::from_storage(out, [n].into()))
    }

    /// The per-row DLR loss of logits `[N, C]` (`C ≥ 3`) against u32
    /// labels `[N]` (see the module documentation).
    pub fn dlr(&self, labels: &Tensor) -> Result<Tensor> {
        let (n, c) = row_classes("dlr", self, labels)?;
        let out = self
            .storage()
            .dlr_rows(labels.storage(), labels.storage(), false, c)?;
        Ok(Tensor::from_storage(out, [n].into()))
    }

    /// The per-row targeted DLR loss of logits `[N, C]` (`C ≥ 4`) against
    /// u32 labels and targets `[N]`.
    pub fn dlr_targeted(&self, labels: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (n, c) = row_classes("dlr_targeted", self, labels)?;
        row_classes("dlr_targeted", self, targets)?;
        let out = self
            .storage()
            .dlr_rows(labels.storage(), targets.storage(), true, c)?;
        Ok(Tensor::from_storage(out, [n].into()))
    }
}

impl Tape {
    /// Records the row-wise `log_softmax` of logits `[N, C]`.
    pub fn log_softmax(&mut self, z: Var) -> Result<Var> {
        let out = self.value(z)?.log_softmax()?;
        self.record(Op::LogSoftmax, &[z], out)
    }

    /// Records `eˣ` elementwise.
    pub fn exp(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.exp()?;
        self.record(Op::Exp, &[x], out)
    }

    /// Records `ln x` elementwise (x > 0).
    pub fn ln(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.ln()?;
        self.record(Op::Ln, &[x], out)
    }

    /// Records one entry per row, `zᵢ,ₖᵢ`, for u32 columns `k: [N]`.
    pub fn pick(&mut self, z: Var, k: &Tensor) -> Result<Var> {
        let out = self.value(z)?.pick(k)?;
        self.record(Op::Pick(k.clone()), &[z], out)
    }

    /// Records `KL(softmax(aᵢ) ‖ softmax(bᵢ))` per row, `[N]`.
    pub fn kl_div(&mut self, a: Var, b: Var) -> Result<Var> {
        let out = self.value(a)?.kl_div(self.value(b)?)?;
        self.record(Op::KlDiv, &[a, b], out)
    }

    /// Records the per-row DLR loss of logits `z` against u32 `labels`.
    pub fn dlr(&mut self, z: Var, labels: &Tensor) -> Result<Var> {
        let out = self.value(z)?.dlr(labels)?;
        let op = Op::Dlr {
            labels: labels.clone(),
            targets: None,
        };
        self.record(op, &[z], out)
    }

    /// Records the per-row targeted DLR loss of logits `z` against u32
    /// `labels` and `targets`.
    pub fn dlr_targeted(&mut self, z: Var, labels: &Tensor, targets: &Tensor) -> Result<Var> {
        let out = self.value(z)?.dlr_targeted(labels, targets)?;
        let op = Op::Dlr {
            labels: labels.clone(),
            targets: Some(targets.clone()),
        };
        self.record(op, &[z], out)
    }
}

/// `dz = g − e^{y}·Σₖ gₖ` per row, from the saved output `y`.
pub(super) fn log_softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (_, c) = matrix("log_softmax", y)?;
    let out = g.storage().log_softmax_backward(y.storage(), c)?;
    Ok(Tensor::from_storage(out, y.shape().clone()))
}

/// `dx = g ⊙ e^{−y}` from the saved output `y = ln x`.
pub(super) fn ln_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    g.mul(&y.scale(-1.0)?.exp()?)
}

/// `dzᵢⱼ = gᵢ·[j = kᵢ]`.
pub(super) fn pick_backward(z: &Tensor, k: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (_, c) = matrix("pick", z)?;
    let out = g.storage().pick_rows_backward(k.storage(), c)?;
    Ok(Tensor::from_storage(out, z.shape().clone()))
}

/// The gradients of both logit inputs.
pub(super) fn kl_div_backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    needs: &[bool],
) -> Result<InputGrads> {
    let (_, c) = matrix("kl_div", a)?;
    let (da, db) = a
        .storage()
        .kl_div_rows_backward(b.storage(), g.storage(), c)?;
    let shape = a.shape().clone();
    Ok(smallvec![
        needs[0].then(|| Tensor::from_storage(da, shape.clone())),
        needs[1].then(|| Tensor::from_storage(db, shape)),
    ])
}

/// The gradient of the logits of a (targeted) DLR loss.
pub(super) fn dlr_backward(
    z: &Tensor,
    labels: &Tensor,
    targets: Option<&Tensor>,
    g: &Tensor,
) -> Result<Tensor> {
    let (_, c) = matrix("dlr", z)?;
    let out = z.storage().dlr_rows_backward(
        labels.storage(),
        targets.unwrap_or(labels).storage(),
        targets.is_some(),
        g.storage(),
        c,
    )?;
    Ok(Tensor::from_storage(out, z.shape().clone()))
}
