//! The Carlini–Wagner L2 attack (Carlini and Wagner, 2017).

use serde::{Deserialize, Serialize};

use super::common::{argmax, host_tensor, Rows};
use super::{Goal, Target};
use crate::backend::{BackendStorage, UpdateRule};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// Carlini–Wagner L2: for each example, the smallest perturbation found by
/// minimising, over `w` with the change of variables
/// `x'(w) = (tanh w + 1)/2` (so `x'` stays in `[0, 1]` without clipping),
///
/// `‖x'(w) − x‖₂² + c·max(Z_y(x') − max_{j≠y} Z_j(x'), −κ)`
///
/// (targeted at `t`: `c·max(max_{j≠t} Z_j(x') − Z_t(x'), −κ)`), `Z` the
/// logits, with Adam from `w₀ = atanh((2x − 1)(1 − 10⁻⁶))`. A binary search
/// over `c`, per example, runs `search_steps` times: after a search step
/// that found an adversarial (misclassified, or the target, with margin
/// ≥ κ) `c` moves down to the midpoint with its lower bound, otherwise up to
/// the midpoint with its upper bound (×10 while there is none). The result
/// is the successful `x'` of smallest L2 distance over all steps, or the
/// last iterate for an example never fooled; with `eps` it is then
/// projected onto the L2 ball of radius `eps`.
///
/// Defaults: `κ = 0`, `c₀ = 0.1`, 5 search steps of 100 Adam steps with
/// learning rate 0.01 (the paper uses more: 9 × 10 000).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarliniWagner {
    /// The L2 budget the result is projected onto; `None` leaves it
    /// unbounded.
    pub eps: Option<f64>,
    /// The confidence margin κ ≥ 0.
    pub confidence: f64,
    /// The initial trade-off constant `c`.
    pub initial_c: f64,
    /// Binary search steps over `c`.
    pub search_steps: usize,
    /// Adam steps per search step.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Untargeted or targeted.
    pub target: Target,
}

impl CarliniWagner {
    /// Untargeted C&W with the defaults above.
    pub fn new(eps: Option<f64>) -> CarliniWagner {
        CarliniWagner {
            eps,
            confidence: 0.0,
            initial_c: 0.1,
            search_steps: 5,
            steps: 100,
            lr: 0.01,
            target: Target::Untargeted,
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.confidence >= 0.0
            && self.confidence.is_finite()
            && self.initial_c > 0.0
            && self.initial_c.is_finite()
            && self.lr > 0.0
            && self.lr.is_finite()
            && self.steps > 0
            && self.search_steps > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "cw: needs confidence ≥ 0, initial c > 0, lr > 0, steps ≥ 1, search steps ≥ 1; got {self:?}"
            )))
        }
    }

    pub(crate) fn perturb(&self, model: &Model, x: &Tensor, goal: &Goal) -> Result<Tensor> {
        self.check()?;
        let rows = Rows::new(x)?;
        let (n, _) = x.shape().as_matrix().unwrap_or((0, 0));
        let classes = model.classes();
        let w0: Vec<f64> = x
            .to_f64_vec()?
            .into_iter()
            .map(|v| ((2.0 * v - 1.0) * (1.0 - 1e-6)).atanh())
            .collect();
        let w0 = host_tensor(&w0, x.dims(), x)?;
        let half = Tensor::full(x.shape().clone(), 0.5, x.dtype()).to_device(x.device())?;
        let ones_c = host_tensor(&vec![1.0; classes], &[classes, 1], x)?;

        let mut c = vec![self.initial_c; n];
        let (mut lower, mut upper) = (vec![0.0; n], vec![f64::INFINITY; n]);
        let mut best_dist = vec![f64::INFINITY; n];
        let mut best: Option<Tensor> = None;
        let mut last = x.clone();
        for _ in 0..self.search_steps {
            let mut w = w0.clone();
            let zeros = Tensor::zeros(x.shape().clone(), x.dtype()).to_device(x.device())?;
            let (mut m, mut v) = (zeros.clone(), zeros);
            let mut fooled = vec![false; n];
            for t in 1..=self.steps {
                let mut tape = Tape::new();
                let wv = tape.var(w.clone());
                let th = tape.tanh(wv)?;
                let scaled = tape.scale(th, 0.5)?;
                let h = tape.constant(half.clone());
                let xa = tape.add(scaled, h)?;
                let xc = tape.constant(x.clone());
                let diff = tape.sub(xa, xc)?;
                let sq = tape.mul(diff, diff)?;
                let dist = tape.sum(sq)?;
                let fwd = model.forward(&mut tape, xa, false)?;
                let z = tape.value(fwd.logits)?.to_f64_vec()?;
                // The margin mask cᵢ·(onehot(a) − onehot(b)): Σⱼ Zᵢⱼ Mᵢⱼ = cᵢ·(Z_a − Z_b).
                let mut mask = vec![0.0; n * classes];
                let mut kappa = vec![0.0; n];
                let mut success = vec![false; n];
                for i in 0..n {
                    let row = &z[i * classes..(i + 1) * classes];
                    let k = goal.host[i] as usize;
                    let (other, z_other) = row.iter().enumerate().filter(|&(j, _)| j != k).fold(
                        (k, f64::NEG_INFINITY),
                        |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                    );
                    if other == k {
                        continue;
                    }
                    let (a, b) = if goal.targeted {
                        (other, k)
                    } else {
                        (k, other)
                    };
                    mask[i * classes + a] += c[i];
                    mask[i * classes + b] -= c[i];
                    kappa[i] = c[i] * self.confidence;
                    let pred = argmax(row).0;
                    success[i] = if goal.targeted {
                        pred == k && row[k] - z_other >= self.confidence
                    } else {
                        pred != k && z_other - row[k] >= self.confidence
                    };
                }
                let mv = tape.constant(host_tensor(&mask, &[n, classes], x)?);
                let picked = tape.mul(fwd.logits, mv)?;
                let ones = tape.constant(ones_c.clone());
                let margin = tape.matmul(picked, ones)?;
                let kv = tape.constant(host_tensor(&kappa, &[n, 1], x)?);
                let shifted = tape.add(margin, kv)?;
                let hinge = tape.relu(shifted)?;
                let f = tape.sum(hinge)?;
                let loss = tape.add(dist, f)?;
                tape.backward(loss)?;

                let xa_value = tape.value(xa)?.clone();
                let d2 = rows.sums(tape.value(sq)?)?;
                let improved: Vec<bool> =
                    (0..n).map(|i| success[i] && d2[i] < best_dist[i]).collect();
                if improved.contains(&true) {
                    for i in (0..n).filter(|&i| improved[i]) {
                        best_dist[i] = d2[i];
                    }
                    best = Some(match best {
                        None => xa_value.clone(),
                        Some(b) => rows.select(&improved, &xa_value, &b)?,
                    });
                }
                for i in 0..n {
                    fooled[i] |= success[i];
                }
                last = xa_value;

                let g = tape
                    .grad(wv)
                    .cloned()
                    .ok_or_else(|| Error::Tape("cw: w received no gradient".into()))?;
                let rule = UpdateRule::Adam {
                    lr: self.lr,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                    t: t as u64,
                };
                w.storage_mut()
                    .update(g.storage(), m.storage_mut(), v.storage_mut(), rule)?;
            }
            for i in 0..n {
                if fooled[i] {
                    upper[i] = upper[i].min(c[i]);
                    c[i] = (lower[i] + upper[i]) / 2.0;
                } else {
                    lower[i] = lower[i].max(c[i]);
                    c[i] = if upper[i].is_finite() {
                        (lower[i] + upper[i]) / 2.0
                    } else {
                        c[i] * 10.0
                    };
                }
            }
        }
        let found: Vec<bool> = best_dist.iter().map(|d| d.is_finite()).collect();
        let adv = match best {
            Some(b) => rows.select(&found, &b, &last)?,
            None => last,
        };
        let adv = adv.clamp(0.0, 1.0)?;
        match self.eps {
            Some(eps) => rows.project_l2(&adv, x, eps),
            None => Ok(adv),
        }
    }
}
