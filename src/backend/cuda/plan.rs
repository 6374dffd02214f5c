//! Launch plans for the kernels in `kernels/*.cu`.
//!
//! A [`LaunchPlan`] says everything a launch needs except the device
//! buffers themselves: the kernel's entry point, the grid and block
//! dimensions, the dynamic shared memory, and the parameter list in the
//! kernel's order — which buffer goes where and how long it must be, and the
//! value of every scalar. The functions here are pure Rust, without driver
//! calls, so the same plan drives the real launch (the CUDA backend) and the
//! CPU emulation of the kernel source used in tests (`crates/simt`), and it
//! can be unit-tested on any machine.
//!
//! This file uses `std` only: `crates/simt` compiles it too.
//!
//! Every plan uses whole warps (block sizes are multiples of 32) and a grid
//! of at least one block, so empty problems are valid launches that do
//! nothing (or write zeros, for a matmul with `k = 0`).

use std::fmt;

/// Threads in a warp.
pub const WARP: u32 = 32;
/// Threads per block of the elementwise, activation and optimiser kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Upper bound on the grid of grid-stride kernels.
pub const MAX_GRID_STRIDE_BLOCKS: u32 = 8192;
/// Rows (and columns) of C computed by one matmul block.
pub const MATMUL_TILE: u32 = 64;
/// Threads of one matmul block (16×16, each computing 4×4 values of C).
pub const MATMUL_THREADS: u32 = 256;
/// Rows handled by one softmax-xent or argmax block (one warp per row).
pub const ROWS_PER_BLOCK: u32 = 8;
/// Threads per block of the sum reductions.
pub const REDUCE_THREADS: u32 = 256;
/// Elements each thread of pass 1 of a sum reduces, at least.
pub const REDUCE_ITEMS_PER_THREAD: u32 = 4;
/// Most blocks (and so partial sums) pass 1 of a sum uses.
pub const REDUCE_MAX_BLOCKS: u32 = 1024;
/// Columns summed by one `sum_rows` block (times 8 row groups).
pub const SUM_ROWS_COLS: u32 = 32;
/// Largest grid extent along y and z.
const MAX_GRID_YZ: u32 = 65_535;

/// Element type of a kernel buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// `float`.
    F32,
    /// `double`.
    F64,
    /// `unsigned int` (labels, argmax results).
    U32,
}

impl Elem {
    /// Size in bytes.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::U32 => 4,
            Elem::F64 => 8,
        }
    }

    /// The suffix of the `extern "C"` entry points instantiated for this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F64 => "f64",
            Elem::U32 => "u32",
        }
    }
}

/// How a kernel uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only read.
    Read,
    /// Only written: every element of the first `len` is overwritten, so the
    /// previous contents do not matter (the emulator poisons them).
    Write,
    /// Read and written (in-place updates, accumulation).
    ReadWrite,
}

/// A scalar kernel argument, with the C type it is passed as.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
}

impl Scalar {
    /// `v` as the kernel's element type `elem` (`float` or `double`).
    pub fn float(elem: Elem, v: f64) -> Scalar {
        match elem {
            Elem::F64 => Scalar::F64(v),
            _ => Scalar::F32(v as f32),
        }
    }
}

/// One kernel parameter, in the kernel's order.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A device pointer the caller supplies.
    Buffer {
        /// The parameter's name in the kernel source.
        name: &'static str,
        /// Its element type.
        elem: Elem,
        /// How many elements the kernel may touch (the buffer may be longer).
        len: usize,
        /// Whether the kernel reads it, writes it, or both.
        access: Access,
    },
    /// A value the plan fixes.
    Scalar {
        /// The parameter's name in the kernel source.
        name: &'static str,
        /// Its value.
        value: Scalar,
    },
}

/// Grid, block, shared memory and parameters of one kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchPlan {
    /// The `extern "C"` entry point, e.g. `matmul_f32`.
    pub kernel: String,
    /// Blocks along x, y, z (each at least 1).
    pub grid: [u32; 3],
    /// Threads per block along x, y, z (their product a multiple of 32).
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    /// The parameters in the kernel's order.
    pub params: Vec<Param>,
}

impl LaunchPlan {
    /// Threads per block.
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&b| u64::from(b)).product()
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| u64::from(g)).product()
    }

    /// The buffer parameters, in order: what the caller must supply.
    pub fn buffers(&self) -> impl Iterator<Item = (&'static str, Elem, usize, Access)> + '_ {
        self.params.iter().filter_map(|p| match *p {
            Param::Buffer {
                name,
                elem,
                len,
                access,
            } => Some((name, elem, len, access)),
            Param::Scalar { .. } => None,
        })
    }
}

/// A problem the kernels cannot be launched for (too large, wrong type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

/// `Result` with [`PlanError`].
pub type PlanResult<T> = Result<T, PlanError>;

fn float_kernel(base: &str, elem: Elem) -> PlanResult<String> {
    match elem {
        Elem::F32 | Elem::F64 => Ok(format!("{base}_{}", elem.suffix())),
        Elem::U32 => Err(PlanError(format!("{base}: no u32 instantiation"))),
    }
}

fn as_i32(op: &str, what: &str, v: usize) -> PlanResult<i32> {
    i32::try_from(v).map_err(|_| PlanError(format!("{op}: {what} = {v} exceeds i32::MAX")))
}

fn mul(op: &str, a: usize, b: usize) -> PlanResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| PlanError(format!("{op}: {a}×{b} elements overflow usize")))
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

fn buf(name: &'static str, elem: Elem, len: usize, access: Access) -> Param {
    Param::Buffer {
        name,
        elem,
        len,
        access,
    }
}

fn scalar(name: &'static str, value: Scalar) -> Param {
    Param::Scalar { name, value }
}

/// Blocks of a grid-stride launch over `n` elements.
fn grid_stride_blocks(n: usize) -> u32 {
    let blocks = div_ceil(n as u64, u64::from(ELEMENTWISE_THREADS));
    blocks.clamp(1, u64::from(MAX_GRID_STRIDE_BLOCKS)) as u32
}

fn grid_stride(kernel: String, n: usize, params: Vec<Param>) -> LaunchPlan {
    LaunchPlan {
        kernel,
        grid: [grid_stride_blocks(n), 1, 1],
        block: [ELEMENTWISE_THREADS, 1, 1],
        shared_bytes: 0,
        params,
    }
}

/// `C = op(A)·op(B)` (`+ C` with `accumulate`): op(A) is m×k, op(B) k×n.
/// A is stored `[m, k]`, or `[k, m]` with `trans_a`; B `[k, n]`, or `[n, k]`
/// with `trans_b`. Parameters: `a, b, c, m, n, k, trans_a, trans_b,
/// accumulate`.
pub fn matmul(
    elem: Elem,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) -> PlanResult<LaunchPlan> {
    let kernel = float_kernel("matmul", elem)?;
    let (mi, ni, ki) = (
        as_i32("matmul", "m", m)?,
        as_i32("matmul", "n", n)?,
        as_i32("matmul", "k", k)?,
    );
    let gx = div_ceil(n as u64, u64::from(MATMUL_TILE)).max(1);
    let gy = div_ceil(m as u64, u64::from(MATMUL_TILE)).max(1);
    if gy > u64::from(MAX_GRID_YZ) {
        return Err(PlanError(format!(
            "matmul: m = {m} needs {gy} row blocks, more than {MAX_GRID_YZ}"
        )));
    }
    let c_access = if accumulate {
        Access::ReadWrite
    } else {
        Access::Write
    };
    Ok(LaunchPlan {
        kernel,
        grid: [gx as u32, gy as u32, 1],
        block: [MATMUL_THREADS, 1, 1],
        shared_bytes: 0,
        params: vec![
            buf("a", elem, mul("matmul", m, k)?, Access::Read),
            buf("b", elem, mul("matmul", k, n)?, Access::Read),
            buf("c", elem, mul("matmul", m, n)?, c_access),
            scalar("m", Scalar::I32(mi)),
            scalar("n", Scalar::I32(ni)),
            scalar("k", Scalar::I32(ki)),
            scalar("trans_a", Scalar::I32(trans_a.into())),
            scalar("trans_b", Scalar::I32(trans_b.into())),
            scalar("accumulate", Scalar::I32(accumulate.into())),
        ],
    })
}

/// An elementwise binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
}

/// `y = a ∘ b` over `n` elements. Parameters: `a, b, y, n`.
pub fn binary(op: Binary, elem: Elem, n: usize) -> PlanResult<LaunchPlan> {
    let base = match op {
        Binary::Add => "add",
        Binary::Sub => "sub",
        Binary::Mul => "mul",
    };
    Ok(grid_stride(
        float_kernel(base, elem)?,
        n,
        vec![
            buf("a", elem, n, Access::Read),
            buf("b", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// Bias add: `y[r, c] = x[r, c] + b[c]`. Parameters: `x, b, y, n, cols`.
pub fn add_row(elem: Elem, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let n = mul("add_row", rows, cols)?;
    Ok(grid_stride(
        float_kernel("add_row", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("b", elem, cols, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
            // cols ≥ 1 keeps the kernel's `i % cols` defined when n = 0.
            scalar("cols", Scalar::U64(cols.max(1) as u64)),
        ],
    ))
}

/// `y = alpha·x + beta`. Parameters: `x, y, alpha, beta, n`.
pub fn affine(elem: Elem, n: usize, alpha: f64, beta: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("affine", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("alpha", Scalar::float(elem, alpha)),
            scalar("beta", Scalar::float(elem, beta)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y += alpha·x` in place. Parameters: `x, y, alpha, n`.
pub fn axpy(elem: Elem, n: usize, alpha: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("axpy", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("y", elem, n, Access::ReadWrite),
            scalar("alpha", Scalar::float(elem, alpha)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y = sign(x)` (0 for 0, NaN for NaN). Parameters: `x, y, n`.
pub fn sign(elem: Elem, n: usize) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("sign", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y = min(max(x, lo), hi)`. Parameters: `x, y, lo, hi, n`.
pub fn clamp(elem: Elem, n: usize, lo: f64, hi: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("clamp", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("lo", Scalar::float(elem, lo)),
            scalar("hi", Scalar::float(elem, hi)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// Projection onto the L∞ ball of radius `eps` around `x0`, intersected
/// with the box `[lo, hi]`: `y = min(max(x, max(x0 − eps, lo)), min(x0 +
/// eps, hi))`. Parameters: `x, x0, y, eps, lo, hi, n`.
pub fn project_linf(elem: Elem, n: usize, eps: f64, lo: f64, hi: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("project_linf", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("x0", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("eps", Scalar::float(elem, eps)),
            scalar("lo", Scalar::float(elem, lo)),
            scalar("hi", Scalar::float(elem, hi)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y = value`. Parameters: `y, value, n`.
pub fn fill(elem: Elem, n: usize, value: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("fill", elem)?,
        n,
        vec![
            buf("y", elem, n, Access::Write),
            scalar("value", Scalar::float(elem, value)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y = s[0]·scale` from a device scalar: the backward of sum (`scale = 1`)
/// and mean (`scale = 1/n`). Parameters: `s, y, scale, n`.
pub fn fill_scalar(elem: Elem, n: usize, scale: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("fill_scalar", elem)?,
        n,
        vec![
            buf("s", elem, 1, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("scale", Scalar::float(elem, scale)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `y = x·s[0]·scale` with a device scalar `s`. Parameters: `x, s, y, scale, n`.
pub fn scale_scalar(elem: Elem, n: usize, scale: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("scale_scalar", elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("s", elem, 1, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("scale", Scalar::float(elem, scale)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`; backward reads the input.
    Relu,
    /// `1 / (1 + e^−x)`; backward reads the output.
    Sigmoid,
    /// `tanh x`; backward reads the output.
    Tanh,
}

impl Activation {
    fn base(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }
}

/// `y = f(x)`. Parameters: `x, y, n`.
pub fn activation_fwd(act: Activation, elem: Elem, n: usize) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel(&format!("{}_fwd", act.base()), elem)?,
        n,
        vec![
            buf("x", elem, n, Access::Read),
            buf("y", elem, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// `dx = g·f'(…)` from what forward saved (x for relu, y otherwise).
/// Parameters: `saved, g, dx, n`.
pub fn activation_bwd(act: Activation, elem: Elem, n: usize) -> PlanResult<LaunchPlan> {
    let saved = if act == Activation::Relu { "x" } else { "y" };
    Ok(grid_stride(
        float_kernel(&format!("{}_bwd", act.base()), elem)?,
        n,
        vec![
            buf(saved, elem, n, Access::Read),
            buf("g", elem, n, Access::Read),
            buf("dx", elem, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// Plain SGD: `w −= lr·(g + weight_decay·w)`. Parameters: `w, g, lr,
/// weight_decay, n`.
pub fn sgd(elem: Elem, n: usize, lr: f64, weight_decay: f64) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("sgd", elem)?,
        n,
        vec![
            buf("w", elem, n, Access::ReadWrite),
            buf("g", elem, n, Access::Read),
            scalar("lr", Scalar::float(elem, lr)),
            scalar("weight_decay", Scalar::float(elem, weight_decay)),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// SGD with momentum (optionally Nesterov), velocity `v` updated in place.
/// Parameters: `w, g, v, lr, momentum, weight_decay, nesterov, n`.
pub fn sgd_momentum(
    elem: Elem,
    n: usize,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
) -> PlanResult<LaunchPlan> {
    Ok(grid_stride(
        float_kernel("sgd_momentum", elem)?,
        n,
        vec![
            buf("w", elem, n, Access::ReadWrite),
            buf("g", elem, n, Access::Read),
            buf("v", elem, n, Access::ReadWrite),
            scalar("lr", Scalar::float(elem, lr)),
            scalar("momentum", Scalar::float(elem, momentum)),
            scalar("weight_decay", Scalar::float(elem, weight_decay)),
            scalar("nesterov", Scalar::I32(nesterov.into())),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

/// Hyper-parameters of one Adam step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// L2 penalty (or AdamW decay with `decoupled`).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay instead of an L2 term in the gradient.
    pub decoupled: bool,
    /// The step number, from 1.
    pub step: u64,
}

/// Adam (or AdamW) in place on `w`, `m`, `v`. Parameters: `w, g, m, v, lr,
/// beta1, beta2, eps, weight_decay, step_size, inv_bc2, decoupled, n`, where
/// `step_size = lr / (1 − β1^t)` and `inv_bc2 = 1 / (1 − β2^t)` are computed
/// here in f64 (the CPU backend's order of operations).
pub fn adam(elem: Elem, n: usize, s: AdamStep) -> PlanResult<LaunchPlan> {
    if s.step == 0 {
        return Err(PlanError("adam: the step number starts at 1".into()));
    }
    let t = i32::try_from(s.step).unwrap_or(i32::MAX);
    let bc1 = 1.0 - s.beta1.powi(t);
    let bc2 = 1.0 - s.beta2.powi(t);
    let f = |v| Scalar::float(elem, v);
    Ok(grid_stride(
        float_kernel("adam", elem)?,
        n,
        vec![
            buf("w", elem, n, Access::ReadWrite),
            buf("g", elem, n, Access::Read),
            buf("m", elem, n, Access::ReadWrite),
            buf("v", elem, n, Access::ReadWrite),
            scalar("lr", f(s.lr)),
            scalar("beta1", f(s.beta1)),
            scalar("beta2", f(s.beta2)),
            scalar("eps", f(s.eps)),
            scalar("weight_decay", f(s.weight_decay)),
            scalar("step_size", f(s.lr / bc1)),
            scalar("inv_bc2", f(1.0 / bc2)),
            scalar("decoupled", Scalar::I32(s.decoupled.into())),
            scalar("n", Scalar::U64(n as u64)),
        ],
    ))
}

fn rows_grid(op: &str, rows: usize) -> PlanResult<u32> {
    let g = div_ceil(rows as u64, u64::from(ROWS_PER_BLOCK)).max(1);
    u32::try_from(g).map_err(|_| PlanError(format!("{op}: {rows} rows need too many blocks")))
}

/// Fused softmax-cross-entropy forward: per-row loss and probabilities.
/// Parameters: `logits, labels, loss, probs, rows, cols`.
pub fn softmax_xent_fwd(elem: Elem, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = "softmax_xent_fwd";
    let n = mul(op, rows, cols)?;
    Ok(LaunchPlan {
        kernel: float_kernel(op, elem)?,
        grid: [rows_grid(op, rows)?, 1, 1],
        block: [ROWS_PER_BLOCK * WARP, 1, 1],
        shared_bytes: 0,
        params: vec![
            buf("logits", elem, n, Access::Read),
            buf("labels", Elem::U32, rows, Access::Read),
            buf("loss", elem, rows, Access::Write),
            buf("probs", elem, n, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

/// Softmax-cross-entropy backward for the mean loss: with `gs = g[0]/rows`,
/// `dlogits = p·gs − onehot·gs` (the CPU backend's formula). Parameters:
/// `probs, labels, g, dlogits, rows, n, cols` (`rows` as the float type, at
/// least 1).
pub fn softmax_xent_bwd(elem: Elem, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = "softmax_xent_bwd";
    let n = mul(op, rows, cols)?;
    Ok(grid_stride(
        float_kernel(op, elem)?,
        n,
        vec![
            buf("probs", elem, n, Access::Read),
            buf("labels", Elem::U32, rows, Access::Read),
            buf("g", elem, 1, Access::Read),
            buf("dlogits", elem, n, Access::Write),
            scalar("rows", Scalar::float(elem, rows.max(1) as f64)),
            scalar("n", Scalar::U64(n as u64)),
            scalar("cols", Scalar::U64(cols.max(1) as u64)),
        ],
    ))
}

/// Number of partial sums (blocks of pass 1) a sum over `n` elements uses.
/// It depends on `n` only, which makes the result bitwise reproducible.
pub fn reduce_blocks(n: usize) -> u32 {
    let per_block = u64::from(REDUCE_THREADS * REDUCE_ITEMS_PER_THREAD);
    div_ceil(n as u64, per_block).clamp(1, u64::from(REDUCE_MAX_BLOCKS)) as u32
}

/// Pass 1 of a sum: `partials[b]` = sum of block b's share of `x`.
/// Parameters: `x, partials, n`.
pub fn sum_partial(elem: Elem, n: usize) -> PlanResult<LaunchPlan> {
    let blocks = reduce_blocks(n);
    Ok(LaunchPlan {
        kernel: float_kernel("sum_partial", elem)?,
        grid: [blocks, 1, 1],
        block: [REDUCE_THREADS, 1, 1],
        shared_bytes: WARP * elem.size() as u32,
        params: vec![
            buf("x", elem, n, Access::Read),
            buf("partials", elem, blocks as usize, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    })
}

/// Pass 2 of a sum: `out[0] = scale·Σ partials` (`scale = 1/n` for a mean).
/// Parameters: `partials, out, scale, count`.
pub fn sum_final(elem: Elem, count: u32, scale: f64) -> PlanResult<LaunchPlan> {
    Ok(LaunchPlan {
        kernel: float_kernel("sum_final", elem)?,
        grid: [1, 1, 1],
        block: [REDUCE_THREADS, 1, 1],
        shared_bytes: WARP * elem.size() as u32,
        params: vec![
            buf("partials", elem, count as usize, Access::Read),
            buf("out", elem, 1, Access::Write),
            scalar("scale", Scalar::float(elem, scale)),
            scalar("count", Scalar::U32(count)),
        ],
    })
}

/// Both passes of the sum (or, with `mean`, the mean) of `n` elements; the
/// caller provides a temporary of [`reduce_blocks`]`(n)` partial sums.
pub fn sum(elem: Elem, n: usize, mean: bool) -> PlanResult<[LaunchPlan; 2]> {
    let scale = if mean { 1.0 / n.max(1) as f64 } else { 1.0 };
    Ok([
        sum_partial(elem, n)?,
        sum_final(elem, reduce_blocks(n), scale)?,
    ])
}

/// Column sums of a rows×cols matrix (the bias gradient): `out[c] = Σ_r
/// x[r, c]`. Parameters: `x, out, rows, cols`.
pub fn sum_rows(elem: Elem, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = "sum_rows";
    let blocks = div_ceil(cols as u64, u64::from(SUM_ROWS_COLS)).max(1);
    Ok(LaunchPlan {
        kernel: float_kernel(op, elem)?,
        grid: [
            u32::try_from(blocks).map_err(|_| PlanError(format!("{op}: too many columns")))?,
            1,
            1,
        ],
        block: [SUM_ROWS_COLS * 8, 1, 1],
        shared_bytes: 0,
        params: vec![
            buf("x", elem, mul(op, rows, cols)?, Access::Read),
            buf("out", elem, cols, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

/// Index of the largest value of each row (first on ties, NaN largest).
/// Parameters: `x, out, rows, cols`.
pub fn argmax_rows(elem: Elem, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = "argmax_rows";
    Ok(LaunchPlan {
        kernel: float_kernel(op, elem)?,
        grid: [rows_grid(op, rows)?, 1, 1],
        block: [ROWS_PER_BLOCK * WARP, 1, 1],
        shared_bytes: 0,
        params: vec![
            buf("x", elem, mul(op, rows, cols)?, Access::Read),
            buf("out", Elem::U32, rows, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

/// The base names of every kernel; each exists as `{name}_f32` and
/// `{name}_f64`.
pub const KERNELS: &[&str] = &[
    "matmul",
    "add",
    "sub",
    "mul",
    "add_row",
    "affine",
    "axpy",
    "sign",
    "clamp",
    "project_linf",
    "fill",
    "fill_scalar",
    "scale_scalar",
    "relu_fwd",
    "relu_bwd",
    "sigmoid_fwd",
    "sigmoid_bwd",
    "tanh_fwd",
    "tanh_bwd",
    "sgd",
    "sgd_momentum",
    "adam",
    "softmax_xent_fwd",
    "softmax_xent_bwd",
    "sum_partial",
    "sum_final",
    "sum_rows",
    "argmax_rows",
];

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000, 4097];

    /// One plan of every kernel family for a given size.
    fn all_plans(elem: Elem, n: usize) -> Vec<LaunchPlan> {
        let mut v = vec![
            matmul(elem, n, n + 1, n + 2, false, true, true).unwrap(),
            binary(Binary::Sub, elem, n).unwrap(),
            add_row(elem, n, 3).unwrap(),
            affine(elem, n, 2.0, 1.0).unwrap(),
            axpy(elem, n, 2.0).unwrap(),
            sign(elem, n).unwrap(),
            clamp(elem, n, 0.0, 1.0).unwrap(),
            project_linf(elem, n, 0.1, 0.0, 1.0).unwrap(),
            fill(elem, n, 0.0).unwrap(),
            fill_scalar(elem, n, 1.0).unwrap(),
            scale_scalar(elem, n, 1.0).unwrap(),
            activation_fwd(Activation::Tanh, elem, n).unwrap(),
            activation_bwd(Activation::Relu, elem, n).unwrap(),
            sgd(elem, n, 0.1, 0.0).unwrap(),
            sgd_momentum(elem, n, 0.1, 0.9, 0.0, true).unwrap(),
            softmax_xent_fwd(elem, n, 10).unwrap(),
            softmax_xent_bwd(elem, n, 10).unwrap(),
            sum_rows(elem, n, n + 5).unwrap(),
            argmax_rows(elem, n, 7).unwrap(),
        ];
        v.extend(sum(elem, n, true).unwrap());
        let step = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            step: 1,
        };
        v.push(adam(elem, n, step).unwrap());
        v
    }

    #[test]
    fn blocks_are_whole_warps_and_grids_are_nonempty() {
        for elem in [Elem::F32, Elem::F64] {
            for &n in SIZES {
                for p in all_plans(elem, n) {
                    let t = p.threads_per_block();
                    assert!(t > 0 && t % u64::from(WARP) == 0 && t <= 1024, "{p:?}");
                    assert!(p.grid.iter().all(|&g| g >= 1), "{p:?}");
                    assert!(p.grid[1] <= MAX_GRID_YZ && p.grid[2] <= MAX_GRID_YZ);
                    assert!(p.shared_bytes <= 48 * 1024);
                    assert!(p.kernel.ends_with(elem.suffix()), "{}", p.kernel);
                    let base = &p.kernel[..p.kernel.len() - 4];
                    assert!(KERNELS.contains(&base), "{base} missing from KERNELS");
                }
            }
        }
    }

    #[test]
    fn matmul_grid_covers_c() {
        for &m in SIZES {
            for &n in SIZES {
                let p = matmul(Elem::F32, m, n, 7, false, false, false).unwrap();
                let rows = u64::from(p.grid[1]) * u64::from(MATMUL_TILE);
                let cols = u64::from(p.grid[0]) * u64::from(MATMUL_TILE);
                assert!(rows >= m as u64 && cols >= n as u64);
                // No block lies wholly outside C (apart from the one block of
                // an empty problem).
                assert!(rows < m as u64 + u64::from(MATMUL_TILE) || m == 0);
                assert!(cols < n as u64 + u64::from(MATMUL_TILE) || n == 0);
                // 16×16 threads each computing 4×4 values tile 64×64.
                assert_eq!(MATMUL_THREADS * 16, MATMUL_TILE * MATMUL_TILE);
            }
        }
    }

    #[test]
    fn matmul_buffers_follow_the_transposes() {
        let p = matmul(Elem::F64, 5, 7, 3, true, true, true).unwrap();
        let bufs: Vec<_> = p.buffers().collect();
        assert_eq!(bufs[0], ("a", Elem::F64, 15, Access::Read));
        assert_eq!(bufs[1], ("b", Elem::F64, 21, Access::Read));
        assert_eq!(bufs[2], ("c", Elem::F64, 35, Access::ReadWrite));
        assert_eq!(p.params.len(), 9);
        let p = matmul(Elem::F32, 5, 7, 3, false, false, false).unwrap();
        assert_eq!(p.buffers().nth(2).unwrap().3, Access::Write);
        assert!(matmul(Elem::F32, 1 << 31, 1, 1, false, false, false).is_err());
        assert!(matmul(Elem::U32, 1, 1, 1, false, false, false).is_err());
    }

    #[test]
    fn grid_stride_plans_cover_every_element() {
        for &n in SIZES.iter().chain(&[10_000_000usize]) {
            let p = binary(Binary::Add, Elem::F32, n).unwrap();
            let threads = p.blocks() * p.threads_per_block();
            // The grid-stride loop covers n whatever the grid; the grid never
            // exceeds what is useful nor the cap.
            assert!(threads >= 1);
            assert!(p.grid[0] <= MAX_GRID_STRIDE_BLOCKS);
            if n <= (MAX_GRID_STRIDE_BLOCKS * ELEMENTWISE_THREADS) as usize {
                assert!(threads >= n as u64);
                assert!(threads < n as u64 + u64::from(ELEMENTWISE_THREADS) || n == 0);
            }
        }
    }

    #[test]
    fn row_kernels_have_one_warp_per_row() {
        for &rows in SIZES {
            for p in [
                softmax_xent_fwd(Elem::F32, rows, 10).unwrap(),
                argmax_rows(Elem::F64, rows, 10).unwrap(),
            ] {
                let warps = p.blocks() * p.threads_per_block() / u64::from(WARP);
                assert!(warps >= rows as u64);
                assert!(warps < rows as u64 + u64::from(ROWS_PER_BLOCK) || rows == 0);
            }
        }
    }

    #[test]
    fn sum_uses_a_fixed_number_of_partials() {
        for &n in SIZES.iter().chain(&[1 << 20, 1 << 28]) {
            let [p1, p2] = sum(Elem::F32, n, false).unwrap();
            let blocks = reduce_blocks(n);
            assert_eq!(p1.grid[0], blocks);
            assert!((1..=REDUCE_MAX_BLOCKS).contains(&blocks));
            assert_eq!(p1.buffers().nth(1).unwrap().2, blocks as usize);
            assert_eq!(p2.buffers().next().unwrap().2, blocks as usize);
            assert_eq!(p2.grid, [1, 1, 1]);
            assert_eq!(p1.shared_bytes, 32 * 4);
        }
        let [_, p2] = sum(Elem::F64, 8, true).unwrap();
        assert!(p2.params.contains(&Param::Scalar {
            name: "scale",
            value: Scalar::F64(0.125)
        }));
    }

    #[test]
    fn sum_rows_covers_columns() {
        for &cols in SIZES {
            let p = sum_rows(Elem::F32, 3, cols).unwrap();
            assert!(u64::from(p.grid[0] * SUM_ROWS_COLS) >= cols as u64);
            assert_eq!(p.threads_per_block(), u64::from(SUM_ROWS_COLS * 8));
        }
    }

    #[test]
    fn adam_bias_correction() {
        let s = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            step: 2,
        };
        let p = adam(Elem::F64, 4, s).unwrap();
        let get = |name: &str| {
            p.params.iter().find_map(|q| match q {
                Param::Scalar { name: n, value } if *n == name => Some(*value),
                _ => None,
            })
        };
        assert_eq!(get("step_size"), Some(Scalar::F64(1e-3 / (1.0 - 0.81))));
        assert_eq!(
            get("inv_bc2"),
            Some(Scalar::F64(1.0 / (1.0 - 0.999f64.powi(2))))
        );
        assert_eq!(get("decoupled"), Some(Scalar::I32(1)));
        assert!(adam(Elem::F64, 4, AdamStep { step: 0, ..s }).is_err());
    }
}
