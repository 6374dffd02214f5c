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

/// The norm of a per-row vector kernel ([`BackendStorage::apgd_step`],
/// [`BackendStorage::fab_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// `‖v‖∞ = maxⱼ |vⱼ|`.
    Linf,
    /// `‖v‖₂ = √(Σⱼ vⱼ²)`.
    L2,
}

/// The error of a kernel that a backend does not have yet.
fn not_on_this_device<S>(op: &str) -> Error {
    let backend = std::any::type_name::<S>()
        .rsplit("::")
        .next()
        .unwrap_or("this");
    Error::invalid(format!(
        "{op} is not implemented on this device ({backend}) yet; run it with --device cpu"
    ))
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

    // The kernels of robustness evaluation and training (APGD, FAB, TRADES,
    // MART): the CPU backend has them; the others return an error naming
    // the op until they do. Rows have `classes` (or `cols`) values; `[N]` is
    // one value per row.

    /// Row-wise log-softmax: `yᵢⱼ = xᵢⱼ − mᵢ − ln Σₖ e^{xᵢₖ − mᵢ}`, `mᵢ = maxⱼ xᵢⱼ`.
    // CUDA kernel: next milestone
    fn log_softmax(&self, classes: usize) -> Result<Self> {
        let _ = classes;
        Err(not_on_this_device::<Self>("log_softmax"))
    }
    /// With `self = g` and `y` the log-softmax output:
    /// `dxᵢⱼ = gᵢⱼ − e^{yᵢⱼ}·Σₖ gᵢₖ`.
    // CUDA kernel: next milestone
    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self> {
        let _ = (y, classes);
        Err(not_on_this_device::<Self>("log_softmax_backward"))
    }
    /// `y = eˣ` elementwise.
    // CUDA kernel: next milestone
    fn exp(&self) -> Result<Self> {
        Err(not_on_this_device::<Self>("exp"))
    }
    /// `y = ln x` elementwise.
    // CUDA kernel: next milestone
    fn ln(&self) -> Result<Self> {
        Err(not_on_this_device::<Self>("ln"))
    }
    /// One entry per row, `[N, classes] → [N]`: `yᵢ = xᵢ,ₖᵢ` with the u32
    /// column indices `k` (`[N]`).
    // CUDA kernel: next milestone
    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self> {
        let _ = (index, classes);
        Err(not_on_this_device::<Self>("pick"))
    }
    /// With `self = g` (`[N]`): `dxᵢⱼ = gᵢ·[j = kᵢ]` (`[N, classes]`).
    // CUDA kernel: next milestone
    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self> {
        let _ = (index, classes);
        Err(not_on_this_device::<Self>("pick_backward"))
    }
    /// Per row, the KL divergence between the softmax distributions of two
    /// logit rows, `self = a` and `b`: with `p = softmax(aᵢ)`,
    /// `q = softmax(bᵢ)`, `KLᵢ = Σⱼ pⱼ (ln pⱼ − ln qⱼ)` (`[N]`).
    // CUDA kernel: next milestone
    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self> {
        let _ = (b, classes);
        Err(not_on_this_device::<Self>("kl_div"))
    }
    /// The gradients of `Σᵢ gᵢ·KLᵢ` (`grad = g`, `[N]`), with `self = a`:
    /// `daᵢⱼ = gᵢ·pᵢⱼ·(ln pᵢⱼ − ln qᵢⱼ − KLᵢ)` and `dbᵢⱼ = gᵢ·(qᵢⱼ − pᵢⱼ)`.
    // CUDA kernel: next milestone
    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)> {
        let _ = (b, grad, classes);
        Err(not_on_this_device::<Self>("kl_div_backward"))
    }
    /// Per row, the difference-of-logits-ratio loss of Croce & Hein (2020)
    /// with u32 `labels` y and `targets` t (`[N]` each), `π` the classes
    /// sorted by decreasing logit (lower index first on ties):
    /// untargeted `DLRᵢ = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e−12)`;
    /// with `targeted`, `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12)`
    /// (`targets` is then read; untargeted it is ignored).
    // CUDA kernel: next milestone
    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self> {
        let _ = (labels, targets, targeted, classes);
        Err(not_on_this_device::<Self>("dlr"))
    }
    /// The gradient of `Σᵢ gᵢ·DLRᵢ` (`grad = g`, `[N]`) with `self` the
    /// logits: with `D` the denominator and `n` the numerator of row i,
    /// `dz = −g·(e_y − e_m)/D + g·n/D²·∂D`, where `m = argmax_{j≠y}` (the
    /// target t when targeted) and `∂D = e_π1 − e_π3`
    /// (targeted: `e_π1 − (e_π3 + e_π4)/2`); `e_k` is the k-th unit row.
    // CUDA kernel: next milestone
    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self> {
        let _ = (labels, targets, targeted, grad, classes);
        Err(not_on_this_device::<Self>("dlr_backward"))
    }
    /// One APGD step (Croce & Hein 2020) per row of `cols` values, with
    /// `self = x⁽ᵏ⁾`, the previous iterate `x⁽ᵏ⁻¹⁾`, the gradient `g`, the
    /// clean input `c`, the per-row step sizes `η` (`[N]`) and momentum
    /// `α`: `z = P(x⁽ᵏ⁾ + η·s(g))` and
    /// `x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))`, where
    /// L∞: `s(g) = sign g`, `P(v) = min(max(v, c − eps, 0), c + eps, 1)`;
    /// L2: `s(g) = g/(‖g‖₂ + 1e−12)`,
    /// `P(v) = clip₀¹(c + δ·min(eps, ‖δ‖₂)/(‖δ‖₂ + 1e−12))`, `δ = v − c`.
    // CUDA kernel: next milestone
    #[allow(clippy::too_many_arguments)]
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
        let _ = (previous, grad, center, step, momentum, eps, norm, cols);
        Err(not_on_this_device::<Self>("apgd_step"))
    }
    /// One FAB step (Croce & Hein 2019) per row of `cols` values, with
    /// `self = x⁽ᵏ⁾`, the clean input `x₀`, and the decision boundary
    /// linearised at `x⁽ᵏ⁾`, `{z : f + w·(z − x⁽ᵏ⁾) = 0}` (`w` `[N, cols]`
    /// the gradient and `f` `[N]` the value there of the logit difference):
    /// with `d₁`, `d₂` the smallest-norm steps that put `x⁽ᵏ⁾` and `x₀` on
    /// that hyperplane inside `[0, 1]` (the box corner nearest to it when
    /// the box cannot reach it), `a = ‖d₁‖/(‖d₁‖ + ‖d₂‖)` clipped to
    /// `[0, α_max]` (norms at least 1e−8):
    /// `x⁽ᵏ⁺¹⁾ = clip₀¹((1 − a)(x⁽ᵏ⁾ + η·d₁) + a(x₀ + η·d₂))`. Returns
    /// `x⁽ᵏ⁺¹⁾` and `‖x⁽ᵏ⁺¹⁾ − x₀‖` per row (`[N]`), in `norm`.
    // CUDA kernel: next milestone
    #[allow(clippy::too_many_arguments)]
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
        let _ = (x0, w, f, eta, alpha_max, norm, cols);
        Err(not_on_this_device::<Self>("fab_step"))
    }
    /// In place, for each u32 row index `i` in `rows`:
    /// `selfᵢ ← srcᵢ + t·(selfᵢ − srcᵢ)` (`t = 0` copies the rows of `src`).
    // CUDA kernel: next milestone
    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()> {
        let _ = (src, rows, t, cols);
        Err(not_on_this_device::<Self>("lerp_rows"))
    }
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
    fn log_softmax(&self, classes: usize) -> Result<Self> {
        on_device!(self, s => s.log_softmax(classes), wrap_storage)
    }
    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self> {
        on_same_device!("log_softmax_backward", (g = self, y = y) => g.log_softmax_backward(y, classes), wrap_storage)
    }
    fn exp(&self) -> Result<Self> {
        on_device!(self, s => s.exp(), wrap_storage)
    }
    fn ln(&self) -> Result<Self> {
        on_device!(self, s => s.ln(), wrap_storage)
    }
    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self> {
        on_same_device!("pick", (x = self, index = index) => x.pick_rows(index, classes), wrap_storage)
    }
    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self> {
        on_same_device!("pick_backward", (g = self, index = index) => g.pick_rows_backward(index, classes), wrap_storage)
    }
    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self> {
        on_same_device!("kl_div", (a = self, b = b) => a.kl_div_rows(b, classes), wrap_storage)
    }
    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)> {
        on_same_device!("kl_div_backward", (a = self, b = b, grad = grad) => a.kl_div_rows_backward(b, grad, classes), wrap_pair)
    }
    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self> {
        on_same_device!("dlr", (z = self, labels = labels, targets = targets) => z.dlr_rows(labels, targets, targeted, classes), wrap_storage)
    }
    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self> {
        on_same_device!("dlr_backward", (z = self, labels = labels, targets = targets, grad = grad) => z.dlr_rows_backward(labels, targets, targeted, grad, classes), wrap_storage)
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
        on_same_device!("apgd_step", (x = self, previous = previous, grad = grad, center = center, step = step) => x.apgd_step(previous, grad, center, step, momentum, eps, norm, cols), wrap_storage)
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
        on_same_device!("fab_step", (x = self, x0 = x0, w = w, f = f) => x.fab_step(x0, w, f, eta, alpha_max, norm, cols), wrap_pair)
    }
    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()> {
        on_same_device!("lerp_rows", (x = self, src = src, rows = rows) => x.lerp_rows(src, rows, t, cols), wrap_plain)
    }
}
