//! Backends: the kernels behind every op, one trait method per kernel.
//!
//! [`BackendStorage`] is what a device must do. [`cpu::CpuStorage`] is the
//! reference implementation (rayon); the CUDA backend (feature `cuda`)
//! implements the same trait with hand-written kernels and is tested against
//! the CPU. [`Storage`] is the device-tagged buffer a tensor holds; it
//! forwards each kernel to the backend of its variant.
//!
//! A backend knows buffers and sizes, never tapes or shapes beyond the
//! numbers a kernel needs: the op layer checks shapes before it calls here.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_disabled.rs"]
pub mod cuda;
pub mod pool;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

use cpu::CpuStorage;

/// Elementwise functions with a saved-value backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `max(x, 0)`; backward `g·[x > 0]` (reads the input).
    Relu,
    /// `1 / (1 + e^-x)`; backward `g·y·(1 − y)` (reads the output).
    Sigmoid,
    /// `tanh x`; backward `g·(1 − y²)` (reads the output).
    Tanh,
    /// `sign x` ∈ {−1, 0, 1}; not differentiable.
    Sign,
}

/// Same-shape elementwise binary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
}

/// The sizes and operand layouts of one matrix product `C = op(A)·op(B)`.
///
/// `A` is stored row-major as `[m, k]`, or `[k, m]` when `a_trans`; `B` as
/// `[k, n]`, or `[n, k]` when `b_trans`; `C` is `[m, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Whether A is stored transposed.
    pub a_trans: bool,
    /// Whether B is stored transposed.
    pub b_trans: bool,
}

/// Hyper-parameters of one in-place optimiser update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
    /// `v ← μ·v + g'` and `p ← p − lr·v` (or `p ← p − lr·(g' + μ·v)` with
    /// Nesterov), where `g' = g + wd·p`. With `momentum = 0` this is plain SGD
    /// and the velocity buffer is not touched.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum μ.
        momentum: f64,
        /// Nesterov look-ahead.
        nesterov: bool,
        /// L2 weight decay.
        weight_decay: f64,
    },
    /// Adam: `m ← β₁m + (1−β₁)g'`, `v ← β₂v + (1−β₂)g'²`,
    /// `p ← p − lr·m̂/(√v̂ + ε)` with bias corrections for step `t` (from 1).
    Adam {
        /// Learning rate.
        lr: f64,
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
        /// L2 weight decay (added to the gradient).
        weight_decay: f64,
        /// Step number, starting at 1.
        t: u64,
    },
}

/// The kernels a device provides. Every method computes on buffers of one
/// device and returns a new buffer there (or updates one in place).
///
/// Sizes are element counts; a matrix is row-major. Float kernels accept f32
/// and f64 and return an `UnsupportedDType` error for anything else; both
/// operands of a binary kernel share one dtype.
pub trait BackendStorage: Sized {
    /// The element type of the buffer.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the buffer in host memory.
    fn to_cpu(&self) -> Result<CpuStorage>;

    /// `C = op(A)·op(B)` (see [`MatmulDims`]).
    fn matmul(&self, rhs: &Self, dims: MatmulDims) -> Result<Self>;
    /// `y = f(x)` elementwise.
    fn unary(&self, op: Unary) -> Result<Self>;
    /// `dx = g ⊙ f'(…)`: `self` is the upstream gradient, `saved` the input
    /// (ReLU) or the output (sigmoid, tanh) of the forward pass.
    fn unary_backward(&self, saved: &Self, op: Unary) -> Result<Self>;
    /// `a ∘ b` elementwise for same-length buffers.
    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self>;
    /// `y = mul·x + add` elementwise.
    fn affine(&self, mul: f64, add: f64) -> Result<Self>;
    /// `y[i, j] = x[i, j] + row[j]` for `x` with `cols` columns.
    fn add_row(&self, row: &Self, cols: usize) -> Result<Self>;
    /// `y[i, j] = f(x[i, j] + row[j])` for the activation `f`: a linear
    /// layer's bias and activation in one pass. The default composes
    /// [`BackendStorage::add_row`] and [`BackendStorage::unary`].
    fn bias_act(&self, row: &Self, cols: usize, act: Unary) -> Result<Self> {
        self.add_row(row, cols)?.unary(act)
    }
    /// `y = f(op(A)·op(B) + row)`: a linear layer's product, bias and
    /// activation with `row` of `dims.n` values, where the backend fuses
    /// them (the CPU applies the bias and activation to each finished strip
    /// of the product while it is in cache). The default composes
    /// [`BackendStorage::matmul`] and [`BackendStorage::bias_act`].
    fn matmul_bias_act(
        &self,
        rhs: &Self,
        dims: MatmulDims,
        row: &Self,
        act: Unary,
    ) -> Result<Self> {
        self.matmul(rhs, dims)?.bias_act(row, dims.n, act)
    }
    /// Column sums: `s[j] = Σᵢ x[i, j]` for `x` with `cols` columns.
    fn sum_rows(&self, cols: usize) -> Result<Self>;
    /// `s = Σᵢ xᵢ`, a one-element buffer.
    fn sum_all(&self) -> Result<Self>;
    /// `y[i] = scale·s` for `i < len`, from a one-element buffer `s`.
    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self>;
    /// Fused softmax cross-entropy over rows of `classes` logits with one
    /// u32 label per row: returns the mean loss
    /// `(1/N) Σᵢ (log Σⱼ e^{xᵢⱼ} − xᵢ,yᵢ)` (one element) and the
    /// probabilities `pᵢⱼ = e^{xᵢⱼ − mᵢ} / Σₖ e^{xᵢₖ − mᵢ}` with `mᵢ` the row max.
    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)>;
    /// `dx = g·(p − onehot(y))/N` with `self = p`, `g` a one-element buffer.
    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self>;
    /// `y = min(max(x, lo), hi)` elementwise.
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self>;
    /// Projection onto the L∞ ball of radius `eps` around `center`,
    /// intersected with the box `[lo, hi]`:
    /// `y = min(max(x, max(c − eps, lo)), min(c + eps, hi))`.
    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self>;
    /// One signed-gradient step projected back:
    /// `y = min(max(x + α·sign g, max(c − eps, lo)), min(c + eps, hi))`, the
    /// update of FGSM, BIM and L∞ PGD in one pass. The default composes
    /// [`Unary::Sign`], [`BackendStorage::affine`], [`Binary::Add`] and
    /// [`BackendStorage::project_linf`]; a backend may fuse it.
    #[allow(clippy::too_many_arguments)]
    fn sign_step(
        &self,
        grad: &Self,
        center: &Self,
        alpha: f64,
        eps: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Self> {
        let step = grad.unary(Unary::Sign)?.affine(alpha, 0.0)?;
        self.binary(&step, Binary::Add)?
            .project_linf(center, eps, lo, hi)
    }
    /// Index of the largest value of each row of `cols` values (the first
    /// one on ties), as u32.
    fn argmax_rows(&self, cols: usize) -> Result<Self>;
    /// In place: `self ← self + alpha·x`.
    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()>;
    /// In place: one optimiser update of the parameter `self` from `grad`,
    /// with state buffers `s1` (velocity, or Adam's m) and `s2` (Adam's v).
    fn update(&mut self, grad: &Self, s1: &mut Self, s2: &mut Self, rule: UpdateRule)
        -> Result<()>;
}

/// A buffer on some device: what a tensor holds.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory.
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaStorage),
}

impl Storage {
    /// An empty host buffer (no allocation).
    pub(crate) fn empty() -> Storage {
        Storage::Cpu(CpuStorage::F32(Vec::new()))
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.device(),
        }
    }

    /// Moves (copies) the buffer to `device`.
    pub fn to_device(&self, device: Device) -> Result<Storage> {
        match (self, device) {
            (Storage::Cpu(s), Device::Cpu) => Ok(Storage::Cpu(s.clone())),
            #[cfg(feature = "cuda")]
            (s, Device::Cuda(ordinal)) => Ok(Storage::Cuda(cuda::CudaStorage::from_cpu(
                &s.to_cpu()?,
                ordinal,
            )?)),
            #[cfg(feature = "cuda")]
            (Storage::Cuda(s), Device::Cpu) => Ok(Storage::Cpu(s.to_cpu()?)),
            #[cfg(not(feature = "cuda"))]
            (Storage::Cpu(_), Device::Cuda(_)) => Err(cuda::ensure_available().unwrap_err()),
        }
    }
}

/// Forwards a method with no buffer arguments to the backend of `self`.
macro_rules! on_device {
    ($self:expr, $s:ident => $body:expr, $wrap:ident) => {
        match $self {
            Storage::Cpu($s) => $wrap!(Cpu, $body),
            #[cfg(feature = "cuda")]
            Storage::Cuda($s) => $wrap!(Cuda, $body),
        }
    };
}

/// Forwards a method with buffer arguments, all on the same device.
macro_rules! on_same_device {
    ($op:expr, ($($arg:ident = $val:expr),+) => $body:expr, $wrap:ident) => {{
        let devices = [$($val.device()),+];
        if let Some(other) = devices.iter().find(|d| **d != devices[0]) {
            return Err(Error::DeviceMismatch {
                op: $op,
                lhs: devices[0].to_string(),
                rhs: other.to_string(),
            });
        }
        #[allow(unreachable_patterns)]
        match ($($val),+) {
            ($(Storage::Cpu($arg)),+) => $wrap!(Cpu, $body),
            #[cfg(feature = "cuda")]
            ($(Storage::Cuda($arg)),+) => $wrap!(Cuda, $body),
            _ => unreachable!("operands were checked to share one device"),
        }
    }};
}

macro_rules! wrap_storage {
    ($variant:ident, $e:expr) => {
        $e.map(Storage::$variant)
    };
}
macro_rules! wrap_plain {
    ($variant:ident, $e:expr) => {
        $e
    };
}
macro_rules! wrap_pair {
    ($variant:ident, $e:expr) => {
        $e.map(|(a, b)| (Storage::$variant(a), Storage::$variant(b)))
    };
}

impl BackendStorage for Storage {
    fn dtype(&self) -> DType {
        on_device!(self, s => s.dtype(), wrap_plain)
    }
    fn len(&self) -> usize {
        on_device!(self, s => s.len(), wrap_plain)
    }
    fn to_cpu(&self) -> Result<CpuStorage> {
        on_device!(self, s => s.to_cpu(), wrap_plain)
    }
    fn matmul(&self, rhs: &Self, dims: MatmulDims) -> Result<Self> {
        on_same_device!("matmul", (a = self, rhs = rhs) => a.matmul(rhs, dims), wrap_storage)
    }
    fn unary(&self, op: Unary) -> Result<Self> {
        on_device!(self, s => s.unary(op), wrap_storage)
    }
    fn unary_backward(&self, saved: &Self, op: Unary) -> Result<Self> {
        on_same_device!("unary_backward", (a = self, saved = saved) => a.unary_backward(saved, op), wrap_storage)
    }
    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self> {
        on_same_device!("binary", (a = self, rhs = rhs) => a.binary(rhs, op), wrap_storage)
    }
    fn affine(&self, mul: f64, add: f64) -> Result<Self> {
        on_device!(self, s => s.affine(mul, add), wrap_storage)
    }
    fn add_row(&self, row: &Self, cols: usize) -> Result<Self> {
        on_same_device!("add_row", (a = self, row = row) => a.add_row(row, cols), wrap_storage)
    }
    fn bias_act(&self, row: &Self, cols: usize, act: Unary) -> Result<Self> {
        on_same_device!("bias_act", (a = self, row = row) => a.bias_act(row, cols, act), wrap_storage)
    }
    fn matmul_bias_act(
        &self,
        rhs: &Self,
        dims: MatmulDims,
        row: &Self,
        act: Unary,
    ) -> Result<Self> {
        on_same_device!("linear_act", (a = self, rhs = rhs, row = row) => a.matmul_bias_act(rhs, dims, row, act), wrap_storage)
    }
    fn sum_rows(&self, cols: usize) -> Result<Self> {
        on_device!(self, s => s.sum_rows(cols), wrap_storage)
    }
    fn sum_all(&self) -> Result<Self> {
        on_device!(self, s => s.sum_all(), wrap_storage)
    }
    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self> {
        on_device!(self, s => s.broadcast_scalar(len, scale), wrap_storage)
    }
    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)> {
        on_same_device!("softmax_cross_entropy", (a = self, labels = labels) => a.softmax_xent(labels, classes), wrap_pair)
    }
    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self> {
        on_same_device!("softmax_cross_entropy_backward", (a = self, labels = labels, grad = grad) => a.softmax_xent_backward(labels, grad, classes), wrap_storage)
    }
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        on_device!(self, s => s.clamp(lo, hi), wrap_storage)
    }
    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self> {
        on_same_device!("project_linf", (a = self, center = center) => a.project_linf(center, eps, lo, hi), wrap_storage)
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
        on_same_device!("sign_step", (a = self, grad = grad, center = center) => a.sign_step(grad, center, alpha, eps, lo, hi), wrap_storage)
    }
    fn argmax_rows(&self, cols: usize) -> Result<Self> {
        on_device!(self, s => s.argmax_rows(cols), wrap_storage)
    }
    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()> {
        on_same_device!("axpy", (a = self, x = x) => a.axpy(alpha, x), wrap_plain)
    }
    fn update(
        &mut self,
        grad: &Self,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        on_same_device!("update", (a = self, grad = grad, s1 = s1, s2 = s2) => a.update(grad, s1, s2, rule), wrap_plain)
    }
}
