//! The fast adaptive boundary attack (Croce & Hein, "Minimally distorted
//! adversarial examples with a fast adaptive boundary attack", ICML 2020):
//! a minimum-norm attack that steps onto the linearised decision boundary
//! while staying close to the clean input.

use serde::{Deserialize, Serialize};

use super::common::Rows;
use super::model::Classifier;
use super::rowwise::{
    in_pieces, lerp, predictions, put_rows, random_start, ranked_classes, row_hashes, take_rows,
    tensor_like, vector_like,
};
use super::{Outcome, Threat};
use crate::backend::{BackendStorage, Norm};
use crate::error::{Error, Result};
use crate::tape::Tape;
use crate::tensor::Tensor;

/// FAB, per example, from `x⁽⁰⁾ = x` (later restarts: a random point at
/// distance `eps/2`): with the boundary between the label y and a class k
/// linearised at `x⁽ᵏ⁾`, `{z : f + w·(z − x⁽ᵏ⁾) = 0}` (`f = z_k − z_y`,
/// `w = ∇ₓ(z_k − z_y)`), and `d₁`, `d₂` the smallest steps that put
/// `x⁽ᵏ⁾` and `x` on it inside `[0, 1]`,
///
/// `x⁽ᵏ⁺¹⁾ = clip₀¹((1 − a)(x⁽ᵏ⁾ + η·d₁) + a(x + η·d₂))`,
/// `a = min(‖d₁‖/(‖d₁‖ + ‖d₂‖), α_max)`,
///
/// the bias towards `x` keeping the perturbation small; whenever
/// `x⁽ᵏ⁺¹⁾` is misclassified it is kept if it is the closest one so far,
/// and pulled back towards `x`: `x⁽ᵏ⁺¹⁾ ← x + β(x⁽ᵏ⁺¹⁾ − x)`.
///
/// FAB-T (`targeted`) takes k as each of the `targets` classes ranked
/// 2nd, 3rd, … by the clean logits in turn; untargeted FAB takes, at every
/// step, the class whose linearised boundary is nearest,
/// `argmin_k |f_k| / ‖w_k‖_*` (dual norm). An example counts as broken when
/// its closest misclassified point lies within `eps`; otherwise the result
/// is `x` itself. Parameters of the paper: `α_max = 0.1`, `η = 1.05`,
/// `β = 0.9`; 100 steps, one run (per target), 9 targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fab {
    /// The norm minimised and the radius a success must lie within.
    pub threat: Threat,
    /// FAB-T (the top classes in turn) or untargeted FAB.
    pub targeted: bool,
    /// Target classes of FAB-T.
    pub targets: usize,
    /// Iterations per run.
    pub steps: usize,
    /// Runs per target (later ones from random starts).
    pub restarts: usize,
    /// The largest weight `α_max` on the step from `x`.
    pub alpha_max: f64,
    /// The overshoot `η`.
    pub eta: f64,
    /// The backward step `β`.
    pub beta: f64,
}

impl Fab {
    /// FAB (or FAB-T) in `threat` with the paper's parameters.
    pub fn new(threat: Threat, targeted: bool) -> Fab {
        Fab {
            threat,
            targeted,
            targets: 9,
            steps: 100,
            restarts: 1,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }

    /// `fab-t` or `fab`.
    pub fn name(&self) -> &'static str {
        if self.targeted {
            "fab-t"
        } else {
            "fab"
        }
    }

    fn check(&self, classes: usize) -> Result<()> {
        if self.steps == 0 || self.restarts == 0 || (self.targeted && self.targets == 0) {
            return Err(Error::invalid(format!(
                "{}: steps, restarts and targets must be at least 1",
                self.name()
            )));
        }
        if classes < 2 {
            return Err(Error::invalid(format!(
                "{}: needs at least two classes",
                self.name()
            )));
        }
        Ok(())
    }

    /// Attacks the batch `x` with labels `labels`.
    pub(crate) fn attack<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<Outcome> {
        self.check(model.classes())?;
        let hashes = row_hashes(x, labels)?;
        let ranked = ranked_classes(&model.logits(x)?)?;
        let mut out = Outcome::start(x, &ranked, labels);
        let ranks: Vec<Option<usize>> = if self.targeted {
            (2..=(self.targets + 1).min(model.classes()))
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        for rank in ranks {
            for restart in 0..self.restarts {
                let active = out.unfooled();
                if active.is_empty() {
                    return Ok(out);
                }
                let salt =
                    0xfab0_0000 ^ ((rank.unwrap_or(0) as u64) << 32) ^ ((restart as u64) << 48);
                let runs = in_pieces(active.len(), x.device().is_cpu(), |r| {
                    let rows = &active[r];
                    let targets: Option<Vec<u32>> =
                        rank.map(|k| rows.iter().map(|&i| ranked[i][k - 1]).collect());
                    let start = (restart > 0).then(|| {
                        let hs: Vec<u64> = rows.iter().map(|&i| hashes[i]).collect();
                        (hs, seed, salt)
                    });
                    let ls: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
                    self.run(model, &take_rows(x, rows)?, &ls, targets.as_deref(), start)
                })?;
                let run_adv =
                    Tensor::cat_rows(&runs.iter().map(|r| r.0.clone()).collect::<Vec<_>>())?;
                let broke: Vec<bool> = runs.iter().flat_map(|r| r.1.iter().copied()).collect();
                out.absorb(&active, &run_adv, &broke, &broke)?;
            }
        }
        Ok(out)
    }

    /// One run on a batch of correctly classified examples: the closest
    /// adversarials found (x where none is within eps) and which rows broke.
    fn run<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        labels: &[u32],
        targets: Option<&[u32]>,
        random: Option<(Vec<u64>, u64, u64)>,
    ) -> Result<(Tensor, Vec<bool>)> {
        let (n, d) = x.shape().as_matrix().unwrap_or((0, 1));
        let norm = self.threat.kernel_norm();
        let y = Tensor::from_vec(labels.to_vec(), [n])?.to_device(x.device())?;
        let t = targets
            .map(|t| Tensor::from_vec(t.to_vec(), [n])?.to_device(x.device()))
            .transpose()?;
        let mut x1 = match &random {
            Some((hashes, seed, salt)) => random_start(
                x,
                hashes,
                *seed,
                *salt,
                self.threat,
                self.threat.eps() / 2.0,
            )?,
            None => x.clone(),
        };
        let mut adv = x.clone();
        let mut best = vec![f64::INFINITY; n];
        // The boundary linearised at the rows `which` of `points`.
        let linearise = |points: &Tensor, which: &[usize]| -> Result<Linear> {
            let ls: Vec<u32> = which.iter().map(|&i| labels[i]).collect();
            let sub = if which.len() == n {
                points.clone()
            } else {
                take_rows(points, which)?
            };
            match &t {
                Some(t) => {
                    linearise_towards(model, &sub, &take_rows(&y, which)?, &take_rows(t, which)?)
                }
                None => linearise_nearest(model, &sub, &ls, norm),
            }
        };
        let all: Vec<usize> = (0..n).collect();
        let mut at = linearise(&x1, &all)?;
        for step in 0..self.steps {
            let (next, dist) = x1.storage().fab_step(
                x.storage(),
                at.w.storage(),
                vector_like(&at.f, x)?.storage(),
                self.eta,
                self.alpha_max,
                norm,
                d,
            )?;
            let mut next = tensor_like(next, x);
            let dist = Tensor::from_storage(dist, [n].into()).to_f64_vec()?;
            // The next linearisation's forward pass also gives the predictions.
            let last = step + 1 == self.steps;
            let mut next_at = if last {
                Linear {
                    f: Vec::new(),
                    w: next.clone(),
                    pred: predictions(model, &next)?,
                }
            } else {
                linearise(&next, &all)?
            };
            let hits: Vec<usize> = (0..n).filter(|&i| next_at.pred[i] != labels[i]).collect();
            let closer: Vec<usize> = hits
                .iter()
                .copied()
                .filter(|&i| dist[i] < best[i])
                .collect();
            lerp(&mut adv, &next, &closer, 0.0)?;
            closer.iter().for_each(|&i| best[i] = dist[i]);
            lerp(&mut next, x, &hits, self.beta)?;
            if !last && !hits.is_empty() {
                let moved = linearise(&next, &hits)?;
                put_rows(&mut next_at.w, &hits, &moved.w)?;
                for (k, &i) in hits.iter().enumerate() {
                    next_at.f[i] = moved.f[k];
                }
            }
            x1 = next;
            at = next_at;
        }
        let eps = self.threat.eps();
        let broke: Vec<bool> = best.iter().map(|&b| b <= eps).collect();
        let failed: Vec<usize> = (0..n).filter(|&i| !broke[i]).collect();
        lerp(&mut adv, x, &failed, 0.0)?;
        Ok((adv, broke))
    }
}

/// A boundary linearised per row, `f + w·(z − x) = 0`, and the predictions
/// at x.
struct Linear {
    f: Vec<f64>,
    w: Tensor,
    pred: Vec<u32>,
}

/// `f = z_t − z_y` per row at `x` and `w = ∇ₓ f`.
fn linearise_towards<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    y: &Tensor,
    t: &Tensor,
) -> Result<Linear> {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let z = model.record_logits(&mut tape, xv)?;
    let (zt, zy) = (tape.pick(z, t)?, tape.pick(z, y)?);
    let f = tape.sub(zt, zy)?;
    let total = tape.sum(f)?;
    tape.backward(total)?;
    let w = tape
        .grad(xv)
        .cloned()
        .ok_or_else(|| Error::Tape("fab: the input received no gradient".into()))?;
    Ok(Linear {
        f: tape.value(f)?.to_f64_vec()?,
        w,
        pred: tape.value(z)?.argmax_rows()?.to_vec::<u32>()?,
    })
}

/// Per row, the class k ≠ y whose linearised boundary is nearest,
/// `argmin_k |z_k − z_y| / ‖∇(z_k − z_y)‖_*`, and that boundary's `f`, `w`.
fn linearise_nearest<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    labels: &[u32],
    norm: Norm,
) -> Result<Linear> {
    let n = labels.len();
    let rows = Rows::new(x)?;
    let classes = model.classes();
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let z = model.record_logits(&mut tape, xv)?;
    let mut sums = Vec::with_capacity(classes);
    for k in 0..classes {
        let col = Tensor::from_vec(vec![k as u32; n], [n])?.to_device(x.device())?;
        let picked = tape.pick(z, &col)?;
        sums.push(tape.sum(picked)?);
    }
    let logits = tape.value(z)?.to_f64_vec()?;
    let mut grads = Vec::with_capacity(classes);
    for s in sums {
        tape.backward(s)?;
        grads.push(
            tape.grad(xv)
                .cloned()
                .ok_or_else(|| Error::Tape("fab: the input received no gradient".into()))?,
        );
    }
    // ∇z_y per row.
    let mut gy = grads[0].scale(0.0)?;
    for (k, g) in grads.iter().enumerate() {
        let of_k: Vec<usize> = (0..n).filter(|&i| labels[i] as usize == k).collect();
        lerp(&mut gy, g, &of_k, 0.0)?;
    }
    let mut nearest = vec![(f64::INFINITY, 0usize); n];
    let mut diffs = Vec::with_capacity(classes);
    for (k, g) in grads.iter().enumerate() {
        let diff = g.sub(&gy)?;
        let dual = match norm {
            Norm::Linf => rows.l1(&diff)?,
            Norm::L2 => rows.l2(&diff)?,
        };
        for i in 0..n {
            if k == labels[i] as usize {
                continue;
            }
            let f = logits[i * classes + k] - logits[i * classes + labels[i] as usize];
            let dist = f.abs() / (dual[i] + 1e-12);
            if dist < nearest[i].0 {
                nearest[i] = (dist, k);
            }
        }
        diffs.push(diff);
    }
    let mut w = gy.scale(0.0)?;
    for (k, diff) in diffs.iter().enumerate() {
        let of_k: Vec<usize> = (0..n).filter(|&i| nearest[i].1 == k).collect();
        lerp(&mut w, diff, &of_k, 0.0)?;
    }
    let f = (0..n)
        .map(|i| logits[i * classes + nearest[i].1] - logits[i * classes + labels[i] as usize])
        .collect();
    let pred = tape.value(z)?.argmax_rows()?.to_vec::<u32>()?;
    Ok(Linear { f, w, pred })
}
