//! What every attack shares: input checks, per-example gradients of the
//! attack objective, per-row reductions and scalings, projections.
//!
//! Rows of a batch are independent examples. The core has no row-wise ops,
//! so the row reductions here are matrix products with a ones vector
//! (`s = X·1`, on the tensor's device) and the row scalings multiply by a
//! broadcast column (`S = s·1ᵀ`); only `N` numbers per reduction cross to
//! the host.

use rayon::prelude::*;

use super::model::Classifier;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// A host vector as a tensor of `dtype` on the device of `like`.
pub(crate) fn host_tensor(values: &[f64], shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), shape.to_vec())?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// Checks a batch: `x` a float matrix `[N, model inputs]` with every value
/// finite and in `[0, 1]`, `labels` u32 `[N]` with every label a class of the
/// model. Returns `(N, features)` and the labels on the host.
pub(crate) fn check_batch<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(usize, usize, Vec<u32>)> {
    let (n, d) = x.shape().as_matrix().ok_or_else(|| Error::BadShape {
        op: "attack",
        msg: format!("inputs must be a batch [N, features], got {}", x.shape()),
    })?;
    if !x.dtype().is_float() || x.dtype().is_half() {
        return Err(Error::invalid(format!(
            "attack: inputs must be f32 or f64 pixels in [0, 1], got {}",
            x.dtype()
        )));
    }
    if d != model.input_size() {
        return Err(Error::BadShape {
            op: "attack",
            msg: format!(
                "the model {} expects {} input features, the batch has {d} (shape {})",
                model.describe(),
                model.input_size(),
                x.shape()
            ),
        });
    }
    if labels.dtype() != DType::U32 || labels.dims() != [n] {
        return Err(Error::BadShape {
            op: "attack",
            msg: format!(
                "labels must be u32 [{n}] (one per input row), got {} {}",
                labels.dtype(),
                labels.shape()
            ),
        });
    }
    if let Some((i, v)) = x.first_outside(0.0, 1.0)? {
        return Err(Error::invalid(format!(
            "attack: inputs must lie in [0, 1] (pixel / 255), but row {} column {} is {v}",
            i / d.max(1),
            i % d.max(1)
        )));
    }
    let labels = labels.to_vec::<u32>()?;
    let classes = model.classes();
    if let Some((row, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(Error::LabelOutOfRange {
            op: "attack",
            row,
            label: u64::from(label),
            classes,
        });
    }
    Ok((n, d, labels))
}

/// Row-wise reductions and scalings of `[N, d]` tensors, built from matrix
/// products so they run on the tensors' device.
pub(crate) struct Rows {
    /// `1 ∈ ℝ^{d×1}`: `X·1` sums each row.
    ones_col: Tensor,
    /// `1 ∈ ℝ^{1×d}`: `s·1ᵀ` repeats a column across `d` columns.
    ones_row: Tensor,
    n: usize,
    like: Tensor,
}

impl Rows {
    /// Helpers for batches shaped and placed like `x: [N, d]`.
    pub(crate) fn new(x: &Tensor) -> Result<Rows> {
        let (n, d) = x.shape().as_matrix().ok_or_else(|| Error::BadShape {
            op: "attack",
            msg: format!("expected [N, d], got {}", x.shape()),
        })?;
        let ones = vec![1.0; d];
        Ok(Rows {
            ones_col: host_tensor(&ones, &[d, 1], x)?,
            ones_row: host_tensor(&ones, &[1, d], x)?,
            n,
            like: x.clone(),
        })
    }

    /// `sᵢ = Σⱼ tᵢⱼ`.
    pub(crate) fn sums(&self, t: &Tensor) -> Result<Vec<f64>> {
        t.matmul(&self.ones_col)?.to_f64_vec()
    }

    /// `‖tᵢ‖₂ = √(Σⱼ tᵢⱼ²)`.
    pub(crate) fn l2(&self, t: &Tensor) -> Result<Vec<f64>> {
        Ok(self.sums(&t.mul(t)?)?.into_iter().map(f64::sqrt).collect())
    }

    /// `‖tᵢ‖₁ = Σⱼ tᵢⱼ·sign(tᵢⱼ)`.
    pub(crate) fn l1(&self, t: &Tensor) -> Result<Vec<f64>> {
        self.sums(&t.mul(&t.sign()?)?)
    }

    /// The column `s` repeated across the columns: `S = s·1ᵀ`, `Sᵢⱼ = sᵢ`
    /// exactly (each entry is one product `sᵢ·1`).
    pub(crate) fn broadcast(&self, s: &[f64]) -> Result<Tensor> {
        debug_assert_eq!(s.len(), self.n);
        host_tensor(s, &[self.n, 1], &self.like)?.matmul(&self.ones_row)
    }

    /// `tᵢ ← sᵢ·tᵢ` for each row.
    pub(crate) fn scale(&self, t: &Tensor, s: &[f64]) -> Result<Tensor> {
        t.mul(&self.broadcast(s)?)
    }

    /// Row `i` of `a` where `take_a[i]`, else row `i` of `b`, exactly:
    /// `a⊙M + b⊙(1 − M)` with `M` a 0/1 row mask.
    pub(crate) fn select(&self, take_a: &[bool], a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let m: Vec<f64> = take_a.iter().map(|&t| f64::from(u8::from(t))).collect();
        let not_m: Vec<f64> = m.iter().map(|v| 1.0 - v).collect();
        a.mul(&self.broadcast(&m)?)?
            .add(&b.mul(&self.broadcast(&not_m)?)?)
    }

    /// `tᵢ / ‖tᵢ‖₂` (rows of norm 0 stay 0).
    pub(crate) fn normalize_l2(&self, t: &Tensor) -> Result<Tensor> {
        let inv: Vec<f64> = self.l2(t)?.into_iter().map(inv_or_zero).collect();
        self.scale(t, &inv)
    }

    /// The projection onto `{x' : ‖x' − x‖₂ ≤ eps} ∩ [0, 1]ᵈ`, approximated
    /// as usual by the L2 projection `δ ← δ·min(1, eps/‖δ‖₂)` followed by
    /// clipping (clipping towards `x ∈ [0,1]` only shrinks `|δⱼ|`, so the
    /// result stays in the ball).
    pub(crate) fn project_l2(&self, x_adv: &Tensor, x: &Tensor, eps: f64) -> Result<Tensor> {
        let delta = x_adv.sub(x)?;
        let factors: Vec<f64> = self
            .l2(&delta)?
            .into_iter()
            .map(|norm| if norm > eps { eps / norm } else { 1.0 })
            .collect();
        x.add(&self.scale(&delta, &factors)?)?.clamp(0.0, 1.0)
    }
}

/// `1/v`, or 0 where `v` is 0 or not finite.
pub(crate) fn inv_or_zero(v: f64) -> f64 {
    if v > 0.0 && v.is_finite() {
        1.0 / v
    } else {
        0.0
    }
}

/// The gradient of the attack objective, one row per example, and the
/// logits at `x`.
///
/// The objective is the summed cross-entropy `Σᵢ CE(f(xᵢ), yᵢ)` to ascend
/// (untargeted, `yᵢ` the true labels), or `−Σᵢ CE(f(xᵢ), tᵢ)` to ascend
/// (targeted, `tᵢ` the targets). The sum, not the batch mean, makes row `i`
/// exactly `∇CE(f(xᵢ), yᵢ)` whatever the batch size: the tape's
/// cross-entropy backward computes `(g/N)·(p − onehot(y))` and here
/// `g = ±N`, so `g/N = ±1` exactly.
///
/// Fails with [`crate::Error::NonFinite`] if the objective is NaN or
/// infinite, which reads it back from a device; see
/// [`objective_gradient_unchecked`].
pub(crate) fn objective_gradient(
    model: &Model,
    x: &Tensor,
    classes: &Tensor,
    targeted: bool,
) -> Result<(Tensor, Tensor)> {
    gradient_of_objective(model, x, classes, targeted, true)
}

/// [`objective_gradient`] without reading the objective back to check it:
/// the steps of an iterative attack after its first, whose loss was
/// checked, run on the device without a blocking read.
pub(crate) fn objective_gradient_unchecked(
    model: &Model,
    x: &Tensor,
    classes: &Tensor,
    targeted: bool,
) -> Result<(Tensor, Tensor)> {
    gradient_of_objective(model, x, classes, targeted, false)
}

fn gradient_of_objective(
    model: &Model,
    x: &Tensor,
    classes: &Tensor,
    targeted: bool,
    check: bool,
) -> Result<(Tensor, Tensor)> {
    let n = x.dims().first().copied().unwrap_or(0) as f64;
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let fwd = model.forward(&mut tape, xv, false)?;
    let ce = tape.softmax_cross_entropy(fwd.logits, classes)?;
    let objective = tape.scale(ce, if targeted { -n } else { n })?;
    if check {
        tape.backward(objective)?;
    } else {
        tape.backward_unchecked(objective)?;
    }
    let grad = tape
        .grad(xv)
        .cloned()
        .ok_or_else(|| Error::Tape("attack: the input received no gradient".into()))?;
    Ok((grad, tape.value(fwd.logits)?.clone()))
}

/// Runs `attack` on row pieces of the batch tensors (inputs, centers,
/// classes: whatever the attack reads per example) in parallel and stacks
/// the results on the CPU (on a GPU, `attack` gets the whole batch). L∞
/// PGD and BIM of two steps or more run this way: each thread then runs
/// whole steps on its own rows, with no hand-off between threads inside a
/// step and a smaller working set.
///
/// Every example's result is the same bits as with the whole batch, so the
/// pieces may depend on the thread count: each row's forward pass, loss
/// gradient (the objective is `±N·mean CE`, so the `N`s cancel exactly) and
/// step involve that row alone.
pub(crate) fn by_pieces<const K: usize>(
    batch: [&Tensor; K],
    attack: impl Fn([Tensor; K]) -> Result<Tensor> + Sync,
) -> Result<Tensor> {
    /// No piece is smaller than this many rows.
    const MIN_ROWS: usize = 64;
    let n = batch[0].dims().first().copied().unwrap_or(0);
    let pieces = (2 * rayon::current_num_threads()).min(n / MIN_ROWS);
    if !batch[0].device().is_cpu() || pieces < 2 {
        return attack(batch.map(Tensor::clone));
    }
    let bounds: Vec<(usize, usize)> = (0..pieces)
        .map(|i| (i * n / pieces, (i + 1) * n / pieces))
        .collect();
    let precision = crate::precision::Precision::current();
    let parts = bounds
        .par_iter()
        .map(|&(lo, hi)| {
            let mut piece = Vec::with_capacity(K);
            for t in batch {
                piece.push(t.rows(lo..hi)?);
            }
            let piece: [Tensor; K] = piece.try_into().map_err(|_| Error::invalid("by_pieces"))?;
            crate::precision::autocast(precision, || attack(piece))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat_rows(&parts)
}

/// How well an adversarial example does for its attacker: whether it fools
/// the model (untargeted: predicted ≠ label; targeted: predicted = target),
/// then the objective value (untargeted: `CE(y)`; targeted: `−CE(t)`).
/// Larger is better for the attacker, success first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Score {
    pub success: bool,
    pub objective: f64,
}

impl Score {
    /// Whether `self` is strictly better for the attacker than `other`.
    pub(crate) fn beats(self, other: Score) -> bool {
        (self.success, self.objective) > (other.success, other.objective)
            && !(self.success == other.success && self.objective.is_nan())
    }
}

/// The per-example [`Score`] of logits `[N, C]` against `classes` (labels,
/// or targets when `targeted`).
pub(crate) fn scores(logits: &Tensor, classes: &[u32], targeted: bool) -> Result<Vec<Score>> {
    let c = logits.dims().get(1).copied().unwrap_or(1).max(1);
    let z = logits.to_f64_vec()?;
    Ok(z.chunks(c)
        .zip(classes)
        .map(|(row, &k)| {
            let (pred, max) = argmax(row);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let ce = lse - row[k as usize];
            let hit = pred == k as usize;
            Score {
                success: if targeted { hit } else { !hit },
                objective: if targeted { -ce } else { ce },
            }
        })
        .collect())
}

/// The index and value of the largest entry (the first on ties).
pub(crate) fn argmax(row: &[f64]) -> (usize, f64) {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
}

/// Makes sure every row of `x_adv` lies within L2 distance `eps` of `x` as
/// measured in f64 on the stored values (the f32 arithmetic of the
/// projections can overshoot by an ulp or so); violating rows are shrunk
/// towards `x` on the host. Returns `x_adv` itself when nothing needs fixing.
pub(crate) fn enforce_l2(x_adv: Tensor, x: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dims().get(1).copied().unwrap_or(1).max(1);
    let xs = x.to_f64_vec()?;
    let mut adv = x_adv.to_f64_vec()?;
    let mut changed = false;
    for (a, c) in adv.chunks_mut(d).zip(xs.chunks(d)) {
        let mut shrink = 1.0 - 1e-7;
        for _ in 0..30 {
            let norm = row_l2(a, c);
            if norm <= eps {
                break;
            }
            changed = true;
            let f = eps / norm * shrink;
            for (aj, &cj) in a.iter_mut().zip(c) {
                let v = (cj + (*aj - cj) * f).clamp(0.0, 1.0);
                *aj = round_like(v, x.dtype());
            }
            shrink *= 1.0 - 1e-6;
        }
        if row_l2(a, c) > eps {
            a.copy_from_slice(c);
        }
    }
    if !changed {
        return Ok(x_adv);
    }
    host_tensor(&adv, x.dims(), x)
}

fn round_like(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        _ => v,
    }
}

/// `‖a − c‖₂` in f64.
pub(crate) fn row_l2(a: &[f64], c: &[f64]) -> f64 {
    a.iter()
        .zip(c)
        .map(|(a, c)| (a - c) * (a - c))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Activation;

    #[test]
    fn an_attack_by_pieces_gives_each_example_the_bits_of_the_whole_batch() {
        let model = Model::new("37-23-19-5", Activation::Relu, 3).unwrap();
        let x = Tensor::rand_uniform([301, 37], 0.0, 1.0, 8, DType::F32);
        let labels: Vec<u32> = (0..301).map(|i| (i * 7 % 5) as u32).collect();
        let labels = Tensor::from_vec(labels, [301]).unwrap();
        let steps = |start: &Tensor, center: &Tensor, classes: &Tensor| {
            let mut adv = start.clone();
            for _ in 0..3 {
                let (g, _) = objective_gradient(&model, &adv, classes, false)?;
                adv = adv.sign_step(&g, center, 0.01, 0.03, 0.0, 1.0)?;
            }
            Ok(adv)
        };
        let whole = steps(&x, &x, &labels).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Three threads: four pieces of 75 or 76 rows (at least 64 each).
        let pieces = pool
            .install(|| by_pieces([&x, &labels], |[x, labels]| steps(&x, &x, &labels)))
            .unwrap();
        assert_eq!(pieces.dims(), whole.dims());
        assert_eq!(
            pieces.to_vec::<f32>().unwrap(),
            whole.to_vec::<f32>().unwrap()
        );
    }
}
