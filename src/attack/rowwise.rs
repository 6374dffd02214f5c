//! The per-example machinery of the robustness-evaluation attacks (APGD,
//! FAB, Square, AutoAttack): random streams that depend on the example
//! alone, subsets of rows, row pieces for threads, and per-example losses
//! with their input gradient.
//!
//! Every draw of these attacks for an example comes from a stream seeded
//! by the run's seed, the attack's salt and a hash of the example's pixels
//! and label. With the per-row kernels, an example's adversarial is
//! therefore a function of (model, example, label, seed) only: it does not
//! depend on the batch it comes in, its position there, the thread count,
//! or which examples an ensemble has already dropped.

use std::ops::Range;

use rayon::prelude::*;

use super::model::Classifier;
use super::Threat;
use crate::backend::cpu::CpuStorage;
use crate::backend::{pool, BackendStorage, Norm, Storage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng::{splitmix64, Rng};
use crate::tape::Tape;
use crate::tensor::Tensor;

/// A hash of each row of `x: [N, d]` and its label.
pub(crate) fn row_hashes(x: &Tensor, labels: &[u32]) -> Result<Vec<u64>> {
    let d = x.dims().get(1).copied().unwrap_or(1).max(1);
    let values = x.to_f64_vec()?;
    Ok(values
        .chunks(d)
        .zip(labels)
        .map(|(row, &y)| {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ u64::from(y);
            for v in row {
                h = (h ^ v.to_bits()).wrapping_mul(0x0000_0100_0000_01b3);
            }
            splitmix64(&mut h)
        })
        .collect())
}

/// The random stream of the example with hash `hash`, for the run `seed`
/// and the draw named by `salt` (attack, restart, target).
pub(crate) fn row_rng(hash: u64, seed: u64, salt: u64) -> Rng {
    let mut s = hash ^ seed.rotate_left(17) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Rng::new(splitmix64(&mut s))
}

/// Row indices as a u32 tensor on the device of `like`.
pub(crate) fn index_tensor(idx: &[usize], like: &Tensor) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(v, [idx.len()])?.to_device(like.device())
}

/// The rows `idx` of `t: [N, …]`, in that order.
pub fn take_rows(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let n = t.dims().first().copied().unwrap_or(0);
    let row = t.numel() / n.max(1);
    let mut dims = t.dims().to_vec();
    if dims.is_empty() {
        return Err(Error::invalid("take_rows: a scalar has no rows"));
    }
    dims[0] = idx.len();
    if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
        return Err(Error::invalid(format!("take_rows: row {bad} of {n}")));
    }
    fn gather<T: Copy + 'static>(v: &[T], idx: &[usize], row: usize) -> Vec<T> {
        let mut out = pool::take(idx.len() * row);
        for &i in idx {
            out.extend_from_slice(&v[i * row..(i + 1) * row]);
        }
        out
    }
    let pick = |host: &CpuStorage| match host {
        CpuStorage::F32(v) => Tensor::from_vec(gather(v, idx, row), dims.clone()),
        CpuStorage::F64(v) => Tensor::from_vec(gather(v, idx, row), dims.clone()),
        CpuStorage::U32(v) => Tensor::from_vec(gather(v, idx, row), dims.clone()),
        CpuStorage::F16(v) => Tensor::from_vec(gather(v, idx, row), dims.clone()),
        CpuStorage::BF16(v) => Tensor::from_vec(gather(v, idx, row), dims.clone()),
    };
    match t.storage() {
        Storage::Cpu(host) => pick(host),
        #[allow(unreachable_patterns)]
        other => pick(&other.to_cpu()?)?.to_device(t.device()),
    }
}

/// `t[idx[k]] ← src[k]` for every k (the inverse of [`take_rows`]).
pub(crate) fn put_rows(t: &mut Tensor, idx: &[usize], src: &Tensor) -> Result<()> {
    if idx.is_empty() {
        return Ok(());
    }
    // Spread src to full size on the device, then copy the listed rows.
    let n = t.dims().first().copied().unwrap_or(0);
    let mut position = vec![usize::MAX; n];
    for (k, &i) in idx.iter().enumerate() {
        position[i] = k;
    }
    let order: Vec<usize> = position
        .iter()
        .map(|&k| if k == usize::MAX { 0 } else { k })
        .collect();
    let spread = take_rows(src, &order)?;
    let cols = t.numel() / n.max(1);
    let rows = index_tensor(idx, t)?;
    t.storage_mut()
        .lerp_rows(spread.storage(), rows.storage(), 0.0, cols)
}

/// Runs `f` on row ranges of a batch of `n` rows, in parallel on the CPU
/// (two pieces per thread, none under 64 rows), or once on the whole batch
/// elsewhere; the results come back in row order.
pub(crate) fn in_pieces<R: Send>(
    n: usize,
    cpu: bool,
    f: impl Fn(Range<usize>) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    const MIN_ROWS: usize = 64;
    let pieces = (2 * rayon::current_num_threads()).min(n / MIN_ROWS);
    if !cpu || pieces < 2 {
        return Ok(vec![f(0..n)?]);
    }
    let precision = crate::precision::Precision::current();
    (0..pieces)
        .into_par_iter()
        .map(|i| crate::precision::autocast(precision, || f(i * n / pieces..(i + 1) * n / pieces)))
        .collect()
}

/// The per-example loss an attack ascends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowLoss<'a> {
    /// `CE(z, y) = −log_softmax(z)_y`.
    CrossEntropy,
    /// The DLR loss.
    Dlr,
    /// The targeted DLR loss towards these u32 targets.
    DlrTargeted(&'a Tensor),
}

/// The loss of each example at a point, its input gradient, and the
/// predicted classes.
pub(crate) struct LossAt {
    /// `∇ₓ Σᵢ Lᵢ`: row i is the gradient of example i's own loss.
    pub grad: Tensor,
    /// `Lᵢ`.
    pub loss: Vec<f64>,
    /// `argmax zᵢ`.
    pub pred: Vec<u32>,
}

/// One forward and backward pass of `Σᵢ Lᵢ(f(xᵢ), yᵢ)` at `x`.
pub(crate) fn loss_at<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    labels: &Tensor,
    loss: RowLoss,
) -> Result<LossAt> {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let z = model.record_logits(&mut tape, xv)?;
    let rows = match loss {
        RowLoss::CrossEntropy => {
            let ls = tape.log_softmax(z)?;
            let picked = tape.pick(ls, labels)?;
            tape.scale(picked, -1.0)?
        }
        RowLoss::Dlr => tape.dlr(z, labels)?,
        RowLoss::DlrTargeted(targets) => tape.dlr_targeted(z, labels, targets)?,
    };
    let total = tape.sum(rows)?;
    tape.backward(total)?;
    let grad = tape
        .grad(xv)
        .cloned()
        .ok_or_else(|| Error::Tape("attack: the input received no gradient".into()))?;
    Ok(LossAt {
        grad,
        loss: tape.value(rows)?.to_f64_vec()?,
        pred: tape.value(z)?.argmax_rows()?.to_vec::<u32>()?,
    })
}

/// The predicted class of each row.
pub(crate) fn predictions<M: Classifier + ?Sized>(model: &M, x: &Tensor) -> Result<Vec<u32>> {
    model.logits(x)?.argmax_rows()?.to_vec::<u32>()
}

/// The classes of each row of logits by decreasing logit (lower index
/// first on ties): `ranked[i][0]` is the prediction.
pub(crate) fn ranked_classes(logits: &Tensor) -> Result<Vec<Vec<u32>>> {
    let c = logits.dims().get(1).copied().unwrap_or(1).max(1);
    let z = logits.to_f64_vec()?;
    Ok(z.chunks(c)
        .map(|row| {
            let mut order: Vec<u32> = (0..c as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            order
        })
        .collect())
}

/// A tensor `[values.len()]` of the dtype and device of `like`.
pub(crate) fn vector_like(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let t = Tensor::from_vec(values.to_vec(), [values.len()])?;
    match like.dtype() {
        DType::F64 => t.to_device(like.device()),
        dtype => t.to_dtype(dtype)?.to_device(like.device()),
    }
}

/// `tᵢ ← srcᵢ + s·(tᵢ − srcᵢ)` for the listed rows, in place.
pub(crate) fn lerp(t: &mut Tensor, src: &Tensor, rows: &[usize], s: f64) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cols = t.numel() / t.dims().first().copied().unwrap_or(1).max(1);
    let idx = index_tensor(rows, t)?;
    t.storage_mut()
        .lerp_rows(src.storage(), idx.storage(), s, cols)
}

/// A buffer as a tensor shaped like `like`.
pub(crate) fn tensor_like(storage: crate::backend::Storage, like: &Tensor) -> Tensor {
    Tensor::from_storage(storage, like.shape().clone())
}

/// `clip₀¹(x + radius·u/‖u‖)` in the norm of `threat`, per row from its
/// own stream: `u` uniform in `[−1, 1]ᵈ` (L∞) or standard normal (L2).
pub(crate) fn random_start(
    x: &Tensor,
    hashes: &[u64],
    seed: u64,
    salt: u64,
    threat: Threat,
    radius: f64,
) -> Result<Tensor> {
    let d = x.dims().get(1).copied().unwrap_or(1).max(1);
    let mut values = x.to_f64_vec()?;
    for (row, &h) in values.chunks_mut(d).zip(hashes) {
        let mut rng = row_rng(h, seed, salt);
        let u: Vec<f64> = match threat {
            Threat::Linf(_) => (0..d).map(|_| rng.uniform_in(-1.0, 1.0)).collect(),
            Threat::L2(_) => (0..d).map(|_| rng.normal()).collect(),
        };
        let norm = match threat.kernel_norm() {
            Norm::Linf => u.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            Norm::L2 => u.iter().map(|v| v * v).sum::<f64>().sqrt(),
        };
        for (v, u) in row.iter_mut().zip(&u) {
            *v = (*v + radius * u / (norm + 1e-12)).clamp(0.0, 1.0);
        }
    }
    Tensor::from_vec(values, x.dims().to_vec())?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}
