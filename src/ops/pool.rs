//! 2-D max- and average-pooling with kernel = stride = K and no padding,
//! over NCHW batches: `[N, C, H, W] → [N, C, ⌊H/K⌋, ⌊W/K⌋]`.
//!
//! - `max_pool2d`: `y[n,c,i,j] = max_{0≤a,b<K} x[n,c, i·K+a, j·K+b]`;
//!   `dx = g` at the first maximum of each window in row-major order (as
//!   PyTorch picks on ties), 0 elsewhere. The position is found again from
//!   the saved input, so the forward saves no indices.
//! - `avg_pool2d`: `y[n,c,i,j] = (1/K²) Σ_{a,b} x[n,c, i·K+a, j·K+b]`;
//!   `dx[n,c, i·K+a, j·K+b] = g[n,c,i,j]/K²`.
//!
//! Rows and columns past the last whole window get no gradient.

use crate::backend::{BackendStorage, PoolDims};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// The sizes of a pooling of `x` with kernel `k`, checked.
fn pool_dims(op: &'static str, x: &Tensor, kernel: usize) -> Result<PoolDims> {
    let &[n, c, h, w] = x.dims() else {
        return Err(Error::BadShape {
            op,
            msg: format!("expects an input [N, C, H, W], got {}", x.shape()),
        });
    };
    if kernel == 0 || kernel > h || kernel > w {
        return Err(Error::BadShape {
            op,
            msg: format!("a window {kernel}x{kernel} does not fit the input {h}x{w}"),
        });
    }
    Ok(PoolDims {
        planes: n * c,
        height: h,
        width: w,
        kernel,
    })
}

/// The output shape of a pooling of `x`.
fn pooled(x: &Tensor, d: &PoolDims) -> crate::shape::Shape {
    let dims = x.dims();
    [dims[0], dims[1], d.out_h(), d.out_w()].into()
}

impl Tensor {
    /// Max-pooling with kernel and stride `kernel` (see the module docs).
    pub fn max_pool2d(&self, kernel: usize) -> Result<Tensor> {
        let d = pool_dims("max_pool2d", self, kernel)?;
        let out = self.storage().max_pool2d(d)?;
        Ok(Tensor::from_storage(out, pooled(self, &d)))
    }

    /// Average-pooling with kernel and stride `kernel` (see the module
    /// docs).
    pub fn avg_pool2d(&self, kernel: usize) -> Result<Tensor> {
        let d = pool_dims("avg_pool2d", self, kernel)?;
        let out = self.storage().avg_pool2d(d)?;
        Ok(Tensor::from_storage(out, pooled(self, &d)))
    }
}

impl Tape {
    /// Records [`Tensor::max_pool2d`] of `x`.
    pub fn max_pool2d(&mut self, x: Var, kernel: usize) -> Result<Var> {
        let out = self.value(x)?.max_pool2d(kernel)?;
        self.record(Op::MaxPool2d(kernel), &[x], out)
    }

    /// Records [`Tensor::avg_pool2d`] of `x`.
    pub fn avg_pool2d(&mut self, x: Var, kernel: usize) -> Result<Var> {
        let out = self.value(x)?.avg_pool2d(kernel)?;
        self.record(Op::AvgPool2d(kernel), &[x], out)
    }
}

/// `dx` of [`Tensor::max_pool2d`] from the input `x` and the gradient `g`.
pub(super) fn max_pool2d_backward(x: &Tensor, g: &Tensor, kernel: usize) -> Result<Tensor> {
    let d = pool_dims("max_pool2d", x, kernel)?;
    let dx = g.storage().max_pool2d_backward(x.storage(), d)?;
    Ok(Tensor::from_storage(dx, x.shape().clone()))
}

/// `dx` of [`Tensor::avg_pool2d`] for an input shaped as `x`.
pub(super) fn avg_pool2d_backward(x: &Tensor, g: &Tensor, kernel: usize) -> Result<Tensor> {
    let d = pool_dims("avg_pool2d", x, kernel)?;
    let dx = g.storage().avg_pool2d_backward(d)?;
    Ok(Tensor::from_storage(dx, x.shape().clone()))
}
