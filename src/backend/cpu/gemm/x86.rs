//! The x86-64 micro-kernels: AVX-512F and AVX2+FMA, for f32 and f64.
//!
//! Each keeps an `MR × NV` grid of vector accumulators in registers; one
//! step of `k` loads `NV` vectors of packed `B`, broadcasts `MR` values of
//! packed `A` and issues `MR · NV` fused multiply-adds.

use std::arch::x86_64::*;

use super::kernel::{APanel, MicroKernel};
use super::pack::{self, View};
use super::x86_pack::{
    columns_to_rows_f32, row_strip_f32, row_strip_f32_any, row_strip_f64, row_strip_f64_any,
    transposed_panel_f32, transposed_panel_f64,
};

/// Proof that the CPU has AVX-512F.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

impl Avx512 {
    /// The token, if this CPU has AVX-512F.
    pub(super) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Avx512(()))
    }
}

/// Proof that the CPU has AVX-512F, for the f32 kernel of 12 × 32 that
/// prefetches `B` (f64 as [`Avx512`]'s).
///
/// Measured on a Xeon guest with AMX (`benches/RESULTS.md`), one thread:
/// 10–35 % more GFLOP/s than 8 × 32 on every shape tried (2048³: 92 → 121;
/// the MLP's `128×784×256`: 110 → 149); on Zen 4, 12 × 32 without the
/// prefetch was slower at every size. [`super::F32Kernel::best`] takes it
/// on Intel CPUs only. Its f32 instance sums a long `k` in blocks of up to
/// 512 on products with `m` and `n` at most 1024 (`KC_LONG`, see
/// `driver::k_block_of`), so there its bits differ from the 8 × 32
/// kernel's.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512Tall(());

impl Avx512Tall {
    /// The token, if this CPU has AVX-512F.
    pub(super) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Avx512Tall(()))
    }
}

/// Proof that the CPU has AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2Fma(());

impl Avx2Fma {
    /// The token, if this CPU has AVX2 and FMA.
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// Defines a kernel `$name::<MR, NV>` over vectors `$v` of `$lanes` × `$t`:
/// `MR` rows and `NV` vectors of `C`, from panels packed `a_step` and
/// `b_step` values per step of `k` (the full panel widths, so that one
/// packing serves the narrower instances used at the edges).
macro_rules! simd_kernel {
    ($name:ident, $feat:literal, $t:ty, $v:ty, $lanes:literal,
     $zero:ident, $set1:ident, $load:ident, $store:ident, $fmadd:ident, $add:ident) => {
        /// `A[i, p]` is `a[p·a_step + i·a_rs]`: a packed panel has
        /// `a_step = MR`, `a_rs = 1`; rows of a row-major `A` read in place
        /// have `a_step = 1`, `a_rs` the row stride (`DIRECT_A`). With
        /// `PF > 0`, each step prefetches the `B` row `PF` steps ahead.
        ///
        /// # Safety
        ///
        /// The CPU must have the target features; `a` must hold every
        /// `A[i, p]` for `i < MR`, `p < kc`, and `b`
        /// `(kc - 1) · b_step + NV · lanes` values; `c` must be valid for
        /// `mr ≤ MR` rows of `nr ≤ NV · lanes` values, `ldc` apart.
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<const MR: usize, const NV: usize, const DIRECT_A: bool, const PF: usize>(
            kc: usize,
            a: *const $t,
            a_step: usize,
            a_rs: usize,
            b: *const $t,
            b_step: usize,
            c: *mut $t,
            ldc: usize,
            mr: usize,
            nr: usize,
            add: bool,
        ) {
            let a_rs = if DIRECT_A { a_rs } else { 1 };
            let a_step = if DIRECT_A { 1 } else { a_step };
            let mut acc: [[$v; NV]; MR] = [[$zero(); NV]; MR];
            let mut ap = a;
            let mut bp = b;
            for _ in 0..kc {
                if PF > 0 {
                    // The step PF ahead, one prefetch per 64 bytes of its B
                    // row (the address may lie past the panel: a prefetch
                    // never faults, so it is computed with wrapping_add).
                    for line in (0..NV * $lanes).step_by(64 / std::mem::size_of::<$t>()) {
                        _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PF * b_step + line).cast());
                    }
                }
                let mut bv: [$v; NV] = [$zero(); NV];
                for (v, slot) in bv.iter_mut().enumerate() {
                    // SAFETY: step p < kc reads b[p·b_step + v·lanes ..][..lanes], in bounds.
                    *slot = unsafe { $load(bp.add(v * $lanes)) };
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    // SAFETY: A[i, p] with i < MR, p < kc, held by `a`.
                    let av = $set1(unsafe { *ap.add(i * a_rs) });
                    for (acc_v, &b_v) in row.iter_mut().zip(&bv) {
                        *acc_v = $fmadd(av, b_v, *acc_v);
                    }
                }
                // SAFETY: at most one past the end of the packed panels.
                unsafe {
                    ap = ap.add(a_step);
                    bp = bp.add(b_step);
                }
            }
            if mr == MR && nr == NV * $lanes {
                for (i, row) in acc.iter().enumerate() {
                    for (v, &acc_v) in row.iter().enumerate() {
                        // SAFETY: row i < mr, columns v·lanes.. < nr: inside the tile.
                        unsafe {
                            let p = c.add(i * ldc + v * $lanes);
                            let r = if add { $add($load(p), acc_v) } else { acc_v };
                            $store(p, r);
                        }
                    }
                }
            } else {
                // Edge tile: spill the accumulators, then write the valid part.
                let mut tmp = [[[0.0 as $t; $lanes]; NV]; MR];
                for (trow, row) in tmp.iter_mut().zip(&acc) {
                    for (t, &acc_v) in trow.iter_mut().zip(row) {
                        // SAFETY: `t` is exactly one vector of `$lanes` values.
                        unsafe { $store(t.as_mut_ptr(), acc_v) };
                    }
                }
                for (i, trow) in tmp.iter().enumerate().take(mr) {
                    for j in 0..nr {
                        let v = trow[j / $lanes][j % $lanes];
                        // SAFETY: i < mr, j < nr: inside the tile.
                        unsafe {
                            let p = c.add(i * ldc + j);
                            *p = if add { *p + v } else { v };
                        }
                    }
                }
            }
        }
    };
}

simd_kernel!(
    avx512_f32,
    "avx512f",
    f32,
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps
);
simd_kernel!(
    avx512_f64,
    "avx512f",
    f64,
    __m512d,
    8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_loadu_pd,
    _mm512_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd
);
simd_kernel!(
    avx2_f32,
    "avx2,fma",
    f32,
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps
);
simd_kernel!(
    avx2_f64,
    "avx2,fma",
    f64,
    __m256d,
    4,
    _mm256_setzero_pd,
    _mm256_set1_pd,
    _mm256_loadu_pd,
    _mm256_storeu_pd,
    _mm256_fmadd_pd,
    _mm256_add_pd
);

/// Implements [`MicroKernel`] for a token with one kernel instance and its
/// blocking sizes.
macro_rules! impl_kernel {
    ($token:ty, $feat:literal, $t:ty, $f:ident, $tr:ident, $ra:ident, $co:path, mr = $mr:literal, nv = $nv:literal, lanes = $lanes:literal,
     kc = $kc:literal, $(kc_long = $kc_long:literal,)? nc = $nc:literal, mc = $mc:literal, pf = $pf:literal, rows = [$($rows:literal)*]) => {
        impl MicroKernel<$t> for $token {
            type Packed = $t;
            type Out = $t;

            const MR: usize = $mr;
            const NR: usize = $nv * $lanes;
            const KC: usize = $kc;
            $(const KC_LONG: usize = $kc_long;)?
            const NC: usize = $nc;
            const MC: usize = $mc;

            fn a_in_place(a: &[$t]) -> Option<&[$t]> {
                Some(a)
            }

            fn b_in_place(b: &[$t]) -> Option<&[$t]> {
                Some(b)
            }

            fn pack_a(a: View<'_, $t>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [$t]) {
                #[target_feature(enable = $feat)]
                fn packer(a: View<'_, $t>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [$t]) {
                    // A closure of this function, not the function item: it
                    // inherits the target features, and each kernel gets an
                    // instantiation of its own, which inlines whole.
                    pack::pack_a::<$t, $mr>(a, i0, mr, p0, kc, dst, |a, i0, p0, s| $ra::<$mr>(a, i0, p0, s));
                }
                // SAFETY: the token proves the features.
                unsafe { packer(a, i0, mr, p0, kc, dst) }
            }

            fn pack_b(b: View<'_, $t>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [$t]) {
                #[target_feature(enable = $feat)]
                fn packer(b: View<'_, $t>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [$t]) {
                    // A closure, as in `pack_a`.
                    pack::pack_b::<$t, { $nv * $lanes }>(b, p0, kc, j0, nc, dst, |b, p0, jb, s| $tr::<{ $nv * $lanes }>(b, p0, jb, s));
                }
                // SAFETY: the token proves the features.
                unsafe { packer(b, p0, kc, j0, nc, dst) }
            }

            fn columns_to_rows(tile: &[$t], w: usize, r0: usize, rows: &mut [&mut [$t]]) {
                #[target_feature(enable = $feat)]
                fn copier(tile: &[$t], w: usize, r0: usize, rows: &mut [&mut [$t]]) {
                    $co(tile, w, r0, rows);
                }
                // SAFETY: the token proves the features.
                unsafe { copier(tile, w, r0, rows) }
            }

            unsafe fn run(
                self,
                kc: usize,
                a: APanel<'_, $t>,
                b: &[$t],
                b_step: usize,
                c: *mut $t,
                ldc: usize,
                mr: usize,
                nr: usize,
                add: bool,
            ) {
                assert!(a.holds::<$mr>(kc, mr));
                assert!(kc == 0 || b.len() >= (kc - 1) * b_step + $nv * $lanes);
                assert!(mr <= $mr && nr <= $nv * $lanes);
                let bp = b.as_ptr();
                // Edge tiles run an instance just as large as they need.
                let narrow = nr <= $lanes;
                macro_rules! call {
                    ($r:literal) => {
                        match (a, narrow) {
                            (APanel::Packed(a), true) => $f::<$r, 1, false, $pf>(kc, a.as_ptr(), $mr, 1, bp, b_step, c, ldc, mr, nr, add),
                            (APanel::Packed(a), false) => $f::<$r, $nv, false, $pf>(kc, a.as_ptr(), $mr, 1, bp, b_step, c, ldc, mr, nr, add),
                            (APanel::Rows { data, rs }, true) => $f::<$r, 1, true, $pf>(kc, data.as_ptr(), 1, rs, bp, b_step, c, ldc, mr, nr, add),
                            (APanel::Rows { data, rs }, false) => $f::<$r, $nv, true, $pf>(kc, data.as_ptr(), 1, rs, bp, b_step, c, ldc, mr, nr, add),
                        }
                    };
                }
                // SAFETY: the token proves the features; the panel lengths and
                // tile size are checked above; the caller vouches for `c`.
                unsafe {
                    match mr {
                        $($rows => call!($rows),)*
                        _ => {}
                    }
                }
            }
        }
    };
}

impl_kernel!(Avx512, "avx512f", f32, avx512_f32, transposed_panel_f32, row_strip_f32, columns_to_rows_f32, mr = 8, nv = 2, lanes = 16, kc = 256, nc = 2048, mc = 4096, pf = 0,
    rows = [1 2 3 4 5 6 7 8]);
impl_kernel!(Avx512, "avx512f", f64, avx512_f64, transposed_panel_f64, row_strip_f64, pack::columns_to_rows, mr = 8, nv = 2, lanes = 8, kc = 256, nc = 1024, mc = 4096, pf = 0,
    rows = [1 2 3 4 5 6 7 8]);
impl_kernel!(Avx512Tall, "avx512f", f32, avx512_f32, transposed_panel_f32, row_strip_f32_any, columns_to_rows_f32, mr = 12, nv = 2, lanes = 16, kc = 256, kc_long = 512, nc = 2048, mc = 4096, pf = 8,
    rows = [1 2 3 4 5 6 7 8 9 10 11 12]);
impl_kernel!(Avx512Tall, "avx512f", f64, avx512_f64, transposed_panel_f64, row_strip_f64, pack::columns_to_rows, mr = 8, nv = 2, lanes = 8, kc = 256, nc = 1024, mc = 4096, pf = 0,
    rows = [1 2 3 4 5 6 7 8]);
impl_kernel!(Avx2Fma, "avx2,fma", f32, avx2_f32, transposed_panel_f32, row_strip_f32_any, columns_to_rows_f32, mr = 6, nv = 2, lanes = 8, kc = 256, nc = 2048, mc = 4096, pf = 0,
    rows = [1 2 3 4 5 6]);
impl_kernel!(Avx2Fma, "avx2,fma", f64, avx2_f64, transposed_panel_f64, row_strip_f64_any, pack::columns_to_rows, mr = 6, nv = 2, lanes = 4, kc = 256, nc = 1024, mc = 4096, pf = 0,
    rows = [1 2 3 4 5 6]);
