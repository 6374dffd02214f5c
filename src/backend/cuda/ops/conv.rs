//! The CUDA backend's kernels of convolutional networks:
//! `kernels/conv.cu` (the convolution as implicit GEMMs, its input, weight
//! and bias gradients) and `kernels/pool.cu` (max- and average-pooling,
//! forward and backward). Each checks its operands' types, device and
//! lengths, plans (which checks the geometry) and launches; the math is on
//! the [`BackendStorage`](crate::backend::BackendStorage) methods.

use kernels::{conv, pool};

use super::super::launch::{launch, plan_err, Arg, Launcher};
use super::super::storage::CudaStorage;
use super::{check_len, float_type, floats};
use crate::backend::{Conv2dDims, PoolDims};
use crate::error::Result;

pub(super) fn conv2d<L: Launcher>(
    x: &CudaStorage<L>,
    weight: &CudaStorage<L>,
    bias: &CudaStorage<L>,
    d: Conv2dDims,
) -> Result<CudaStorage<L>> {
    let op = "conv2d";
    let t = floats(op, x, &[weight, bias])?;
    let p = conv::forward(t, &d).map_err(plan_err)?;
    check_len(op, "the input", x.len, d.input_len())?;
    check_len(op, "the weight", weight.len, d.weight_len())?;
    check_len(op, "the bias", bias.len, d.out_channels)?;
    x.run(&p, &[&x.buf, &weight.buf, &bias.buf], t, d.output_len())
}

pub(super) fn conv2d_backward_input<L: Launcher>(
    g: &CudaStorage<L>,
    weight: &CudaStorage<L>,
    d: Conv2dDims,
) -> Result<CudaStorage<L>> {
    let op = "conv2d_backward";
    let t = floats(op, g, &[weight])?;
    let p = conv::backward_input(t, &d).map_err(plan_err)?;
    check_len(op, "the output gradient", g.len, d.output_len())?;
    check_len(op, "the weight", weight.len, d.weight_len())?;
    g.run(&p, &[&g.buf, &weight.buf], t, d.input_len())
}

/// `dw` (through a workspace and its fixed-order reduction when the plan
/// splits the batch) and `db`.
pub(super) fn conv2d_backward_params<L: Launcher>(
    g: &CudaStorage<L>,
    x: &CudaStorage<L>,
    d: Conv2dDims,
) -> Result<(CudaStorage<L>, CudaStorage<L>)> {
    let op = "conv2d_backward";
    let t = floats(op, g, &[x])?;
    let sms = g.launcher.multiprocessors();
    let pw = conv::backward_weight(t, &d, sms, None).map_err(plan_err)?;
    let pb = conv::backward_bias(t, &d).map_err(plan_err)?;
    check_len(op, "the output gradient", g.len, d.output_len())?;
    check_len(op, "the input", x.len, d.input_len())?;
    let len = d.weight_len();
    let mut dw = g.output(t, len)?;
    let l = &*g.launcher;
    match &pw.reduce {
        None => launch(
            l,
            &pw.product,
            &mut [Arg::In(&*g.buf), Arg::In(&*x.buf), Arg::Out(&mut dw)],
        )?,
        Some(reduce) => {
            let mut partial = g.scratch(t, pw.workspace_len())?;
            launch(
                l,
                &pw.product,
                &mut [Arg::In(&*g.buf), Arg::In(&*x.buf), Arg::Out(&mut partial)],
            )?;
            // The reduction's bias is not read: the workspace stands in.
            launch(
                l,
                reduce,
                &mut [Arg::In(&partial), Arg::In(&partial), Arg::Out(&mut dw)],
            )?;
        }
    }
    let db = g.run(&pb, &[&g.buf], t, d.out_channels)?;
    Ok((g.wrap(dw, len), db))
}

pub(super) fn max_pool2d<L: Launcher>(x: &CudaStorage<L>, d: PoolDims) -> Result<CudaStorage<L>> {
    let op = "max_pool2d";
    let t = float_type(op, x)?;
    let p = pool::max_forward(t, &d).map_err(plan_err)?;
    check_len(op, "the input", x.len, d.input_len())?;
    x.run(&p, &[&x.buf], t, d.output_len())
}

pub(super) fn max_pool2d_backward<L: Launcher>(
    g: &CudaStorage<L>,
    x: &CudaStorage<L>,
    d: PoolDims,
) -> Result<CudaStorage<L>> {
    let op = "max_pool2d_backward";
    let t = floats(op, g, &[x])?;
    let p = pool::max_backward(t, &d).map_err(plan_err)?;
    check_len(op, "the output gradient", g.len, d.output_len())?;
    check_len(op, "the input", x.len, d.input_len())?;
    g.run(&p, &[&x.buf, &g.buf], t, d.input_len())
}

pub(super) fn avg_pool2d<L: Launcher>(x: &CudaStorage<L>, d: PoolDims) -> Result<CudaStorage<L>> {
    let op = "avg_pool2d";
    let t = float_type(op, x)?;
    let p = pool::avg_forward(t, &d).map_err(plan_err)?;
    check_len(op, "the input", x.len, d.input_len())?;
    x.run(&p, &[&x.buf], t, d.output_len())
}

pub(super) fn avg_pool2d_backward<L: Launcher>(
    g: &CudaStorage<L>,
    d: PoolDims,
) -> Result<CudaStorage<L>> {
    let op = "avg_pool2d_backward";
    let t = float_type(op, g)?;
    let p = pool::avg_backward(t, &d).map_err(plan_err)?;
    check_len(op, "the output gradient", g.len, d.output_len())?;
    g.run(&p, &[&g.buf], t, d.input_len())
}
