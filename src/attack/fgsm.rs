//! One-step attacks: the fast gradient sign method (L∞) and the fast
//! gradient method (L2).

use serde::{Deserialize, Serialize};

use super::common::{objective_gradient, Rows};
use super::{Goal, Target};
use crate::error::Result;
use crate::nn::Model;
use crate::tensor::Tensor;

/// FGSM (Goodfellow, Shlens and Szegedy, 2015), one step of size `eps`
/// along the sign of the input gradient:
///
/// `x' = clip₀¹(x + eps·sign ∇ₓ CE(f(x), y))`
///
/// and, targeted at `t`, `x' = clip₀¹(x − eps·sign ∇ₓ CE(f(x), t))`.
/// Every pixel moves by exactly `±eps` before clipping, so the L∞ norm of
/// the perturbation is at most `eps`. Default for Fashion-MNIST:
/// `eps = 0.1` (MNIST: 0.3).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fgsm {
    /// The L∞ radius.
    pub eps: f64,
    /// Untargeted or targeted.
    pub target: Target,
}

impl Fgsm {
    /// Untargeted FGSM with radius `eps`.
    pub fn new(eps: f64) -> Fgsm {
        Fgsm {
            eps,
            target: Target::Untargeted,
        }
    }

    pub(crate) fn perturb(&self, model: &Model, x: &Tensor, goal: &Goal) -> Result<Tensor> {
        let (g, _) = objective_gradient(model, x, goal.classes, goal.targeted)?;
        // clip(x + eps·sign g) is the projected step with ball radius eps.
        x.sign_step(&g, x, self.eps, self.eps, 0.0, 1.0)
    }
}

/// FGM, the L2 fast gradient method (Miyato et al., 2016): one step of
/// length `eps` along the input gradient normalised per example,
///
/// `x' = Π(x + eps·g/‖g‖₂)`, `g = ∇ₓ CE(f(x), y)` (targeted: `−∇ₓ CE(f(x), t)`),
///
/// where `Π` clips to `[0, 1]` and re-projects onto the L2 ball (clipping
/// only shortens the step). An example whose gradient is zero is left
/// unchanged. Typical Fashion-MNIST budgets: `eps ∈ [0.5, 3]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fgm {
    /// The L2 radius.
    pub eps: f64,
    /// Untargeted or targeted.
    pub target: Target,
}

impl Fgm {
    /// Untargeted FGM with radius `eps`.
    pub fn new(eps: f64) -> Fgm {
        Fgm {
            eps,
            target: Target::Untargeted,
        }
    }

    pub(crate) fn perturb(&self, model: &Model, x: &Tensor, goal: &Goal) -> Result<Tensor> {
        let rows = Rows::new(x)?;
        let (g, _) = objective_gradient(model, x, goal.classes, goal.targeted)?;
        let step = rows.normalize_l2(&g)?.scale(self.eps)?;
        rows.project_l2(&x.add(&step)?.clamp(0.0, 1.0)?, x, self.eps)
    }
}
