//! MI-FGSM: the momentum iterative fast gradient sign method (Dong et al.,
//! 2018).

use serde::{Deserialize, Serialize};

use super::common::{inv_or_zero, objective_gradient, Rows};
use super::{Goal, Target};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::tensor::Tensor;

/// MI-FGSM: iterative FGSM whose direction accumulates the past gradients,
/// each normalised by its L1 norm per example:
///
/// `m₀ = 0`, `mₜ₊₁ = μ·mₜ + gₜ/‖gₜ‖₁`,
/// `xₜ₊₁ = min(max(xₜ + α·sign mₜ₊₁, x − eps, 0), x + eps, 1)`,
///
/// with `gₜ = ∇ₓ CE(f(xₜ), y)` (targeted: `−∇ₓ CE(f(xₜ), t)`) and `x₀ = x`.
/// Deterministic. Defaults (the paper's): `μ = 1`, 10 steps of
/// `α = eps/steps`; Fashion-MNIST `eps = 0.1`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiFgsm {
    /// The L∞ radius.
    pub eps: f64,
    /// Number of steps.
    pub steps: usize,
    /// Step size; `None` is `eps/steps`.
    pub alpha: Option<f64>,
    /// The momentum decay μ.
    pub decay: f64,
    /// Untargeted or targeted.
    pub target: Target,
}

impl MiFgsm {
    /// Untargeted MI-FGSM with radius `eps` and the defaults above.
    pub fn new(eps: f64) -> MiFgsm {
        MiFgsm {
            eps,
            steps: 10,
            alpha: None,
            decay: 1.0,
            target: Target::Untargeted,
        }
    }

    pub(crate) fn perturb(&self, model: &Model, x: &Tensor, goal: &Goal) -> Result<Tensor> {
        let alpha = self.alpha.unwrap_or(self.eps / self.steps.max(1) as f64);
        if self.steps == 0 || !(alpha > 0.0 && alpha.is_finite()) || !self.decay.is_finite() {
            return Err(Error::invalid(format!(
                "mifgsm: needs steps ≥ 1, a positive step and a finite decay (got {}, {alpha}, {})",
                self.steps, self.decay
            )));
        }
        let rows = Rows::new(x)?;
        let mut adv = x.clone();
        let mut momentum = Tensor::zeros(x.shape().clone(), x.dtype()).to_device(x.device())?;
        for _ in 0..self.steps {
            let (g, _) = objective_gradient(model, &adv, goal.classes, goal.targeted)?;
            let inv_l1: Vec<f64> = rows.l1(&g)?.into_iter().map(inv_or_zero).collect();
            momentum = momentum.scale(self.decay)?.add(&rows.scale(&g, &inv_l1)?)?;
            adv = adv.sign_step(&momentum, x, alpha, self.eps, 0.0, 1.0)?;
        }
        Ok(adv)
    }
}
