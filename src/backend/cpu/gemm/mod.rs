//! Dense matrix multiply on the CPU: packed, cache-blocked, with a
//! register-tiled SIMD micro-kernel chosen at run time.
//!
//! The layout follows BLIS. `C` is cut into tiles that run as independent
//! rayon tasks (one per thread for mid sizes, a few per thread for large
//! ones whose tiles still hold 512 × 512 values, none below about 96³
//! multiply-adds); inside a tile, `k` is cut into
//! blocks of at most `KC` (`KC_LONG` for a long `k` with `m` and `n` at most
//! 1024, where the kernel gains from it: 512 for the 12 × 32 f32 kernel and
//! the AMX kernel, in tiles at most 512 columns wide), a `KC × NC` block of `B` is packed into `NR`-wide
//! panels (streamed in order from L2/L3) and, for each `MR`-row strip of the
//! tile, an `MR × KC` panel of `A` (it stays in L1) is multiplied by every
//! `B` panel in the micro-kernel, which keeps an `MR × NR` block of `C` in
//! registers. A row-major `A` is read in place (unless its rows are a
//! multiple of 4 KiB apart, so that a strip of them shares one L1 set, and
//! the tile has enough panels to pay for packing it); a transposed one is
//! packed.
//! A row-major `B` is read in place when it fits in L2 or the tile has few
//! strips; otherwise, and when transposed, it is packed. (The half-precision
//! paths pack, and convert, both operands.)
//! A product with few rows and a transposed `B` (a layer's `x·Wᵀ` at a small
//! batch) runs swapped, as `Cᵀ = op(B)ᵀ·op(A)ᵀ`, so that `W` is read in
//! place instead of packed with a transposing copy for a handful of strips;
//! each tile of `Cᵀ` goes through a per-thread buffer into `C`, transposed
//! in registers. The bits are the same as unswapped.
//! Packing buffers live in thread-local storage, so a steady state of calls
//! allocates nothing, and start on a cache line whatever the allocator
//! returns, so that no 64-byte row of a packed panel straddles two lines.
//!
//! | file | what it holds |
//! |---|---|
//! | `driver.rs` | the tiling, the `k` blocks, the rayon tasks, the swapped product, the stepped product ([`gemm_stepping`]) |
//! | `pack.rs` | copying `A` and `B` (transposed or not) into panels, and a swapped tile into `C` |
//! | `buffers.rs` | the per-thread packing and tile buffers, aligned to cache lines |
//! | `kernel.rs` | the micro-kernel contract and the portable kernel |
//! | `x86.rs` | the AVX-512 (12 × 32 and 8 × 32) and AVX2+FMA kernels |
//! | `x86_pack.rs` | their transposing copies, in SIMD registers |
//! | `select.rs` | which kernels run; `ADVGRAD_GEMM`, `ADVGRAD_GEMM_BF16` |
//! | `half/` | [`gemm_half`]: bf16 and f16 operands, f32 accumulation (AMX, AVX512-BF16, or widened to f32) |
//!
//! **Determinism.** The `k` blocks depend on the shape alone (`k`, and
//! whether `m` and `n` are at most 1024), and each element of
//! `C` sums its block products in order, so the bits do not depend on how
//! many threads run, nor on which tile an element falls in. (They may differ
//! between kernels: FMA rounds once, and the 12 × 32 f32 kernel sums a long
//! `k` in longer blocks than the 8 × 32 one.)
//!
//! **Kernel switches.** The kernels are picked at run time from what the CPU
//! has; `ADVGRAD_GEMM=avx512-12x32|avx512|avx2|portable` forces the f32/f64 kernel and
//! `ADVGRAD_GEMM_BF16=amx|avx512bf16|portable` the bf16 one ([`F32Kernel`],
//! [`Bf16Kernel`]), so every path can be run, and compared, on any machine
//! that has its instructions; `ADVGRAD_GEMM_SWAP=always|never` runs every
//! f32/f64 product swapped, or none ([`Swap`]); `ADVGRAD_BF16_ROUNDING=integer|avx512bf16`
//! picks how the bf16 packers round f32 operands ([`Bf16Rounding`]; the same
//! bits either way).

mod buffers;
mod driver;
pub mod half;
mod kernel;
mod pack;
mod select;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_pack;

use crate::backend::pool;
use crate::dtype::Float;

use buffers::PackedElem;
pub use driver::{Epilogue, GradBlock, TileStep};
use driver::{Output, Problem};
pub use half::{gemm_half, gemm_half_new, gemm_half_new_then, HalfFloat, HalfOperand};
pub use select::{describe, Bf16Kernel, Bf16Rounding, F32Kernel, KernelChoice, Swap};

/// Element types the CPU matmul is instantiated for (f32 and f64).
///
/// The trait is sealed: its hidden method picks the micro-kernel for the
/// running CPU.
pub trait GemmElem: Float + sealed::Sealed {}
impl GemmElem for f32 {}
impl GemmElem for f64 {}

mod sealed {
    use super::driver::{Output, Problem};

    /// The per-type kernel dispatch.
    pub trait Sealed: Sized {
        /// Runs the problem with the best kernel this CPU has.
        ///
        /// # Safety
        ///
        /// For [`Output::C`], as [`super::driver::run_raw`].
        unsafe fn dispatch(p: &Problem<'_, Self>, out: Output<'_, Self>);
    }
}

macro_rules! impl_sealed {
    ($t:ty) => {
        impl sealed::Sealed for $t {
            unsafe fn dispatch(p: &Problem<'_, $t>, c: Output<'_, $t>) {
                let swap = match select::selected_or_panic(Swap::selected()) {
                    Swap::Auto => driver::swap_pays(p),
                    Swap::Always => true,
                    Swap::Never => false,
                };
                // SAFETY (all three calls): the caller's contract is
                // `run_raw`'s; the selected kernel is available.
                match select::selected_or_panic(F32Kernel::selected()) {
                    #[cfg(target_arch = "x86_64")]
                    F32Kernel::Avx512Tall => {
                        let k = x86::Avx512Tall::detect().expect("AVX-512F was detected");
                        unsafe { run_plain(k, p, c, swap) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    F32Kernel::Avx512 => {
                        let k = x86::Avx512::detect().expect("AVX-512F was detected");
                        unsafe { run_plain(k, p, c, swap) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    F32Kernel::Avx2Fma => {
                        let k = x86::Avx2Fma::detect().expect("AVX2 and FMA were detected");
                        unsafe { run_plain(k, p, c, swap) }
                    }
                    _ => unsafe { run_plain(kernel::Portable, p, c, swap) },
                }
            }
        }
    };
}

/// Runs an f32/f64 problem with `kern`, swapped ([`driver::run_swapped`])
/// or not; a stepped product never swaps (the bits are the same either way).
///
/// # Safety
///
/// For [`Output::C`], as [`driver::run_raw`].
unsafe fn run_plain<T: GemmElem + PackedElem, K: kernel::MicroKernel<T, Out = T>>(
    kern: K,
    p: &Problem<'_, T>,
    out: Output<'_, T>,
    swap: bool,
) {
    // SAFETY: the caller's contract is `run_raw`'s, which is `run_swapped`'s.
    unsafe {
        match out {
            Output::C(c) if swap => driver::run_swapped(kern, p, c),
            Output::C(c) => driver::run_raw(kern, p, c),
            Output::Step(step) => driver::run_stepping(kern, p, step),
        }
    }
}

impl_sealed!(f32);
impl_sealed!(f64);

/// `C = op(A)·op(B)` (or `C += op(A)·op(B)` when `accumulate`), all row-major.
///
/// `A` is stored as `[m, k]`, or as `[k, m]` when `a_trans`; `B` as `[k, n]`,
/// or as `[n, k]` when `b_trans`; `C` is `[m, n]`. Transposed operands are
/// read in place (never copied out whole). With `k == 0` the product is zero.
/// The result is the same bits for any number of rayon threads.
///
/// # Panics
///
/// If a slice length does not match its shape.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_trans: bool,
    b: &[T],
    b_trans: bool,
    c: &mut [T],
    accumulate: bool,
) {
    let p = problem(m, n, k, a, a_trans, b, b_trans, accumulate);
    assert_eq!(
        c.len(),
        m * n,
        "gemm: C has the wrong length for [{m}, {n}]"
    );
    compute_into(m, n, k, accumulate, c, |c| {
        // SAFETY: `compute_into` hands over `m·n` exclusive values of C.
        unsafe { T::dispatch(&p, Output::C(c)) }
    });
}

/// `C (+)= op(A)·op(B)` into `c` (`m·n` values, checked by the caller):
/// `G = op(A)·op(B)` (operands as in [`gemm`]) handed to `step` in
/// finished blocks while they are in L1, without `G` ever being stored
/// whole: what `step` makes of each block (an optimiser update of the
/// parameter `G` is the gradient of) then costs no pass over memory of its
/// own. Each element is summed as by [`gemm`], so the bits of `G` are the
/// same, for any number of threads; every element is handed over once
/// (with `k == 0`, as zeros, one row at a time).
///
/// # Panics
///
/// If a slice length does not match its shape.
#[allow(clippy::too_many_arguments)]
pub fn gemm_stepping<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_trans: bool,
    b: &[T],
    b_trans: bool,
    step: &TileStep<'_, T>,
) {
    let p = problem(m, n, k, a, a_trans, b, b_trans, false);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        let zeros = vec![T::ZERO; n];
        for i in 0..m {
            step(i, 0, GradBlock::new(&zeros, n, 1, n));
        }
        return;
    }
    // SAFETY: a stepped product writes no `C`.
    unsafe { T::dispatch(&p, Output::Step(step)) }
}

/// `compute` runs the driver on `c` when `m`, `n` and `k` are non-zero;
/// with `k == 0` the product is zero.
fn compute_into<C: Copy + Default>(
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    c: &mut [C],
    compute: impl FnOnce(*mut C),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(C::default());
        }
        return;
    }
    compute(c.as_mut_ptr());
}

/// `op(A)·op(B)` into a new row-major `[m, n]` vector, written once (no
/// zero-fill first); operands as in [`gemm`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_new<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_trans: bool,
    b: &[T],
    b_trans: bool,
) -> Vec<T> {
    let p = problem(m, n, k, a, a_trans, b, b_trans, false);
    new_product(m, n, k, None, |c| {
        // SAFETY: `new_product` hands over room for `m·n` values.
        unsafe { T::dispatch(&p, Output::C(c)) }
    })
}

/// [`gemm_new`] followed by `epilogue` on every stretch of every row of the
/// product, each handed over once, while it is still in cache (see
/// [`Epilogue`]): an elementwise function of the product costs no extra
/// pass over memory.
#[allow(clippy::too_many_arguments)]
pub fn gemm_new_then<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_trans: bool,
    b: &[T],
    b_trans: bool,
    epilogue: &Epilogue<'_, T>,
) -> Vec<T> {
    let mut p = problem(m, n, k, a, a_trans, b, b_trans, false);
    p.epilogue = Some(epilogue);
    new_product(m, n, k, Some(epilogue), |c| {
        // SAFETY: `new_product` hands over room for `m·n` values.
        unsafe { T::dispatch(&p, Output::C(c)) }
    })
}

/// A product (which does not accumulate) in a new `[m, n]` vector, with
/// its epilogue applied, if any: `compute` runs the driver, which writes
/// every value, when `m`, `n` and `k` are non-zero.
fn new_product<C: Copy + Default + 'static>(
    m: usize,
    n: usize,
    k: usize,
    epilogue: Option<&Epilogue<'_, C>>,
    compute: impl FnOnce(*mut C),
) -> Vec<C> {
    if m == 0 || n == 0 || k == 0 {
        let mut c = pool::filled(m * n, C::default());
        if let Some(epilogue) = epilogue {
            for (i, row) in c.chunks_mut(n.max(1)).enumerate() {
                epilogue(i, 0, row);
            }
        }
        return c;
    }
    let mut c = pool::take(m * n);
    compute(c.as_mut_ptr());
    // SAFETY: the capacity holds `m·n` values; without `accumulate` the
    // driver writes every one of them and reads none before writing it (the
    // epilogue only sees values already written).
    unsafe { c.set_len(m * n) };
    c
}

/// The checked problem description of `op(A)·op(B)`: the operand lengths
/// against their shapes, and the strides of `op(A)` (element `(i, p)`) and
/// `op(B)` (element `(p, j)`).
///
/// # Panics
///
/// If `a` or `b` does not hold exactly its shape's elements.
#[allow(clippy::too_many_arguments)]
fn problem<'a, SA, SB, C>(
    m: usize,
    n: usize,
    k: usize,
    a: &'a [SA],
    a_trans: bool,
    b: &'a [SB],
    b_trans: bool,
    accumulate: bool,
) -> Problem<'a, SA, SB, C> {
    assert_eq!(
        a.len(),
        m * k,
        "gemm: A has the wrong length for [{m}, {k}]"
    );
    assert_eq!(
        b.len(),
        k * n,
        "gemm: B has the wrong length for [{k}, {n}]"
    );
    let (a_rs, a_cs) = if a_trans { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_trans { (1, k) } else { (n, 1) };
    Problem {
        m,
        n,
        k,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        accumulate,
        epilogue: None,
    }
}
