//! The AVX512-BF16 micro-kernel: `vdpbf16ps` (`_mm512_dpbf16_ps`) on pairs
//! of bf16 along `k`, f32 accumulators.
//!
//! It keeps an 8 × 32 block of `C` in 16 zmm accumulators. One step covers
//! two steps of `k`: two zmm loads of packed `B` (16 columns × a pair each),
//! eight broadcasts of a packed `A` pair, sixteen `vdpbf16ps`, each of
//! which adds two products to each of its 16 lanes.
//!
//! **Numerics.** For each lane, `vdpbf16ps` adds the product of the odd
//! step of the pair, then that of the even step, each addition rounded to
//! nearest even (the products of two bf16 are exact in f32): the portable
//! path's order with the two steps of every pair swapped. It treats
//! subnormal inputs as zero and flushes subnormal results to zero, whatever
//! MXCSR says. (Both checked on this kernel's tests against a scalar model.)

use std::arch::x86_64::*;

use half::bf16;

use super::pairs::{x86 as pairs, Pair};
use super::source::HalfSource;
use crate::backend::cpu::gemm::kernel::{APanel, MicroKernel};
use crate::backend::cpu::gemm::pack::View;

/// Proof that the CPU has AVX512-BF16 (with AVX-512F, and AVX-512BW, VL
/// and AVX2 for the packing).
#[derive(Clone, Copy, Debug)]
pub(in crate::backend::cpu::gemm) struct Avx512Bf16(());

impl Avx512Bf16 {
    /// The token, if this CPU has the features.
    pub(in crate::backend::cpu::gemm) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2"))
        .then_some(Avx512Bf16(()))
    }
}

/// Rows of `C` per call.
const MR: usize = 8;
/// zmm vectors of 16 columns per call.
const NV: usize = 2;
/// Columns of `C` per call.
const NR: usize = NV * 16;

/// `C[0..mr, 0..nr] (+)= A · B` over `qn` pair steps, with `ROWS` rows and
/// `V` vectors of accumulators.
///
/// # Safety
///
/// The CPU must have AVX-512F and AVX512-BF16; `a` must hold `qn · MR`
/// pairs and `b` `(qn - 1) · NR + V · 16`; `c` must be valid for `mr ≤ ROWS`
/// rows of `nr ≤ V · 16` values, `ldc` apart.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_kernel<const ROWS: usize, const V: usize>(
    qn: usize,
    a: *const Pair,
    b: *const Pair,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..qn {
        let mut bv = [_mm512_setzero_si512(); V];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: step q < qn reads b[q·NR + 16v ..][..16], in bounds.
            *slot = unsafe { _mm512_loadu_si512(bp.add(16 * v).cast()) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: a[q·MR + i] with i < ROWS ≤ MR, q < qn: in bounds.
            let av = _mm512_set1_epi32(unsafe { ap.add(i).read() } as i32);
            for (acc_v, &b_v) in row.iter_mut().zip(&bv) {
                *acc_v = _mm512_dpbf16_ps(*acc_v, m512bh(av), m512bh(b_v));
            }
        }
        // SAFETY: at most one past the end of the packed panels.
        unsafe {
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    if mr == ROWS && nr == V * 16 {
        for (i, row) in acc.iter().enumerate() {
            for (v, &acc_v) in row.iter().enumerate() {
                // SAFETY: row i < mr, columns 16v.. < nr: inside the tile.
                unsafe {
                    let p = c.add(i * ldc + 16 * v);
                    let r = if add {
                        _mm512_add_ps(_mm512_loadu_ps(p), acc_v)
                    } else {
                        acc_v
                    };
                    _mm512_storeu_ps(p, r);
                }
            }
        }
    } else {
        // Edge tile: spill the accumulators, then write the valid part.
        let mut tmp = [[[0.0f32; 16]; V]; ROWS];
        for (trow, row) in tmp.iter_mut().zip(&acc) {
            for (t, &acc_v) in trow.iter_mut().zip(row) {
                // SAFETY: `t` is exactly one vector of 16 values.
                unsafe { _mm512_storeu_ps(t.as_mut_ptr(), acc_v) };
            }
        }
        for (i, trow) in tmp.iter().enumerate().take(mr) {
            for j in 0..nr {
                let v = trow[j / 16][j % 16];
                // SAFETY: i < mr, j < nr: inside the tile.
                unsafe {
                    let p = c.add(i * ldc + j);
                    *p = if add { *p + v } else { v };
                }
            }
        }
    }
}

/// 32 bf16 as the argument type of `_mm512_dpbf16_ps`.
#[inline(always)]
fn m512bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512 bits of plain data; every bit pattern is valid.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

impl<SA: HalfSource<bf16>, SB: HalfSource<bf16>> MicroKernel<SA, SB> for Avx512Bf16 {
    type Packed = Pair;
    type Out = f32;

    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const NC: usize = 2048;
    const MC: usize = 4096;
    /// Both operands are packed (and converted): fewer tiles convert each
    /// fewer times.
    const TILES_PER_THREAD: usize = 2;

    fn packed_rows(kc: usize) -> usize {
        kc.div_ceil(2)
    }

    fn pack_a(a: View<'_, SA>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [Pair]) {
        // SAFETY: the token proves the features.
        unsafe { pairs::pack_pairs_selected::<SA, MR>(a, i0, mr, p0, kc, dst) }
    }

    fn pack_b(b: View<'_, SB>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [Pair]) {
        // The packers see op(B) transposed: rows j, steps p.
        let bt = View {
            data: b.data,
            rs: b.cs,
            cs: b.rs,
        };
        let panel = kc.div_ceil(2) * NR;
        // SAFETY: the token proves the features.
        unsafe { pairs::pack_pair_panels_selected::<SB, NR>(bt, j0, nc, p0, kc, panel, dst) }
    }

    unsafe fn run(
        self,
        kc: usize,
        a: APanel<'_, Pair>,
        b: &[Pair],
        b_step: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        add: bool,
    ) {
        let APanel::Packed(a) = a else {
            unreachable!("the AVX512-BF16 kernel reads A packed");
        };
        let qn = kc.div_ceil(2);
        assert!(a.len() >= qn * MR && b.len() >= qn * NR && b_step == NR);
        assert!(mr <= MR && nr <= NR);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        // Edge tiles run an instance just as large as they need.
        macro_rules! call {
            ($r:literal) => {
                if nr <= 16 {
                    dot_kernel::<$r, 1>(qn, ap, bp, c, ldc, mr, nr, add)
                } else {
                    dot_kernel::<$r, NV>(qn, ap, bp, c, ldc, mr, nr, add)
                }
            };
        }
        // SAFETY: the token proves the features; the panel lengths and tile
        // size are checked above; the caller vouches for `c`.
        unsafe {
            match mr {
                1 => call!(1),
                2 => call!(2),
                3 => call!(3),
                4 => call!(4),
                5 => call!(5),
                6 => call!(6),
                7 => call!(7),
                8 => call!(8),
                _ => {}
            }
        }
    }
}
