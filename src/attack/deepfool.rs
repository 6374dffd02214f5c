//! DeepFool (Moosavi-Dezfooli, Fawzi and Frossard, 2016), multi-class, L2.

use serde::{Deserialize, Serialize};

use super::common::{argmax, host_tensor, Rows};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// DeepFool: repeatedly steps to the nearest decision boundary of the model
/// linearised at the current point. For an example with label `y` at `xₜ`,
/// with `fₖ = Zₖ(xₜ) − Z_y(xₜ)` and `wₖ = ∇ₓZₖ(xₜ) − ∇ₓZ_y(xₜ)` (`Z` the
/// logits),
///
/// `l = argmin_{k≠y} |fₖ|/‖wₖ‖₂`, `rₜ = (|f_l| + 10⁻⁴)/‖w_l‖₂² · w_l`,
/// `xₜ₊₁ = clip₀¹(x + (1 + overshoot)·Σ_{s≤t} r_s)`,
///
/// until the example is misclassified or `max_iter` steps. The result is
/// the minimal perturbation DeepFool finds; with `eps` it is then projected
/// onto the L2 ball of radius `eps` (so it may no longer fool the model).
/// Untargeted only. Defaults: `overshoot = 0.02`, `max_iter = 50`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepFool {
    /// The L2 budget the result is projected onto; `None` leaves it
    /// unbounded.
    pub eps: Option<f64>,
    /// How far past the linearised boundary to step (relative).
    pub overshoot: f64,
    /// The most steps per example.
    pub max_iter: usize,
}

impl DeepFool {
    /// DeepFool with the defaults above.
    pub fn new(eps: Option<f64>) -> DeepFool {
        DeepFool {
            eps,
            overshoot: 0.02,
            max_iter: 50,
        }
    }

    pub(crate) fn perturb(&self, model: &Model, x: &Tensor, labels: &[u32]) -> Result<Tensor> {
        if self.max_iter == 0 || !(self.overshoot >= 0.0 && self.overshoot.is_finite()) {
            return Err(Error::invalid(format!(
                "deepfool: needs max_iter ≥ 1 and overshoot ≥ 0, got {} and {}",
                self.max_iter, self.overshoot
            )));
        }
        let rows = Rows::new(x)?;
        let (n, _) = x.shape().as_matrix().unwrap_or((0, 0));
        let c = model.classes();
        let mut r_tot = Tensor::zeros(x.shape().clone(), x.dtype()).to_device(x.device())?;
        let mut adv = x.clone();
        for _ in 0..self.max_iter {
            let (logits, grads) = class_gradients(model, &adv, labels)?;
            let z = logits.to_f64_vec()?;
            let active: Vec<bool> = z
                .chunks(c)
                .zip(labels)
                .map(|(row, &y)| argmax(row).0 == y as usize)
                .collect();
            if !active.contains(&true) {
                break;
            }
            let norms: Vec<Vec<f64>> = grads.iter().map(|w| rows.l2(w)).collect::<Result<_>>()?;
            // Per row, the nearest boundary l and the step length |f_l|/‖w_l‖².
            let mut coef = vec![vec![0.0; n]; c];
            for i in 0..n {
                if !active[i] {
                    continue;
                }
                let y = labels[i] as usize;
                let row = &z[i * c..(i + 1) * c];
                let best = (0..c)
                    .filter(|&k| k != y && norms[k][i] > 0.0)
                    .map(|k| (k, (row[k] - row[y]).abs() / norms[k][i]))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((l, _)) = best {
                    let w2 = norms[l][i] * norms[l][i];
                    coef[l][i] = ((row[l] - row[y]).abs() + 1e-4) / w2;
                }
            }
            for (k, w) in grads.iter().enumerate() {
                if coef[k].iter().any(|&v| v != 0.0) {
                    r_tot = r_tot.add(&rows.scale(w, &coef[k])?)?;
                }
            }
            adv = x
                .add(&r_tot.scale(1.0 + self.overshoot)?)?
                .clamp(0.0, 1.0)?;
        }
        match self.eps {
            Some(eps) => rows.project_l2(&adv, x, eps),
            None => Ok(adv),
        }
    }
}

/// The logits at `x` and, for each class `k`, the per-row gradients
/// `∇ₓ(Zₖ − Z_{yᵢ})` (row `i` of the `k`-th tensor; zero where `k = yᵢ`):
/// one forward pass and one backward pass per class, each from
/// `Σᵢ Σⱼ Zᵢⱼ·Mᵢⱼ` with the constant mask `M = onehot(k) − onehot(y)`.
fn class_gradients(model: &Model, x: &Tensor, labels: &[u32]) -> Result<(Tensor, Vec<Tensor>)> {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let fwd = model.forward(&mut tape, xv, false)?;
    let logits = tape.value(fwd.logits)?.clone();
    let c = model.classes();
    let mut grads = Vec::with_capacity(c);
    for k in 0..c {
        let mut mask = vec![0.0; labels.len() * c];
        for (i, &y) in labels.iter().enumerate() {
            mask[i * c + k] += 1.0;
            mask[i * c + y as usize] -= 1.0;
        }
        let m = tape.constant(host_tensor(&mask, &[labels.len(), c], &logits)?);
        let picked = tape.mul(fwd.logits, m)?;
        let s = tape.sum(picked)?;
        tape.backward(s)?;
        grads.push(
            tape.grad(xv)
                .cloned()
                .ok_or_else(|| Error::Tape("deepfool: the input received no gradient".into()))?,
        );
    }
    Ok((logits, grads))
}
