//! The rayon CPU backend: the reference every other backend is tested
//! against.
//!
//! Kernels are generic over [`Float`] and instantiated for f32 and f64.
//! Buffers of f16 and bf16 (through `half`) are for storage and matrix
//! products: [`CpuStorage::cast`] converts between every float type, the
//! product runs on [`gemm::gemm_half`] with an f32 result (see
//! [`CpuStorage::matmul_in`]), and the other kernels ask for f32 or f64.
//! Parallel work is split in fixed chunks, never by thread count, so results
//! are bit-identical for any number of threads.

mod cast;
pub mod conv;
mod fused_update;
pub mod gemm;
mod kernels;
pub(crate) mod mixed;
#[cfg(target_arch = "x86_64")]
mod pool_x86;
mod spin;

use half::{bf16, f16};

use crate::backend::{
    pool, Activation, BackendStorage, Binary, Conv2dDims, MatmulDims, Norm, PoolDims, UpdateRule,
};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::precision::{autocast, Precision};

/// A host buffer of one element type.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// u32 elements (labels, class indices).
    U32(Vec<u32>),
    /// IEEE half elements.
    F16(Vec<f16>),
    /// bfloat16 elements.
    BF16(Vec<bf16>),
}

/// Element types a [`CpuStorage`] can hold.
pub trait CpuElement: Copy + Send + Sync + 'static {
    /// The runtime tag.
    const DTYPE: DType;
    /// Wraps a vector.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Borrows the vector if the dtype matches.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! impl_cpu_element {
    ($t:ty, $variant:ident) => {
        impl CpuElement for $t {
            const DTYPE: DType = DType::$variant;
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_cpu_element!(f32, F32);
impl_cpu_element!(f64, F64);
impl_cpu_element!(u32, U32);
impl_cpu_element!(f16, F16);
impl_cpu_element!(bf16, BF16);

impl CpuStorage {
    /// The elements converted to f64 (exact for every dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::U32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
        }
    }

    /// `len` copies of `value` as `dtype` (rounded to nearest even for the
    /// float types, truncated for u32).
    pub fn filled(len: usize, value: f64, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(pool::filled(len, value as f32)),
            DType::F64 => CpuStorage::F64(pool::filled(len, value)),
            DType::U32 => CpuStorage::U32(pool::filled(len, value as u32)),
            DType::F16 => CpuStorage::F16(vec![cast::f16_from_f64(value); len]),
            DType::BF16 => CpuStorage::BF16(vec![cast::bf16_from_f64(value); len]),
        }
    }

    /// Element `i` as f64 (exact for every dtype).
    ///
    /// # Panics
    ///
    /// If `i` is out of bounds.
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            CpuStorage::F32(v) => v[i] as f64,
            CpuStorage::F64(v) => v[i],
            CpuStorage::U32(v) => v[i] as f64,
            CpuStorage::F16(v) => v[i].to_f64(),
            CpuStorage::BF16(v) => v[i].to_f64(),
        }
    }

    /// A buffer of `dtype` from f64 values (rounded to nearest even for the
    /// float types, truncated for u32).
    pub fn from_f64_slice(values: &[f64], dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(values.to_vec()),
            DType::U32 => CpuStorage::U32(values.iter().map(|&x| x as u32).collect()),
            DType::F16 => CpuStorage::F16(values.iter().map(|&x| cast::f16_from_f64(x)).collect()),
            DType::BF16 => {
                CpuStorage::BF16(values.iter().map(|&x| cast::bf16_from_f64(x)).collect())
            }
        }
    }
}

pub use spin::{spinning_enabled, spinning_threads, with_idle_work, with_spinning_workers};

/// Runs `f` on a thread of the current rayon pool (directly, when the
/// calling thread is one already).
///
/// Kernels launched from a pool thread split their work through that
/// thread's own queue. Launched from outside, every parallel kernel goes
/// through the pool's shared injector, which allocates a block every few
/// dozen launches and hands the work to another thread and back. Loops that
/// launch many kernels (training, attacks, the CLI) run inside this. The
/// caller's autocast precision ([`crate::precision`]) goes with `f`.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        let precision = Precision::current();
        // `scope` runs its body on a pool thread when called from outside.
        rayon::scope(|_| autocast(precision, f))
    }
}

fn unsupported(op: &'static str, dtype: DType) -> Error {
    if dtype.is_half() {
        return Error::invalid(format!(
            "{op} takes f32 or f64, not {dtype}: {dtype} tensors hold values and feed matrix \
             products; convert with `to_dtype(DType::F32)` (elementwise ops, reductions and \
             losses run in f32)"
        ));
    }
    Error::UnsupportedDType { op, dtype }
}

/// Runs `$body` with `$x` bound to the float slice of `$s` and `T` its type.
macro_rules! with_float {
    ($op:expr, $s:expr, |$x:ident: $t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32($x) => {
                #[allow(dead_code)]
                type $t = f32;
                $body
            }
            CpuStorage::F64($x) => {
                #[allow(dead_code)]
                type $t = f64;
                $body
            }
            other => Err(unsupported($op, other.dtype())),
        }
    };
}

/// Like [`with_float`] for several buffers that must share the float type.
macro_rules! with_floats {
    ($op:expr, ($first:expr $(, $rest:expr)*), |$x:ident $(, $y:ident)*| $body:expr) => {{
        let dtype = $first.dtype();
        $(
            if $rest.dtype() != dtype {
                return Err(Error::DTypeMismatch { op: $op, lhs: dtype, rhs: $rest.dtype() });
            }
        )*
        match ($first, $($rest),*) {
            (CpuStorage::F32($x), $(CpuStorage::F32($y)),*) => $body,
            (CpuStorage::F64($x), $(CpuStorage::F64($y)),*) => $body,
            _ => Err(unsupported($op, dtype)),
        }
    }};
}

fn labels_of<'a>(op: &'static str, s: &'a CpuStorage) -> Result<&'a [u32]> {
    match s {
        CpuStorage::U32(v) => Ok(v),
        other => Err(Error::invalid(format!(
            "{op}: labels must be u32, got {}",
            other.dtype()
        ))),
    }
}

mod robust;

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
        }
    }

    fn to_cpu(&self) -> Result<CpuStorage> {
        Ok(self.clone())
    }

    fn matmul(&self, rhs: &Self, d: MatmulDims) -> Result<Self> {
        with_floats!("matmul", (self, rhs), |a, b| {
            let c = gemm::gemm_new(d.m, d.n, d.k, a, d.a_trans, b, d.b_trans);
            Ok(CpuElement::into_storage(c))
        })
    }

    fn matmul_in(&self, rhs: &Self, d: MatmulDims, precision: Precision) -> Result<Self> {
        mixed::matmul_in(self, rhs, d, precision)
    }

    fn matmul_bias_act_in(
        &self,
        rhs: &Self,
        d: MatmulDims,
        row: &Self,
        act: Activation,
        precision: Precision,
    ) -> Result<Self> {
        mixed::matmul_bias_act_in(self, rhs, d, row, act, precision)
    }

    fn activation(&self, act: Activation) -> Result<Self> {
        with_float!(act.name(), self, |x: T| Ok(CpuElement::into_storage(
            kernels::activation(x, act)
        )))
    }

    fn activation_backward(&self, saved: &Self, act: Activation) -> Result<Self> {
        with_floats!("activation_backward", (self, saved), |g, s| Ok(
            CpuElement::into_storage(kernels::activation_backward(g, s, act))
        ))
    }

    fn gelu(&self) -> Result<Self> {
        with_float!("gelu", self, |x: T| Ok(CpuElement::into_storage(
            kernels::gelu(x)
        )))
    }

    fn gelu_backward(&self, x: &Self) -> Result<Self> {
        with_floats!("gelu_backward", (self, x), |g, x| Ok(
            CpuElement::into_storage(kernels::gelu_backward(g, x))
        ))
    }

    fn sign(&self) -> Result<Self> {
        with_float!("sign", self, |x: T| Ok(CpuElement::into_storage(
            kernels::signs(x)
        )))
    }

    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self> {
        with_floats!("binary", (self, rhs), |a, b| Ok(CpuElement::into_storage(
            kernels::binary(a, b, op)
        )))
    }

    fn affine(&self, mul: f64, add: f64) -> Result<Self> {
        with_float!("affine", self, |x: T| Ok(CpuElement::into_storage(
            kernels::affine(x, mul, add)
        )))
    }

    fn full_like(&self, value: f64) -> Result<Self> {
        match self.dtype() {
            dtype if dtype.is_float() => Ok(CpuStorage::filled(self.len(), value, dtype)),
            dtype => Err(unsupported("full_like", dtype)),
        }
    }

    fn add_row(&self, row: &Self, cols: usize) -> Result<Self> {
        with_floats!("add_row", (self, row), |x, r| Ok(CpuElement::into_storage(
            kernels::add_row(x, r, cols)
        )))
    }

    fn bias_act(&self, row: &Self, cols: usize, act: Activation) -> Result<Self> {
        with_floats!("bias_act", (self, row), |x, r| Ok(
            CpuElement::into_storage(kernels::bias_act(x, r, cols, act))
        ))
    }

    fn matmul_bias_act(
        &self,
        rhs: &Self,
        d: MatmulDims,
        row: &Self,
        act: Activation,
    ) -> Result<Self> {
        if row.len() != d.n {
            return Err(Error::invalid(format!(
                "linear_act: a bias of {} values for {} columns",
                row.len(),
                d.n
            )));
        }
        with_floats!("linear_act", (self, rhs, row), |a, b, bias| {
            let epilogue = |_: usize, j: usize, c: &mut [_]| {
                kernels::bias_act_in_place(c, &bias[j..], act);
            };
            Ok(CpuElement::into_storage(gemm::gemm_new_then(
                d.m, d.n, d.k, a, d.a_trans, b, d.b_trans, &epilogue,
            )))
        })
    }

    fn matmul_update(
        &mut self,
        a: &Self,
        b: &Self,
        d: MatmulDims,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        fused_update::matmul_update(self, a, b, d, s1, s2, rule)
    }

    fn sum_rows(&self, cols: usize) -> Result<Self> {
        with_float!("sum_rows", self, |x: T| Ok(CpuElement::into_storage(
            kernels::sum_rows(x, cols)
        )))
    }

    fn sum_all(&self) -> Result<Self> {
        with_float!("sum", self, |x: T| Ok(CpuElement::into_storage(
            pool::filled(1, kernels::sum(x))
        )))
    }

    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self> {
        with_float!("broadcast_scalar", self, |x: T| {
            let v = x
                .first()
                .copied()
                .ok_or_else(|| Error::invalid("broadcast_scalar: empty scalar buffer"))?;
            Ok(CpuElement::into_storage(pool::filled(
                len,
                T::from_f64(v.to_f64() * scale),
            )))
        })
    }

    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)> {
        let labels = labels_of("softmax_cross_entropy", labels)?;
        with_float!("softmax_cross_entropy", self, |x: T| {
            let (loss, probs) = kernels::softmax_xent(x, labels, classes)?;
            Ok((
                CpuElement::into_storage(pool::filled(1, loss)),
                CpuElement::into_storage(probs),
            ))
        })
    }

    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self> {
        let labels = labels_of("softmax_cross_entropy_backward", labels)?;
        with_floats!("softmax_cross_entropy_backward", (self, grad), |p, g| Ok(
            CpuElement::into_storage(kernels::softmax_xent_backward(p, labels, g[0], classes))
        ))
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        with_float!("clamp", self, |x: T| Ok(CpuElement::into_storage(
            kernels::clamp(x, T::from_f64(lo), T::from_f64(hi))
        )))
    }

    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self> {
        with_floats!("project_linf", (self, center), |x, c| Ok(
            CpuElement::into_storage(kernels::project_linf(x, c, eps, lo, hi))
        ))
    }

    fn sign_step(
        &self,
        grad: &Self,
        center: &Self,
        alpha: f64,
        eps: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Self> {
        with_floats!("sign_step", (self, grad, center), |x, g, c| Ok(
            CpuElement::into_storage(kernels::sign_step(x, g, c, alpha, eps, lo, hi))
        ))
    }

    fn argmax_rows(&self, cols: usize) -> Result<Self> {
        with_float!("argmax", self, |x: T| Ok(CpuStorage::U32(
            kernels::argmax_rows(x, cols)
        )))
    }

    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()> {
        let dtype = self.dtype();
        match (self, x) {
            (CpuStorage::F32(y), CpuStorage::F32(x)) => kernels::axpy(y, alpha, x),
            (CpuStorage::F64(y), CpuStorage::F64(x)) => kernels::axpy(y, alpha, x),
            (_, x) => {
                return Err(Error::DTypeMismatch {
                    op: "axpy",
                    lhs: dtype,
                    rhs: x.dtype(),
                })
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        grad: &Self,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        let dtype = self.dtype();
        match (self, grad, s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                kernels::update(p, g, a, b, rule)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                kernels::update(p, g, a, b, rule)
            }
            (_, g, _, _) => {
                return Err(Error::DTypeMismatch {
                    op: "update",
                    lhs: dtype,
                    rhs: g.dtype(),
                })
            }
        }
        Ok(())
    }

    fn tally_step(&mut self, loss: &Self, logits: &Self, labels: &Self, cols: usize) -> Result<()> {
        let op = "tally_step";
        let (CpuStorage::F64(tally), CpuStorage::U32(y)) = (&mut *self, labels) else {
            return Err(Error::invalid(format!(
                "{op}: the tally must be f64 and the labels u32, got {} and {}",
                self.dtype(),
                labels.dtype()
            )));
        };
        if tally.len() != 2 || loss.len() != 1 || logits.len() != y.len() * cols {
            return Err(Error::invalid(format!(
                "{op}: a tally of {} values, a loss of {}, {} logits for {} labels of {cols} classes",
                tally.len(),
                loss.len(),
                logits.len(),
                y.len()
            )));
        }
        let hits = with_float!(op, logits, |z: T| Ok(kernels::count_argmax_hits(
            z, cols, y
        )))?;
        tally[0] += loss.get_f64(0) * y.len() as f64;
        tally[1] += hits as f64;
        Ok(())
    }

    // The kernels of robustness evaluation and training, in `robust.rs`.
    fn log_softmax(&self, classes: usize) -> Result<Self> {
        robust::log_softmax(self, classes)
    }
    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self> {
        robust::log_softmax_backward(self, y, classes)
    }
    fn exp(&self) -> Result<Self> {
        robust::map(self, "exp", f64::exp)
    }
    fn ln(&self) -> Result<Self> {
        robust::map(self, "ln", f64::ln)
    }
    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self> {
        robust::pick_rows(self, index, classes)
    }
    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self> {
        robust::pick_rows_backward(self, index, classes)
    }
    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self> {
        robust::kl_div_rows(self, b, classes)
    }
    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)> {
        robust::kl_div_rows_backward(self, b, grad, classes)
    }
    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self> {
        robust::dlr_rows(self, labels, targets, targeted, classes)
    }
    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self> {
        robust::dlr_rows_backward(self, labels, targets, targeted, grad, classes)
    }
    fn apgd_step(
        &self,
        previous: &Self,
        grad: &Self,
        center: &Self,
        step: &Self,
        momentum: f64,
        eps: f64,
        norm: Norm,
        cols: usize,
    ) -> Result<Self> {
        robust::apgd_step(
            self, previous, grad, center, step, momentum, eps, norm, cols,
        )
    }
    fn fab_step(
        &self,
        x0: &Self,
        w: &Self,
        f: &Self,
        eta: f64,
        alpha_max: f64,
        norm: Norm,
        cols: usize,
    ) -> Result<(Self, Self)> {
        robust::fab_step(self, x0, w, f, eta, alpha_max, norm, cols)
    }
    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()> {
        robust::lerp_rows(self, src, rows, t, cols)
    }

    fn conv2d(&self, weight: &Self, bias: &Self, dims: Conv2dDims) -> Result<Self> {
        with_floats!("conv2d", (self, weight, bias), |x, w, b| Ok(
            CpuElement::into_storage(conv::conv2d(x, w, b, &dims))
        ))
    }

    fn conv2d_backward_input(&self, weight: &Self, dims: Conv2dDims) -> Result<Self> {
        with_floats!("conv2d_backward", (self, weight), |g, w| Ok(
            CpuElement::into_storage(conv::conv2d_backward_input(g, w, &dims))
        ))
    }

    fn conv2d_backward_params(&self, x: &Self, dims: Conv2dDims) -> Result<(Self, Self)> {
        with_floats!("conv2d_backward", (self, x), |g, x| {
            let (dw, db) = conv::conv2d_backward_params(g, x, &dims);
            Ok((CpuElement::into_storage(dw), CpuElement::into_storage(db)))
        })
    }

    fn max_pool2d(&self, dims: PoolDims) -> Result<Self> {
        with_float!("max_pool2d", self, |x: T| Ok(CpuElement::into_storage(
            conv::max_pool2d(x, &dims)
        )))
    }

    fn max_pool2d_backward(&self, x: &Self, dims: PoolDims) -> Result<Self> {
        with_floats!("max_pool2d_backward", (self, x), |g, x| Ok(
            CpuElement::into_storage(conv::max_pool2d_backward(g, x, &dims))
        ))
    }

    fn avg_pool2d(&self, dims: PoolDims) -> Result<Self> {
        with_float!("avg_pool2d", self, |x: T| Ok(CpuElement::into_storage(
            conv::avg_pool2d(x, &dims)
        )))
    }

    fn avg_pool2d_backward(&self, dims: PoolDims) -> Result<Self> {
        with_float!("avg_pool2d_backward", self, |g: T| Ok(
            CpuElement::into_storage(conv::avg_pool2d_backward(g, &dims))
        ))
    }
}
