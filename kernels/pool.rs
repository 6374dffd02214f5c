//! Launches of `pool.cu`: max- and average-pooling with kernel = stride =
//! K and no padding over planes ([`PoolDims`]), forward and backward, each
//! a grid-stride loop with one thread per output element (independent
//! threads). See `pool.cu` for the math and the tie rule.

use crate::plan::{as_i32, elements, scalar, Access, LaunchPlan, Param, PlanError, PlanResult};
use crate::plan::{buffer, Scalar};
use crate::robust_loss::strided;
use crate::types::DType;

/// Base name of the max-pooling forward.
pub const MAX_FORWARD: &str = "max_pool_fwd";
/// Base name of its backward.
pub const MAX_BACKWARD: &str = "max_pool_bwd";
/// Base name of the average-pooling forward.
pub const AVG_FORWARD: &str = "avg_pool_fwd";
/// Base name of its backward.
pub const AVG_BACKWARD: &str = "avg_pool_bwd";

/// The base names of the kernels in `pool.cu`.
pub const KERNELS: &[&str] = &[MAX_FORWARD, MAX_BACKWARD, AVG_FORWARD, AVG_BACKWARD];

/// The sizes of a 2-D pooling with kernel = stride = K over planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolDims {
    /// Planes `P = N·C`.
    pub planes: usize,
    /// Input height (H).
    pub height: usize,
    /// Input width (W).
    pub width: usize,
    /// The window's side K, also the stride.
    pub kernel: usize,
}

impl PoolDims {
    /// Output height `⌊H/K⌋`.
    pub fn out_h(&self) -> usize {
        self.height / self.kernel
    }
    /// Output width `⌊W/K⌋`.
    pub fn out_w(&self) -> usize {
        self.width / self.kernel
    }
    /// Elements of the input (and of its gradient): `P·H·W`.
    pub fn input_len(&self) -> usize {
        self.planes * self.height * self.width
    }
    /// Elements of the output: `P·⌊H/K⌋·⌊W/K⌋`.
    pub fn output_len(&self) -> usize {
        self.planes * self.out_h() * self.out_w()
    }
}

/// `h, w, k` as the kernels' `int`s, after checking the window (a kernel
/// of at least 1) and that the element counts fit.
fn sizes(op: &str, d: &PoolDims) -> PlanResult<[Param; 3]> {
    if d.kernel == 0 {
        return Err(PlanError(format!("{op}: a window of side 0")));
    }
    elements(op, d.planes, elements(op, d.height, d.width)?)?;
    Ok([
        scalar("h", Scalar::I32(as_i32(op, "h", d.height)?)),
        scalar("w", Scalar::I32(as_i32(op, "w", d.width)?)),
        scalar("k", Scalar::I32(as_i32(op, "k", d.kernel)?)),
    ])
}

/// A launch over `n` elements with `buffers`, then `n`, `h, w, k` and the
/// `extra` scalars.
fn pool(
    op: &str,
    dtype: DType,
    d: &PoolDims,
    n: usize,
    buffers: Vec<Param>,
    extra: Option<Param>,
) -> PlanResult<LaunchPlan> {
    let mut params = buffers;
    params.push(scalar("n", Scalar::U64(n as u64)));
    params.extend(sizes(op, d)?);
    params.extend(extra);
    strided(op, dtype, n, params)
}

/// `1/K²` as the kernel's float type.
fn scale(dtype: DType, d: &PoolDims) -> Param {
    let k = d.kernel as f64;
    scalar("scale", Scalar::float(dtype, 1.0 / (k * k)))
}

/// `y = max_pool2d(x)`, one thread per output. Parameters: `x, y, n, h, w,
/// k` with `n = P·OH·OW`.
pub fn max_forward(dtype: DType, d: &PoolDims) -> PlanResult<LaunchPlan> {
    sizes(MAX_FORWARD, d)?;
    let (n, m) = (d.output_len(), d.input_len());
    let bufs = vec![
        buffer("x", dtype, m, Access::Read),
        buffer("y", dtype, n, Access::Write),
    ];
    pool(MAX_FORWARD, dtype, d, n, bufs, None)
}

/// `dx` of max-pooling from `x` and `g`, one thread per dx element.
/// Parameters: `x, g, dx, n, h, w, k` with `n = P·H·W`.
pub fn max_backward(dtype: DType, d: &PoolDims) -> PlanResult<LaunchPlan> {
    sizes(MAX_BACKWARD, d)?;
    let (n, m) = (d.input_len(), d.output_len());
    let bufs = vec![
        buffer("x", dtype, n, Access::Read),
        buffer("g", dtype, m, Access::Read),
        buffer("dx", dtype, n, Access::Write),
    ];
    pool(MAX_BACKWARD, dtype, d, n, bufs, None)
}

/// `y = avg_pool2d(x)`, one thread per output. Parameters: `x, y, n, h, w,
/// k, scale` with `n = P·OH·OW` and `scale = 1/K²`.
pub fn avg_forward(dtype: DType, d: &PoolDims) -> PlanResult<LaunchPlan> {
    sizes(AVG_FORWARD, d)?;
    let (n, m) = (d.output_len(), d.input_len());
    let bufs = vec![
        buffer("x", dtype, m, Access::Read),
        buffer("y", dtype, n, Access::Write),
    ];
    pool(AVG_FORWARD, dtype, d, n, bufs, Some(scale(dtype, d)))
}

/// `dx` of average-pooling from `g`, one thread per dx element.
/// Parameters: `g, dx, n, h, w, k, scale` with `n = P·H·W`.
pub fn avg_backward(dtype: DType, d: &PoolDims) -> PlanResult<LaunchPlan> {
    sizes(AVG_BACKWARD, d)?;
    let (n, m) = (d.input_len(), d.output_len());
    let bufs = vec![
        buffer("g", dtype, m, Access::Read),
        buffer("dx", dtype, n, Access::Write),
    ];
    pool(AVG_BACKWARD, dtype, d, n, bufs, Some(scale(dtype, d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Cooperation;

    #[test]
    fn forward_covers_the_outputs_and_backward_the_inputs() {
        let d = PoolDims {
            planes: 6,
            height: 7,
            width: 5,
            kernel: 2,
        };
        let f = max_forward(DType::F32, &d).unwrap();
        assert_eq!(f.kernel, "max_pool_fwd_f32");
        assert_eq!(f.scalar("n"), Some(Scalar::U64(6 * 3 * 2)));
        assert_eq!(f.cooperation, Cooperation::Independent);
        let b = max_backward(DType::F64, &d).unwrap();
        let bufs: Vec<_> = b.buffers().map(|p| (p.name, p.len, p.access)).collect();
        assert_eq!(
            bufs,
            [
                ("x", 210, Access::Read),
                ("g", 36, Access::Read),
                ("dx", 210, Access::Write)
            ]
        );
        assert_eq!(b.scalar("n"), Some(Scalar::U64(210)));
        let a = avg_backward(DType::F32, &PoolDims { kernel: 3, ..d }).unwrap();
        assert_eq!(a.scalar("scale"), Some(Scalar::F32((1.0f64 / 9.0) as f32)));
        assert_eq!(a.scalar("k"), Some(Scalar::I32(3)));
        assert!(avg_forward(DType::F32, &PoolDims { kernel: 0, ..d }).is_err());
        assert!(max_forward(DType::U32, &d).is_err());
    }
}
