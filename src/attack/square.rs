//! The Square attack (Andriushchenko, Croce, Flammarion & Hein, "Square
//! Attack: a query-efficient black-box adversarial attack via random
//! search", ECCV 2020): random search over square-shaped changes that
//! queries only the model's scores, never a gradient.
//!
//! The attack is per-example bookkeeping around black-box queries: each
//! example draws its own square and signs, and keeps the candidate only if
//! its margin loss went down. Its state lives on the host; every query is
//! one call of [`Classifier::logits`] on the examples still unbroken.

use serde::{Deserialize, Serialize};

use super::model::Classifier;
use super::rowwise::{in_pieces, row_hashes, row_rng, take_rows};
use super::{Outcome, Threat};
use crate::backend::cpu::CpuElement;
use crate::backend::{pool, BackendStorage, Storage};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Square, per example, minimising the margin `m = z_y − max_{j≠y} z_j`
/// (broken once the prediction changes).
///
/// L∞: start from vertical stripes, `x⁽⁰⁾ = clip₀¹(x + eps·s)` with one
/// random sign per channel and column; at query `i` draw a window of side
/// `h(i) = round(√(p(i)·d/c))` at a random place and a random sign per
/// channel, set the window to `x_best + 2·eps·sign` projected on the ball
/// ∩ `[0, 1]`, and keep the candidate if its margin is lower.
/// L2: start from a grid of `h/5`-wide tiles of the paper's centred
/// patterns with random signs, scaled to norm `eps`; each query moves the
/// perturbation's mass from a second random window into a new pattern in
/// the first, keeping the norm at `eps`.
///
/// `p(i)` starts at `p_init = 0.8` and halves after queries 10, 50, 200,
/// 500, 1000, 2000, 4000, 6000 and 8000 (of a 10 000-query budget; with
/// `rescale_schedule` those points scale with `queries`). Defaults: 5000
/// queries, one run, no rescaling (AutoAttack's settings). The image shape
/// `[c, h, w]` is `image`, or for `d` features `[1, √d, √d]` when `d` is a
/// square, `[3, √(d/3), √(d/3)]` when `d/3` is, else `[1, 1, d]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Square {
    /// The norm and radius.
    pub threat: Threat,
    /// Queries per run after the first.
    pub queries: usize,
    /// The initial fraction `p_init` of pixels a window covers.
    pub p_init: f64,
    /// Runs, each on the examples still unbroken.
    pub restarts: usize,
    /// Scale the schedule of `p` to `queries` instead of 10 000.
    pub rescale_schedule: bool,
    /// The image shape `[c, h, w]` (inferred when `None`).
    pub image: Option<[usize; 3]>,
}

impl Square {
    /// Square in `threat` with the defaults above.
    pub fn new(threat: Threat) -> Square {
        Square {
            threat,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            rescale_schedule: false,
            image: None,
        }
    }

    /// The fraction `p` at query `i`.
    pub fn p_at(&self, i: usize) -> f64 {
        let it = if self.rescale_schedule {
            (i as f64 / self.queries.max(1) as f64 * 10000.0) as usize
        } else {
            i
        };
        let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
            .iter()
            .filter(|&&at| it > at)
            .count();
        self.p_init / f64::from(1u32 << halvings)
    }

    /// The image shape for `d` features.
    pub fn image_shape(&self, d: usize) -> Result<[usize; 3]> {
        if let Some(shape) = self.image {
            if shape.iter().product::<usize>() != d {
                return Err(Error::invalid(format!(
                    "square: an image of shape {shape:?} does not have {d} values"
                )));
            }
            return Ok(shape);
        }
        let side = |v: usize| {
            let s = (v as f64).sqrt().round() as usize;
            (s * s == v).then_some(s)
        };
        Ok(
            match (side(d), d.is_multiple_of(3).then(|| side(d / 3)).flatten()) {
                (Some(s), _) => [1, s, s],
                (None, Some(s)) => [3, s, s],
                _ => [1, 1, d],
            },
        )
    }

    /// Attacks the batch `x` with labels `labels`.
    pub(crate) fn attack<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<Outcome> {
        if self.restarts == 0 || !(self.p_init > 0.0 && self.p_init <= 1.0) {
            return Err(Error::invalid(
                "square: restarts must be at least 1 and p_init in (0, 1]",
            ));
        }
        let d = x.dims().get(1).copied().unwrap_or(1);
        let shape = self.image_shape(d)?;
        let hashes = row_hashes(x, labels)?;
        let pred = model.logits(x)?.argmax_rows()?.to_vec::<u32>()?;
        let ranked: Vec<Vec<u32>> = pred.iter().map(|&p| vec![p]).collect();
        let mut out = Outcome::start(x, &ranked, labels);
        for restart in 0..self.restarts {
            let active = out.unfooled();
            if active.is_empty() {
                break;
            }
            let salt = 0x5eed_5a0a ^ ((restart as u64) << 40);
            let runs = in_pieces(active.len(), x.device().is_cpu(), |r| {
                let rows = &active[r];
                let piece = take_rows(x, rows)?;
                let hs: Vec<u64> = rows.iter().map(|&i| hashes[i]).collect();
                let ls: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();
                let rngs = hs.iter().map(|&h| row_rng(h, seed, salt)).collect();
                match x.dtype() {
                    DType::F64 => self.run::<_, f64>(model, &piece, &ls, rngs, shape),
                    _ => self.run::<_, f32>(model, &piece, &ls, rngs, shape),
                }
            })?;
            let run_adv = Tensor::cat_rows(&runs.iter().map(|r| r.0.clone()).collect::<Vec<_>>())?;
            let broke: Vec<bool> = runs.iter().flat_map(|r| r.1.iter().copied()).collect();
            out.absorb(&active, &run_adv, &broke, &broke)?;
        }
        Ok(out)
    }

    /// One run on a piece of unbroken examples, state on the host in `T`.
    fn run<M: Classifier + ?Sized, T: CpuElement + Float>(
        &self,
        model: &M,
        x: &Tensor,
        labels: &[u32],
        mut rngs: Vec<Rng>,
        shape: [usize; 3],
    ) -> Result<(Tensor, Vec<bool>)> {
        let n = labels.len();
        let d = shape.iter().product::<usize>();
        let clean: Vec<f64> = x.to_f64_vec()?;
        let start: Vec<f64> = match self.threat {
            Threat::Linf(eps) => linf_start(&clean, shape, eps, &mut rngs),
            Threat::L2(eps) => l2_start(&clean, shape, eps, &mut rngs),
        };
        let mut best: Vec<T> = start.iter().map(|&v| T::from_f64(v)).collect();
        let all: Vec<usize> = (0..n).collect();
        let first = query(
            model,
            &Tensor::from_vec(best.clone(), [n, d])?.to_device(x.device())?,
            &all,
            labels,
        )?;
        let mut margin: Vec<f64> = first.iter().map(|q| q.0).collect();
        let mut done: Vec<bool> = first.iter().map(|q| q.1).collect();
        let mut row = vec![0.0; d];
        for i in 0..self.queries {
            let active: Vec<usize> = (0..n).filter(|&r| !done[r]).collect();
            if active.is_empty() {
                break;
            }
            let p = self.p_at(i);
            // A recycled buffer: a fresh one would fault in its pages each query.
            let mut candidates: Vec<T> = pool::take(active.len() * d);
            for &r in &active {
                let (c, b) = (&clean[r * d..(r + 1) * d], &best[r * d..(r + 1) * d]);
                let at = candidates.len();
                candidates.extend_from_slice(b);
                let cand = &mut candidates[at..];
                match self.threat {
                    Threat::Linf(eps) => linf_step(cand, c, shape, eps, p, &mut rngs[r]),
                    Threat::L2(eps) => {
                        row.iter_mut()
                            .zip(cand.iter())
                            .for_each(|(v, c)| *v = c.to_f64());
                        l2_step(&mut row, c, shape, eps, p, &mut rngs[r]);
                        cand.iter_mut()
                            .zip(&row)
                            .for_each(|(c, &v)| *c = T::from_f64(v));
                    }
                }
            }
            let batch = Tensor::from_vec(candidates, [active.len(), d])?.to_device(x.device())?;
            let scores = query(model, &batch, &active, labels)?;
            let copy;
            let host: &[T] = match batch.storage() {
                Storage::Cpu(h) => T::slice(h).unwrap_or(&[]),
                #[allow(unreachable_patterns)]
                other => {
                    copy = other.to_cpu()?;
                    T::slice(&copy).unwrap_or(&[])
                }
            };
            for (k, (&r, (m, broke))) in active.iter().zip(scores).enumerate() {
                if m < margin[r] || broke {
                    margin[r] = m;
                    done[r] = broke;
                    best[r * d..(r + 1) * d].copy_from_slice(&host[k * d..(k + 1) * d]);
                }
            }
        }
        let out = Tensor::from_vec(best, [n, d])?.to_device(x.device())?;
        Ok((out, done))
    }
}

/// The margin `z_y − max_{j≠y} z_j` of each row of `batch` (the rows
/// `rows` of the piece) and whether its prediction changed.
fn query<M: Classifier + ?Sized>(
    model: &M,
    batch: &Tensor,
    rows: &[usize],
    labels: &[u32],
) -> Result<Vec<(f64, bool)>> {
    let logits = model.logits(batch)?;
    let c = logits.dims().get(1).copied().unwrap_or(1).max(1);
    Ok(logits
        .to_f64_vec()?
        .chunks(c)
        .zip(rows)
        .map(|(z, &r)| {
            let y = labels[r] as usize;
            let (mut other, mut pred) = (f64::NEG_INFINITY, 0);
            for (j, &v) in z.iter().enumerate() {
                if j != y && v > other {
                    other = v;
                }
                if v > z[pred] {
                    pred = j;
                }
            }
            (z[y] - other, pred != y)
        })
        .collect())
}

/// A random ±1.
fn sign(rng: &mut Rng) -> f64 {
    if rng.next_u64() & 1 == 0 {
        -1.0
    } else {
        1.0
    }
}

/// `x + eps·s` clipped, `s` one random sign per channel and column.
fn linf_start(clean: &[f64], [c, h, w]: [usize; 3], eps: f64, rngs: &mut [Rng]) -> Vec<f64> {
    let d = c * h * w;
    let mut out = clean.to_vec();
    for (row, rng) in out.chunks_mut(d).zip(rngs) {
        for ch in 0..c {
            for col in 0..w {
                let s = sign(rng);
                for r in 0..h {
                    let v = &mut row[ch * h * w + r * w + col];
                    *v = (*v + eps * s).clamp(0.0, 1.0);
                }
            }
        }
    }
    out
}

/// The side of the window for fraction `p` (L∞: at least 1).
fn side(p: f64, [c, h, w]: [usize; 3], at_least: usize) -> usize {
    let s = ((p * (c * h * w) as f64 / c as f64).sqrt().round() as usize).max(at_least);
    s.min(h.min(w)).max(1)
}

/// One L∞ candidate, in place on a copy of the best point.
fn linf_step<T: Float>(
    cand: &mut [T],
    clean: &[f64],
    shape: [usize; 3],
    eps: f64,
    p: f64,
    rng: &mut Rng,
) {
    let [c, h, w] = shape;
    let s = side(p, shape, 1);
    let vh = rng.below((h - s + 1) as u64) as usize;
    let vw = rng.below((w - s + 1) as u64) as usize;
    for ch in 0..c {
        let delta = 2.0 * eps * sign(rng);
        for r in vh..vh + s {
            for col in vw..vw + s {
                let j = ch * h * w + r * w + col;
                let (lo, hi) = ((clean[j] - eps).max(0.0), (clean[j] + eps).min(1.0));
                cand[j] = T::from_f64((cand[j].to_f64() + delta).clamp(lo, hi));
            }
        }
    }
}

/// The paper's L2 pattern on an `x × y` rectangle: nested centred
/// rectangles weighted `1/(k+1)²`, unit L2 norm.
fn eta_rectangles(x: usize, y: usize) -> Vec<f64> {
    let mut delta = vec![0.0; x * y];
    let (xc, yc) = (x / 2 + 1, y / 2 + 1);
    let (mut c0, mut c1) = (xc as isize - 1, yc as isize - 1);
    for k in 0..xc.max(yc) {
        let span = 2 * k as isize + 1;
        let (r0, r1) = (
            c0.max(0) as usize,
            ((c0 + span).min(x as isize)).max(0) as usize,
        );
        let (q0, q1) = (
            c1.max(0) as usize,
            ((c1 + span).min(y as isize)).max(0) as usize,
        );
        for r in r0..r1 {
            for q in q0..q1 {
                delta[r * y + q] += 1.0 / ((k + 1) * (k + 1)) as f64;
            }
        }
        c0 -= 1;
        c1 -= 1;
    }
    normalise(&mut delta);
    delta
}

/// The L2 pattern on an `s × s` window: a positive half over a negative
/// half, unit norm, transposed with probability ½.
fn eta(s: usize, rng: &mut Rng) -> Vec<f64> {
    let top = s / 2;
    let mut delta = eta_rectangles(top, s);
    delta.extend(eta_rectangles(s - top, s).iter().map(|v| -v));
    normalise(&mut delta);
    if rng.next_u64() & 1 == 1 {
        let t: Vec<f64> = (0..s * s).map(|k| delta[(k % s) * s + k / s]).collect();
        delta = t;
    }
    delta
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `clip₀¹(x + eps·δ/‖δ‖₂)`.
fn l2_place(out: &mut [f64], clean: &[f64], delta: &[f64], eps: f64) {
    let norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
    for ((o, &c), &dv) in out.iter_mut().zip(clean).zip(delta) {
        *o = (c + eps * dv / (norm + 1e-12)).clamp(0.0, 1.0);
    }
}

/// The L2 start: tiles of side `h/5` holding random-signed patterns.
fn l2_start(clean: &[f64], [c, h, w]: [usize; 3], eps: f64, rngs: &mut [Rng]) -> Vec<f64> {
    let d = c * h * w;
    let s = (h / 5).max(1);
    let offset = h.saturating_sub(5 * s) / 2;
    let mut out = clean.to_vec();
    for ((row, x), rng) in out.chunks_mut(d).zip(clean.chunks(d)).zip(rngs) {
        let mut delta = vec![0.0; d];
        let mut vh = offset;
        for _ in 0..h / s {
            let mut vw = offset;
            for _ in 0..w / s {
                let pattern = eta(s, rng);
                for ch in 0..c {
                    let sg = sign(rng);
                    for r in 0..s.min(h.saturating_sub(vh)) {
                        for q in 0..s.min(w.saturating_sub(vw)) {
                            delta[ch * h * w + (vh + r) * w + vw + q] += pattern[r * s + q] * sg;
                        }
                    }
                }
                vw += s;
            }
            vh += s;
        }
        l2_place(row, x, &delta, eps);
    }
    out
}

/// One L2 candidate, in place on a copy of the best point.
fn l2_step(cand: &mut [f64], clean: &[f64], shape: [usize; 3], eps: f64, p: f64, rng: &mut Rng) {
    let [c, h, w] = shape;
    let mut s = side(p, shape, 3);
    if s.is_multiple_of(2) {
        s = (s + 1).min(h.min(w));
    }
    let at = |ch: usize, r: usize, q: usize| ch * h * w + r * w + q;
    let mut delta: Vec<f64> = cand.iter().zip(clean).map(|(b, x)| b - x).collect();
    let (vh, vw) = (
        rng.below((h - s + 1) as u64) as usize,
        rng.below((w - s + 1) as u64) as usize,
    );
    let (vh2, vw2) = (
        rng.below((h - s + 1) as u64) as usize,
        rng.below((w - s + 1) as u64) as usize,
    );
    let in1 = |r: usize, q: usize| (vh..vh + s).contains(&r) && (vw..vw + s).contains(&q);
    let in2 = |r: usize, q: usize| (vh2..vh2 + s).contains(&r) && (vw2..vw2 + s).contains(&q);
    let image_norm = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
    let pattern = eta(s, rng);
    for ch in 0..c {
        let mut window1 = 0.0;
        let mut both = 0.0;
        for r in 0..h {
            for q in 0..w {
                let v = delta[at(ch, r, q)];
                if in1(r, q) {
                    window1 += v * v;
                }
                if in1(r, q) || in2(r, q) {
                    both += v * v;
                }
            }
        }
        let (window1, both) = (window1.sqrt(), both.sqrt());
        let sg = sign(rng);
        let mut fresh: Vec<f64> = (0..s * s)
            .map(|k| {
                let (r, q) = (vh + k / s, vw + k % s);
                pattern[k] * sg + delta[at(ch, r, q)] / (1e-12 + window1)
            })
            .collect();
        let fresh_norm = fresh.iter().map(|v| v * v).sum::<f64>().sqrt();
        let target =
            ((eps * eps - image_norm * image_norm).max(0.0) / c as f64 + both * both).sqrt();
        fresh
            .iter_mut()
            .for_each(|v| *v = *v / (1e-12 + fresh_norm) * target);
        for r in vh2..vh2 + s {
            for q in vw2..vw2 + s {
                delta[at(ch, r, q)] = 0.0;
            }
        }
        for (k, v) in fresh.iter().enumerate() {
            delta[at(ch, vh + k / s, vw + k % s)] = *v;
        }
    }
    l2_place(cand, clean, &delta, eps);
}
