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
//! packer has a portable form and an AVX-512 form that gives the same bits.

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
    assert!(kc.div_ceil(2) <= qk && w <= R);
    finish_pair_rows(x, r0, w, p0, kc, qk, &mut dst[..R * qk], 0);
}

/// The rest of a strip packed by row ([`pack_pair_rows`]) from pair
/// `from` on: `dst[r·qk + q]` for `from ≤ q < qk` of the rows `r < w`, and
/// all of the rows past `w`, zero past `kc`. (The AVX-512 packers fill
/// pairs `0..from` of the rows `r < w` themselves.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_pair_rows<S: HalfSource<bf16>>(
    x: View<'_, S>,
    r0: usize,
    w: usize,
    p0: usize,
    kc: usize,
    qk: usize,
    dst: &mut [Pair],
    from: usize,
) {
    let qn = kc.div_ceil(2);
    for (r, row) in dst.chunks_exact_mut(qk).enumerate() {
        if r >= w {
            row.fill(0);
            continue;
        }
        for (q, out) in row[..qn].iter_mut().enumerate().skip(from) {
            *out = pair_at(x, r0 + r, p0, kc, q);
        }
        row[qn..].fill(0);
    }
}

/// The AVX-512 forms of the packers, for the kernels that prove AVX-512F,
/// BW and VL (and AVX2).
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::{
        finish_pair_rows, pack_pair_rows as portable_rows, pack_pairs as portable_pairs, pair_at,
        Pair,
    };
    use crate::backend::cpu::gemm::half::source::HalfSource;
    use crate::backend::cpu::gemm::pack::View;
    use crate::backend::cpu::gemm::select::{selected_or_panic, Bf16Rounding};
    use crate::backend::cpu::gemm::x86_pack::transpose_8x8;

    /// The lanes `0..n` of 16.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            (1u16 << n) - 1
        }
    }

    /// How the AVX-512 packers round f32 values to bf16 pairs. Every form
    /// gives the bits of [`HalfSource::half_bits`]: to nearest, ties to
    /// even, a NaN quieted, subnormals kept.
    pub(in crate::backend::cpu::gemm::half) trait Rounding:
        Copy + Send + Sync + 'static
    {
        /// Sixteen pairs from 32 consecutive values along `k` at `src`: lane
        /// `i` holds steps `2i` (low half) and `2i + 1`.
        ///
        /// # Safety
        ///
        /// `src` must be valid for reads of 32 values; the CPU must have the
        /// form's features (it is inlined into callers compiled with them).
        unsafe fn along<S: HalfSource<bf16>>(src: *const S) -> __m512i;

        /// Sixteen pairs from two runs along `r`: lane `i` holds `lo[i]`
        /// (low half) and `hi[i]`, for the lanes of `mask` (zero elsewhere).
        ///
        /// # Safety
        ///
        /// `lo` and `hi` must be valid for reads at the lanes of `mask`; the
        /// CPU must have the form's features.
        unsafe fn across<S: HalfSource<bf16>>(
            lo: *const S,
            hi: *const S,
            mask: __mmask16,
        ) -> __m512i;
    }

    /// Rounding in integer arithmetic (AVX-512F, BW and VL).
    #[derive(Clone, Copy, Debug)]
    pub(in crate::backend::cpu::gemm::half) struct IntegerRounding;

    impl Rounding for IntegerRounding {
        #[inline(always)]
        unsafe fn along<S: HalfSource<bf16>>(src: *const S) -> __m512i {
            // SAFETY: 32 readable values; the features are present.
            unsafe {
                if let Some(pairs) = S::load_pairs(src) {
                    return pairs;
                }
                let lo = _mm512_cvtepi32_epi16(S::load16_bits(src, 0xFFFF));
                let hi = _mm512_cvtepi32_epi16(S::load16_bits(src.add(16), 0xFFFF));
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            }
        }

        #[inline(always)]
        unsafe fn across<S: HalfSource<bf16>>(
            lo: *const S,
            hi: *const S,
            mask: __mmask16,
        ) -> __m512i {
            // SAFETY: the lanes of `mask` are readable; the features are
            // present.
            unsafe {
                let (lo, hi) = (S::load16_bits(lo, mask), S::load16_bits(hi, mask));
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
            }
        }
    }

    /// Rounding with AVX512-BF16's `vcvtne2ps2bf16` (and AVX512-DQ's
    /// `vfpclassps`): one instruction per 32 values. The instruction reads
    /// subnormal inputs as zero, so a group that holds one is rounded by
    /// [`IntegerRounding`] instead; otherwise the two agree bit for bit
    /// (the same rounding, the same quieted NaN).
    #[derive(Clone, Copy, Debug)]
    pub(in crate::backend::cpu::gemm::half) struct ConvertRounding;

    /// `vfpclassps`'s class bit for a subnormal.
    const SUBNORMAL: i32 = 0x20;

    impl Rounding for ConvertRounding {
        #[inline(always)]
        unsafe fn along<S: HalfSource<bf16>>(src: *const S) -> __m512i {
            // SAFETY (both calls): 32 readable values; the features are
            // present.
            unsafe {
                match S::as_f32(src).and_then(|f| converted_run(f)) {
                    Some(pairs) => pairs,
                    None => IntegerRounding::along(src),
                }
            }
        }

        #[inline(always)]
        unsafe fn across<S: HalfSource<bf16>>(
            lo: *const S,
            hi: *const S,
            mask: __mmask16,
        ) -> __m512i {
            let converted = match (S::as_f32(lo), S::as_f32(hi)) {
                // SAFETY: the lanes of `mask` are readable; the features are
                // present.
                (Some(lo), Some(hi)) => unsafe { converted_pairs(lo, hi, mask) },
                _ => None,
            };
            // SAFETY: as above.
            converted.unwrap_or_else(|| unsafe { IntegerRounding::across(lo, hi, mask) })
        }
    }

    /// The 32 f32 values at `src` as 16 bf16 pairs, or `None` if one is
    /// subnormal (which `vcvtne2ps2bf16` would read as zero).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of 32 values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    #[inline]
    unsafe fn converted_run(src: *const f32) -> Option<__m512i> {
        // SAFETY: 32 readable values (the caller's contract).
        let (lo, hi) = unsafe { (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16))) };
        let subnormal =
            _mm512_fpclass_ps_mask::<SUBNORMAL>(lo) | _mm512_fpclass_ps_mask::<SUBNORMAL>(hi);
        // SAFETY: both are 512 bits of plain data.
        (subnormal == 0).then(|| unsafe {
            std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
        })
    }

    /// Lane `i` of `lo` and of `hi` (the lanes of `mask`; zero elsewhere)
    /// as the bf16 pair `(lo[i], hi[i])`, or `None` if a value is
    /// subnormal.
    ///
    /// # Safety
    ///
    /// `lo` and `hi` must be valid for reads at the lanes of `mask`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    #[inline]
    unsafe fn converted_pairs(lo: *const f32, hi: *const f32, mask: __mmask16) -> Option<__m512i> {
        // SAFETY: the lanes of `mask` are readable (the caller's contract).
        let (a, b) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, lo),
                _mm512_maskz_loadu_ps(mask, hi),
            )
        };
        let subnormal =
            _mm512_fpclass_ps_mask::<SUBNORMAL>(a) | _mm512_fpclass_ps_mask::<SUBNORMAL>(b);
        if subnormal != 0 {
            return None;
        }
        // [a₀ … a₁₅, b₀ … b₁₅] as 16-bit lanes, then interleaved.
        // SAFETY: both are 512 bits of plain data.
        let runs = unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a)) };
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        Some(_mm512_permutexvar_epi16(interleave, runs))
    }

    /// Defines `$name`, the packer `$inner` with the rounding this process
    /// selected ([`Bf16Rounding::selected`]), for callers that hold a token
    /// proving AVX-512F, BW, VL and AVX2 (its safety contract).
    macro_rules! with_selected_rounding {
        ($name:ident => $inner:ident<$c:ident>($($arg:ident),*)) => {
            #[doc = concat!("[`", stringify!($inner), "`] with the selected rounding.")]
            ///
            /// # Safety
            ///
            /// The CPU must have AVX-512F, BW, VL and AVX2.
            pub(in crate::backend::cpu::gemm::half) unsafe fn $name<
                S: HalfSource<bf16>,
                const $c: usize,
            >(
                x: View<'_, S>,
                $($arg: usize,)*
                dst: &mut [Pair],
            ) {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
                fn integer<S: HalfSource<bf16>, const $c: usize>(
                    x: View<'_, S>,
                    $($arg: usize,)*
                    dst: &mut [Pair],
                ) {
                    $inner::<S, IntegerRounding, $c>(x, $($arg,)* dst)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,avx512dq,avx512bf16")]
                fn convert<S: HalfSource<bf16>, const $c: usize>(
                    x: View<'_, S>,
                    $($arg: usize,)*
                    dst: &mut [Pair],
                ) {
                    $inner::<S, ConvertRounding, $c>(x, $($arg,)* dst)
                }
                // SAFETY: the caller vouches for the base features; the
                // selected rounding is `Avx512Bf16` only where the CPU has
                // AVX512-BF16 and DQ as well.
                unsafe {
                    match rounding() {
                        Bf16Rounding::Avx512Bf16 => convert::<S, $c>(x, $($arg,)* dst),
                        Bf16Rounding::Integer => integer::<S, $c>(x, $($arg,)* dst),
                    }
                }
            }
        };
    }

    with_selected_rounding!(pack_pairs_selected => pack_pairs<W>(r0, w, p0, kc));
    with_selected_rounding!(pack_pair_panels_selected => pack_pair_panels<W>(r0, w, p0, kc, panel));
    with_selected_rounding!(pack_pair_rows_selected => pack_pair_rows<R>(r0, w, p0, kc, qk));

    /// The selected rounding (a panic for a bad `ADVGRAD_BF16_ROUNDING`, as
    /// the gemm's kernel switches do).
    fn rounding() -> Bf16Rounding {
        selected_or_panic(Bf16Rounding::selected())
    }

    /// The two 256-bit halves of `v` (pairs `0..8` and `8..16`).
    #[inline(always)]
    fn halves(v: __m512i) -> [__m256i; 2] {
        // SAFETY: AVX-512F is present (inlined into callers compiled with
        // it); the casts move no bits.
        unsafe { [_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)] }
    }

    /// Transposes 8 × 8 32-bit lanes: `out[t][r] = rows[r][t]`.
    ///
    /// Must run on a CPU with AVX (inlined into callers compiled with it).
    #[inline(always)]
    fn transpose8(rows: [__m256i; 8]) -> [__m256i; 8] {
        // SAFETY: AVX is present (see the doc comment); both arrays are 256
        // bytes of plain data, so the casts move no bits.
        unsafe {
            let floats = std::mem::transmute::<[__m256i; 8], [__m256; 8]>(rows);
            std::mem::transmute::<[__m256; 8], [__m256i; 8]>(transpose_8x8(floats))
        }
    }

    /// [`super::pack_pairs`] with AVX-512: the same bits.
    ///
    /// Must run on a CPU with AVX-512F, BW and VL (every caller holds a
    /// kernel token that proves them and is compiled with them, so this
    /// inlines into it).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pairs<
        S: HalfSource<bf16>,
        R: Rounding,
        const W: usize,
    >(
        x: View<'_, S>,
        r0: usize,
        w: usize,
        p0: usize,
        kc: usize,
        dst: &mut [Pair],
    ) {
        let qn = kc.div_ceil(2);
        let dst = &mut dst[..qn * W];
        if x.cs == 1 && w > 0 && W.is_multiple_of(8) && kc >= 32 {
            // Runs along k: eight rows at a time, sixteen pairs (32 steps) of
            // each, transposed into sixteen packed steps; the rows of a last
            // group past `w` are zeros.
            if w < W {
                dst.fill(0);
            }
            let whole = kc / 32;
            assert!(w <= W && (r0 + w - 1) * x.rs + p0 + 32 * whole <= x.data.len());
            let (src, d) = (x.data.as_ptr(), dst.as_mut_ptr());
            for g in 0..whole {
                for rg in (0..w).step_by(8) {
                    // SAFETY: reads x[r0 + rg + t, p0 + 32g ..][..32] with
                    // rg + t < w, 32(g + 1) ≤ kc: in bounds (asserted); writes
                    // dst[(16g + h·8 + t)·W + rg ..][..8] with 16g + 16 ≤ qn
                    // and rg + 8 ≤ W (W a multiple of 8, rg < w ≤ W).
                    unsafe {
                        // Loops, not `array::from_fn`: a closure compiled on
                        // its own would lack the features its intrinsics need.
                        let mut runs = [[_mm256_setzero_si256(); 2]; 8];
                        for (t, run) in runs.iter_mut().enumerate().take(w - rg) {
                            *run = halves(R::along(src.add((r0 + rg + t) * x.rs + p0 + 32 * g)));
                        }
                        for h in 0..2 {
                            let out = transpose8(runs.map(|r| r[h]));
                            for (t, v) in out.into_iter().enumerate() {
                                _mm256_storeu_si256(d.add((16 * g + 8 * h + t) * W + rg).cast(), v);
                            }
                        }
                    }
                }
            }
            for (q, row) in dst.chunks_exact_mut(W).enumerate().skip(16 * whole) {
                for (r, out) in row[..w].iter_mut().enumerate() {
                    *out = pair_at(x, r0 + r, p0, kc, q);
                }
            }
        } else if x.rs == 1 && x.cs != 1 && w > 0 {
            // Runs along r: each pair of steps gives w pairs, sixteen at a
            // time (masked at the edge).
            if w < W {
                dst.fill(0);
            }
            assert!((p0 + kc - 1) * x.cs + r0 + w <= x.data.len());
            let (src, d) = (x.data.as_ptr(), dst.as_mut_ptr());
            for q in 0..qn {
                let (p_lo, p_hi) = (p0 + 2 * q, p0 + 2 * q + 1);
                for rg in (0..w).step_by(16) {
                    let mask = lanes(w - rg);
                    // SAFETY: reads x[r0 + rg ..][..lanes] at steps p_lo and
                    // (when inside the block) p_hi < p0 + kc: in bounds
                    // (asserted); writes dst[q·W + rg ..][..lanes] with
                    // rg + lanes ≤ w ≤ W.
                    unsafe {
                        let lo = src.add(p_lo * x.cs + r0 + rg);
                        let pair = if 2 * q + 1 < kc {
                            R::across(lo, src.add(p_hi * x.cs + r0 + rg), mask)
                        } else {
                            S::load16_bits(lo, mask)
                        };
                        _mm512_mask_storeu_epi32(d.add(q * W + rg).cast(), mask, pair);
                    }
                }
            }
        } else {
            portable_pairs::<S, W>(x, r0, w, p0, kc, dst);
        }
    }

    /// [`super::pack_pair_panels`] with AVX-512: the same bits.
    ///
    /// Where `x` runs along `r` (a row-major `B`), the full panels are
    /// packed a few steps at a time across all of them, so that the reads
    /// go along the rows of `B` instead of down its columns.
    ///
    /// Must run on a CPU with AVX-512F, BW and VL (see [`pack_pairs`]).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pair_panels<
        S: HalfSource<bf16>,
        R: Rounding,
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
        assert!(qn * W <= panel);
        let striped = x.rs == 1 && x.cs != 1 && W.is_multiple_of(16);
        if striped && full > 0 {
            let pairs_full = kc / 2;
            assert!(
                pairs_full == 0 || (p0 + 2 * pairs_full - 1) * x.cs + r0 + full * W <= x.data.len()
            );
            let (src, d) = (x.data.as_ptr(), dst.as_mut_ptr());
            for q0 in (0..pairs_full).step_by(STRIP) {
                for jp in 0..full {
                    for q in q0..(q0 + STRIP).min(pairs_full) {
                        for rg in (0..W).step_by(16) {
                            let r = r0 + jp * W + rg;
                            // SAFETY: reads x[r ..][..16] at steps p0 + 2q and
                            // p0 + 2q + 1 < p0 + kc, with r + 16 ≤ r0 + full·W:
                            // in bounds (asserted); writes dst[jp·panel + q·W
                            // + rg ..][..16], inside panel jp (asserted).
                            unsafe {
                                let lo = src.add((p0 + 2 * q) * x.cs + r);
                                let v = R::across(lo, lo.add(x.cs), 0xFFFF);
                                _mm512_storeu_si512(d.add(jp * panel + q * W + rg).cast(), v);
                            }
                        }
                    }
                }
            }
        }
        for (jp, d) in dst.chunks_exact_mut(panel).enumerate() {
            let rb = r0 + jp * W;
            if !striped || jp == full {
                pack_pairs::<S, R, W>(x, rb, W.min(r0 + w - rb), p0, kc, d);
            } else if kc % 2 == 1 {
                for (r, out) in d[(kc / 2) * W..qn * W].iter_mut().enumerate() {
                    *out = pair_at(x, rb + r, p0, kc, kc / 2);
                }
            }
            d[qn * W..].fill(0);
        }
    }

    /// [`super::pack_pair_rows`] with AVX-512: the same bits.
    ///
    /// Must run on a CPU with AVX-512F, BW and VL (see [`pack_pairs`]).
    #[inline(always)]
    pub(in crate::backend::cpu::gemm::half) fn pack_pair_rows<
        S: HalfSource<bf16>,
        Rd: Rounding,
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
            return if x.rs == 1 && R.is_multiple_of(16) {
                pack_pair_rows_across::<S, Rd, R>(x, r0, w, p0, kc, qk, dst)
            } else {
                portable_rows::<S, R>(x, r0, w, p0, kc, qk, dst)
            };
        }
        let qn = kc.div_ceil(2);
        assert!(qn <= qk && w <= R);
        let dst = &mut dst[..R * qk];
        let whole = kc / 32;
        assert!(w == 0 || whole == 0 || (r0 + w - 1) * x.rs + p0 + 32 * whole <= x.data.len());
        let src = x.data.as_ptr();
        for (r, row) in dst.chunks_exact_mut(qk).enumerate().take(w) {
            for g in 0..whole {
                // SAFETY: reads x[r0 + r, p0 + 32g ..][..32], in bounds
                // (asserted); writes row[16g..][..16] with 16(g + 1) ≤ qn ≤ qk.
                unsafe {
                    let [lo, hi] = halves(Rd::along(src.add((r0 + r) * x.rs + p0 + 32 * g)));
                    _mm256_storeu_si256(row.as_mut_ptr().add(16 * g).cast(), lo);
                    _mm256_storeu_si256(row.as_mut_ptr().add(16 * g + 8).cast(), hi);
                }
            }
        }
        finish_pair_rows(x, r0, w, p0, kc, qk, dst, 16 * whole);
    }

    /// [`super::pack_pair_rows`] where `x` runs along `r` (a transposed
    /// `op(A)`, such as `dYᵀ` in `dW = dYᵀ·X`): the same bits. Each step of
    /// two gives the pairs of sixteen rows in one vector; eight steps of
    /// them are transposed into eight packed pairs of each row.
    ///
    /// Must run on a CPU with AVX-512F, BW and VL (see [`pack_pairs`]);
    /// `R` must be a multiple of 16.
    #[inline(always)]
    fn pack_pair_rows_across<S: HalfSource<bf16>, Rd: Rounding, const R: usize>(
        x: View<'_, S>,
        r0: usize,
        w: usize,
        p0: usize,
        kc: usize,
        qk: usize,
        dst: &mut [Pair],
    ) {
        let qn = kc.div_ceil(2);
        // Steps of two that lie wholly inside the block, in groups of eight.
        let q_vec = kc / 2 / 8 * 8;
        assert!(qn <= qk && w <= R && R.is_multiple_of(16));
        assert!(w == 0 || q_vec == 0 || (p0 + 2 * q_vec - 1) * x.cs + r0 + w <= x.data.len());
        let dst = &mut dst[..R * qk];
        let (src, d) = (x.data.as_ptr(), dst.as_mut_ptr());
        for rg in (0..w).step_by(16) {
            let mask = lanes(w - rg);
            for q0 in (0..q_vec).step_by(8) {
                // SAFETY: reads x[r0 + rg ..][..lanes] at steps p0 + 2q and
                // p0 + 2q + 1 with q < q_vec: in bounds (asserted); writes
                // dst[r·qk + q0 ..][..8] for rows r < rg + 16 ≤ R and
                // q0 + 8 ≤ q_vec ≤ qk. Lanes past `w` load as zero, so rows
                // past the edge get zero pairs.
                unsafe {
                    // Loops, not closures (see `pack_pairs`).
                    let mut low = [_mm256_setzero_si256(); 8];
                    let mut high = low;
                    for t in 0..8 {
                        let lo = src.add((p0 + 2 * (q0 + t)) * x.cs + r0 + rg);
                        [low[t], high[t]] = halves(Rd::across(lo, lo.add(x.cs), mask));
                    }
                    let halves = [transpose8(low), transpose8(high)];
                    for (h, rows) in halves.into_iter().enumerate() {
                        for (t, v) in rows.into_iter().enumerate() {
                            let r = rg + 8 * h + t;
                            _mm256_storeu_si256(d.add(r * qk + q0).cast(), v);
                        }
                    }
                }
            }
        }
        finish_pair_rows(x, r0, w, p0, kc, qk, dst, q_vec);
    }
}
