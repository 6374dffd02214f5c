//! Backends: the kernels behind every op, one trait method per kernel.
//!
//! [`BackendStorage`] is what a device must do. [`cpu::CpuStorage`] is the
//! reference implementation (rayon); the CUDA backend ([`cuda`]) implements
//! the same trait with hand-written kernels, launched on a GPU (feature
//! `cuda`) or on the SIMT emulator (feature `emu`, `--device emu`), and is
//! tested against the CPU. [`Storage`] is the device-tagged buffer a tensor
//! holds; it forwards each kernel to the backend of its variant.
//!
//! A backend knows buffers and sizes, never tapes or shapes beyond the
//! numbers a kernel needs: the op layer checks shapes before it calls here.
//! The vocabulary ([`Activation`], [`Binary`], [`MatmulDims`],
//! [`Conv2dDims`], [`PoolDims`] and [`DType`]) is defined once, in the
//! `kernels` crate, and shared by this trait, the launch plans and the
//! emulator.

pub mod cpu;
pub mod cuda;
mod dispatch;
pub mod pool;
pub(crate) mod storage;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::Precision;

use cpu::CpuStorage;

pub use kernels::{Activation, Binary, Conv2dDims, MatmulDims, PoolDims};
pub use storage::Storage;

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

/// The error of a backend without half-precision products, for a product
/// that would need one.
fn full_precision_only<S>(op: &str, dtypes: [DType; 2], precision: Precision) -> Result<()> {
    let half = dtypes.iter().find(|d| d.is_half());
    let autocast = precision.is_half() && dtypes.contains(&DType::F32);
    if half.is_none() && !autocast {
        return Ok(());
    }
    let what = half.map_or(format!("--precision {precision}"), |d| {
        format!("{d} operands")
    });
    Err(Error::invalid(format!(
        "{op} with {what}: {} (or with --precision f32 and f32 tensors)",
        not_on_this_device::<S>("a half-precision product")
    )))
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
    /// `y = f(x)` elementwise for the activation `f`.
    fn activation(&self, act: Activation) -> Result<Self>;
    /// `dx = g ⊙ f'(…)`: `self` is the upstream gradient, `saved` the input
    /// (ReLU) or the output (sigmoid, tanh) of the forward pass.
    fn activation_backward(&self, saved: &Self, act: Activation) -> Result<Self>;
    /// GELU in its tanh form, elementwise: with `u = k·(x + a·x³)`,
    /// `k = √(2/π)`, `a = 0.044715` ([`kernels::gelu::K`], [`kernels::gelu::A`])
    /// and `t = tanh u`, `y = ½·x·(1 + t)`, and `y = 0` where `1 + t = 0`
    /// (so `x = −∞` gives 0; NaN gives NaN, `+∞` gives `+∞`).
    fn gelu(&self) -> Result<Self>;
    /// GELU's backward from the forward's input `x`, with `self = g`:
    /// `dx = g·GELU'(x)`, `GELU'(x) = ½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²)`,
    /// the second term taken as 0 where `t = ±1` (so `x = ±∞` gives `g` or
    /// 0 for a finite `g`, not NaN).
    fn gelu_backward(&self, x: &Self) -> Result<Self>;
    /// `y = sign x` ∈ {−1, 0, 1} elementwise (NaN stays NaN); not
    /// differentiable.
    fn sign(&self) -> Result<Self>;
    /// `a ∘ b` elementwise for same-length buffers.
    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self>;
    /// `y = mul·x + add` elementwise.
    fn affine(&self, mul: f64, add: f64) -> Result<Self>;
    /// A buffer of this one's float type (f32, f64, bf16 or f16), length
    /// and device with every element `value` (rounded to the type),
    /// whatever this one holds: the backward pass's seed `∂L/∂L = 1`, made
    /// where the loss is (on a GPU by a kernel for f32 and f64, so a step
    /// uploads nothing; on the CPU from the buffer pool).
    fn full_like(&self, value: f64) -> Result<Self>;
    /// `y[i, j] = x[i, j] + row[j]` for `x` with `cols` columns.
    fn add_row(&self, row: &Self, cols: usize) -> Result<Self>;
    /// `y[i, j] = f(x[i, j] + row[j])` for the activation `f`: a linear
    /// layer's bias and activation in one pass. The default composes
    /// [`BackendStorage::add_row`] and [`BackendStorage::activation`].
    fn bias_act(&self, row: &Self, cols: usize, act: Activation) -> Result<Self> {
        self.add_row(row, cols)?.activation(act)
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
        act: Activation,
    ) -> Result<Self> {
        self.matmul(rhs, dims)?.bias_act(row, dims.n, act)
    }
    /// [`BackendStorage::matmul`] with the operands rounded to `precision`
    /// (see [`crate::precision`]), summed in f32, with an f32 result; a
    /// bf16 or f16 operand sets the type itself. The default runs f32 and
    /// f64 products and refuses half ones with an error naming the device.
    fn matmul_in(&self, rhs: &Self, dims: MatmulDims, precision: Precision) -> Result<Self> {
        full_precision_only::<Self>("matmul", [self.dtype(), rhs.dtype()], precision)?;
        self.matmul(rhs, dims)
    }
    /// [`BackendStorage::matmul_bias_act`] with the product in `precision`
    /// as for [`BackendStorage::matmul_in`]; the bias and the activation are
    /// applied in f32.
    fn matmul_bias_act_in(
        &self,
        rhs: &Self,
        dims: MatmulDims,
        row: &Self,
        act: Activation,
        precision: Precision,
    ) -> Result<Self> {
        full_precision_only::<Self>("linear_act", [self.dtype(), rhs.dtype()], precision)?;
        self.matmul_bias_act(rhs, dims, row, act)
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
    /// [`BackendStorage::sign`], [`BackendStorage::affine`], [`Binary::Add`]
    /// and [`BackendStorage::project_linf`]; a backend may fuse it.
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
        let step = grad.sign()?.affine(alpha, 0.0)?;
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
    /// In place: one optimiser update of the parameter `self` from the
    /// gradient `G = op(a)·op(b)`, `self ← rule(self, G)` (e.g.
    /// `self − lr·(G + wd·self)`), with the state `s1`, `s2` updated as
    /// [`BackendStorage::update`] does. The CPU steps each finished block of
    /// the product while it is in L1, so `G` is never stored whole and the
    /// update makes no pass over memory of its own; the bits are those of
    /// the product followed by the update. The default composes
    /// [`BackendStorage::matmul`] and [`BackendStorage::update`].
    #[allow(clippy::too_many_arguments)]
    fn matmul_update(
        &mut self,
        a: &Self,
        b: &Self,
        dims: MatmulDims,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        let grad = a.matmul(b, dims)?;
        self.update(&grad, s1, s2, rule)
    }
    /// In place, on a loop's running statistics `self = [s, c]` (two f64):
    /// `s ← s + loss·N` and `c ← c + #{i : argmaxⱼ zᵢⱼ = yᵢ}` for the
    /// one-element `loss`, logits `z` with rows of `cols` values and the
    /// `N` u32 labels `y` (argmax as [`BackendStorage::argmax_rows`]). A
    /// NaN or infinite loss makes `s` non-finite. On a device this runs
    /// there, so a training step reads nothing back to the host.
    fn tally_step(&mut self, loss: &Self, logits: &Self, labels: &Self, cols: usize) -> Result<()>;

    // The kernels of robustness evaluation and training (APGD, FAB, TRADES,
    // MART). Rows have `classes` (or `cols`) values; `[N]` is one value per
    // row.

    /// Row-wise log-softmax: `yᵢⱼ = xᵢⱼ − mᵢ − ln Σₖ e^{xᵢₖ − mᵢ}`, `mᵢ = maxⱼ xᵢⱼ`.
    fn log_softmax(&self, classes: usize) -> Result<Self>;
    /// With `self = g` and `y` the log-softmax output:
    /// `dxᵢⱼ = gᵢⱼ − e^{yᵢⱼ}·Σₖ gᵢₖ`.
    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self>;
    /// `y = eˣ` elementwise.
    fn exp(&self) -> Result<Self>;
    /// `y = ln x` elementwise.
    fn ln(&self) -> Result<Self>;
    /// One entry per row, `[N, classes] → [N]`: `yᵢ = xᵢ,ₖᵢ` with the u32
    /// column indices `k` (`[N]`).
    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self>;
    /// With `self = g` (`[N]`): `dxᵢⱼ = gᵢ·[j = kᵢ]` (`[N, classes]`).
    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self>;
    /// Per row, the KL divergence between the softmax distributions of two
    /// logit rows, `self = a` and `b`: with `p = softmax(aᵢ)`,
    /// `q = softmax(bᵢ)`, `KLᵢ = Σⱼ pⱼ (ln pⱼ − ln qⱼ)` (`[N]`).
    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self>;
    /// The gradients of `Σᵢ gᵢ·KLᵢ` (`grad = g`, `[N]`), with `self = a`:
    /// `daᵢⱼ = gᵢ·pᵢⱼ·(ln pᵢⱼ − ln qᵢⱼ − KLᵢ)` and `dbᵢⱼ = gᵢ·(qᵢⱼ − pᵢⱼ)`.
    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)>;
    /// Per row, the difference-of-logits-ratio loss of Croce & Hein (2020)
    /// with u32 `labels` y and `targets` t (`[N]` each), `π` the classes
    /// sorted by decreasing logit (lower index first on ties):
    /// untargeted `DLRᵢ = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e−12)`;
    /// with `targeted`, `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12)`
    /// (`targets` is then read; untargeted it is ignored).
    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self>;
    /// The gradient of `Σᵢ gᵢ·DLRᵢ` (`grad = g`, `[N]`) with `self` the
    /// logits: with `D` the denominator and `n` the numerator of row i,
    /// `dz = −g·(e_y − e_m)/D + g·n/D²·∂D`, where `m = argmax_{j≠y}` (the
    /// target t when targeted) and `∂D = e_π1 − e_π3`
    /// (targeted: `e_π1 − (e_π3 + e_π4)/2`); `e_k` is the k-th unit row.
    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self>;
    /// One APGD step (Croce & Hein 2020) per row of `cols` values, with
    /// `self = x⁽ᵏ⁾`, the previous iterate `x⁽ᵏ⁻¹⁾`, the gradient `g`, the
    /// clean input `c`, the per-row step sizes `η` (`[N]`) and momentum
    /// `α`: `z = P(x⁽ᵏ⁾ + η·s(g))` and
    /// `x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))`, where
    /// L∞: `s(g) = sign g`, `P(v) = min(max(v, c − eps, 0), c + eps, 1)`;
    /// L2: `s(g) = g/(‖g‖₂ + 1e−12)`,
    /// `P(v) = clip₀¹(c + δ·min(eps, ‖δ‖₂)/(‖δ‖₂ + 1e−12))`, `δ = v − c`.
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
    ) -> Result<Self>;
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
    ) -> Result<(Self, Self)>;
    /// In place, for each u32 row index `i` in `rows`:
    /// `selfᵢ ← srcᵢ + t·(selfᵢ − srcᵢ)` (`t = 0` copies the rows of `src`).
    /// Each row is listed at most once (the CUDA backend updates the listed
    /// rows in parallel).
    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()>;

    // The kernels of convolutional networks (NCHW, see [`Conv2dDims`] and
    // [`PoolDims`]): on the CPU through im2col and the packed gemm
    // (`cpu/conv.rs`), on the CUDA backend as implicit GEMMs and
    // grid-stride pooling (`kernels/conv.cu`, `kernels/pool.cu`).

    /// `y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c, i·s+p−pad, j·s+q−pad]`
    /// with `self = x` `[N, C, H, W]`, `weight` `[O, C, KH, KW]`, `bias`
    /// `[O]` and out-of-range input positions read as 0: `y` is
    /// `[N, O, OH, OW]`.
    fn conv2d(&self, weight: &Self, bias: &Self, dims: Conv2dDims) -> Result<Self>;
    /// The input gradient of [`BackendStorage::conv2d`] with `self = g`
    /// `[N, O, OH, OW]`:
    /// `dx[n,c,h,w] = Σ_{o,p,q : h = i·s+p−pad, w = j·s+q−pad} g[n,o,i,j]·w[o,c,p,q]`
    /// (`[N, C, H, W]`).
    fn conv2d_backward_input(&self, weight: &Self, dims: Conv2dDims) -> Result<Self>;
    /// The parameter gradients of [`BackendStorage::conv2d`] with
    /// `self = g` `[N, O, OH, OW]` and the input `x`:
    /// `dw[o,c,p,q] = Σ_{n,i,j} g[n,o,i,j]·x[n,c, i·s+p−pad, j·s+q−pad]`
    /// (`[O, C, KH, KW]`) and `db[o] = Σ_{n,i,j} g[n,o,i,j]` (`[O]`).
    fn conv2d_backward_params(&self, x: &Self, dims: Conv2dDims) -> Result<(Self, Self)>;
    /// Max-pooling with kernel = stride = K and no padding, over planes
    /// `[P, H, W]` (`P = N·C`): `y[p,i,j] = max_{0≤a,b<K} x[p, i·K+a, j·K+b]`
    /// (`[P, H/K, W/K]`, rounded down; a NaN in a window is the maximum).
    fn max_pool2d(&self, dims: PoolDims) -> Result<Self>;
    /// The input gradient of [`BackendStorage::max_pool2d`] with
    /// `self = g` and the input `x`: `dx[p, i·K+a, j·K+b] = g[p,i,j]` at the
    /// first maximum of each window in row-major order (PyTorch's choice
    /// on ties; a NaN replaces any value before it, so of several NaNs the
    /// last one gets the gradient, as in PyTorch), 0 elsewhere.
    fn max_pool2d_backward(&self, x: &Self, dims: PoolDims) -> Result<Self>;
    /// Average-pooling with kernel = stride = K and no padding:
    /// `y[p,i,j] = (1/K²) Σ_{0≤a,b<K} x[p, i·K+a, j·K+b]`.
    fn avg_pool2d(&self, dims: PoolDims) -> Result<Self>;
    /// The input gradient of [`BackendStorage::avg_pool2d`] with
    /// `self = g`: `dx[p, i·K+a, j·K+b] = g[p,i,j]/K²` inside the windows,
    /// 0 in the rows and columns no window covers.
    fn avg_pool2d_backward(&self, dims: PoolDims) -> Result<Self>;
}
