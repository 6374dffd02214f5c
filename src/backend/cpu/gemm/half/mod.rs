//! The half-precision gemm: bf16 or f16 operands, f32 accumulation, f32
//! `C`.
//!
//! Each operand is either stored in the half type or an f32 slice rounded
//! to it (to nearest, ties to even) while it is packed, a panel at a time:
//! mixed-precision training multiplies f32 master weights and activations
//! in bf16 without a converted copy of either.
//!
//! | path | kernel | where |
//! |---|---|---|
//! | `amx` | `tdpbf16ps` on 16 × 16 tiles, 32 × 32 per call (`amx.rs`) | CPUs with AMX-BF16 (run on one Xeon guest) |
//! | `avx512bf16` | `vdpbf16ps`, 8 × 32 per call (`avx512bf16.rs`) | CPUs with AVX512-BF16 |
//! | `portable` | widened to f32, then the f32 kernel (`widen.rs`) | any CPU; the reference numerics |
//!
//! f16 always takes the widening path: AVX512-FP16's multiply-adds round
//! every step to f16 (an 11-bit sum), which is not f32 accumulation, and
//! its conversions to f32 are the ones F16C and AVX-512F already have.
//! `ADVGRAD_GEMM_BF16` forces a bf16 path and `ADVGRAD_GEMM` the f32 kernel
//! (see [`super::Bf16Kernel`] and [`super::F32Kernel`]). The SIMD packers of
//! the `amx` and `avx512bf16` paths round f32 operands with `vcvtne2ps2bf16`
//! where the CPU has AVX512-BF16 and DQ, in integer arithmetic otherwise
//! (the same bits; `ADVGRAD_BF16_ROUNDING`, [`super::Bf16Rounding`]).
//!
//! **Numerics.** Products of two bf16 (or two f16) values are exact in f32,
//! so the paths differ only in the order in which they add them up and in
//! subnormals. `k` is cut into equal blocks of at most 256, depending on
//! `k` alone, except that `amx` takes blocks of up to 512 where `k > 512`
//! and neither `m` nor `n` exceeds 1024 (the rule depends on the shape
//! alone); each block is summed from zero and then added to `C` in order.
//! Within a block:
//!
//! - `portable`: `p` in order, each addition rounded to nearest even;
//!   subnormals kept (IEEE);
//! - `avx512bf16`: in pairs of steps `(2q, 2q + 1)` from the block's start,
//!   the odd step's product added first; subnormal inputs read as zero,
//!   subnormal sums flushed to zero;
//! - `amx` (per the SDM, and so on the one AMX CPU tried): per 32 steps,
//!   the even steps and the odd steps summed apart with fused
//!   multiply-adds, the two sums added, the result added to the running
//!   tile; subnormals as for `avx512bf16`.
//!
//! Every path is bit-identical for any number of threads, like the f32
//! gemm. The error bound, on every path, with `u = 2⁻²⁴`: for each element,
//!
//! ```text
//! |ĉ − c| ≤ γ(n) · (Σ_p |a_ip · b_pj| + |c₀|),   γ(n) = n·u / (1 − n·u),
//! n = min(k, 256) + ⌈k / 256⌉ + 1
//! ```
//!
//! (`amx`'s longer blocks keep within it: a block is summed in at most
//! `16 + 1 + ⌈512 / 32⌉ = 33` roundings, and there are no more of them),
//! where `a`, `b` are the operands as rounded to the half type and `c₀` is
//! `C`'s value before an accumulating call (zero otherwise); `avx512bf16`
//! and `amx` add at most `2⁻¹²⁶` per step for flushed subnormals. Against
//! the f32 values before their rounding, add `(2·u_h + u_h²) · Σ|a·b|` with
//! `u_h = 2⁻⁸` for bf16 and `2⁻¹¹` for f16.

#[cfg(target_arch = "x86_64")]
pub(super) mod amx;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512bf16;
#[cfg(target_arch = "x86_64")]
mod pairs;
mod source;
#[cfg(test)]
mod tests;
mod widen;

use half::{bf16, f16};

use super::driver::{self, Problem};
use super::kernel;
#[cfg(test)]
use super::kernel::MicroKernel;
use super::select::{self, Bf16Kernel, F32Kernel};
use super::Epilogue;
pub(crate) use source::round_to_bf16;
use source::{HalfBits, HalfSource};
use widen::Widen;

/// An operand of [`gemm_half`]: values stored in the half type `H`, or f32
/// values rounded to `H` (to nearest, ties to even) as they are packed.
#[derive(Clone, Copy, Debug)]
pub enum HalfOperand<'a, H> {
    /// Values stored as `H`.
    Half(&'a [H]),
    /// f32 values, rounded to `H` a panel at a time while packed: no
    /// converted copy of the operand is made.
    F32(&'a [f32]),
}

impl<H> HalfOperand<'_, H> {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            HalfOperand::Half(v) => v.len(),
            HalfOperand::F32(v) => v.len(),
        }
    }

    /// Whether the operand holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The half-precision element types of [`gemm_half`]: `half::bf16` and
/// `half::f16`.
///
/// The trait is sealed: its hidden method picks the kernel.
pub trait HalfFloat: Copy + Send + Sync + 'static + sealed::Sealed {}
impl HalfFloat for bf16 {}
impl HalfFloat for f16 {}

/// The kernels a call runs on: the selected ones, or (in tests) forced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Paths {
    pub bf16: Bf16Kernel,
    pub f32: F32Kernel,
}

impl Paths {
    /// The kernels this process uses (see [`super::select`]).
    fn selected() -> Self {
        Paths {
            bf16: select::selected_or_panic(Bf16Kernel::selected()),
            f32: select::selected_or_panic(F32Kernel::selected()),
        }
    }
}

mod sealed {
    use super::{Bf16Kernel, F32Kernel, HalfBits, HalfSource, Problem};

    /// The per-type conversions and kernel dispatch.
    pub trait Sealed: HalfBits {
        /// Runs the problem on the bf16 path `bf16` (for bf16) or widened
        /// to f32 on the kernel `f32`.
        ///
        /// # Safety
        ///
        /// As [`super::driver::run_raw`]; the kernels must be available.
        unsafe fn dispatch<SA: HalfSource<Self>, SB: HalfSource<Self>>(
            bf16: Bf16Kernel,
            f32: F32Kernel,
            p: &Problem<'_, SA, SB, f32>,
            c: *mut f32,
        );
    }
}

/// Runs `p` widened to f32, on the f32 kernel `kernel`.
///
/// # Safety
///
/// As [`driver::run_raw`]; `kernel` must be available.
unsafe fn widened<H: 'static, SA: HalfSource<H>, SB: HalfSource<H>>(
    kernel: F32Kernel,
    p: &Problem<'_, SA, SB, f32>,
    c: *mut f32,
) {
    // SAFETY (all three calls): the caller's contract is `run_raw`'s, and
    // the kernel is available.
    match kernel {
        #[cfg(target_arch = "x86_64")]
        F32Kernel::Avx512Tall => {
            let k = super::x86::Avx512Tall::detect().expect("AVX-512F was detected");
            unsafe { driver::run_raw(Widen::<_, H>::new(k), p, c) }
        }
        #[cfg(target_arch = "x86_64")]
        F32Kernel::Avx512 => {
            let k = super::x86::Avx512::detect().expect("AVX-512F was detected");
            unsafe { driver::run_raw(Widen::<_, H>::new(k), p, c) }
        }
        #[cfg(target_arch = "x86_64")]
        F32Kernel::Avx2Fma => {
            let k = super::x86::Avx2Fma::detect().expect("AVX2 and FMA were detected");
            unsafe { driver::run_raw(Widen::<_, H>::new(k), p, c) }
        }
        _ => unsafe { driver::run_raw(Widen::<_, H>::new(kernel::Portable), p, c) },
    }
}

impl sealed::Sealed for bf16 {
    unsafe fn dispatch<SA: HalfSource<bf16>, SB: HalfSource<bf16>>(
        path: Bf16Kernel,
        f32_kernel: F32Kernel,
        p: &Problem<'_, SA, SB, f32>,
        c: *mut f32,
    ) {
        // SAFETY (all three calls): the caller's contract is `run_raw`'s,
        // and the kernels are available.
        match path {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => {
                let k = amx::Amx::detect().expect("AMX was detected");
                unsafe { driver::run_raw(k, p, c) }
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                let k = avx512bf16::Avx512Bf16::detect().expect("AVX512-BF16 was detected");
                unsafe { driver::run_raw(k, p, c) }
            }
            _ => unsafe { widened::<bf16, SA, SB>(f32_kernel, p, c) },
        }
    }
}

impl sealed::Sealed for f16 {
    unsafe fn dispatch<SA: HalfSource<f16>, SB: HalfSource<f16>>(
        _: Bf16Kernel,
        f32_kernel: F32Kernel,
        p: &Problem<'_, SA, SB, f32>,
        c: *mut f32,
    ) {
        // SAFETY: the caller's contract is `run_raw`'s; the kernel is
        // available.
        unsafe { widened::<f16, SA, SB>(f32_kernel, p, c) }
    }
}

/// One call, as every entry point makes it: shapes, operands, flags.
#[derive(Clone, Copy)]
pub(super) struct HalfCall<'a, H> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: HalfOperand<'a, H>,
    pub a_trans: bool,
    pub b: HalfOperand<'a, H>,
    pub b_trans: bool,
    pub accumulate: bool,
    pub epilogue: Option<&'a Epilogue<'a, f32>>,
}

impl<'a, H: HalfFloat> HalfCall<'a, H> {
    /// `op(A)·op(B)`, not accumulating, no epilogue.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        m: usize,
        n: usize,
        k: usize,
        a: HalfOperand<'a, H>,
        a_trans: bool,
        b: HalfOperand<'a, H>,
        b_trans: bool,
    ) -> Self {
        HalfCall {
            m,
            n,
            k,
            a,
            a_trans,
            b,
            b_trans,
            accumulate: false,
            epilogue: None,
        }
    }

    /// Computes the call into `c` on `paths`.
    ///
    /// # Safety
    ///
    /// As [`driver::run_raw`] for `c` (`m·n` values); the paths must be
    /// available; `m`, `n`, `k` must be non-zero.
    pub(super) unsafe fn run(self, paths: Paths, c: *mut f32) {
        /// Builds the problem for one pair of operand types and runs it.
        ///
        /// # Safety
        ///
        /// As [`HalfCall::run`].
        unsafe fn go<H: HalfFloat, SA: HalfSource<H>, SB: HalfSource<H>>(
            call: &HalfCall<'_, H>,
            a: &[SA],
            b: &[SB],
            paths: Paths,
            c: *mut f32,
        ) {
            let mut p = super::problem(
                call.m,
                call.n,
                call.k,
                a,
                call.a_trans,
                b,
                call.b_trans,
                call.accumulate,
            );
            p.epilogue = call.epilogue;
            // SAFETY: the caller's contract.
            unsafe { H::dispatch(paths.bf16, paths.f32, &p, c) }
        }
        // SAFETY (all four calls): the caller's contract.
        unsafe {
            match (self.a, self.b) {
                (HalfOperand::Half(a), HalfOperand::Half(b)) => go(&self, a, b, paths, c),
                (HalfOperand::Half(a), HalfOperand::F32(b)) => go(&self, a, b, paths, c),
                (HalfOperand::F32(a), HalfOperand::Half(b)) => go(&self, a, b, paths, c),
                (HalfOperand::F32(a), HalfOperand::F32(b)) => go(&self, a, b, paths, c),
            }
        }
    }

    /// Checks the operand lengths against the shapes.
    ///
    /// # Panics
    ///
    /// If `a` or `b` does not hold exactly its shape's values.
    fn check(&self) {
        let (m, n, k) = (self.m, self.n, self.k);
        assert_eq!(
            self.a.len(),
            m * k,
            "gemm_half: A has the wrong length for [{m}, {k}]"
        );
        assert_eq!(
            self.b.len(),
            k * n,
            "gemm_half: B has the wrong length for [{k}, {n}]"
        );
    }

    /// Computes the call into `c`, which holds `m·n` values, on `paths`.
    pub(super) fn into_slice(self, paths: Paths, c: &mut [f32]) {
        self.check();
        let (m, n) = (self.m, self.n);
        assert_eq!(
            c.len(),
            m * n,
            "gemm_half: C has the wrong length for [{m}, {n}]"
        );
        super::compute_into(m, n, self.k, self.accumulate, c, |c| {
            // SAFETY: `compute_into` hands over `m·n` exclusive values of C,
            // and calls this only for non-empty shapes.
            unsafe { self.run(paths, c) }
        });
    }

    /// Computes the call (which does not accumulate) into a new vector.
    pub(super) fn into_new(self, paths: Paths) -> Vec<f32> {
        self.check();
        super::new_product(self.m, self.n, self.k, self.epilogue, |c| {
            // SAFETY: `new_product` hands over room for `m·n` values, reads
            // none before the driver writes them, and calls this only for
            // non-empty shapes.
            unsafe { self.run(paths, c) }
        })
    }
}

/// `C = op(A)·op(B)` (or `C += op(A)·op(B)` when `accumulate`) with operands
/// in the half type `H` (bf16 or f16), products summed in f32, `C` in f32,
/// all row-major.
///
/// `A` is stored as `[m, k]`, or as `[k, m]` when `a_trans`; `B` as `[k, n]`,
/// or as `[n, k]` when `b_trans`; `C` is `[m, n]`. Each operand is stored as
/// `H` or is an f32 slice rounded to `H` as it is packed ([`HalfOperand`]);
/// both give the same bits. The result is the same bits for any number of
/// rayon threads; the error bound is in the [module docs](self).
///
/// ```
/// use advgrad::backend::cpu::gemm::{gemm_half, HalfOperand};
/// use half::bf16;
///
/// let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3], f32 master weights
/// let x: Vec<bf16> = [1.0f32, 0.5, 0.25].iter().map(|&v| bf16::from_f32(v)).collect(); // [1, 3]
/// let mut y = [0.0f32; 2]; // y = x·wᵀ, [1, 2]
/// gemm_half(1, 2, 3, HalfOperand::Half(&x), false, HalfOperand::F32(&w), true, &mut y, false);
/// assert_eq!(y, [2.75, 8.0]);
/// ```
///
/// # Panics
///
/// If a slice length does not match its shape, or if `ADVGRAD_GEMM_BF16`
/// or `ADVGRAD_GEMM` forces a kernel this CPU lacks or names none (check
/// up front with [`super::Bf16Kernel::selected`] and
/// [`super::F32Kernel::selected`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_half<H: HalfFloat>(
    m: usize,
    n: usize,
    k: usize,
    a: HalfOperand<'_, H>,
    a_trans: bool,
    b: HalfOperand<'_, H>,
    b_trans: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    let call = HalfCall {
        accumulate,
        ..HalfCall::new(m, n, k, a, a_trans, b, b_trans)
    };
    call.into_slice(Paths::selected(), c);
}

/// `op(A)·op(B)` into a new row-major `[m, n]` f32 vector, written once;
/// operands as in [`gemm_half`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_half_new<H: HalfFloat>(
    m: usize,
    n: usize,
    k: usize,
    a: HalfOperand<'_, H>,
    a_trans: bool,
    b: HalfOperand<'_, H>,
    b_trans: bool,
) -> Vec<f32> {
    HalfCall::new(m, n, k, a, a_trans, b, b_trans).into_new(Paths::selected())
}

/// [`gemm_half_new`] followed by `epilogue` on every stretch of every row
/// of the product while it is still in cache (see [`Epilogue`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_half_new_then<H: HalfFloat>(
    m: usize,
    n: usize,
    k: usize,
    a: HalfOperand<'_, H>,
    a_trans: bool,
    b: HalfOperand<'_, H>,
    b_trans: bool,
    epilogue: &Epilogue<'_, f32>,
) -> Vec<f32> {
    let call = HalfCall {
        epilogue: Some(epilogue),
        ..HalfCall::new(m, n, k, a, a_trans, b, b_trans)
    };
    call.into_new(Paths::selected())
}

/// The `MicroKernel` bound the dispatch needs, named for the tests.
#[cfg(test)]
pub(super) fn run_with<SA, SB, K>(kern: K, p: &Problem<'_, SA, SB, f32>, c: &mut [f32])
where
    SA: Sync,
    SB: Sync,
    K: MicroKernel<SA, SB, Out = f32>,
{
    driver::run(kern, p, c);
}
