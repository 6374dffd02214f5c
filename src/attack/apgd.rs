//! Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness
//! with an ensemble of diverse parameter-free attacks", ICML 2020): PGD
//! with momentum whose step size halves on its own, on the cross-entropy
//! (APGD-CE), the DLR loss (APGD-DLR), or the targeted DLR loss towards
//! each of the top classes in turn (APGD-T).

use serde::{Deserialize, Serialize};

use super::model::Classifier;
use super::rowwise::{
    in_pieces, lerp, loss_at, random_start, ranked_classes, row_hashes, take_rows, tensor_like,
    vector_like, RowLoss,
};
use super::{Outcome, Threat};
use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The loss APGD ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApgdLoss {
    /// Cross-entropy of the label (APGD-CE).
    CrossEntropy,
    /// `DLR = −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3)` (APGD-DLR).
    Dlr,
    /// `−(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)`, one run per target t among
    /// the `targets` classes ranked 2nd, 3rd, … by the clean logits (APGD-T).
    TargetedDlr,
}

/// APGD, per example, from `x⁽⁰⁾ = clip₀¹(x + eps·u/‖u‖)` (`u` uniform in
/// `[−1, 1]ᵈ` for L∞, Gaussian for L2), with step size `η = 2·eps`:
///
/// `z = P(x⁽ᵏ⁾ + η·s(∇L(x⁽ᵏ⁾)))`,
/// `x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))`,
///
/// `s = sign` (L∞) or `g/‖g‖₂` (L2), `P` the projection on the ball ∩
/// `[0, 1]`, momentum `α = 0.75` (1 on the first step). At the checkpoints
/// `w₀ = 0`, `w₁ = 0.22·N`, `wⱼ₊₁ = wⱼ + max(wⱼ − wⱼ₋₁ − 0.03·N, 0.06·N)`
/// of the `N = steps` iterations, an example's step size halves and it
/// restarts from its best point (highest loss) when
/// 1. the loss went up in at most `ρ = 75 %` of the steps since the last
///    checkpoint, or
/// 2. the step size was not halved at the last checkpoint and the best
///    loss has not improved since.
///
/// An example counts as broken as soon as an iterate is misclassified;
/// the result is that iterate, or for an unbroken example its highest-loss
/// point. `restarts` runs are made, each only on the examples still
/// unbroken (APGD-T: `restarts` runs per target class). Defaults: 100
/// steps, one restart, 9 target classes (those of AutoAttack's standard
/// version).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Apgd {
    /// The norm and radius.
    pub threat: Threat,
    /// The loss.
    pub loss: ApgdLoss,
    /// Iterations per run.
    pub steps: usize,
    /// Runs per target (untargeted: in total).
    pub restarts: usize,
    /// Target classes of APGD-T (at most `classes − 1`).
    pub targets: usize,
    /// The fraction ρ of the oscillation test.
    pub rho: f64,
}

impl Apgd {
    /// APGD with `loss` in `threat` and the defaults above.
    pub fn new(threat: Threat, loss: ApgdLoss) -> Apgd {
        Apgd {
            threat,
            loss,
            steps: 100,
            restarts: 1,
            targets: 9,
            rho: 0.75,
        }
    }

    /// `apgd-ce`, `apgd-dlr` or `apgd-t`.
    pub fn name(&self) -> &'static str {
        match self.loss {
            ApgdLoss::CrossEntropy => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
            ApgdLoss::TargetedDlr => "apgd-t",
        }
    }

    /// The checkpoint schedule's three numbers for `steps` iterations: the
    /// first interval, the smallest interval and the decrease between
    /// intervals (`0.22N`, `0.06N`, `0.03N`, each at least 1).
    pub fn checkpoints(steps: usize) -> (usize, usize, usize) {
        let at = |f: f64| ((f * steps as f64) as usize).max(1);
        (at(0.22), at(0.06), at(0.03))
    }

    /// The iterations (counted from 1) at whose end the checkpoints fall,
    /// for `steps` iterations: 22, 41, 57, 70, 80, 87, 93, 99 for 100.
    pub fn checkpoint_iterations(steps: usize) -> Vec<usize> {
        let (first, min_interval, decrease) = Apgd::checkpoints(steps);
        let (mut at, mut interval, mut out) = (first, first, Vec::new());
        while at <= steps {
            out.push(at);
            interval = interval.saturating_sub(decrease).max(min_interval);
            at += interval;
        }
        out
    }

    fn check(&self, classes: usize) -> Result<()> {
        if self.steps == 0 || self.restarts == 0 {
            return Err(Error::invalid(format!(
                "{}: steps ({}) and restarts ({}) must be at least 1",
                self.name(),
                self.steps,
                self.restarts
            )));
        }
        let need = match self.loss {
            ApgdLoss::CrossEntropy => 2,
            ApgdLoss::Dlr => 3,
            ApgdLoss::TargetedDlr => 4,
        };
        if classes < need {
            return Err(Error::invalid(format!(
                "{}: needs a model of at least {need} classes, this one has {classes}",
                self.name()
            )));
        }
        if self.loss == ApgdLoss::TargetedDlr && self.targets == 0 {
            return Err(Error::invalid("apgd-t: at least one target class"));
        }
        Ok(())
    }

    /// Attacks the batch `x` with labels `y` (on the device, and `labels`
    /// on the host): which examples it broke, and the adversarials.
    pub(crate) fn attack<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<Outcome> {
        self.check(model.classes())?;
        let n = labels.len();
        let hashes = row_hashes(x, labels)?;
        let clean = model.logits(x)?;
        let ranked = ranked_classes(&clean)?;
        let mut out = Outcome::start(x, &ranked, labels);
        let mut best = vec![f64::NEG_INFINITY; n];
        let ranks: Vec<Option<usize>> = match self.loss {
            ApgdLoss::TargetedDlr => (2..=(self.targets + 1).min(model.classes()))
                .map(Some)
                .collect(),
            _ => vec![None],
        };
        for rank in ranks {
            for restart in 0..self.restarts {
                let active = out.unfooled();
                if active.is_empty() {
                    return Ok(out);
                }
                let salt = salt(self.loss, rank.unwrap_or(0), restart);
                let runs = in_pieces(active.len(), x.device().is_cpu(), |r| {
                    let rows = &active[r];
                    let targets = rank
                        .map(|k| {
                            let t: Vec<u32> = rows.iter().map(|&i| ranked[i][k - 1]).collect();
                            Tensor::from_vec(t, [rows.len()])?.to_device(x.device())
                        })
                        .transpose()?;
                    let hs: Vec<u64> = rows.iter().map(|&i| hashes[i]).collect();
                    let ls: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
                    self.run(
                        model,
                        &take_rows(x, rows)?,
                        &take_rows(y, rows)?,
                        &ls,
                        targets.as_ref(),
                        &hs,
                        seed,
                        salt,
                    )
                })?;
                let run_adv =
                    Tensor::cat_rows(&runs.iter().map(|r| r.adv.clone()).collect::<Vec<_>>())?;
                let broke: Vec<bool> = runs.iter().flat_map(|r| r.fooled.iter().copied()).collect();
                let loss: Vec<f64> = runs.iter().flat_map(|r| r.loss.iter().copied()).collect();
                // Keep a fooling point, or else the highest loss so far.
                let take: Vec<bool> = (0..active.len())
                    .map(|k| broke[k] || loss[k] > best[active[k]])
                    .collect();
                for (k, &i) in active.iter().enumerate() {
                    best[i] = best[i].max(loss[k]);
                }
                out.absorb(&active, &run_adv, &take, &broke)?;
            }
        }
        Ok(out)
    }

    /// One run on a batch in which every example is still unbroken.
    #[allow(clippy::too_many_arguments)]
    fn run<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
        labels: &[u32],
        targets: Option<&Tensor>,
        hashes: &[u64],
        seed: u64,
        salt: u64,
    ) -> Result<Run> {
        let (n, d) = x.shape().as_matrix().unwrap_or((0, 1));
        let eps = self.threat.eps();
        let norm = self.threat.kernel_norm();
        let loss = match (self.loss, targets) {
            (ApgdLoss::CrossEntropy, _) => RowLoss::CrossEntropy,
            (ApgdLoss::Dlr, _) => RowLoss::Dlr,
            (ApgdLoss::TargetedDlr, Some(t)) => RowLoss::DlrTargeted(t),
            (ApgdLoss::TargetedDlr, None) => return Err(Error::invalid("apgd-t: no targets")),
        };
        let mut x_adv = random_start(x, hashes, seed, salt, self.threat, eps)?;
        let at = loss_at(model, &x_adv, y, loss)?;
        let mut grad = at.grad;
        let mut fooled: Vec<bool> = at.pred.iter().zip(labels).map(|(p, y)| p != y).collect();
        let (mut x_best, mut grad_best, mut x_best_adv) =
            (x_adv.clone(), grad.clone(), x_adv.clone());
        let mut loss_best = at.loss.clone();
        let mut history = vec![at.loss];
        let mut step = vec![2.0 * eps; n];
        let mut x_prev = x_adv.clone();
        let checkpoints = Apgd::checkpoint_iterations(self.steps);
        let (mut next_check, mut last_check) = (0, 0);
        let mut best_at_check = loss_best.clone();
        let mut halved_at_check = vec![true; n];
        for i in 0..self.steps {
            let momentum = if i == 0 { 1.0 } else { 0.75 };
            let eta = vector_like(&step, x)?;
            let next = x_adv.storage().apgd_step(
                x_prev.storage(),
                grad.storage(),
                x.storage(),
                eta.storage(),
                momentum,
                eps,
                norm,
                d,
            )?;
            x_prev = std::mem::replace(&mut x_adv, tensor_like(next, x));
            let at = loss_at(model, &x_adv, y, loss)?;
            grad = at.grad;
            let newly: Vec<usize> = (0..n)
                .filter(|&r| !fooled[r] && at.pred[r] != labels[r])
                .collect();
            lerp(&mut x_best_adv, &x_adv, &newly, 0.0)?;
            newly.iter().for_each(|&r| fooled[r] = true);
            let improved: Vec<usize> = (0..n).filter(|&r| at.loss[r] > loss_best[r]).collect();
            lerp(&mut x_best, &x_adv, &improved, 0.0)?;
            lerp(&mut grad_best, &grad, &improved, 0.0)?;
            improved.iter().for_each(|&r| loss_best[r] = at.loss[r]);
            history.push(at.loss);
            if checkpoints.get(next_check) == Some(&(i + 1)) {
                let interval = i + 1 - last_check;
                (next_check, last_check) = (next_check + 1, i + 1);
                let h = history.len() - 1;
                let halve: Vec<usize> = (0..n)
                    .filter(|&r| {
                        let ups = (h + 1 - interval..=h)
                            .filter(|&j| history[j][r] > history[j - 1][r])
                            .count();
                        let oscillating = ups as f64 <= interval as f64 * self.rho;
                        let stalled = !halved_at_check[r] && best_at_check[r] >= loss_best[r];
                        halved_at_check[r] = oscillating || stalled;
                        oscillating || stalled
                    })
                    .collect();
                best_at_check.clone_from(&loss_best);
                halve.iter().for_each(|&r| step[r] /= 2.0);
                lerp(&mut x_adv, &x_best, &halve, 0.0)?;
                lerp(&mut grad, &grad_best, &halve, 0.0)?;
            }
        }
        let broken: Vec<usize> = (0..n).filter(|&r| fooled[r]).collect();
        lerp(&mut x_best, &x_best_adv, &broken, 0.0)?;
        Ok(Run {
            adv: x_best,
            fooled,
            loss: loss_best,
        })
    }
}

/// What one run returns for its rows.
struct Run {
    adv: Tensor,
    fooled: Vec<bool>,
    loss: Vec<f64>,
}

/// The salt of the random start of one run.
fn salt(loss: ApgdLoss, rank: usize, restart: usize) -> u64 {
    let kind = match loss {
        ApgdLoss::CrossEntropy => 0xa9d0_0001u64,
        ApgdLoss::Dlr => 0xa9d0_0002,
        ApgdLoss::TargetedDlr => 0xa9d0_0003,
    };
    kind ^ ((rank as u64) << 32) ^ ((restart as u64) << 48)
}
