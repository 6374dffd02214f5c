//! The portable half-precision path: operands widened to f32 while they
//! are packed, then multiplied by an f32 micro-kernel.
//!
//! The product of two bf16 (8-bit significands) or two f16 (11-bit) is
//! exact in f32 (24-bit), so a fused multiply-add and a multiply followed
//! by an add round the same way: each step of `k` is one rounding of the
//! running sum. All f32 kernels sum `p` in order within a `k` block of the
//! same length, so this path gives the same bits whichever f32 kernel runs
//! it (AVX-512F, AVX2+FMA, or plain Rust). The one exception is a bf16
//! product below f32's normal range (|a·b| < 2⁻¹²⁶), which a separate
//! multiply rounds first; f16 products never are (they stay above 2⁻⁴⁸).

use std::cell::RefCell;
use std::marker::PhantomData;

use super::source::HalfSource;
use crate::backend::cpu::gemm::kernel::{APanel, MicroKernel};
use crate::backend::cpu::gemm::pack::View;

/// The f32 kernel `K` fed with operands of the half type `H` (stored as
/// `H`, or as f32 rounded to `H`), widened to f32 as they are packed.
#[derive(Debug)]
pub(in crate::backend::cpu::gemm) struct Widen<K, H> {
    kernel: K,
    half: PhantomData<fn() -> H>,
}

impl<K: Copy, H> Clone for Widen<K, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Copy, H> Copy for Widen<K, H> {}

impl<K, H> Widen<K, H> {
    /// The path on f32 kernel `kernel`.
    pub(in crate::backend::cpu::gemm) fn new(kernel: K) -> Self {
        Widen {
            kernel,
            half: PhantomData,
        }
    }
}

thread_local! {
    /// Widened runs of a transposing pack, before the f32 packer
    /// interleaves them.
    static STAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's staging buffer of at least `len` values (a
/// fresh one if it is already lent).
fn with_stage<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    STAGE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut stage) => {
            if stage.len() < len {
                stage.resize(len, 0.0);
            }
            f(&mut stage[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

impl<K, H, SA, SB> MicroKernel<SA, SB> for Widen<K, H>
where
    K: MicroKernel<f32, Packed = f32, Out = f32>,
    H: 'static,
    SA: HalfSource<H>,
    SB: HalfSource<H>,
{
    type Packed = f32;
    type Out = f32;

    const MR: usize = K::MR;
    const NR: usize = K::NR;
    const KC: usize = K::KC;
    const NC: usize = K::NC;
    const MC: usize = K::MC;
    /// Both operands are packed (and converted): fewer tiles convert each
    /// fewer times.
    const TILES_PER_THREAD: usize = 2;

    fn pack_a(a: View<'_, SA>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [f32]) {
        let w = K::MR;
        if a.rs == 1 {
            // Stored transposed: each step of k is a run of the strip's rows,
            // widened straight into its place.
            for (p, d) in dst[..kc * w].chunks_exact_mut(w).enumerate() {
                SA::widen_run(&a.data[(p0 + p) * a.cs + i0..][..mr], &mut d[..mr]);
                d[mr..].fill(0.0);
            }
        } else {
            assert_eq!(a.cs, 1, "gemm: operands are row-major or transposed");
            // Rows are runs along k: widen them, then let the f32 packer
            // interleave them.
            with_stage(mr * kc, |stage| {
                for (i, run) in stage.chunks_exact_mut(kc).enumerate() {
                    SA::widen_run(&a.data[(i0 + i) * a.rs + p0..][..kc], run);
                }
                let staged = View {
                    data: &*stage,
                    rs: kc,
                    cs: 1,
                };
                K::pack_a(staged, 0, mr, 0, kc, dst);
            });
        }
    }

    fn pack_b(b: View<'_, SB>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let nr = K::NR;
        for (jp, panel) in dst[..nc.div_ceil(nr) * kc * nr]
            .chunks_exact_mut(kc * nr)
            .enumerate()
        {
            let jb = j0 + jp * nr;
            let w = nr.min(j0 + nc - jb);
            if b.cs == 1 {
                // Row-major: each step of k is a run of the panel's columns.
                for (p, d) in panel.chunks_exact_mut(nr).enumerate() {
                    SB::widen_run(&b.data[(p0 + p) * b.rs + jb..][..w], &mut d[..w]);
                    d[w..].fill(0.0);
                }
            } else {
                assert_eq!(b.rs, 1, "gemm: operands are row-major or transposed");
                // Stored transposed: columns are runs along k; widen them,
                // then let the f32 packer interleave them.
                with_stage(w * kc, |stage| {
                    for (j, run) in stage.chunks_exact_mut(kc).enumerate() {
                        SB::widen_run(&b.data[(jb + j) * b.cs + p0..][..kc], run);
                    }
                    let staged = View {
                        data: &*stage,
                        rs: 1,
                        cs: kc,
                    };
                    K::pack_b(staged, 0, kc, 0, w, panel);
                });
            }
        }
    }

    unsafe fn run(
        self,
        kc: usize,
        a: APanel<'_, f32>,
        b: &[f32],
        b_step: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        add: bool,
    ) {
        // SAFETY: the caller's contract is the f32 kernel's.
        unsafe { self.kernel.run(kc, a, b, b_step, c, ldc, mr, nr, add) }
    }
}
