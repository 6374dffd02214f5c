//! The TRADES and MART objectives of adversarial training, and one
//! training step with each.
//!
//! - **TRADES** (Zhang et al., "Theoretically principled trade-off between
//!   robustness and accuracy", ICML 2019): the inner maximisation starts at
//!   `x' = x + 0.001·N(0, I)` and takes `K` steps
//!   `x' ← Π(x' + α·sign ∇ₓ' Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ)))` with the clean
//!   distribution `p(x) = softmax f(x)` held fixed; the outer loss is
//!   `L = CE(f(x), y) + β·(1/B) Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ))`, differentiated
//!   through both `p(x)` and `p(x')`.
//! - **MART** (Wang et al., "Improving adversarial robustness requires
//!   revisiting misclassified examples", ICLR 2020): the inner maximisation
//!   is PGD on the cross-entropy from `x + 0.001·N(0, I)`; the outer loss is
//!   `L = CE(f(x'), y) − (1/B) Σᵢ ln(1.0001 − p(x'ᵢ)_{ŷᵢ}) +
//!   β·(1/B) Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ))·(1.0000001 − p(xᵢ)_{yᵢ})`,
//!   with `ŷᵢ = argmax_{k≠yᵢ} p(x'ᵢ)_k`: a boosted cross-entropy on the
//!   adversarial example, and a KL term weighted towards the examples the
//!   model gets wrong.
//!
//! `Π` projects onto the L∞ ball of radius ε around x and `[0, 1]`. Both
//! losses are built on the tape from `log_softmax`, `pick`, `exp`, `ln` and
//! `kl_div` (see [`crate::ops::robust_loss`]), so their gradients are the
//! tape's, checked by the gradcheck suite op by op.

use crate::attack::rowwise::{row_hashes, row_rng};
use crate::error::{Error, Result};
use crate::nn::{Model, Params};
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::train::{gradient_step, AdvTraining, StepStats};

/// Which outer loss a robust training step minimises.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Objective {
    Trades,
    Mart,
}

/// The inner maximisation and loss settings shared by TRADES and MART.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    objective: Objective,
    eps: f64,
    steps: usize,
    alpha: f64,
    beta: f64,
}

impl AdvTraining {
    /// One training step on the batch `x` with `labels`: FGSM-RS and PGD
    /// replace the batch by adversarial examples and take a plain gradient
    /// step on them; TRADES and MART take a gradient step on their own
    /// objectives (see [`crate::robust_training`]). The random draws come
    /// from `rng`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        model: &mut Model,
        optimizer: &mut Optimizer,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        lr: f64,
        rng: &mut Rng,
    ) -> Result<StepStats> {
        match self.settings() {
            None => {
                let x = self.perturb(model, &x, labels, rng)?;
                gradient_step(model, optimizer, tape, x, labels, lr)
            }
            Some(s) => {
                let x_adv = s.inner_maximum(model, &x, labels, rng.next_u64())?;
                s.outer_step(model, optimizer, tape, &x, &x_adv, labels, lr)
            }
        }
    }

    fn settings(&self) -> Option<Settings> {
        match *self {
            AdvTraining::Trades {
                eps,
                steps,
                alpha,
                beta,
            } => Some(Settings {
                objective: Objective::Trades,
                eps,
                steps,
                alpha,
                beta,
            }),
            AdvTraining::Mart {
                eps,
                steps,
                alpha,
                beta,
            } => Some(Settings {
                objective: Objective::Mart,
                eps,
                steps,
                alpha,
                beta,
            }),
            _ => None,
        }
    }

    /// The adversarial examples TRADES or MART trains on (their inner
    /// maximisation), drawn with `seed`; `None` for FGSM-RS and PGD.
    pub fn inner_maximum(
        &self,
        model: &Model,
        x: &Tensor,
        labels: &Tensor,
        seed: u64,
    ) -> Result<Option<Tensor>> {
        self.settings()
            .map(|s| s.inner_maximum(model, x, labels, seed))
            .transpose()
    }
}

impl Settings {
    /// `x + 0.001·N(0, I)`, clipped, then `steps` projected sign steps on
    /// the KL divergence (TRADES) or the cross-entropy (MART).
    fn inner_maximum(
        &self,
        model: &Model,
        x: &Tensor,
        labels: &Tensor,
        seed: u64,
    ) -> Result<Tensor> {
        let (n, d) = x.shape().as_matrix().ok_or_else(|| Error::BadShape {
            op: "robust training",
            msg: format!("expected a batch [N, features], got {}", x.shape()),
        })?;
        let host = labels.to_vec::<u32>()?;
        let mut start = x.to_f64_vec()?;
        for (row, h) in start.chunks_mut(d.max(1)).zip(row_hashes(x, &host)?) {
            let mut rng = row_rng(h, seed, 0x7ade_5000);
            row.iter_mut()
                .for_each(|v| *v = (*v + 0.001 * rng.normal()).clamp(0.0, 1.0));
        }
        let mut adv = Tensor::from_vec(start, [n, d])?
            .to_dtype(x.dtype())?
            .to_device(x.device())?
            .project_linf(x, self.eps, 0.0, 1.0)?;
        let clean = match self.objective {
            Objective::Trades => Some(model.logits(x)?),
            Objective::Mart => None,
        };
        for _ in 0..self.steps {
            let mut tape = Tape::new();
            let xv = tape.var(adv.clone());
            let z = model.forward(&mut tape, xv, false)?.logits;
            let loss = match &clean {
                Some(clean) => {
                    let p = tape.constant(clean.clone());
                    let kl = tape.kl_div(p, z)?;
                    tape.sum(kl)?
                }
                None => tape.softmax_cross_entropy(z, labels)?,
            };
            tape.backward(loss)?;
            let g = tape
                .grad(xv)
                .cloned()
                .ok_or_else(|| Error::Tape("robust training: no input gradient".into()))?;
            adv = adv.sign_step(&g, x, self.alpha, self.eps, 0.0, 1.0)?;
        }
        Ok(adv)
    }

    /// One gradient step on the outer loss.
    #[allow(clippy::too_many_arguments)]
    fn outer_step(
        &self,
        model: &mut Model,
        optimizer: &mut Optimizer,
        tape: &mut Tape,
        x: &Tensor,
        x_adv: &Tensor,
        labels: &Tensor,
        lr: f64,
    ) -> Result<StepStats> {
        tape.clear();
        let n = labels.numel();
        let xv = tape.constant(x.clone());
        let av = tape.constant(x_adv.clone());
        // Two passes through the same parameters: each pass records its
        // own parameter leaves, and a parameter's gradient is the sum over
        // the two.
        let clean = model.forward(tape, xv, true)?;
        let adversarial = model.forward(tape, av, true)?;
        let (z, z_adv) = (clean.logits, adversarial.logits);
        let loss = match self.objective {
            Objective::Trades => trades_loss(tape, z, z_adv, labels, self.beta)?,
            Objective::Mart => mart_loss(tape, z, z_adv, labels, self.beta)?,
        };
        tape.backward(loss)?;
        let grads = clean
            .params
            .iter()
            .zip(&adversarial.params)
            .map(|(&a, &b)| match (tape.grad(a), tape.grad(b)) {
                (Some(ga), Some(gb)) => ga.add(gb),
                _ => Err(Error::Tape("a parameter received no gradient".into())),
            })
            .collect::<Result<Params<_>>>()?;
        let stats = StepStats {
            loss: tape.value(loss)?.to_scalar()?,
            correct: tape.value(z)?.argmax_rows()?.count_equal(labels)?,
        };
        tape.clear();
        debug_assert_eq!(n, labels.numel());
        optimizer.step(&mut model.params_mut(), &grads, lr)?;
        Ok(stats)
    }
}

/// `CE(z, y) + β·mean KL(softmax z ‖ softmax z_adv)`.
fn trades_loss(tape: &mut Tape, z: Var, z_adv: Var, labels: &Tensor, beta: f64) -> Result<Var> {
    let natural = tape.softmax_cross_entropy(z, labels)?;
    let kl = tape.kl_div(z, z_adv)?;
    let kl = tape.mean(kl)?;
    let robust = tape.scale(kl, beta)?;
    tape.add(natural, robust)
}

/// MART's loss (module documentation).
fn mart_loss(tape: &mut Tape, z: Var, z_adv: Var, labels: &Tensor, beta: f64) -> Result<Var> {
    let n = labels.numel();
    let like = |v: f64, t: &Tape| -> Result<Tensor> {
        Tensor::full([n], v, t.value(z)?.dtype()).to_device(t.value(z)?.device())
    };
    // The most likely wrong class on the adversarial example.
    let wrong = {
        let host = labels.to_vec::<u32>()?;
        let zs = tape.value(z_adv)?.to_f64_vec()?;
        let c = zs.len() / n.max(1);
        let v: Vec<u32> = zs
            .chunks(c.max(1))
            .zip(&host)
            .map(|(row, &y)| {
                (0..c)
                    .filter(|&k| k != y as usize)
                    .fold(None, |best: Option<usize>, k| match best {
                        Some(b) if row[b] >= row[k] => Some(b),
                        _ => Some(k),
                    })
                    .unwrap_or(0) as u32
            })
            .collect();
        Tensor::from_vec(v, [n])?.to_device(labels.device())?
    };
    // CE(z_adv, y) − mean ln(1.0001 − p_adv[ŷ]).
    let ce = tape.softmax_cross_entropy(z_adv, labels)?;
    let log_p_adv = tape.log_softmax(z_adv)?;
    let picked = tape.pick(log_p_adv, &wrong)?;
    let p_wrong = tape.exp(picked)?;
    let minus = tape.scale(p_wrong, -1.0)?;
    let offset = tape.constant(like(1.0001, tape)?);
    let rest = tape.add(offset, minus)?;
    let log_rest = tape.ln(rest)?;
    let boost = tape.mean(log_rest)?;
    let boost = tape.scale(boost, -1.0)?;
    // mean KL(p ‖ p_adv)·(1.0000001 − p[y]).
    let log_p = tape.log_softmax(z)?;
    let picked = tape.pick(log_p, labels)?;
    let p_true = tape.exp(picked)?;
    let minus = tape.scale(p_true, -1.0)?;
    let offset = tape.constant(like(1.000_000_1, tape)?);
    let weight = tape.add(offset, minus)?;
    let kl = tape.kl_div(z, z_adv)?;
    let weighted = tape.mul(kl, weight)?;
    let robust = tape.mean(weighted)?;
    let robust = tape.scale(robust, beta)?;
    let adv = tape.add(ce, boost)?;
    tape.add(adv, robust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{gradcheck, GradcheckOptions};
    use crate::DType;

    /// Both outer losses, as functions of the two logit matrices, against
    /// finite differences in f64.
    #[test]
    fn the_outer_losses_match_finite_differences() {
        let z = Tensor::rand_uniform([6, 5], -2.0, 2.0, 1, DType::F64);
        let za = Tensor::rand_uniform([6, 5], -2.0, 2.0, 2, DType::F64);
        let y = Tensor::from_vec(vec![0u32, 4, 2, 1, 3, 2], [6]).unwrap();
        for objective in [Objective::Trades, Objective::Mart] {
            let report = gradcheck(
                |t, v| match objective {
                    Objective::Trades => trades_loss(t, v[0], v[1], &y, 6.0),
                    Objective::Mart => mart_loss(t, v[0], v[1], &y, 6.0),
                },
                &[z.clone(), za.clone()],
                &GradcheckOptions::default(),
            )
            .unwrap();
            assert!(report.passed(), "{objective:?}:\n{report}");
        }
    }
}
