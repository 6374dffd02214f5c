//! Iterative gradient attacks: projected gradient descent (Madry et al.,
//! 2018) in L∞ and L2, and the basic iterative method (Kurakin et al.,
//! 2017), which is L∞ PGD started at `x`.

use serde::{Deserialize, Serialize};

use super::common::{
    by_pieces, objective_gradient, objective_gradient_unchecked, scores, Rows, Score,
};
use super::{enforce, restart_seed, Goal, Target, Threat};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Projected gradient descent: `steps` steps of size `α` along the
/// steepest-ascent direction of the norm, each followed by the projection
/// `Π` onto the ball of radius `eps` around `x` intersected with `[0, 1]`:
///
/// - L∞: `xₜ₊₁ = Π(xₜ + α·sign gₜ)`, `Π(z) = min(max(z, x − eps, 0), x + eps, 1)`;
/// - L2: `xₜ₊₁ = Π(xₜ + α·gₜ/‖gₜ‖₂)`, `Π(z) = clip₀¹(x + δ·min(1, eps/‖δ‖₂))`, `δ = z − x`;
///
/// with `gₜ = ∇ₓ CE(f(xₜ), y)` (targeted: `−∇ₓ CE(f(xₜ), t)`), per example.
///
/// `x₀ = x`, or with `random_start` a uniform point of the ball (L∞:
/// `x + U(−eps, eps)ᵈ`; L2: `x + eps·u^{1/d}·n/‖n‖₂`, `n ~ N(0, I)`,
/// `u ~ U(0, 1)`), clipped to `[0, 1]`. With `restarts = R > 1` the attack
/// runs `R` times, restart `r ≥ 1` always from a random start drawn with
/// [`restart_seed`]`(seed, r)` (restart 0 from `x` unless `random_start`),
/// and keeps for **each example** the final iterate that fools the model
/// (untargeted: misclassified; targeted: classified as the target), and
/// among those, or if none does, the one with the highest objective
/// (cross-entropy of the label; minus that of the target).
///
/// Defaults for Fashion-MNIST (`[0, 1]` pixels): L∞ `eps = 0.1`, L2
/// `eps = 1.5`; 20 steps of `α = 2.5·eps/steps` (eps/8), in the
/// eps/4–eps/10 range the literature uses with 20–40 steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pgd {
    /// The norm and radius.
    pub threat: Threat,
    /// Number of steps.
    pub steps: usize,
    /// Step size; `None` is `2.5·eps/steps`.
    pub alpha: Option<f64>,
    /// Start from a uniform random point of the ball.
    pub random_start: bool,
    /// Independent runs; the best per example is kept.
    pub restarts: usize,
    /// Untargeted or targeted.
    pub target: Target,
}

impl Pgd {
    /// Untargeted PGD in `threat` with the defaults above: 20 steps, no
    /// random start, one restart.
    pub fn new(threat: Threat) -> Pgd {
        Pgd {
            threat,
            steps: 20,
            alpha: None,
            random_start: false,
            restarts: 1,
            target: Target::Untargeted,
        }
    }

    /// The step size: `alpha`, or `2.5·eps/steps`.
    pub fn step_size(&self) -> f64 {
        self.alpha
            .unwrap_or(2.5 * self.threat.eps() / self.steps.max(1) as f64)
    }

    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.restarts == 0 {
            return Err(Error::invalid(format!(
                "pgd: steps ({}) and restarts ({}) must be at least 1",
                self.steps, self.restarts
            )));
        }
        let alpha = self.step_size();
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::invalid(format!(
                "pgd: the step size must be positive, got {alpha}"
            )));
        }
        Ok(())
    }

    /// [`Attack::run`](super::Attack::run) of this attack, untargeted, on a
    /// batch the caller has checked: `x: [N, inputs]` with every value in
    /// `[0, 1]` and u32 `labels: [N]` classes of the model (adversarial
    /// training checks its training set once). With one run (no restarts)
    /// nothing is read back to the host, not even the first loss; a NaN
    /// or infinite loss gives a NaN gradient and so NaN inputs, which the
    /// caller's own loss check then sees. The result is the same bits as
    /// through `Attack::run`.
    pub(crate) fn run_on_checked_batch(
        &self,
        model: &Model,
        x: &Tensor,
        labels: &Tensor,
        seed: u64,
    ) -> Result<Tensor> {
        if self.restarts != 1 || self.target != Target::Untargeted {
            return super::Attack::Pgd(*self).run(model, x, labels, seed);
        }
        self.threat
            .validate(x.dims().get(1).copied().unwrap_or(0))?;
        if self.threat.eps() == 0.0 {
            return Ok(x.clone());
        }
        let goal = Goal {
            classes: labels,
            host: &[],
            targeted: false,
        };
        self.check()?;
        let adv = self.once(
            model,
            x,
            &goal,
            &Rows::new(x)?,
            self.random_start.then_some(restart_seed(seed, 0)),
            false,
        )?;
        match self.threat {
            Threat::Linf(_) => Ok(adv),
            Threat::L2(_) => enforce(self.threat, adv, x),
        }
    }

    pub(crate) fn perturb(
        &self,
        model: &Model,
        x: &Tensor,
        goal: &Goal,
        seed: u64,
    ) -> Result<Tensor> {
        self.check()?;
        let rows = Rows::new(x)?;
        let mut best: Option<(Tensor, Vec<Score>)> = None;
        for r in 0..self.restarts {
            let start = if self.random_start || r > 0 {
                Some(restart_seed(seed, r))
            } else {
                None
            };
            let adv = self.once(model, x, goal, &rows, start, true)?;
            if self.restarts == 1 {
                return Ok(adv);
            }
            let s = scores(&model.logits(&adv)?, goal.host, goal.targeted)?;
            best = Some(match best {
                None => (adv, s),
                Some((b, bs)) => {
                    let take: Vec<bool> = s.iter().zip(&bs).map(|(n, o)| n.beats(*o)).collect();
                    let merged = rows.select(&take, &adv, &b)?;
                    let ms = s
                        .into_iter()
                        .zip(bs)
                        .zip(&take)
                        .map(|((n, o), &t)| if t { n } else { o })
                        .collect();
                    (merged, ms)
                }
            });
        }
        Ok(best.map(|(b, _)| b).unwrap_or_else(|| x.clone()))
    }

    /// One run from `x` or from the random start drawn with `start_seed`.
    /// With `check_start` the loss of the first step is read back and
    /// checked to be finite (one blocking read on a device); the later
    /// steps read nothing (L∞) or only each row's gradient norm (L2, which
    /// the step needs).
    fn once(
        &self,
        model: &Model,
        x: &Tensor,
        goal: &Goal,
        rows: &Rows,
        start_seed: Option<u64>,
        check_start: bool,
    ) -> Result<Tensor> {
        let gradient = |step: usize, adv: &Tensor, classes: &Tensor| {
            if step == 0 && check_start {
                objective_gradient(model, adv, classes, goal.targeted)
            } else {
                objective_gradient_unchecked(model, adv, classes, goal.targeted)
            }
        };
        let eps = self.threat.eps();
        let alpha = self.step_size();
        let start = match start_seed {
            Some(s) => random_start(self.threat, x, rows, s)?,
            None => x.clone(),
        };
        match self.threat {
            Threat::Linf(_) => {
                let run = |[mut adv, x, classes]: [Tensor; 3]| {
                    for step in 0..self.steps {
                        let (g, _) = gradient(step, &adv, &classes)?;
                        adv = adv.sign_step(&g, &x, alpha, eps, 0.0, 1.0)?;
                    }
                    Ok(adv)
                };
                // Cutting the batch costs a copy of its tensors, which one
                // step does not earn back (measured over the test set: one
                // step 0.20 s in pieces against 0.18 s whole, two 0.23 s
                // against 0.25 s).
                if self.steps >= 2 {
                    by_pieces([&start, x, goal.classes], run)
                } else {
                    run([start, x.clone(), goal.classes.clone()])
                }
            }
            Threat::L2(_) => {
                let mut adv = start;
                for step in 0..self.steps {
                    let (g, _) = gradient(step, &adv, goal.classes)?;
                    let z = adv.add(&rows.normalize_l2(&g)?.scale(alpha)?)?;
                    adv = rows.project_l2(&z.clamp(0.0, 1.0)?, x, eps)?;
                }
                Ok(adv)
            }
        }
    }
}

/// A uniform random point of the ball around `x`, clipped to `[0, 1]`.
fn random_start(threat: Threat, x: &Tensor, rows: &Rows, seed: u64) -> Result<Tensor> {
    let (n, d) = x.shape().as_matrix().unwrap_or((0, 0));
    match threat {
        Threat::Linf(eps) => {
            let noise =
                Tensor::rand_uniform([n, d], -eps, eps, seed, x.dtype()).to_device(x.device())?;
            x.add(&noise)?.clamp(0.0, 1.0)
        }
        Threat::L2(eps) => {
            let noise =
                Tensor::rand_normal([n, d], 0.0, 1.0, seed, x.dtype()).to_device(x.device())?;
            let mut rng = Rng::new(seed ^ 0x5eed_ba11);
            let radii: Vec<f64> = rows
                .l2(&noise)?
                .into_iter()
                .map(|norm| {
                    eps * rng.next_f64().powf(1.0 / d.max(1) as f64)
                        * super::common::inv_or_zero(norm)
                })
                .collect();
            rows.project_l2(
                &x.add(&rows.scale(&noise, &radii)?)?.clamp(0.0, 1.0)?,
                x,
                eps,
            )
        }
    }
}

/// BIM / I-FGSM: L∞ [`Pgd`] started at `x` (no random start, one run):
///
/// `x₀ = x`, `xₜ₊₁ = min(max(xₜ + α·sign ∇ₓ CE(f(xₜ), y), x − eps, 0), x + eps, 1)`.
///
/// Deterministic. Defaults: 20 steps of `α = 2.5·eps/steps`; Fashion-MNIST
/// `eps = 0.1`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bim {
    /// The L∞ radius.
    pub eps: f64,
    /// Number of steps.
    pub steps: usize,
    /// Step size; `None` is `2.5·eps/steps`.
    pub alpha: Option<f64>,
    /// Untargeted or targeted.
    pub target: Target,
}

impl Bim {
    /// Untargeted BIM with radius `eps` and the defaults above.
    pub fn new(eps: f64) -> Bim {
        Bim {
            eps,
            steps: 20,
            alpha: None,
            target: Target::Untargeted,
        }
    }

    /// The equivalent [`Pgd`].
    pub fn as_pgd(&self) -> Pgd {
        Pgd {
            threat: Threat::Linf(self.eps),
            steps: self.steps,
            alpha: self.alpha,
            random_start: false,
            restarts: 1,
            target: self.target,
        }
    }
}
