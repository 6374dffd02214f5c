//! The CUDA backend's kernels of robustness evaluation and training:
//! `kernels/robust_loss.cu` (log-softmax, `exp`, `ln`, pick, KL divergence,
//! DLR, with their backward rules) and `kernels/attack_step.cu` (the APGD
//! and FAB steps, the in-place update of listed rows). Each checks its
//! operands as the CPU backend (`src/backend/cpu/robust.rs`) does, with
//! the same errors, then plans and launches; the math is on the
//! [`BackendStorage`](crate::backend::BackendStorage) methods.
//!
//! Class and row indices are checked against their upload-time bound (see
//! [`CudaStorage`]), so valid ones cost no host round trip.

use kernels::attack_step::{self, ApgdStep, FabStep};
use kernels::grid_stride::Extent;
use kernels::robust_loss;

use super::super::launch::{launch, plan_err, Arg, Launcher};
use super::super::storage::CudaStorage;
use super::{check_len, float_type, floats, labels_buf, same_device};
use crate::backend::cpu::CpuStorage;
use crate::backend::Norm;
use crate::error::{Error, Result};

/// The rows of a buffer of `len` values in rows of `cols` (the CPU's check
/// and message).
fn rows_of(op: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(Error::invalid(format!(
            "{op}: {len} values are not rows of {cols}"
        )));
    }
    Ok(len / cols)
}

/// `n` u32 class indices below `classes`, on `x`'s device.
fn indices<'a, L: Launcher>(
    op: &'static str,
    x: &CudaStorage<L>,
    index: &'a CudaStorage<L>,
    n: usize,
    classes: usize,
) -> Result<&'a CudaStorage<L>> {
    let index = labels_buf(op, index)?;
    same_device(op, x, index)?;
    if index.len != n {
        return Err(Error::invalid(format!(
            "{op}: {} indices for {n} rows",
            index.len
        )));
    }
    index.check_labels(op, classes)?;
    Ok(index)
}

/// Launches `plan` with `inputs`, then new outputs of the given lengths.
fn launch_into<L: Launcher>(
    x: &CudaStorage<L>,
    plan: &kernels::LaunchPlan,
    inputs: &[&L::Buffer],
    outputs: &[usize],
) -> Result<Vec<CudaStorage<L>>> {
    let dtype = x.dtype_of();
    let mut outs = outputs
        .iter()
        .map(|&len| x.output(dtype, len))
        .collect::<Result<Vec<_>>>()?;
    let mut args: Vec<Arg<'_, L::Buffer>> = inputs.iter().map(|b| Arg::In(*b)).collect();
    args.extend(outs.iter_mut().map(Arg::Out));
    launch(&*x.launcher, plan, &mut args)?;
    Ok(outs
        .into_iter()
        .zip(outputs)
        .map(|(b, &len)| x.wrap(b, len))
        .collect())
}

/// The one output of [`launch_into`].
fn launch_one<L: Launcher>(
    x: &CudaStorage<L>,
    plan: &kernels::LaunchPlan,
    inputs: &[&L::Buffer],
    len: usize,
) -> Result<CudaStorage<L>> {
    let mut outs = launch_into(x, plan, inputs, &[len])?;
    outs.pop()
        .ok_or_else(|| Error::Cuda("a launch returned no output".into()))
}

pub(super) fn log_softmax<L: Launcher>(
    x: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "log_softmax";
    let t = float_type(op, x)?;
    let rows = rows_of(op, x.len, classes)?;
    let p = robust_loss::log_softmax(t, rows, classes).map_err(plan_err)?;
    launch_one(x, &p, &[&x.buf], x.len)
}

pub(super) fn log_softmax_backward<L: Launcher>(
    g: &CudaStorage<L>,
    y: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "log_softmax_backward";
    let t = floats(op, g, &[y])?;
    let rows = rows_of(op, g.len, classes)?;
    check_len(op, "the forward's output", y.len, g.len)?;
    let p = robust_loss::log_softmax_backward(t, rows, classes).map_err(plan_err)?;
    launch_one(g, &p, &[&g.buf, &y.buf], g.len)
}

/// `exp` or `ln` elementwise.
pub(super) fn map<L: Launcher>(
    x: &CudaStorage<L>,
    kernel: &kernels::GridStride,
    op: &'static str,
) -> Result<CudaStorage<L>> {
    let t = float_type(op, x)?;
    x.map(kernel, Extent::flat(x.len), &[], &[&x.buf], t)
}

pub(super) fn pick_rows<L: Launcher>(
    x: &CudaStorage<L>,
    index: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "pick";
    let t = float_type(op, x)?;
    let rows = rows_of(op, x.len, classes)?;
    let index = indices(op, x, index, rows, classes)?;
    let p = robust_loss::pick(t, rows, classes).map_err(plan_err)?;
    launch_one(x, &p, &[&x.buf, &index.buf], rows)
}

pub(super) fn pick_rows_backward<L: Launcher>(
    g: &CudaStorage<L>,
    index: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "pick_backward";
    let t = float_type(op, g)?;
    let index = indices(op, g, index, g.len, classes)?;
    let p = robust_loss::pick_backward(t, g.len, classes).map_err(plan_err)?;
    launch_one(g, &p, &[&g.buf, &index.buf], g.len * classes)
}

pub(super) fn kl_div_rows<L: Launcher>(
    a: &CudaStorage<L>,
    b: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "kl_div";
    let t = floats(op, a, &[b])?;
    let rows = rows_of(op, a.len, classes)?;
    if b.len != a.len {
        return Err(Error::invalid(
            "kl_div: the two logit buffers differ in length",
        ));
    }
    let p = robust_loss::kl_div(t, rows, classes).map_err(plan_err)?;
    launch_one(a, &p, &[&a.buf, &b.buf], rows)
}

pub(super) fn kl_div_rows_backward<L: Launcher>(
    a: &CudaStorage<L>,
    b: &CudaStorage<L>,
    g: &CudaStorage<L>,
    classes: usize,
) -> Result<(CudaStorage<L>, CudaStorage<L>)> {
    let op = "kl_div_backward";
    let t = floats(op, a, &[b, g])?;
    let rows = rows_of(op, a.len, classes)?;
    if b.len != a.len || g.len != rows {
        return Err(Error::invalid("kl_div_backward: buffer lengths disagree"));
    }
    let p = robust_loss::kl_div_backward(t, rows, classes).map_err(plan_err)?;
    let mut outs = launch_into(a, &p, &[&a.buf, &b.buf, &g.buf], &[a.len, a.len])?;
    match (outs.pop(), outs.pop()) {
        (Some(db), Some(da)) => Ok((da, db)),
        _ => Err(Error::Cuda(
            "kl_div_backward: a launch lost an output".into(),
        )),
    }
}

/// The rows of a DLR launch, after the CPU's checks; the targets buffer
/// the kernel reads (the labels when untargeted, which it ignores).
fn dlr_inputs<'a, L: Launcher>(
    op: &'static str,
    z: &CudaStorage<L>,
    labels: &'a CudaStorage<L>,
    targets: &'a CudaStorage<L>,
    targeted: bool,
    classes: usize,
) -> Result<(usize, &'a CudaStorage<L>, &'a CudaStorage<L>)> {
    let rows = rows_of(op, z.len, classes)?;
    let need = if targeted { 4 } else { 3 };
    if classes < need {
        return Err(Error::invalid(format!(
            "{op}: the {}DLR loss needs at least {need} classes, got {classes}",
            if targeted { "targeted " } else { "" }
        )));
    }
    let y = indices(op, z, labels, rows, classes)?;
    let t = if targeted {
        indices(op, z, targets, rows, classes)?
    } else {
        y
    };
    Ok((rows, y, t))
}

pub(super) fn dlr_rows<L: Launcher>(
    z: &CudaStorage<L>,
    labels: &CudaStorage<L>,
    targets: &CudaStorage<L>,
    targeted: bool,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "dlr";
    let t = float_type(op, z)?;
    let (rows, y, tg) = dlr_inputs(op, z, labels, targets, targeted, classes)?;
    let p = robust_loss::dlr(t, rows, classes, targeted).map_err(plan_err)?;
    launch_one(z, &p, &[&z.buf, &y.buf, &tg.buf], rows)
}

pub(super) fn dlr_rows_backward<L: Launcher>(
    z: &CudaStorage<L>,
    labels: &CudaStorage<L>,
    targets: &CudaStorage<L>,
    targeted: bool,
    g: &CudaStorage<L>,
    classes: usize,
) -> Result<CudaStorage<L>> {
    let op = "dlr_backward";
    let t = floats(op, z, &[g])?;
    let (rows, y, tg) = dlr_inputs(op, z, labels, targets, targeted, classes)?;
    if g.len != rows {
        return Err(Error::invalid(
            "dlr_backward: one gradient per row expected",
        ));
    }
    let p = robust_loss::dlr_backward(t, rows, classes, targeted).map_err(plan_err)?;
    launch_one(z, &p, &[&z.buf, &y.buf, &tg.buf, &g.buf], z.len)
}

/// The operands of one APGD step: `x, previous, grad, center, step`.
pub(super) struct ApgdOperands<'a, L: Launcher> {
    pub x: &'a CudaStorage<L>,
    pub previous: &'a CudaStorage<L>,
    pub grad: &'a CudaStorage<L>,
    pub center: &'a CudaStorage<L>,
    pub step: &'a CudaStorage<L>,
}

pub(super) fn apgd_step<L: Launcher>(
    o: ApgdOperands<'_, L>,
    momentum: f64,
    eps: f64,
    norm: Norm,
    cols: usize,
) -> Result<CudaStorage<L>> {
    let op = "apgd_step";
    let x = o.x;
    let t = floats(op, x, &[o.previous, o.grad, o.center, o.step])?;
    let rows = rows_of(op, x.len, cols)?;
    let same = [o.previous.len, o.grad.len, o.center.len];
    if same.iter().any(|&l| l != x.len) || o.step.len != rows {
        return Err(Error::invalid("apgd_step: buffer lengths disagree"));
    }
    let s = ApgdStep {
        eps,
        momentum,
        l2: norm == Norm::L2,
    };
    let p = attack_step::apgd(t, rows, cols, s).map_err(plan_err)?;
    let inputs = [
        &**x.buf,
        &**o.previous.buf,
        &**o.grad.buf,
        &**o.center.buf,
        &**o.step.buf,
    ];
    launch_one(x, &p, &inputs, x.len)
}

/// The operands of one FAB step: `x, x0, w, f`.
pub(super) struct FabOperands<'a, L: Launcher> {
    pub x: &'a CudaStorage<L>,
    pub x0: &'a CudaStorage<L>,
    pub w: &'a CudaStorage<L>,
    pub f: &'a CudaStorage<L>,
}

pub(super) fn fab_step<L: Launcher>(
    o: FabOperands<'_, L>,
    eta: f64,
    alpha_max: f64,
    norm: Norm,
    cols: usize,
) -> Result<(CudaStorage<L>, CudaStorage<L>)> {
    let op = "fab_step";
    let x = o.x;
    let t = floats(op, x, &[o.x0, o.w, o.f])?;
    let rows = rows_of(op, x.len, cols)?;
    if o.x0.len != x.len || o.w.len != x.len || o.f.len != rows {
        return Err(Error::invalid("fab_step: buffer lengths disagree"));
    }
    let s = FabStep {
        eta,
        alpha_max,
        linf: norm == Norm::Linf,
    };
    let p = attack_step::fab(t, rows, cols, s).map_err(plan_err)?;
    let inputs = [&**x.buf, &**o.x0.buf, &**o.w.buf, &**o.f.buf];
    let mut outs = launch_into(x, &p, &inputs, &[x.len, rows])?;
    match (outs.pop(), outs.pop()) {
        (Some(dist), Some(point)) => Ok((point, dist)),
        _ => Err(Error::Cuda("fab_step: a launch lost an output".into())),
    }
}

/// Fails with the CPU's error when a listed row is not below `rows`; the
/// list is read back only when its upload-time bound does not prove it.
fn check_rows<L: Launcher>(list: &CudaStorage<L>, rows: usize) -> Result<()> {
    match list.label_bound {
        Some(b) if (b as usize) < rows => return Ok(()),
        None if list.len == 0 => return Ok(()),
        _ => {}
    }
    if let CpuStorage::U32(v) = list.to_host()? {
        if let Some(&bad) = v.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::invalid(format!(
                "lerp_rows: row {bad} of a buffer of {rows} rows"
            )));
        }
    }
    Ok(())
}

pub(super) fn lerp_rows<L: Launcher>(
    x: &mut CudaStorage<L>,
    src: &CudaStorage<L>,
    list: &CudaStorage<L>,
    t: f64,
    cols: usize,
) -> Result<()> {
    let op = "lerp_rows";
    let dtype = floats(op, x, &[src])?;
    let rows = rows_of(op, x.len, cols)?;
    if src.len != x.len {
        return Err(Error::invalid(
            "lerp_rows: the source is shaped differently",
        ));
    }
    let list = labels_buf(op, list)?;
    same_device(op, x, list)?;
    check_rows(list, rows)?;
    if list.len == 0 {
        return Ok(());
    }
    let p = attack_step::lerp_rows(dtype, rows, cols, list.len, t).map_err(plan_err)?;
    let launcher = x.launcher.clone();
    let target = x.buf_mut()?;
    launch(
        &*launcher,
        &p,
        &mut [Arg::Out(target), Arg::In(&*src.buf), Arg::In(&*list.buf)],
    )
}
