//! Packing bf16 in pairs along `k`, the layout of `vdpbf16ps` and of AMX's
//! `tdpbf16ps`: one 32-bit element holds `x[r, 2q]` in its low half and
//! `x[r, 2q + 1]` in its high half.
//!
//! A packer sees its operand as `x[r, p]`, `r` along the panel's width and
//! `p` along `k`: `op(A)` as it is, `op(B)` transposed. Two layouts:
//!
//! - by `k` ([`pack_pairs`]): `dst[q·W + r]`, `W` pairs per step of two —
//!   the `A` and `B` panels of the AVX512-BF16 kernel, the `B` panels of
//!   the AMX kernel;
//! - by row ([`pack_pair_rows`]): `dst[r·qk + q]`, a row-major strip — the
//!   `A` strips of the AMX kernel, whose tiles load 16 rows of 16 pairs.
//!
//! Past the operand's edge (`r ≥ w`, or `p ≥ kc`, including the second half
//! of the last pair when `kc` is odd) the packed values are zero. Each
//! packer has a portable form and an AVX2 form that gives the same bits.

use half::bf16;

use super::source::HalfSource;
use crate::backend::cpu::gemm::pack::View;

/// Two bf16 along `k`, the lower `k` in the low 16 bits.
pub(in crate::backend::cpu::gemm) type Pair = u32;

/// `x[r0 + r, p0 + 2q]` and the next step as a [`Pair`] (zero past `kc`).
#[inline(always)]
fn pair_at<S: HalfSource<bf16>>(x: View<'_, S>, r: usize, p0: usize, kc: usize, q: usize) -> Pair {
    let at = |p: usize| {
        if p < kc {
            u32::from(x.data[r * x.rs + (p0 + p) * x.cs].half_bits())
        } else {
            0
        }
    };
    at(2 * q) | at(2 * q + 1) << 16
}

/// Packs `x[r0..r0+w, p0..p0+kc]` by `k`: `dst[q·W + r]` for the
/// `kc.div_ceil(2)` steps `q`, zero past `w` and `kc`.
pub(super) fn pack_pairs<S: HalfSource<bf16>, const W: usize>(
    x: View<'_, S>,
    r0: usize,
    w: usize,
    p0: usize,
    kc: usize,
    dst: &mut [Pair],
) {
    let qn = kc.div_ceil(2);
    let dst = &mut dst[..qn * W];
    if w < W {
        dst.fill(0);
    }
    for (q, row) in dst.chunks_exact_mut(W).enumerate() {
        for (r, d) in row[..w].iter_mut().enumerate() {
            *d = pair_at(x, r0 + r, p0, kc, q);
        }
    }
}

/// Packs `x[r0..r0+w, p0..p0+kc]` as `w.div_ceil(W)` panels by `k`, each
/// [`pack_pairs`] of `W` rows padded with zero pairs to `panel` values.
pub(super) fn pack_pair_panels<S: HalfSource<bf16>, const W: usize>(
    x: View<'_, S>,
    r0: usize,
    w: usize,
    p0: usize,
    kc: usize,
    panel: usize,
    dst: &mut [Pair],
) {
    let packed = kc.div_ceil(2) * W;
    for (jp, d) in dst[..w.div_ceil(W) * panel]
        .chunks_exact_mut(panel)
        .enumerate()
    {
        let rb = r0 + jp * W;
        pack_pairs::<S, W>(x, rb, W.min(r0 + w - rb), p0, kc, d);
        d[packed..].fill(0);
    }
}

/// Packs `x[r0..r0+w, p0..p0+kc]` by row: `dst[r·qk + q]` for `r < R` and
/// `q < qk` (`qk ≥ kc.div_ceil(2)`), zero past `w` and `kc`.
pub(super) fn pack_pair_rows<S: HalfSource<bf16>, const R: usize>(
    x: View<'_, S>,
    r0: usize,
    w: usize,
    p0: usize,
    kc: usize,
    qk: usize,
    dst: &mut [Pair],
) {
    let qn = kc.div_ceil(2);
    assert!(qn <= qk && w <= R);
    let dst = &mut dst[..R * qk];
    for (r, row) in dst.chunks_exact_mut(qk).enumerate() {
        if r < w {
            for (q, d) in row[..qn].iter_mut().enumerate() {
                *d = pair_at(x, r0 + r, p0, kc, q);
            }
            row[qn..].fill(0);
        } else {
            row.fill(0);
        }
    }
}

/// The AVX2 forms of the packers, for the kernels that prove AVX2.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::{pack_pair_rows as portable_rows, pack_pairs as portable_pairs, Pair};
    use crate::backend::cpu::gemm::half::source::HalfSource;
    use crate::backend::cpu::gemm::pack::View;
    use crate::backend::cpu::gemm::x86_pack::transpose_8x8;

    /// Eight pairs from 16 consecutive values along `k` at `src`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of 16 values; AVX2 must be present
    /// (inlined into callers compiled with it).
    #[inline(always)]
    unsafe fn pairs_of_run<S: HalfSource<bf16>>(src: *const S) -> __m256i {
        // SAFETY: 16 readable values; AVX2 is present.
        unsafe {
            let lo = S::load8_bits(src);
            let hi = S::load8_bits(src.add(8));
            // Narrow to 16 bits (in-lane: lo0-3 hi0-3 | lo4-7 hi4-7), then
            // put the 64-bit quarters back in order.
            _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(lo, hi))
        }
    }

    /// Transposes 8 × 8 32-bit lanes: `out[t][r] = rows[r][t]`.
    ///
    /// Must run on a CPU with AVX (inlined into callers compiled with it).
    #[inline(always)]
    fn transpose8(rows: [__m256i; 8]) -> [__m256i; 8] {
        // SAFETY: AVX is present (see the doc comment); the casts move no bits.
        unsafe {
            transpose_8x8(rows.map(|v| _mm256_castsi256_ps(v))).map(|v| _mm256_castps_si256(v))
        }
    }

    /// [`super::pack_pairs`] in AVX2: the same bits.
    ///
    /// Must run on a CPU with AVX2 (every caller holds a kernel token that
    /// proves it and is compiled with it, so this inlines into it).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pairs<S: HalfSource<bf16>, const W: usize>(
        x: View<'_, S>,
        r0: usize,
        w: usize,
        p0: usize,
        kc: usize,
        dst: &mut [Pair],
    ) {
        let qn = kc.div_ceil(2);
        if w < W || !W.is_multiple_of(8) || kc < 2 {
            return portable_pairs::<S, W>(x, r0, w, p0, kc, dst);
        }
        let dst = &mut dst[..qn * W];
        let d = dst.as_mut_ptr();
        if x.cs == 1 {
            // Runs along k: eight rows at a time, eight pairs (16 steps) of
            // each, transposed into eight packed steps.
            let whole = kc / 16;
            assert!(whole == 0 || (r0 + W - 1) * x.rs + p0 + 16 * whole <= x.data.len());
            let src = x.data.as_ptr();
            for g in 0..whole {
                for rg in (0..W).step_by(8) {
                    // SAFETY: reads x[r0 + rg + t, p0 + 16g ..][..16] with
                    // rg + t < W, 16(g + 1) ≤ kc: in bounds (asserted); writes
                    // dst[(8g + t)·W + rg ..][..8] with 8g + t < qn: in `dst`.
                    unsafe {
                        let run =
                            |t: usize| pairs_of_run(src.add((r0 + rg + t) * x.rs + p0 + 16 * g));
                        let out = transpose8([
                            run(0),
                            run(1),
                            run(2),
                            run(3),
                            run(4),
                            run(5),
                            run(6),
                            run(7),
                        ]);
                        for (t, v) in out.into_iter().enumerate() {
                            _mm256_storeu_si256(d.add((8 * g + t) * W + rg).cast(), v);
                        }
                    }
                }
            }
            for (q, row) in dst.chunks_exact_mut(W).enumerate().skip(8 * whole) {
                for (r, out) in row.iter_mut().enumerate() {
                    *out = super::pair_at(x, r0 + r, p0, kc, q);
                }
            }
        } else if x.rs == 1 {
            // Runs along r: each pair of steps gives W pairs, eight at a time.
            let full = kc / 2;
            assert!(full == 0 || (p0 + 2 * full - 1) * x.cs + r0 + W <= x.data.len());
            let src = x.data.as_ptr();
            for q in 0..full {
                for rg in (0..W).step_by(8) {
                    // SAFETY: reads x[r0 + rg ..][..8] at steps p0 + 2q and
                    // p0 + 2q + 1 < p0 + kc: in bounds (asserted); writes
                    // dst[q·W + rg ..][..8], in `dst`.
                    unsafe {
                        let lo = S::load8_bits(src.add((p0 + 2 * q) * x.cs + r0 + rg));
                        let hi = S::load8_bits(src.add((p0 + 2 * q + 1) * x.cs + r0 + rg));
                        let v = _mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi));
                        _mm256_storeu_si256(d.add(q * W + rg).cast(), v);
                    }
                }
            }
            if kc % 2 == 1 {
                for (r, out) in dst[full * W..].iter_mut().enumerate() {
                    *out = super::pair_at(x, r0 + r, p0, kc, full);
                }
            }
        } else {
            portable_pairs::<S, W>(x, r0, w, p0, kc, dst);
        }
    }

    /// [`super::pack_pair_panels`] in AVX2: the same bits.
    ///
    /// Where `x` runs along `r` (a row-major `B`), the full panels are
    /// packed a few steps at a time across all of them, so that the reads
    /// go along the rows of `B` instead of down its columns.
    ///
    /// Must run on a CPU with AVX2 (see [`pack_pairs`]).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pair_panels<
        S: HalfSource<bf16>,
        const W: usize,
    >(
        x: View<'_, S>,
        r0: usize,
        w: usize,
        p0: usize,
        kc: usize,
        panel: usize,
        dst: &mut [Pair],
    ) {
        /// Steps of two per strip: 8 rows of `B` at a time.
        const STRIP: usize = 4;
        let (qn, full) = (kc.div_ceil(2), w / W);
        let dst = &mut dst[..w.div_ceil(W) * panel];
        if x.rs != 1 || x.cs == 1 || !W.is_multiple_of(8) || full == 0 {
            for (jp, d) in dst.chunks_exact_mut(panel).enumerate() {
                let rb = r0 + jp * W;
                pack_pairs::<S, W>(x, rb, W.min(r0 + w - rb), p0, kc, d);
                d[qn * W..].fill(0);
            }
            return;
        }
        let pairs_full = kc / 2;
        assert!(
            pairs_full == 0 || (p0 + 2 * pairs_full - 1) * x.cs + r0 + full * W <= x.data.len()
        );
        assert!(full * panel <= dst.len() && qn * W <= panel);
        let (src, d) = (x.data.as_ptr(), dst.as_mut_ptr());
        for q0 in (0..pairs_full).step_by(STRIP) {
            for jp in 0..full {
                for q in q0..(q0 + STRIP).min(pairs_full) {
                    for rg in (0..W).step_by(8) {
                        let r = r0 + jp * W + rg;
                        // SAFETY: reads x[r ..][..8] at steps p0 + 2q and
                        // p0 + 2q + 1 < p0 + kc, with r + 8 ≤ r0 + full·W: in
                        // bounds (asserted); writes dst[jp·panel + q·W + rg
                        // ..][..8], inside panel jp (asserted).
                        unsafe {
                            let lo = S::load8_bits(src.add((p0 + 2 * q) * x.cs + r));
                            let hi = S::load8_bits(src.add((p0 + 2 * q + 1) * x.cs + r));
                            let v = _mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi));
                            _mm256_storeu_si256(d.add(jp * panel + q * W + rg).cast(), v);
                        }
                    }
                }
            }
        }
        for (jp, d) in dst.chunks_exact_mut(panel).enumerate() {
            let rb = r0 + jp * W;
            if jp == full {
                super::pack_pairs::<S, W>(x, rb, r0 + w - rb, p0, kc, d);
            } else if kc % 2 == 1 {
                for (r, out) in d[pairs_full * W..qn * W].iter_mut().enumerate() {
                    *out = super::pair_at(x, rb + r, p0, kc, pairs_full);
                }
            }
            d[qn * W..].fill(0);
        }
    }

    /// [`super::pack_pair_rows`] in AVX2 where `x` runs along `k`: the same
    /// bits.
    ///
    /// Must run on a CPU with AVX2 (see [`pack_pairs`]).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pair_rows<
        S: HalfSource<bf16>,
        const R: usize,
    >(
        x: View<'_, S>,
        r0: usize,
        w: usize,
        p0: usize,
        kc: usize,
        qk: usize,
        dst: &mut [Pair],
    ) {
        if x.cs != 1 {
            return portable_rows::<S, R>(x, r0, w, p0, kc, qk, dst);
        }
        let qn = kc.div_ceil(2);
        assert!(qn <= qk && w <= R);
        let dst = &mut dst[..R * qk];
        let whole = kc / 16;
        assert!(w == 0 || whole == 0 || (r0 + w - 1) * x.rs + p0 + 16 * whole <= x.data.len());
        let src = x.data.as_ptr();
        for (r, row) in dst.chunks_exact_mut(qk).enumerate() {
            if r >= w {
                row.fill(0);
                continue;
            }
            for g in 0..whole {
                // SAFETY: reads x[r0 + r, p0 + 16g ..][..16], in bounds
                // (asserted); writes row[8g..][..8] with 8(g + 1) ≤ qn ≤ qk.
                unsafe {
                    let v = pairs_of_run(src.add((r0 + r) * x.rs + p0 + 16 * g));
                    _mm256_storeu_si256(row.as_mut_ptr().add(8 * g).cast(), v);
                }
            }
            for (q, out) in row[..qn].iter_mut().enumerate().skip(8 * whole) {
                *out = super::pair_at(x, r0 + r, p0, kc, q);
            }
            row[qn..].fill(0);
        }
    }
}
