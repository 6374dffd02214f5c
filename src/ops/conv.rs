//! 2-D convolution over NCHW batches, with stride and zero padding.
//!
//! Forward, for `x` `[N, C, H, W]`, `W` `[O, C, KH, KW]` and `b` `[O]`:
//! `y[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c, i·s+p−pad, j·s+q−pad]`
//! (positions outside the image read 0), `y` `[N, O, OH, OW]` with
//! `OH = ⌊(H + 2·pad − KH)/s⌋ + 1` and likewise `OW`.
//!
//! Backward, with `g` the gradient of `y`:
//! - `dx[n,c,h,w] = Σ g[n,o,i,j]·W[o,c,p,q]` over the `(o, i, j, p, q)` with
//!   `h = i·s+p−pad` and `w = j·s+q−pad` (a transposed convolution),
//! - `dW[o,c,p,q] = Σ_{n,i,j} g[n,o,i,j]·x[n,c, i·s+p−pad, j·s+q−pad]`,
//! - `db[o] = Σ_{n,i,j} g[n,o,i,j]`.
//!
//! The CPU computes all three through the unfolded input and the packed
//! gemm (see [`crate::backend::cpu::conv`]); the CUDA backend as implicit
//! GEMMs that gather the unfolded input tile by tile into shared memory
//! (`kernels/conv.cu`).

use crate::backend::{BackendStorage, Conv2dDims};
use crate::error::{Error, Result};
use crate::ops::{InputGrads, Op};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// The sizes of `conv2d(x, weight)` with `stride` and `padding`, checked.
fn conv_dims(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Conv2dDims> {
    let bad = |msg: String| Err(Error::BadShape { op: "conv2d", msg });
    let (&[n, c, h, w], &[o, wc, kh, kw]) = (x.dims(), weight.dims()) else {
        return bad(format!(
            "expects an input [N, C, H, W] and a weight [O, C, KH, KW], got {} and {}",
            x.shape(),
            weight.shape()
        ));
    };
    if wc != c {
        return bad(format!(
            "the weight {} expects {wc} input channels, the input {} has {c}",
            weight.shape(),
            x.shape()
        ));
    }
    if stride == 0 {
        return Err(Error::invalid("conv2d: the stride must be at least 1"));
    }
    if [c, h, w, o, kh, kw].contains(&0) || kh > h + 2 * padding || kw > w + 2 * padding {
        return bad(format!(
            "a kernel {kh}x{kw} does not fit the input {h}x{w} padded by {padding} (or a size is 0)"
        ));
    }
    Ok(Conv2dDims {
        batch: n,
        in_channels: c,
        height: h,
        width: w,
        out_channels: o,
        kernel_h: kh,
        kernel_w: kw,
        stride,
        padding,
    })
}

impl Tensor {
    /// The 2-D convolution of the batch `self` `[N, C, H, W]` with `weight`
    /// `[O, C, KH, KW]` and `bias` `[O]`, `stride` and zero `padding` on
    /// every side (see the module docs): `[N, O, OH, OW]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        let d = conv_dims(self, weight, stride, padding)?;
        if bias.dims() != [d.out_channels] {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                lhs: weight.shape().clone(),
                rhs: bias.shape().clone(),
            });
        }
        let out = self.storage().conv2d(weight.storage(), bias.storage(), d)?;
        let shape = [d.batch, d.out_channels, d.out_h(), d.out_w()];
        Ok(Tensor::from_storage(out, shape.into()))
    }
}

impl Tape {
    /// Records the 2-D convolution of `x` `[N, C, H, W]` with `weight`
    /// `[O, C, KH, KW]` and `bias` `[O]` (see [`Tensor::conv2d`]).
    pub fn conv2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Var,
        stride: usize,
        padding: usize,
    ) -> Result<Var> {
        let out = self
            .value(x)?
            .conv2d(self.value(weight)?, self.value(bias)?, stride, padding)?;
        self.record(Op::Conv2d { stride, padding }, &[x, weight, bias], out)
    }
}

/// `dx`, `dW` and `db` of a convolution, each where `needs` asks.
pub(super) fn backward(
    inputs: &[&Tensor],
    g: &Tensor,
    stride: usize,
    padding: usize,
    needs: &[bool],
) -> Result<InputGrads> {
    let (x, weight) = (inputs[0], inputs[1]);
    let d = conv_dims(x, weight, stride, padding)?;
    let dx = needs[0]
        .then(|| {
            let dx = g.storage().conv2d_backward_input(weight.storage(), d)?;
            Ok::<_, Error>(Tensor::from_storage(dx, x.shape().clone()))
        })
        .transpose()?;
    let (dw, db) = if needs[1] || needs[2] {
        let (dw, db) = g.storage().conv2d_backward_params(x.storage(), d)?;
        (
            needs[1].then(|| Tensor::from_storage(dw, weight.shape().clone())),
            needs[2].then(|| Tensor::from_storage(db, [d.out_channels].into())),
        )
    } else {
        (None, None)
    };
    Ok(smallvec::smallvec![dx, dw, db])
}
